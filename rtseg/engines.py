"""Engine files the package finds or makes itself: the bundled model, and seeded untrained
engines (the speed of a model without its weights, for benchmarks and tests)."""

from __future__ import annotations

import os
from pathlib import Path

from rtseg.data.classes import engine_metadata
from rtseg.data.datasets import get_spec
from rtseg.errors import BadInput

ENGINES_DIR = Path(__file__).resolve().parents[1] / "engines"  # the checkout's (pip install -e)
NO_BUNDLED = "no bundled model yet: pass --engine FILE (train one with rtseg train)"


def engine_dirs() -> list[Path]:
    """Where the bundled model is looked for, in order: ``$RTSEG_ENGINES``, the checkout's
    ``engines/`` (editable installs), ``./engines`` (a plain ``pip install .`` run from the
    checkout, whose site-packages copy has no engines/)."""
    dirs = [Path(os.environ["RTSEG_ENGINES"])] if os.environ.get("RTSEG_ENGINES") else []
    return dirs + [ENGINES_DIR, Path.cwd() / "engines"]


def default_engine(directory: Path | None = None) -> Path:
    """The bundled model: ``engines/default.safetensors``, else the only .safetensors there
    (``directory``, or the first of :func:`engine_dirs` that holds any)."""
    if directory is None:
        held = [d for d in engine_dirs() if d.is_dir() and any(d.glob("*.safetensors"))]
        if not held:
            raise BadInput(NO_BUNDLED)
        directory = held[0]
    default = directory / "default.safetensors"
    if default.is_file():
        return default
    found = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadInput(NO_BUNDLED)
    raise BadInput(f"several models in {directory} ({', '.join(p.name for p in found)}): pass "
                   "--engine FILE, or name the bundled one default.safetensors")


def untrained_engine(model: str, size: tuple[int, int], directory: Path | str,
                     dataset: str = "camvid", seed: int = 0) -> Path:
    """A seeded, untrained engine file: the speed of a trained ``model``, not its accuracy."""
    import torch

    from rtseg.models import Segmenter, build_model, save_checkpoint

    spec = get_spec(dataset)
    torch.manual_seed(seed)
    meta = engine_metadata(model, spec, size)
    segmenter = Segmenter(build_model(model, spec.num_classes), meta.mean, meta.std)
    name = f"{model}_{size[0]}x{size[1]}.safetensors"
    return save_checkpoint(Path(directory) / name, segmenter, meta)
