"""Build a TensorRT engine (``*.plan``) from an rtseg ONNX deploy graph.

Follows NVIDIA's ``samples/python/efficientdet/build_engine.py`` (log every I/O tensor, report
every parser error, one optimisation profile for the dynamic batch, a timing cache).

Every network is **strongly typed**: TensorRT keeps the graph's own types. TensorRT 10 needs
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` for that; TensorRT 11 builds nothing else (the
flag is deprecated and ignored, ``BuilderFlag.FP16`` is gone). Weak typing (``BuilderFlag.FP16``
on an fp32 graph, deprecated since 10.12) is never used: it lets TensorRT pick a precision per
layer, so SegNet's pooled maximum and the window it is compared with (the unpooling mask's
``Equal``) could be computed in different precisions and the mask come out wrong. So an fp16
engine from an fp32 export is built from the graph converted to fp16 first
(``rtseg.deploy.fp16_graph.graph_to_fp16``, the same graph ``rtseg export --fp16`` writes); ``--fp32``
builds the fp32 graph as it is. ``EXPLICIT_BATCH`` is not used (deprecated and ignored in 10.0).

An int8 engine comes from an int8 graph (``rtseg export --int8``): TensorRT's *explicit
quantization* — its Q/DQ nodes say where int8 is computed, and the network is strongly typed
like every other (TensorRT 10 "Explicit Quantization": "Use explicit quantization with Strong
Typing. Precision-control build flags are not required and should not be specified"; TensorRT
11 has no implicit quantization and no calibrators left). So no ``BuilderFlag.INT8`` and no
calibrator: the layers between Q/DQ nodes keep the graph's fp32. An fp32 or fp16 graph
cannot give an int8 engine, and an int8 graph gives nothing else.

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
    TRT_PIP_HINT,
    import_tensorrt,
    require_cuda,
    sidecar_path,
    tensorrt_major,
    trt_logger,
    trt_messages,
)
from rtseg.deploy.tensorrt_ops import tensorrt_compat_problems
from rtseg.errors import BadInput, MissingDependency, RtsegError
from rtseg.deploy.fp16_graph import graph_to_fp16
from rtseg.files import atomic_write, write_json
from rtseg.metadata import EngineMetadata

PRECISIONS = ("fp16", "fp32", "int8")
GiB = 1 << 30

__all__ = ["BuildPlan", "build_engine", "check_io_tensors", "check_precision",
           "format_parser_errors", "graph_precision", "load_timing_cache", "plan_build",
           "profile_shapes", "read_onnx_metadata", "sidecar_path"]


# -- pure helpers (no TensorRT needed) ---------------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """How to configure TensorRT for one (TensorRT major, graph precision, request) triple."""

    creation_flags: tuple[str, ...]  # trt.NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...]  # trt.BuilderFlag member names (none: strongly typed)
    precision: str  # what the engine computes in; goes into the sidecar
    convert_to_fp16: bool = False  # build from graph_to_fp16(graph) instead of the graph


def plan_build(trt_major: int, graph_precision: str, requested: str) -> BuildPlan:
    """Decide network/builder flags; BadInput for combinations TensorRT cannot honour.

    Always strongly typed, so the engine computes in the precision of the graph it is given;
    an int8 Q/DQ graph gives an int8 engine the same way (explicit quantization: no
    ``BuilderFlag.INT8``, no calibrator).

    >>> plan_build(10, "fp32", "fp16")
    BuildPlan(creation_flags=('STRONGLY_TYPED',), builder_flags=(), precision='fp16', \
convert_to_fp16=True)
    """
    requested = check_precision(graph_precision, requested)
    if trt_major < 10:
        raise MissingDependency(f"TensorRT {trt_major}.x is too old; rtseg needs TensorRT 10 "
                                f"or newer. {TRT_PIP_HINT}")
    # TensorRT 11+: strongly typed always; the flag is deprecated and ignored, so not passed.
    creation = ("STRONGLY_TYPED",) if trt_major == 10 else ()
    return BuildPlan(creation, (), requested,
                     convert_to_fp16=graph_precision == "fp32" and requested == "fp16")


def check_precision(graph_precision: str, requested: str) -> str:
    """The engine precision for a graph of ``graph_precision`` asked to build ``requested``
    (``auto``: int8 for an int8 Q/DQ graph, else fp16); BadInput for what cannot be built.
    Pure, so the build's input faults are reported on machines without TensorRT.

    >>> check_precision("int8", "auto"), check_precision("fp32", "auto")
    ('int8', 'fp16')
    """
    if requested not in (*PRECISIONS, "auto"):
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if graph_precision not in PRECISIONS:
        raise BadInput(f"the ONNX metadata says precision {graph_precision!r}; "
                       f"expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "int8" if graph_precision == "int8" else "fp16"
    if graph_precision == "int8" and requested != "int8":
        raise BadInput(f"this ONNX graph is int8 (Q/DQ nodes fix where int8 is computed), so "
                       f"it cannot give an {requested} engine; build it without --fp16/--fp32, "
                       "or build the fp32 export for a float engine")
    if requested == "int8" and graph_precision != "int8":
        raise BadInput(f"--int8 needs an int8 graph with Q/DQ nodes (this one's precision is "
                       f"{graph_precision}); make one with rtseg export --int8 --calib SRC "
                       "(TensorRT 11 has no implicit int8 calibration)")
    if graph_precision == "fp16" and requested == "fp32":
        raise BadInput("this ONNX graph was exported with --fp16, so it cannot give an fp32 "
                       "engine; export again without --fp16, or build with --fp16")
    return requested


def graph_precision(onnx_path: str | Path) -> str | None:
    """The ``precision`` in an ONNX file's metadata, or None when it cannot tell (the build
    itself reports unreadable files and missing keys)."""
    import json

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
        value = {p.key: p.value for p in model.metadata_props}.get("precision")
        return None if value is None else str(json.loads(value))
    except Exception:  # noqa: BLE001 - onnx raises DecodeError and friends
        return None


def profile_shapes(input_size: tuple[int, int] | list[int], max_batch: int,
                   opt_batch: int = 1) -> dict[str, tuple[int, int, int, int]]:
    """min/opt/max shapes of ``frames`` for the optimisation profile.

    ``opt_batch`` defaults to 1, the batch ``rtseg run`` sends: TensorRT picks its kernels for
    the optimum shape.

    >>> profile_shapes((360, 480), 8)["opt"]
    (1, 360, 480, 3)
    """
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    max_batch, opt = int(max_batch), int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise BadInput(f"--opt-batch must be between 1 and --max-batch ({max_batch}), "
                       f"got {opt}")
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
    if dtype == trt.DataType.UINT8:
        return "uint8"
    try:
        import numpy as np

        return np.dtype(trt.nptype(dtype)).name  # trt.nptype: TensorRT Python API
    except (AttributeError, TypeError, KeyError, ValueError):
        return str(dtype)  # types numpy lacks (bf16, fp8), or no nptype in this TensorRT


def _network_io(trt: Any, network: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    def info(t):
        return (t.name, tuple(int(d) for d in t.shape), _dtype_name(trt, t.dtype))

    inputs = [info(network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [info(network.get_output(i)) for i in range(network.num_outputs)]
    return inputs, outputs


def load_timing_cache(config: Any, path: Path, log: Callable[[str], None]) -> None:
    """Attach the timing cache stored at ``path`` to ``config``, or a fresh one.

    ``IBuilderConfig.create_timing_cache(bytes)`` returns None (it does not raise) for a cache
    it cannot read — a corrupt file, or one from another TensorRT version — and
    ``set_timing_cache(cache, ignore_mismatch=False)`` returns False for one made on another
    GPU. Either way the build goes on with an empty cache (``create_timing_cache(b"")``), which
    is written back over the stale file afterwards, and one line says so.
    """
    blob = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(blob) if blob else None
    except (RuntimeError, TypeError, ValueError):  # not documented, but handled the same way
        cache = None
    if blob and cache is None:
        log(f"warning: timing cache {path} is stale or corrupt (another TensorRT version?); "
            "starting a new one")
    elif cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"warning: timing cache {path} was made on another GPU; starting a new one")
        cache = None
    elif cache is not None:
        log(f"timing cache: loaded {path} ({len(blob)} bytes)")
        return
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise RtsegError("TensorRT could not create an empty timing cache")


def build_engine(onnx_path: str | Path, out_path: str | Path, *, precision: str = "fp16",
                 max_batch: int = 8, opt_batch: int = 1, workspace_gb: float = 4.0,
                 timing_cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build ``out_path`` (a TensorRT plan) and its sidecar ``<out_path>.json`` from an ONNX file.

    Args:
        precision: "fp16", "fp32", "int8" or "auto" (int8 for an int8 graph, else fp16), what
            the engine computes in. The network is strongly typed; an fp16 engine from an fp32
            graph is built from ``graph_to_fp16(graph)``; an int8 engine needs an int8 Q/DQ
            graph (``rtseg export --int8``) and computes int8 where its Q/DQ nodes say.
        max_batch / opt_batch: the dynamic-batch profile (min 1, optimum ``opt_batch``,
            default 1: what ``rtseg run`` sends).
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
    precision = check_precision(meta.precision, precision)
    trt = import_tensorrt()
    trt_version = trt.__version__
    device_index = require_cuda()
    plan = plan_build(tensorrt_major(trt_version), meta.precision, precision)
    onnx_bytes = None  # None: TensorRT parses the file itself
    if plan.convert_to_fp16:
        log("converting the fp32 graph to fp16 for a strongly typed fp16 engine "
            "(rtseg export --fp16 gives the same graph)")
        model = graph_to_fp16(onnx.load(str(onnx_path)))  # with any external weights
        onnx_bytes = model.SerializeToString()
    compat = tensorrt_compat_problems(model)
    del model  # TensorRT parses its own copy; don't hold two in memory
    for problem in compat:
        log(f"warning: {problem}")

    gpu_name = torch.cuda.get_device_name(device_index)
    cc = ".".join(str(v) for v in torch.cuda.get_device_capability(device_index))
    log(f"TensorRT {trt_version} on {gpu_name} (sm {cc}); strongly typed {plan.precision} "
        f"engine from the {'converted fp16' if plan.convert_to_fp16 else meta.precision} graph")
    with torch.cuda.device(device_index), trt_messages(log) as messages:
        serialized, cache_blob, seconds = _build(trt, onnx_path, onnx_bytes, plan, meta,
                                                 shapes, workspace_gb, timing_cache, compat,
                                                 log, messages)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if cache_blob is not None:
        cache_path = Path(timing_cache)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, cache_blob)
        log(f"timing cache: saved {cache_path}")
    atomic_write(out_path, memoryview(serialized))  # never a truncated plan
    sidecar = sidecar_path(out_path)
    side_meta = meta.with_updates(
        precision=plan.precision,
        strongly_typed=True,
        graph_precision=meta.precision,
        converted_to_fp16=plan.convert_to_fp16,
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
            "max_batch": shapes["max"][0], "opt_batch": shapes["opt"][0],
            "converted_to_fp16": plan.convert_to_fp16, "seconds": seconds,
            "size_bytes": size}


def _build(trt: Any, onnx_path: Path, onnx_bytes: bytes | None, plan: BuildPlan,
           meta: EngineMetadata, shapes: dict, workspace_gb: float,
           timing_cache: str | Path | None, compat: list[str], log: Callable[[str], None],
           messages: Any) -> tuple[Any, bytes | None, float]:
    """Parse, configure and build; returns (serialized plan, timing cache bytes, seconds).

    Runs inside ``trt_messages``: TensorRT's errors during these calls land in ``messages``.
    """
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.creation_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file also resolves external weights relative to the file; the converted
    # graph is parsed from memory (its weights are inline).
    parsed = (parser.parse_from_file(str(onnx_path)) if onnx_bytes is None
              else parser.parse(onnx_bytes, str(onnx_path)))
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BadInput(format_parser_errors(onnx_path, errors or messages.errors, compat))

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
    if timing_cache is not None:
        load_timing_cache(config, Path(timing_cache), log)

    log("building the engine (minutes for a large network)...")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        detail = "\n".join(messages.errors) or "no error message from TensorRT"
        raise RtsegError(f"TensorRT failed to build an engine from {onnx_path}:\n{detail}")
    cache_blob = None
    if timing_cache is not None:
        cache = config.get_timing_cache()
        cache_blob = bytes(memoryview(cache.serialize())) if cache is not None else None
    return serialized, cache_blob, seconds
