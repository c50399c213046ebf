"""Inference backends behind one interface, chosen by the engine file's suffix."""

from __future__ import annotations

from pathlib import Path

from rtseg.backends.base import Backend
from rtseg.errors import BadInput

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")


def open_engine(path: Path | str, device: str = "auto") -> Backend:
    """Load any engine file: ``.safetensors`` (PyTorch), ``.onnx`` (ONNX Runtime),
    ``.plan`` / ``.engine`` (TensorRT)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise BadInput(f"{path.name}: pickle files are not loaded (they can run code); convert "
                       "the state dict to .safetensors with safetensors.torch.save_file")
    if not path.is_file():
        raise BadInput(f"engine file not found: {path}")
    if suffix == ".safetensors":
        from rtseg.backends.torch_backend import TorchBackend
        return TorchBackend.from_file(path, device)
    if suffix == ".onnx":
        from rtseg.backends.onnx_backend import OnnxBackend
        return OnnxBackend(path, device)
    if suffix in (".plan", ".engine"):
        if device == "cpu":
            raise BadInput(f"{path.name} is a TensorRT engine, which runs on an NVIDIA GPU only; "
                           "use --device auto/cuda, or the .onnx or .safetensors on the CPU")
        from rtseg.backends.tensorrt_backend import TensorRTBackend
        return TensorRTBackend(path)
    raise BadInput(f"unsupported engine {path.name}: expected .safetensors, .onnx, .plan or .engine")


__all__ = ["Backend", "open_engine"]
