"""Training: optimizer, pure train / eval steps, parallel runners, checkpoints
and the loop that drives any task."""
