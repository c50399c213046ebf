"""The four networks of the report (and any smp UNet), wrapped for uint8 frames."""

from rtseg.models.checkpoint import load_checkpoint, read_checkpoint_metadata, save_checkpoint
from rtseg.models.registry import MODELS, build_model, canonical_name
from rtseg.models.segmenter import Segmenter

__all__ = ["MODELS", "Segmenter", "build_model", "canonical_name", "load_checkpoint",
           "read_checkpoint_metadata", "save_checkpoint"]
