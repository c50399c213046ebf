"""Engine files the package finds or makes itself: the bundled model, and seeded untrained
engines (the speed of a model without its weights, for benchmarks and tests)."""

from __future__ import annotations

import os
from pathlib import Path

from rtseg.cpu_features import CpuFeatures, read_cpu_features
from rtseg.cuda_driver import driver_gpu_count
from rtseg.errors import BadInput

ENGINES_DIR = Path(__file__).resolve().parents[1] / "engines"  # the checkout's (pip install -e)
NO_BUNDLED = "no bundled model yet: pass --engine FILE (train one with rtseg train)"
# engines/light/: a lighter model for CPUs whose int8 kernels are no faster than fp32 (no
# VNNI, no AMX). Its own folder, so engines/ itself still holds one model in its forms.
LIGHT_DIR = "light"


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
        directory = _bundled_dir()
    if not directory.is_dir():
        raise BadInput(NO_BUNDLED)
    graph = _one_of(directory, ".onnx") if device == "cpu" and precision == "auto" else None
    found = graph or _one_of(directory, ".safetensors") or _one_of(directory, ".onnx")
    if found is None:
        raise BadInput(NO_BUNDLED)
    return found


def _holds_model(directory: Path) -> bool:
    return directory.is_dir() and any(p.suffix in (".onnx", ".safetensors")
                                      for p in directory.iterdir())


def _bundled_dir() -> Path:
    """The first of :func:`engine_dirs` that holds a model; BadInput when none does."""
    for directory in engine_dirs():
        if _holds_model(directory):
            return directory
    raise BadInput(NO_BUNDLED)


def cpu_choice(directory: Path, features: CpuFeatures) -> tuple[Path, str]:
    """The bundled model and form fastest on a CPU with ``features`` (at ``--precision``
    auto), and one line saying why. With VNNI or AMX the int8 graph's dot products pay
    (about 6 FPS on 2 AVX-512 VNNI cores); without them ONNX Runtime's int8 kernels run no
    faster than fp32 and the full model manages under 1 FPS on 2 AVX2 cores, so the light
    model in ``directory/light`` is taken, where there is one."""
    light = directory / LIGHT_DIR
    speedy = {"amx": "AMX", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI"}
    cls = features.isa_class
    if cls in speedy or not _holds_model(light):
        path = default_engine(directory, "cpu", "auto")
        why = (f"this CPU has {speedy[cls]}, where int8 pays" if cls in speedy
               else f"no light model in {light}")
        return path, f"model: {path.name} ({why})"
    path = default_engine(light, "cpu", "auto")
    full = default_engine(directory, "cpu", "auto")
    return path, (f"model: {LIGHT_DIR}/{path.name} (the light model: this CPU ({cls}) has no "
                  f"VNNI or AMX, where the full model runs under 1 FPS on 2 cores; "
                  f"--engine {full} for it)")


def bundled_choice(device: str = "auto", precision: str = "auto",
                   features: CpuFeatures | None = None) -> tuple[Path, str]:
    """The bundled model in the form that suits ``device`` (auto, cpu, cuda), ``precision``
    and this CPU (``features``; read from /proc/cpuinfo when None), and one line that says
    what was picked and why. On a CPU at precision auto: :func:`cpu_choice`; otherwise the
    weights (fp16 on a GPU, any ``--precision``).

    ``device`` auto asks the CUDA driver first: on a machine where it sees no GPU, PyTorch
    (a second or more to import) is not loaded to decide.
    """
    kind = device
    if kind == "auto" and not driver_gpu_count():
        kind = "cpu"
    elif kind == "auto":
        from rtseg.devices import resolve_device

        kind = resolve_device("auto").type
    directory = _bundled_dir()
    if kind == "cpu" and precision == "auto":
        return cpu_choice(directory, features or read_cpu_features())
    path = default_engine(directory, device=kind, precision=precision)
    return path, f"model: {path.name} (the bundled weights, {kind}, precision {precision})"


def bundled_engine(device: str = "auto", precision: str = "auto") -> Path:
    """The path :func:`bundled_choice` picks."""
    return bundled_choice(device, precision)[0]


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
