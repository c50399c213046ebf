"""ONNX Runtime backend: an rtseg deploy graph (``*.onnx``) on the TensorRT, CUDA or CPU
execution provider.

On the TensorRT execution provider the ``frames`` input gets an explicit optimisation profile
(``trt_profile_min_shapes`` / ``trt_profile_opt_shapes`` / ``trt_profile_max_shapes``, format
``name:d0xd1x...``): batch 1 to ``TRT_PROFILE_MAX_BATCH``, optimised for batch 1 (what
``rtseg run`` sends). Without it the provider builds an engine for the first batch size it
sees and rebuilds — for seconds to minutes, mid-run — when a new one arrives (the last,
partial batch of an eval). Larger batches are split. The engines and the timing cache are
kept in ``$XDG_CACHE_HOME/rtseg/onnxruntime-tensorrt`` (``trt_engine_cache_enable``), keyed by
the provider on the model and the profile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from rtseg.backends.base import Backend
from rtseg.errors import BadInput, MissingDependency
from rtseg.metadata import INPUT_NAME, OUTPUT_NAME, EngineMetadata

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
SHORT_NAMES = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda",
               "CPUExecutionProvider": "cpu"}
# What ONNX Runtime raises for a file that is not a usable model (as opposed to a broken
# installation or a failing GPU, which stay internal errors).
_BAD_MODEL_ERRORS = (ort_state.InvalidProtobuf, ort_state.InvalidArgument, ort_state.InvalidGraph,
                     ort_state.NoSuchFile, ort_state.NotImplemented)
TRT_PROFILE_MAX_BATCH = 32  # largest batch of the TensorRT provider's profile; more is split
TRT_PROFILE_OPT_BATCH = 1  # the pipeline's default batch
# For symmetric int8 Q/DQ graphs (rtseg export --int8, the tensorrt layout), which give every
# convolution its own Q/DQ pair: common-subexpression elimination merges those identical Q
# nodes, and a signed Q read by two DQs is neither converted to uint8 (x86) nor fused into
# QLinearConv — in a ResNet each block's first convolution and its shortcut would run in fp32,
# dequantizing their weights per call. The cpu layout (uint8 activations) needs the merging
# to fuse: without it the bundled model's cpu graph ran at half speed (248 against 121 ms).
SIGNED_QDQ_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def tensorrt_cache_dir() -> Path:
    """Where the TensorRT execution provider keeps its engines and timing cache."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "rtseg",
                "onnxruntime-tensorrt")


def tensorrt_provider_options(device_id: int, input_size: tuple[int, int] | None, *,
                              max_batch: int = TRT_PROFILE_MAX_BATCH,
                              opt_batch: int = TRT_PROFILE_OPT_BATCH,
                              cache_dir: Path | None = None) -> dict:
    """Options of ONNX Runtime's ``TensorrtExecutionProvider`` for an rtseg deploy graph.

    ``input_size`` (H, W) of ``frames`` gives the explicit profile ``frames:1xHxWx3`` ..
    ``frames:{max_batch}xHxWx3`` (opt ``opt_batch``); None leaves the profile to the provider.

    >>> tensorrt_provider_options(0, (64, 96), cache_dir=Path("/c"))["trt_profile_max_shapes"]
    'frames:32x64x96x3'
    """
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch {opt_batch} must be between 1 and max_batch {max_batch}")
    cache = str(cache_dir or tensorrt_cache_dir())
    options: dict = {"device_id": device_id,
                     "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                     "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    if input_size is not None:
        h, w = (int(v) for v in input_size)
        for key, batch in (("min", 1), ("opt", opt_batch), ("max", max_batch)):
            options[f"trt_profile_{key}_shapes"] = f"{INPUT_NAME}:{batch}x{h}x{w}x3"
    return options


def read_graph(source: Path | onnx.ModelProto | None) -> onnx.ModelProto | None:
    """The ONNX graph at ``source`` (weights stored outside it not loaded), or ``source``
    itself when it is one; None when it cannot be read (ONNX Runtime says what is wrong)."""
    if source is None or isinstance(source, onnx.ModelProto):
        return source
    try:
        return onnx.load(str(source), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises DecodeError and friends
        return None


def graph_input_size(source: Path | onnx.ModelProto | None) -> tuple[int, int] | None:
    """(H, W) of the ``frames`` input of the ONNX graph (a file or a loaded one); None if it
    cannot tell."""
    model = read_graph(source)
    if model is None:
        return None
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name == INPUT_NAME and len(dims) == 4 and all(d.dim_value for d in dims[1:3]):
            return int(dims[1].dim_value), int(dims[2].dim_value)
    return None


def disabled_optimizers(source: Path | onnx.ModelProto | None) -> list[str]:
    """ONNX Runtime optimizers to turn off for the ONNX graph (a file or a loaded one): those
    of ``SIGNED_QDQ_DISABLED_OPTIMIZERS`` when it quantizes activations to signed int8 (the
    tensorrt layout of ``rtseg export --int8``), none otherwise."""
    model = read_graph(source)
    if model is None:
        return []
    zero_point_types = {t.name: t.data_type for t in model.graph.initializer}
    signed = any(node.op_type == "QuantizeLinear" and len(node.input) > 2
                 and zero_point_types.get(node.input[2]) == onnx.TensorProto.INT8
                 for node in model.graph.node)
    return list(SIGNED_QDQ_DISABLED_OPTIMIZERS) if signed else []


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
                      .read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def choose_providers(device: str, available: list[str] | None = None, *,
                     input_size: tuple[int, int] | None = None) -> list:
    """Execution providers to try, best first, for ``device`` (auto, cpu, cuda, cuda:N).

    ``input_size`` (H, W of ``frames``) gives the TensorRT provider its explicit profile.
    """
    available = ort.get_available_providers() if available is None else available
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise MissingDependency(f"unknown device {device!r}; use auto, cpu or cuda")
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device.startswith("cuda") and not gpu:
        raise MissingDependency(f"--device {device} asked for, but this onnxruntime has no CUDA "
                                "or TensorRT provider (pip install onnxruntime-gpu)")
    device_id = int(device.split(":", 1)[1]) if ":" in device else 0
    providers: list = []
    for name in gpu:
        if name == "TensorrtExecutionProvider":
            # TensorRT builds an engine per process; keep it between runs (minutes saved).
            options = tensorrt_provider_options(device_id, input_size)
        else:
            options = {"device_id": device_id}
        providers.append((name, options))
    return providers + ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """All graph optimisations, sequential execution, one intra-op thread per physical core
    (SMT siblings and extra inter-op threads only contend for the same FPUs), and intra-op
    threads that sleep between operators instead of spinning.

    Spinning buys a little latency on an idle machine, but in ``rtseg run`` the pool shares the
    cores with decode, overlay and encode threads, and every spinning wait is CPU time taken
    from them. Measured on the 2-core CI machine with the bundled model's int8 graph (engine
    alone and ``rtseg run`` writing an mp4, alternating): the pipeline reached 0.86-0.90 of the
    engine alone with spinning and 0.93-0.95 without, at the same pipeline FPS; and while other
    processes loaded the machine the engine alone ran 1.5x faster without spinning.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; warnings about CPU fallbacks are noise
    return options


class OnnxBackend(Backend):
    """Runs an rtseg ``.onnx`` deploy graph with ONNX Runtime.

    ``device``: ``auto`` (TensorRT or CUDA provider when this onnxruntime has one, else CPU),
    ``cpu``, ``cuda`` or ``cuda:N``. ``self.device`` names the provider actually used:
    ``tensorrt``, ``cuda`` or ``cpu``. ``threads`` overrides the CPU intra-op thread count.
    """

    name = "onnxruntime"

    def __init__(self, path: Path | str, device: str = "auto", threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"engine file not found: {path}")
        graph = read_graph(path)  # read once, for the profile's H, W and the optimizers
        providers = choose_providers(device)
        if _names(providers)[0] == "TensorrtExecutionProvider":
            providers = choose_providers(device, input_size=graph_input_size(graph))
        disabled = disabled_optimizers(graph)
        extra = {"disabled_optimizers": disabled} if disabled else {}
        try:
            ort_model = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                             providers=providers, **extra)
        except _BAD_MODEL_ERRORS as exc:
            raise BadInput(f"{path} is not a usable ONNX model: {_ort_message(exc)}") from None
        metadata = EngineMetadata.from_strings(
            dict(ort_model.get_modelmeta().custom_metadata_map), source=str(path))
        used = ort_model.get_providers()[0]
        if device.startswith("cuda") and used == "CPUExecutionProvider":
            raise MissingDependency(f"--device {device} asked for, but onnxruntime could not "
                                    "start its CUDA/TensorRT provider here")
        super().__init__(metadata, SHORT_NAMES.get(used, used), metadata.precision)
        self.providers = ort_model.get_providers()
        self.ort_model = ort_model
        # The TensorRT provider's profile ends at TRT_PROFILE_MAX_BATCH: split larger batches.
        self.max_batch = TRT_PROFILE_MAX_BATCH if used == "TensorrtExecutionProvider" else None
        self._check_io(path)

    def _check_io(self, path: Path) -> None:
        h, w = self.input_size
        inputs, outputs = self.ort_model.get_inputs(), self.ort_model.get_outputs()
        ok = (len(inputs) == 1 and inputs[0].name == INPUT_NAME
              and inputs[0].type == "tensor(uint8)" and inputs[0].shape[1:] == [h, w, 3]
              and len(outputs) == 1 and outputs[0].name == OUTPUT_NAME
              and outputs[0].type == "tensor(uint8)")
        if not ok:
            found = ", ".join(f"{t.name} {t.type} {t.shape}" for t in [*inputs, *outputs])
            raise BadInput(f"{path} is not an rtseg deploy graph: expected uint8 '{INPUT_NAME}' "
                           f"[N, {h}, {w}, 3] → uint8 '{OUTPUT_NAME}', found {found}")

    def infer(self, frames: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
            raise BadInput(f"frames must be uint8 [N, {h}, {w}, 3], got {frames.dtype} "
                           f"{list(frames.shape)}")
        if self.max_batch is None or len(frames) <= self.max_batch:
            return self._run(frames)
        return np.concatenate([self._run(frames[i:i + self.max_batch])
                               for i in range(0, len(frames), self.max_batch)])

    def _run(self, frames: np.ndarray) -> np.ndarray:
        return self.ort_model.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(frames)})[0]

    def close(self) -> None:
        self.ort_model = None


def _names(providers: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


def _ort_message(exc: Exception) -> str:
    """``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from x failed:Protobuf
    parsing failed.`` → ``Protobuf parsing failed.``"""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(" : ")[-1]
    return text.split("failed:", 1)[-1].strip() if "failed:" in text else text
