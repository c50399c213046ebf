"""The one interface every inference backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from rtseg.metadata import EngineMetadata


class Backend(ABC):
    """A loaded engine: ``infer(frames) -> labels``.

    ``frames`` is uint8 [N, H, W, 3] BGR at ``input_size``; the result is uint8 [N, H, W]
    class ids. Normalisation and argmax are the backend's business (inside the graph for
    ONNX and TensorRT).
    """

    name: str = "backend"  # "pytorch", "onnxruntime", "tensorrt"

    def __init__(self, metadata: EngineMetadata, device: str, precision: str):
        self.metadata = metadata
        self.device = device
        self.precision = precision

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network expects."""
        h, w = self.metadata.input_size
        return int(h), int(w)

    @abstractmethod
    def infer(self, frames: np.ndarray) -> np.ndarray:
        """Segment a batch: uint8 [N, H, W, 3] BGR → uint8 [N, H, W] class ids."""

    def close(self) -> None:
        """Release device memory; the backend is unusable afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
