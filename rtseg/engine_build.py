"""Build a TensorRT engine (``*.plan``) from an rtseg ONNX deploy graph.

Follows NVIDIA's ``samples/python/efficientdet/build_engine.py`` (log every I/O tensor, report
every parser error, one optimisation profile for the dynamic batch) with the TensorRT 10/11
precision rules:

- TensorRT 10: an fp32 graph builds in fp16 through ``BuilderFlag.FP16`` (weak typing); an fp16
  graph (``rtseg export --fp16``) is built ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` so
  TensorRT keeps the graph's own types. ``EXPLICIT_BATCH`` is not used: it is deprecated and
  ignored in 10.0, networks are always explicit batch.
- TensorRT 11: weak typing is gone (``BuilderFlag.FP16`` removed, every network strongly
  typed), so the engine computes in the graph's precision and an fp16 engine needs an fp16
  export.

A plan only runs on the GPU model and TensorRT version it was built with; the sidecar
``<plan>.json`` records both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch

from rtseg.backends.tensorrt_backend import (
    INPUT_NAME,
    OUTPUT_NAME,
    import_tensorrt,
    make_trt_logger,
    require_cuda,
    sidecar_path,
    tensorrt_major,
)
from rtseg.backends.tensorrt_onnx_ops import tensorrt_compat_problems
from rtseg.errors import BadInput, MissingDependency, RtsegError
from rtseg.files import atomic_write, write_json
from rtseg.metadata import EngineMetadata

PRECISIONS = ("fp16", "fp32")
GiB = 1 << 30

__all__ = ["BuildPlan", "build_engine", "check_io_tensors", "format_parser_errors",
           "plan_build", "profile_shapes", "read_onnx_metadata", "sidecar_path"]


# -- pure helpers (no TensorRT needed) ---------------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """How to configure TensorRT for one (TensorRT major, graph precision, request) triple."""

    creation_flags: tuple[str, ...]  # trt.NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...]  # trt.BuilderFlag member names
    precision: str  # what the engine computes in; goes into the sidecar


def plan_build(trt_major: int, graph_precision: str, requested: str) -> BuildPlan:
    """Decide network/builder flags; BadInput for combinations TensorRT cannot honour.

    >>> plan_build(10, "fp32", "fp16")
    BuildPlan(creation_flags=(), builder_flags=('FP16',), precision='fp16')
    """
    if requested not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if graph_precision not in PRECISIONS:
        raise BadInput(f"the ONNX metadata says precision {graph_precision!r}; "
                       f"expected one of {', '.join(PRECISIONS)}")
    if trt_major < 10:
        raise MissingDependency(f"TensorRT {trt_major}.x is too old; rtseg needs TensorRT 10 "
                                'or newer: pip install -U "rtseg[tensorrt]"')
    if graph_precision == "fp16" and requested == "fp32":
        raise BadInput("this ONNX graph was exported with --fp16, so it cannot give an fp32 "
                       "engine; export again without --fp16, or build with --fp16")
    if trt_major >= 11:
        # TensorRT 11: strongly typed always (the STRONGLY_TYPED flag is accepted but ignored,
        # BuilderFlag.FP16 removed) - precision comes from the graph alone.
        if requested == "fp16" and graph_precision == "fp32":
            raise BadInput(f"TensorRT {trt_major} builds strongly typed networks only, so an "
                           "fp16 engine needs an fp16 graph: run rtseg export --fp16 and build "
                           "from that file (or build this one with --fp32)")
        return BuildPlan((), (), graph_precision)
    if graph_precision == "fp32" and requested == "fp16":
        return BuildPlan((), ("FP16",), "fp16")  # TensorRT 10 weak typing picks fp16 kernels
    # Graph types already say what we want: keep them (weak typing is deprecated since 10.12).
    return BuildPlan(("STRONGLY_TYPED",), (), graph_precision)


def profile_shapes(input_size: tuple[int, int] | list[int], max_batch: int,
                   opt_batch: int | None = None) -> dict[str, tuple[int, int, int, int]]:
    """min/opt/max shapes of ``frames`` for the optimisation profile.

    >>> profile_shapes((360, 480), 8)["opt"]
    (4, 360, 480, 3)
    """
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    max_batch = int(max_batch)
    opt = min(4, max_batch) if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise BadInput(f"the optimisation batch must be between 1 and --max-batch "
                       f"({max_batch}), got {opt}")
    h, w = (int(v) for v in input_size)
    return {"min": (1, h, w, 3), "opt": (opt, h, w, 3), "max": (max_batch, h, w, 3)}


TensorInfo = tuple[str, tuple[int, ...], str]  # (name, shape with -1 for dynamic, dtype name)


def check_io_tensors(inputs: list[TensorInfo], outputs: list[TensorInfo],
                     input_size: tuple[int, int] | list[int]) -> None:
    """Raise BadInput unless the network has the contract's I/O.

    Contract: input ``frames`` uint8 [N, H, W, 3], output ``labels`` uint8 [N, H, W], N
    dynamic, (H, W) = the metadata ``input_size``.
    """
    h, w = (int(v) for v in input_size)
    problems = []
    for role, tensors, name, want in (("input", inputs, INPUT_NAME, (-1, h, w, 3)),
                                      ("output", outputs, OUTPUT_NAME, (-1, h, w))):
        found = {t[0]: t for t in tensors}
        if set(found) != {name}:
            problems.append(f"expected one {role} '{name}', the graph has "
                            f"{', '.join(found) or 'none'}")
            continue
        _, shape, dtype = found[name]
        if dtype != "uint8":
            problems.append(f"{role} '{name}' is {dtype}, expected uint8")
        if len(shape) != len(want):
            problems.append(f"{role} '{name}' has shape {list(shape)}, expected rank {len(want)}")
            continue
        if shape[0] != -1:
            problems.append(f"{role} '{name}' has a fixed batch of {shape[0]}; export it with a "
                            "dynamic batch dimension")
        if any(d not in (-1, e) for d, e in zip(shape[1:], want[1:])):
            problems.append(f"{role} '{name}' has shape {list(shape)}, expected "
                            f"{['N', *want[1:]]} (input_size {[h, w]} from the metadata)")
    if problems:
        raise BadInput("the ONNX graph does not follow the deploy contract: " + "; ".join(problems))


def format_parser_errors(onnx_path: str | Path, errors: list[str],
                         compat_problems: list[str] | None = None) -> str:
    """One message with every ONNX parser error in full, plus our pre-flight findings."""
    lines = [f"TensorRT could not parse {onnx_path} ({len(errors)} error(s)):"]
    lines += [f"  [{i}] {e}" for i, e in enumerate(errors)]
    if compat_problems:
        lines.append("Known TensorRT incompatibilities in this graph:")
        lines += [f"  - {p}" for p in compat_problems]
    return "\n".join(lines)


def read_onnx_metadata(onnx_path: str | Path) -> tuple[EngineMetadata, onnx.ModelProto]:
    """The rtseg metadata stored in an ONNX file's ``metadata_props``, and the model."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BadInput(f"ONNX file not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends, not one base class
        raise BadInput(f"{onnx_path} is not a readable ONNX model: {e}") from None
    props = {p.key: p.value for p in model.metadata_props}
    return EngineMetadata.from_strings(props, source=str(onnx_path)), model


# -- TensorRT glue -----------------------------------------------------------------------------
def _dtype_name(trt: Any, dtype: Any) -> str:
    try:
        import numpy as np

        return np.dtype(trt.nptype(dtype)).name  # trt.nptype: TensorRT Python API, 8.x-10.x
    except (TypeError, KeyError, ValueError):
        return str(dtype)  # types numpy lacks (bf16, fp8)


def _network_io(trt: Any, network: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    def info(t):
        return (t.name, tuple(int(d) for d in t.shape), _dtype_name(trt, t.dtype))

    inputs = [info(network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [info(network.get_output(i)) for i in range(network.num_outputs)]
    return inputs, outputs


def _load_timing_cache(config: Any, path: Path, log: Callable[[str], None]) -> None:
    # create_timing_cache(bytes) / set_timing_cache(cache, ignore_mismatch): TensorRT 8.x-10.x
    # Python API; an empty buffer creates an empty cache.
    blob = b""
    if path.is_file():
        blob = path.read_bytes()
        log(f"timing cache: loaded {path} ({len(blob)} bytes)")
    try:
        cache = config.create_timing_cache(blob)
    except Exception as e:  # a corrupt file must not stop the build; start afresh
        log(f"timing cache: cannot read {path} ({e}); starting a new one")
        cache = config.create_timing_cache(b"")
    # ignore_mismatch=False: a cache from another GPU is refused rather than trusted; the
    # call then returns False and we fall back to a fresh cache, overwritten after the build.
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"timing cache: {path} was made on another GPU or TensorRT; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(onnx_path: str | Path, out_path: str | Path, *, precision: str = "fp16",
                 max_batch: int = 8, opt_batch: int | None = None, workspace_gb: float = 4.0,
                 timing_cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build ``out_path`` (a TensorRT plan) and its sidecar ``<out_path>.json`` from an ONNX file.

    Args:
        precision: "fp16" or "fp32", what the engine should compute in.
        max_batch / opt_batch: the dynamic-batch profile (min 1; opt defaults to min(4, max)).
        workspace_gb: TensorRT's workspace memory-pool limit.
        timing_cache: file to reuse tactic timings from, updated after the build.
        log: print-like callable for progress and TensorRT warnings.

    Returns a summary dict (paths, precision, TensorRT version, GPU, seconds).
    Raises MissingDependency without TensorRT or a CUDA GPU, BadInput for unusable input,
    RtsegError if TensorRT fails to build.
    """
    log = log or (lambda _msg: None)
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if workspace_gb <= 0:
        raise BadInput(f"--workspace must be positive, got {workspace_gb}")
    meta, model = read_onnx_metadata(onnx_path)  # the input's faults first, on any machine
    shapes = profile_shapes(meta.input_size, max_batch, opt_batch)
    trt = import_tensorrt()
    trt_version = trt.__version__
    device_index = require_cuda()
    plan = plan_build(tensorrt_major(trt_version), meta.precision, precision)
    compat = tensorrt_compat_problems(model)
    del model  # TensorRT parses its own copy; don't hold two in memory
    for problem in compat:
        log(f"warning: {problem}")

    gpu_name = torch.cuda.get_device_name(device_index)
    cc = ".".join(str(v) for v in torch.cuda.get_device_capability(device_index))
    log(f"TensorRT {trt_version} on {gpu_name} (sm {cc}); {plan.precision} engine, "
        f"flags: network {list(plan.creation_flags)}, builder {list(plan.builder_flags)}")

    logger = make_trt_logger(trt, log)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.creation_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file also resolves external weights relative to the file, if any.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BadInput(format_parser_errors(onnx_path, errors, compat))

    inputs, outputs = _network_io(trt, network)
    for role, tensors in (("input", inputs), ("output", outputs)):
        for name, shape, dtype in tensors:
            log(f"network {role} '{name}': shape {list(shape)}, dtype {dtype}")
    check_io_tensors(inputs, outputs, meta.input_size)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * GiB))
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    log(f"profile '{INPUT_NAME}': min {list(shapes['min'])}, opt {list(shapes['opt'])}, "
        f"max {list(shapes['max'])}")
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        _load_timing_cache(config, cache_path, log)

    log("building the engine (minutes for a large network)...")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        detail = "\n".join(logger.errors) or "no error message from TensorRT"
        raise RtsegError(f"TensorRT failed to build an engine from {onnx_path}:\n{detail}")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    cache = config.get_timing_cache() if cache_path is not None else None
    if cache is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, memoryview(cache.serialize()))
        log(f"timing cache: saved {cache_path}")
    atomic_write(out_path, memoryview(serialized))  # never a truncated plan
    sidecar = sidecar_path(out_path)
    side_meta = meta.with_updates(
        precision=plan.precision,
        tensorrt_version=trt_version,
        gpu_name=gpu_name,
        compute_capability=cc,
        max_batch=shapes["max"][0],
        opt_batch=shapes["opt"][0],
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_onnx=onnx_path.name,
        portability=f"only for {gpu_name} (compute capability {cc}) with TensorRT "
                    f"{trt_version}; rebuild for any other GPU or TensorRT version",
    )
    write_json(sidecar, side_meta.to_dict())
    size = out_path.stat().st_size
    log(f"wrote {out_path} ({size / 2**20:.1f} MiB) and {sidecar.name} in {seconds:.0f} s")
    return {"plan": str(out_path), "sidecar": str(sidecar), "precision": plan.precision,
            "tensorrt_version": trt_version, "gpu_name": gpu_name, "compute_capability": cc,
            "max_batch": shapes["max"][0], "seconds": seconds, "size_bytes": size}
