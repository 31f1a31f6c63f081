"""Self-supervised monocular depth the Monodepth2 way: transfer a backbone, evaluate, predict."""
