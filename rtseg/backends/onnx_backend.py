"""ONNX Runtime backend: an rtseg deploy graph (``*.onnx``) on the TensorRT, CUDA or CPU
execution provider."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


def choose_providers(device: str, available: list[str] | None = None) -> list:
    """Execution providers to try, best first, for ``device`` (auto, cpu, cuda, cuda:N)."""
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
        options = {"device_id": device_id}
        if name == "TensorrtExecutionProvider":
            # TensorRT builds an engine per session; keep it between runs (minutes saved).
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "rtseg",
                         "onnxruntime-tensorrt")
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache),
                           trt_timing_cache_enable=True, trt_timing_cache_path=str(cache))
        providers.append((name, options))
    return providers + ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """All graph optimisations, sequential execution, one intra-op thread per physical core
    (SMT siblings and extra inter-op threads only contend for the same FPUs)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
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
        try:
            session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                           providers=choose_providers(device))
        except _BAD_MODEL_ERRORS as exc:
            raise BadInput(f"{path} is not a usable ONNX model: {_ort_message(exc)}") from None
        metadata = EngineMetadata.from_strings(
            dict(session.get_modelmeta().custom_metadata_map), source=str(path))
        used = session.get_providers()[0]
        if device.startswith("cuda") and used == "CPUExecutionProvider":
            raise MissingDependency(f"--device {device} asked for, but onnxruntime could not "
                                    "start its CUDA/TensorRT provider here")
        super().__init__(metadata, SHORT_NAMES.get(used, used), metadata.precision)
        self.providers = session.get_providers()
        self.session = session
        self._check_io(path)

    def _check_io(self, path: Path) -> None:
        h, w = self.input_size
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
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
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(frames)})[0]

    def close(self) -> None:
        self.session = None


def _ort_message(exc: Exception) -> str:
    """``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from x failed:Protobuf
    parsing failed.`` → ``Protobuf parsing failed.``"""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(" : ")[-1]
    return text.split("failed:", 1)[-1].strip() if "failed:" in text else text
