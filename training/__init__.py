"""GeoPt training: stream shards, pretrain the structure encoder on optical flow, transfer it to depth."""
