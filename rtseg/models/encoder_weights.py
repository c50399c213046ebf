"""``--encoder-weights none|imagenet|PATH``: where an encoder's initial weights come from.

``imagenet`` goes through each library's normal download (segmentation-models-pytorch's
hub for UNet encoders, torchvision's model zoo for SegNet's), so it works for users online
and fails with one clear line here. ``PATH`` reads a local file without unpickling code:
safetensors, or a ``.pth``/``.pt`` state dict through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from rtseg.errors import BadInput


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a local weights file; never executes pickled code."""
    if not path.is_file():
        raise BadInput(f"encoder weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # torch's pickle-protocol notice: noise here
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text suggests weights_only=False: never
        raise BadInput(f"cannot read encoder weights {path}: it holds more than tensors and "
                       "pickled code is never run; save a plain state dict with "
                       "safetensors.torch.save_file") from None
    except Exception as exc:  # any parse failure is the file's fault, not ours
        raise BadInput(f"cannot read encoder weights {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"{path} is not a state dict of tensors")
    return state


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from the keys that have it and keep only those, if any have it."""
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def download_failed(what: str, exc: Exception) -> BadInput:
    """The one-line error for an ImageNet download that did not work."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return BadInput(f"could not download ImageNet weights for {what} ({reason}); "
                    "check the network, or use --encoder-weights none or a local file PATH")
