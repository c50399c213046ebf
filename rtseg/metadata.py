"""Engine metadata: the keys every model file carries (safetensors header,
ONNX ``metadata_props``, TensorRT sidecar JSON).

Every value is stored as a JSON string so the same dict round-trips through all three
containers, which only hold string → string maps.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from rtseg.errors import BadInput

# The deploy graph's tensors (ONNX and TensorRT): uint8 [N, H, W, 3] BGR in, uint8 [N, H, W] out.
INPUT_NAME = "frames"
OUTPUT_NAME = "labels"

REQUIRED_KEYS = (
    "model",
    "num_classes",
    "class_names",
    "palette",
    "ignore_index",
    "input_size",
    "dataset",
    "mean",
    "std",
    "precision",
)


# How an engine may be asked to run (``--precision``; the one table of these names): auto
# chooses per device, and a .onnx or TensorRT plan accepts only auto or its own.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class EngineMetadata:
    """What a backend needs to know about a trained network besides its weights."""

    model: str
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int
    input_size: list[int]  # [H, W] the network sees
    dataset: str
    mean: list[float]  # RGB, 0-255 scale
    std: list[float]
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)  # val_miou, recipe, TensorRT version…

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of the contract keys plus the extras."""
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d

    def to_strings(self) -> dict[str, str]:
        """String → JSON-string map, for safetensors and ONNX metadata."""
        return {k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "engine") -> "EngineMetadata":
        """Build from a flat dict; raises BadInput naming the first missing key."""
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise BadInput(f"{source} lacks metadata key(s) {', '.join(missing)}; "
                           "re-export it with this version of rtseg")
        known = {k: d[k] for k in REQUIRED_KEYS}
        extra = {k: v for k, v in d.items() if k not in REQUIRED_KEYS}
        meta = cls(**known, extra=extra)
        try:
            meta.num_classes = int(meta.num_classes)
            meta.ignore_index = int(meta.ignore_index)
            meta.input_size = [int(v) for v in meta.input_size]
            meta.class_names = [str(n) for n in meta.class_names]
            meta.palette = [[int(c) for c in rgb] for rgb in meta.palette]
            meta.mean = [float(v) for v in meta.mean]
            meta.std = [float(v) for v in meta.std]
        except (TypeError, ValueError):
            raise BadInput(f"{source} has malformed metadata (a number or list where "
                           "another type was expected); re-export it") from None
        # These two name files and directories (Triton repositories): plain names only.
        for key in ("model", "dataset"):
            if not _NAME.fullmatch(str(getattr(meta, key))):
                raise BadInput(f"{source} has an invalid {key} name in its metadata")
        if len(meta.input_size) != 2 or min(meta.input_size) <= 0:
            raise BadInput(f"{source} metadata input_size {meta.input_size} is not [H, W]")
        if len(meta.class_names) != meta.num_classes or len(meta.palette) != meta.num_classes:
            raise BadInput(f"{source} metadata is inconsistent: num_classes={meta.num_classes} "
                           f"but {len(meta.class_names)} class names and {len(meta.palette)} colours")
        return meta

    @classmethod
    def from_strings(cls, d: dict[str, str], source: str = "engine") -> "EngineMetadata":
        """Inverse of ``to_strings``; values that are not JSON are kept as plain strings."""
        parsed: dict[str, Any] = {}
        for k, v in d.items():
            try:
                parsed[k] = json.loads(v)
            except (TypeError, ValueError):
                parsed[k] = v
        return cls.from_dict(parsed, source)

    @classmethod
    def from_onnx(cls, model, source: str = "engine") -> "EngineMetadata":
        """The metadata in an ONNX model's ``metadata_props`` (an ``onnx.ModelProto``)."""
        return cls.from_strings({p.key: p.value for p in model.metadata_props}, source)

    def write_onnx(self, model) -> None:
        """Make this the ONNX model's ``metadata_props``, replacing what was there."""
        del model.metadata_props[:]
        for key, value in self.to_strings().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value

    def with_updates(self, **changes: Any) -> "EngineMetadata":
        """A copy with some contract keys (or extras, for unknown names) changed."""
        d = self.to_dict()
        d.update(changes)
        return EngineMetadata.from_dict(d)


def parse_size(text: str | None, flag: str) -> tuple[int, int] | None:
    """An input size as the flags write it: ``"352x480"`` (or ``352×480``) → (352, 480);
    None for None; BadInput naming ``flag`` otherwise."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise BadInput(f"{flag} expects HxW, e.g. 352x480; got {text!r}") from None
    if h <= 0 or w <= 0:
        raise BadInput(f"{flag} {text} must be positive in both dimensions")
    return h, w
