"""Training: the trainer behind ``rtseg train`` and its torchrun/DDP helpers."""
