"""The CUT engine: decompose -> score per task -> fuse -> prune channels -> recover -> export."""
