"""GeoPt's ground floor: the facts every other package shares (camera conventions, KITTI layout, video files, the shard sample schema, atomic files); it imports none of them."""
