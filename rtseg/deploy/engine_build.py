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

Every TensorRT name here is typed (``import tensorrt as trt`` where it is used), so ``mypy``
checks it against the TensorRT type stubs (``tests/test_tensorrt_api.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import torch

from rtseg.backends.tensorrt_backend import (
    INPUT_NAME,
    dims,
    import_tensorrt,
    require_cuda,
    sidecar_path,
    tensorrt_major,
    trt_logger,
    trt_messages,
)
from rtseg.deploy.tensorrt_ops import tensorrt_compat_problems
from rtseg.deploy.build_plan import (BuildPlan, TensorInfo, check_int8_target, check_io_tensors,
                                     check_precision, format_parser_errors, plan_build,
                                     profile_shapes, read_onnx_metadata)
from rtseg.errors import BadInput, RtsegError
from rtseg.deploy.fp16_graph import graph_to_fp16
from rtseg.files import atomic_write, write_json
from rtseg.metadata import EngineMetadata

if TYPE_CHECKING:
    import tensorrt as trt

GiB = 1 << 30


def _dtype_name(dtype: trt.DataType) -> str:
    import tensorrt as trt

    if dtype == trt.DataType.UINT8:
        return "uint8"
    try:
        import numpy as np

        return np.dtype(trt.nptype(dtype)).name  # trt.nptype: TensorRT Python API
    except (AttributeError, TypeError, KeyError, ValueError):
        return str(dtype)  # types numpy lacks (bf16, fp8), or no nptype in this TensorRT


def _network_io(network: trt.INetworkDefinition) -> tuple[list[TensorInfo], list[TensorInfo]]:
    def info(t: trt.ITensor) -> TensorInfo:
        return (t.name, dims(t.shape), _dtype_name(t.dtype))

    inputs = [info(network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [info(network.get_output(i)) for i in range(network.num_outputs)]
    return inputs, outputs


def load_timing_cache(config: trt.IBuilderConfig, path: Path,
                      log: Callable[[str], None]) -> None:
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
    check_int8_target(meta)
    trt_version = import_tensorrt().__version__
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
        serialized, cache_blob, seconds = _build(onnx_path, onnx_bytes, plan, meta,
                                                 shapes, workspace_gb, timing_cache, compat,
                                                 log, messages)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if cache_blob is not None and timing_cache is not None:
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


def _build(onnx_path: Path, onnx_bytes: bytes | None, plan: BuildPlan,
           meta: EngineMetadata, shapes: dict, workspace_gb: float,
           timing_cache: str | Path | None, compat: list[str], log: Callable[[str], None],
           messages: Any) -> tuple[trt.IHostMemory, bytes | None, float]:
    """Parse, configure and build; returns (serialized plan, timing cache bytes, seconds).

    Runs inside ``trt_messages``: TensorRT's errors during these calls land in ``messages``.
    """
    import tensorrt as trt

    logger = trt_logger()
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

    inputs, outputs = _network_io(network)
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
