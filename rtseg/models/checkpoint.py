"""Trained weights as safetensors, with the contract's metadata in the header."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rtseg.errors import BadInput
from rtseg.files import write_via_temp
from rtseg.metadata import EngineMetadata
from rtseg.models.pruning import PRUNED_KEY, fit_to_state
from rtseg.models.registry import build_model
from rtseg.models.segmenter import Segmenter


def save_checkpoint(path: Path | str, segmenter: Segmenter, metadata: EngineMetadata,
                    dtype: torch.dtype | None = None) -> Path:
    """Write the network's weights and ``metadata`` to ``path`` (.safetensors), atomically.

    ``dtype`` (e.g. torch.float16) casts floating tensors; integer buffers stay as they are.
    """
    path = Path(path)
    state = {}
    for key, value in segmenter.net.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[key] = value.contiguous()
    if dtype is not None:
        metadata = metadata.with_updates(precision={torch.float16: "fp16",
                                                    torch.bfloat16: "bf16"}.get(dtype, "fp32"))
    return write_via_temp(path, lambda tmp: save_file(state, str(tmp),
                                                      metadata=metadata.to_strings()))


def read_checkpoint_metadata(path: Path | str) -> EngineMetadata:
    """Only the header metadata of a .safetensors file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    return EngineMetadata.from_strings(raw, source=str(path))


def load_checkpoint(path: Path | str) -> tuple[Segmenter, EngineMetadata]:
    """Rebuild the Segmenter a checkpoint describes (float32, CPU, eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"weights file not found: {path}")
    metadata = read_checkpoint_metadata(path)
    net = build_model(metadata.model, metadata.num_classes, encoder_weights=None)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInput(f"{path} is truncated or corrupt ({str(exc).splitlines()[0]})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if metadata.extra.get(PRUNED_KEY):
        fit_to_state(net, state)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise BadInput(f"{path} does not match model {metadata.model}: "
                       f"{str(exc).splitlines()[0]}") from None
    segmenter = Segmenter(net, metadata.mean, metadata.std).eval()
    return segmenter, metadata
