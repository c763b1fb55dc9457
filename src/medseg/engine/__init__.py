"""Training, checkpoints, inference (2-D and sliding window) and distributed execution."""
