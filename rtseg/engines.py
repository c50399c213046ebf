"""Engine files the package finds or makes itself: the bundled model, and seeded untrained
engines (the speed of a model without its weights, for benchmarks and tests)."""

from __future__ import annotations

import os
from pathlib import Path

from rtseg.cuda_driver import driver_gpu_count
from rtseg.errors import BadInput

ENGINES_DIR = Path(__file__).resolve().parents[1] / "engines"  # the checkout's (pip install -e)
NO_BUNDLED = "no bundled model yet: pass --engine FILE (train one with rtseg train)"


def engine_dirs() -> list[Path]:
    """Where the bundled model is looked for, in order: ``$RTSEG_ENGINES``, the checkout's
    ``engines/`` (editable installs), ``./engines`` (a plain ``pip install .`` run from the
    checkout, whose site-packages copy has no engines/)."""
    dirs = [Path(os.environ["RTSEG_ENGINES"])] if os.environ.get("RTSEG_ENGINES") else []
    return dirs + [ENGINES_DIR, Path.cwd() / "engines"]


def _one_of(directory: Path, suffix: str) -> Path | None:
    """``default<suffix>``, else the only ``*<suffix>`` in ``directory``; None when there is
    none; BadInput when there are several and none is the default."""
    default = directory / f"default{suffix}"
    if default.is_file():
        return default
    found = sorted(directory.glob(f"*{suffix}"))
    if len(found) > 1:
        raise BadInput(f"several models in {directory} ({', '.join(p.name for p in found)}): "
                       f"pass --engine FILE, or name the bundled one default{suffix}")
    return found[0] if found else None


def default_engine(directory: Path | None = None, device: str = "cpu",
                   precision: str = "auto") -> Path:
    """The bundled model, in ``directory`` or the first of :func:`engine_dirs` holding one.

    It may come in two forms: the weights (``.safetensors``: PyTorch, fp16 on a GPU, any
    ``--precision``) and a deploy graph (``.onnx``, e.g. int8: ONNX Runtime, the fastest on a
    CPU). The graph is taken on the CPU (``device`` the resolved device type) at
    ``precision`` auto, the weights otherwise or when there is no graph.
    """
    if directory is None:
        held = [d for d in engine_dirs()
                if d.is_dir() and (any(d.glob("*.safetensors")) or any(d.glob("*.onnx")))]
        if not held:
            raise BadInput(NO_BUNDLED)
        directory = held[0]
    if not directory.is_dir():
        raise BadInput(NO_BUNDLED)
    graph = _one_of(directory, ".onnx") if device == "cpu" and precision == "auto" else None
    found = graph or _one_of(directory, ".safetensors") or _one_of(directory, ".onnx")
    if found is None:
        raise BadInput(NO_BUNDLED)
    return found


def bundled_engine(device: str = "auto", precision: str = "auto") -> Path:
    """The bundled model in the form that suits ``device`` (auto, cpu, cuda) and ``precision``
    (the int8 deploy graph on the CPU at precision auto, the weights otherwise).

    ``device`` auto asks the CUDA driver first: on a machine where it sees no GPU, PyTorch
    (a second or more to import) is not loaded to decide.
    """
    kind = device
    if kind == "auto" and not driver_gpu_count():
        kind = "cpu"
    elif kind == "auto":
        from rtseg.devices import resolve_device

        kind = resolve_device("auto").type
    return default_engine(device=kind, precision=precision)


def untrained_engine(model: str, size: tuple[int, int], directory: Path | str,
                     dataset: str = "camvid", seed: int = 0) -> Path:
    """A seeded, untrained engine file: the speed of a trained ``model``, not its accuracy."""
    import torch  # the lookup above stays light: the CLI imports it at start

    from rtseg.data.classes import engine_metadata
    from rtseg.data.datasets import get_spec
    from rtseg.models import Segmenter, build_model, save_checkpoint

    spec = get_spec(dataset)
    torch.manual_seed(seed)
    meta = engine_metadata(model, spec, size)
    segmenter = Segmenter(build_model(model, spec.num_classes), meta.mean, meta.std)
    name = f"{model}_{size[0]}x{size[1]}.safetensors"
    return save_checkpoint(Path(directory) / name, segmenter, meta)
