"""Inference backends behind one interface, chosen by the engine file's suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rtseg.backends.base import Backend
from rtseg.errors import BadInput
from rtseg.metadata import PRECISIONS

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")


def open_engine(path: Path | str, device: str = "auto", precision: str = "auto") -> Backend:
    """Load any engine file: ``.safetensors`` (PyTorch), ``.onnx`` (ONNX Runtime),
    ``.plan`` / ``.engine`` (TensorRT).

    ``precision`` (auto, fp32, fp16, bf16) chooses how PyTorch runs ``.safetensors`` weights;
    an ONNX graph or a TensorRT plan has its precision fixed when it is built, so for those
    only ``auto`` or that same precision is accepted.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if precision not in PRECISIONS:
        raise BadInput(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if suffix in PICKLE_SUFFIXES:
        raise BadInput(f"{path.name}: pickle files are not loaded (they can run code); convert "
                       "the state dict to .safetensors with safetensors.torch.save_file")
    _check_file(path)
    if suffix == ".safetensors":
        from rtseg.backends.torch_backend import TorchBackend
        return TorchBackend.from_file(path, device, precision)
    if suffix == ".onnx":
        from rtseg.backends.onnx_backend import OnnxBackend
        return _fixed_precision(OnnxBackend(path, device), precision, "rtseg export [--fp16]")
    if suffix in (".plan", ".engine"):
        if device == "cpu":
            raise BadInput(f"{path.name} is a TensorRT engine, which runs on an NVIDIA GPU only; "
                           "use --device auto/cuda, or the .onnx or .safetensors on the CPU")
        from rtseg.backends.tensorrt_backend import TensorRTBackend
        return _fixed_precision(TensorRTBackend(path, device), precision, "rtseg build-engine")
    raise BadInput(f"unsupported engine {path.name}: expected .safetensors, .onnx, .plan or .engine")


def split_engine_spec(spec: str, precision: str = "auto") -> tuple[Path, str]:
    """An engine argument that may name its precision: ``"m.safetensors@bf16"`` →
    (m.safetensors, "bf16"); without ``@PRECISION`` (or after an ``@`` that names none, as in
    a file name), ``(Path(spec), precision)``."""
    path, _, suffix = spec.rpartition("@")
    if path and suffix in PRECISIONS:
        return Path(path), suffix
    return Path(spec), precision


def check_engine_files(specs: Iterable[str]) -> None:
    """BadInput for the first engine argument (``FILE`` or ``FILE@PRECISION``) whose file is
    not there: checked before any engine is loaded."""
    for spec in specs:
        _check_file(split_engine_spec(spec)[0])


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise BadInput(f"engine file not found: {path}")


def _fixed_precision(backend: Backend, precision: str, rebuild: str) -> Backend:
    """``backend`` when ``precision`` is auto or its own; else close it and say how to get one."""
    if precision in ("auto", backend.precision):
        return backend
    backend.close()
    raise BadInput(f"--precision {precision}: this engine was built in {backend.precision}, "
                   f"fixed at build time; make a {precision} one with {rebuild}, or run the "
                   ".safetensors")


__all__ = ["Backend", "PRECISIONS", "check_engine_files", "open_engine", "split_engine_spec"]
