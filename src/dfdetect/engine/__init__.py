"""Engine: training loop, evaluation, checkpoints."""
