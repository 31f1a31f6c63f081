"""Geometric pretraining: pairs of frames from shards -> flow through a narrow motion code -> a backbone."""
