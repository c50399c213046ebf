"""rtseg: real-time semantic segmentation of road video."""

__version__ = "0.1.0"
