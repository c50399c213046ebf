"""TensorRT backend: runs a ``*.plan`` / ``*.engine`` built by ``rtseg build-engine``.

Written to the TensorRT 10 name-based runtime API (``num_io_tensors``, ``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), the pattern of NVIDIA's
``samples/python/common_runtime.py``. CUDA memory and the stream come from torch, so no
cuda-python / pycuda is needed. Metadata lives in the sidecar ``<plan>.json``.

TensorRT treats its logger as process-wide (the one given to the first Builder/Runtime is the
one it uses), so rtseg has exactly one (``trt_logger``), and each call that can fail —
build, deserialise, run — collects TensorRT's errors for itself with ``trt_messages``, so
with several engines in one process (``rtseg bench --compare``) an error is quoted by the
call that caused it.

Every TensorRT name here is typed (``import tensorrt as trt`` where it is used, annotations
for the objects kept), so the tests check it against NVIDIA's API: ``mypy`` against the
TensorRT 10 type stubs, and each runtime name against the TensorRT 11 lean runtime's bindings
(``tests/test_tensorrt_api.py``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.errors import BadInput, MissingDependency, StageError
from rtseg.metadata import INPUT_NAME, OUTPUT_NAME, EngineMetadata

if TYPE_CHECKING:
    import tensorrt as trt

TRT_PIP_HINT = ('on an NVIDIA GPU machine run pip install "rtseg[tensorrt-cu13]", or '
                '"rtseg[tensorrt-cu12]" where torch.version.cuda is 12.x')
MIN_TRT_MAJOR = 10  # the name-based I/O API and explicit-batch-only networks start at 10.0
ADDRESS_ALIGNMENT = 256  # IExecutionContext::setTensorAddress: "at least 256-byte alignment"


def sidecar_path(plan_path: str | Path) -> Path:
    """The metadata file that sits beside a plan: ``segnet.plan`` → ``segnet.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def tensorrt_major(version: str) -> int:
    """Major number of a TensorRT version string (``"10.15.1.29"`` → 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise MissingDependency(f"cannot read the TensorRT version {version!r}") from None


def import_tensorrt() -> Any:
    """Import ``tensorrt`` on demand; MissingDependency (with the pip hint) if absent or < 10."""
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependency(f"TensorRT is not installed: {TRT_PIP_HINT}") from None
    if not hasattr(trt, "__version__"):  # tensorrt-stubs alone: a namespace of .pyi files
        raise MissingDependency("TensorRT is not installed (only its type stubs are): "
                                + TRT_PIP_HINT)
    if tensorrt_major(trt.__version__) < MIN_TRT_MAJOR:
        raise MissingDependency(f"TensorRT {trt.__version__} is too old; rtseg needs TensorRT "
                                f"{MIN_TRT_MAJOR} or newer: {TRT_PIP_HINT}")
    return trt


def require_cuda(device: str = "auto") -> int:
    """Index of the CUDA device ``device`` names (``auto``/``cuda``: the current one,
    ``cuda:N``: N); MissingDependency when torch sees no CUDA GPU, BadInput for an index
    this machine does not have."""
    if not torch.cuda.is_available():
        raise MissingDependency("no CUDA GPU is visible (torch.cuda.is_available() is False); "
                                "TensorRT engines are built and run on an NVIDIA GPU")
    torch.cuda.init()  # create the primary context TensorRT will share with torch
    if not device.startswith("cuda:"):
        return torch.cuda.current_device()
    try:
        index = int(device.split(":", 1)[1])
    except ValueError:
        raise BadInput(f"--device {device}: expected cuda:N with N a GPU index") from None
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise BadInput(f"--device {device}: this machine has {count} CUDA GPU(s), "
                       f"cuda:0 to cuda:{count - 1}")
    return index


class TrtMessages:
    """TensorRT's warnings and errors during one ``trt_messages`` block."""

    def __init__(self, sink: Callable[[str], None]):
        self.sink = sink
        self.errors: list[str] = []

    def detail(self, last: int | None = None) -> str:
        """The collected errors joined into one string (the ``last`` few, if given)."""
        return "; ".join(self.errors[-last:] if last else self.errors)


_calls = threading.local()  # .stack: the TrtMessages of this thread's open blocks
_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()
_unclaimed = logging.getLogger("rtseg.tensorrt")  # messages outside any trt_messages block


@contextmanager
def trt_messages(sink: Callable[[str], None] | None = None) -> Iterator[TrtMessages]:
    """Collect TensorRT's messages for the TensorRT calls made inside the block.

    Warnings and errors go to ``sink`` (``log``-like) as ``TensorRT warning: ...`` lines;
    errors are also kept in ``.errors`` so the caller can quote them in its exception.
    Blocks are per thread and nest (the innermost collects).

    Example::

        with trt_messages(log) as messages:
            engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise BadInput(f"cannot load the plan: {messages.detail()}")
    """
    messages = TrtMessages(sink or _quiet)
    stack = getattr(_calls, "stack", None)
    if stack is None:
        stack = _calls.stack = []
    stack.append(messages)
    try:
        yield messages
    finally:
        stack.pop()


def _route(is_error: bool, msg: str) -> None:
    """Hand one TensorRT warning/error to the innermost ``trt_messages`` block of this thread."""
    stack = getattr(_calls, "stack", None)
    text = f"TensorRT {'error' if is_error else 'warning'}: {msg}"
    if not stack:
        _unclaimed.warning(text)
        return
    if is_error:
        stack[-1].errors.append(str(msg))
    stack[-1].sink(text)


def trt_logger() -> trt.ILogger:
    """The process-wide ``trt.ILogger`` rtseg gives every Builder, Runtime and parser.

    Created on first use and kept for the life of the process (TensorRT requires the logger
    to outlive every object created with it). Subclassing ``trt.ILogger`` with
    ``log(severity, msg)`` is the documented way to receive TensorRT's messages; the
    implementation must be thread safe, which ``_route`` is (thread-local state only).
    Call ``import_tensorrt`` first.
    """
    import tensorrt as trt

    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            severity = trt.ILogger.Severity
            errors = (severity.INTERNAL_ERROR, severity.ERROR)

            class _Logger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, sev: trt.ILogger.Severity, msg: str) -> None:  # by TensorRT
                    if sev in errors or sev == severity.WARNING:
                        _route(sev in errors, str(msg))

            _LOGGER = _Logger()
        return _LOGGER


def load_sidecar(plan_path: Path) -> tuple[EngineMetadata, dict[str, Any]]:
    """Metadata and the raw sidecar dict of a plan; BadInput if the sidecar is missing/bad."""
    side = sidecar_path(plan_path)
    if not side.is_file():
        raise BadInput(f"{side.name} not found: a TensorRT engine's metadata lives in a sidecar "
                       f"JSON that must sit beside the plan ({side}); rebuild with "
                       "rtseg build-engine or copy it along with the plan")
    try:
        raw = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read engine sidecar {side}: {e}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"engine sidecar {side} is not a JSON object")
    return EngineMetadata.from_dict(raw, source=str(side)), raw


def _quiet(_msg: str) -> None:
    pass


def _detail(messages: TrtMessages) -> str:
    detail = messages.detail(last=3)
    return f": {detail}" if detail else ""


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A ``trt.Dims`` as a tuple of ints (-1: dynamic). By index: ``Dims`` is a sequence
    (``len``, ``[i]``) in NVIDIA's API; it defines no ``__iter__``."""
    return tuple(int(shape[i]) for i in range(len(shape)))


def aligned(tensor: torch.Tensor) -> bool:
    """Whether TensorRT may read/write ``tensor`` in place: its first byte is 256-byte aligned.

    ``set_tensor_address`` requires that alignment. Allocations from torch's CUDA allocator
    are aligned, but a slice ``t[k:]`` starts ``k * frame_bytes`` further on.
    """
    return tensor.data_ptr() % ADDRESS_ALIGNMENT == 0


class TensorRTBackend(Backend):
    """A deserialised TensorRT engine with device and pinned host buffers allocated once.

    ``infer`` takes numpy uint8 [N, H, W, 3] BGR frames and returns uint8 [N, H, W] labels;
    ``infer_torch`` does the same for uint8 CUDA tensors without a host round trip. Batches
    larger than the engine's profile maximum are split.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "auto", *,
                 log: Callable[[str], None] | None = None):
        path = Path(path)
        metadata, raw = load_sidecar(path)  # first: the cheapest, most specific check
        import_tensorrt()
        device_index = require_cuda(device)
        with torch.cuda.device(device_index):  # TensorRT binds the engine to the current GPU
            self._load(path, metadata, raw, device_index, log)

    def _load(self, path: Path, metadata: EngineMetadata, raw: dict, device_index: int,
              log: Callable[[str], None] | None) -> None:
        """Deserialise the plan and allocate buffers on ``device_index`` (the current GPU)."""
        import tensorrt as trt

        gpu_name = torch.cuda.get_device_name(device_index)
        super().__init__(metadata, f"cuda:{device_index} ({gpu_name})", metadata.precision)
        self._device_index = device_index
        self._log = log or _quiet
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        with trt_messages(self._log) as messages:
            self._runtime: trt.Runtime | None = trt.Runtime(trt_logger())
            try:
                # None (or, in some versions, RuntimeError) for a plan it cannot load
                self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            except RuntimeError as e:
                messages.errors.append(str(e))
                self._engine = None
            if self._engine is not None:
                self._context = self._engine.create_execution_context()
        if self._engine is None:
            built = f"TensorRT {raw.get('tensorrt_version', '?')} on {raw.get('gpu_name', '?')}"
            here = f"TensorRT {trt.__version__} on {gpu_name}"
            detail = messages.detail()
            raise BadInput(f"{path} is not a TensorRT engine or was built with another TensorRT "
                           f"version/GPU (built with {built}, this machine has {here}); rebuild "
                           "it here with rtseg build-engine"
                           + (f". TensorRT: {detail}" if detail else ""))
        if self._context is None:
            detail = messages.detail()
            raise StageError(f"TensorRT could not create an execution context for {path} "
                             "(out of GPU memory?)" + (f": {detail}" if detail else ""))
        self.io = self._describe_io()
        self.max_batch = self._check_io(path)
        h, w = self.input_size
        dev = torch.device("cuda", device_index)
        # Allocated once for the profile's max batch; smaller batches use leading views.
        self._dev_in = torch.empty((self.max_batch, h, w, 3), dtype=torch.uint8, device=dev)
        self._dev_out = torch.empty((self.max_batch, h, w), dtype=torch.uint8, device=dev)
        self._host_in = torch.empty(self._dev_in.shape, dtype=torch.uint8, pin_memory=True)
        self._host_out = torch.empty(self._dev_out.shape, dtype=torch.uint8, pin_memory=True)
        self._host_in_np = self._host_in.numpy()
        self._host_out_np = self._host_out.numpy()
        self._stream = torch.cuda.Stream(device=dev)

    # -- setup -----------------------------------------------------------------------------
    def _describe_io(self) -> dict[str, dict[str, Any]]:
        import tensorrt as trt

        engine = self._require_engine()
        io = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            io[name] = {
                "mode": "input" if is_input else "output",
                "dtype": engine.get_tensor_dtype(name),
                "shape": dims(engine.get_tensor_shape(name)),
            }
        return io

    def _check_io(self, path: Path) -> int:
        """Verify the contract's I/O; return the max batch of optimisation profile 0."""
        import tensorrt as trt

        want = {INPUT_NAME: ("input", 4), OUTPUT_NAME: ("output", 3)}
        for name, (mode, rank) in want.items():
            t = self.io.get(name)
            if t is None or t["mode"] != mode:
                raise BadInput(f"{path} has no {mode} tensor '{name}' (it has "
                               f"{', '.join(self.io) or 'none'}); build it from an rtseg "
                               "ONNX export")
            if t["dtype"] != trt.DataType.UINT8 or len(t["shape"]) != rank:
                raise BadInput(f"{path}: tensor '{name}' is {t['dtype']} {list(t['shape'])}, "
                               f"expected uint8 of rank {rank}")
        h, w = self.input_size
        in_hw = self.io[INPUT_NAME]["shape"][1:3]
        if any(d not in (-1, s) for d, s in zip(in_hw, (h, w))):
            raise BadInput(f"{path}: engine input is {list(in_hw)} but the sidecar says "
                           f"input_size {[h, w]}; the sidecar does not belong to this plan")
        # get_tensor_profile_shape(name, profile) -> [min, opt, max] (TensorRT 10 samples).
        max_shape = self._require_engine().get_tensor_profile_shape(INPUT_NAME, 0)[2]
        return int(max_shape[0])

    # -- inference -------------------------------------------------------------------------
    def _enqueue(self, frames_dev: torch.Tensor, labels_dev: torch.Tensor) -> None:
        """Queue one engine run on our stream; the tensors must stay alive until it syncs.

        Both tensors must be dense and start 256-byte aligned (``aligned``).
        """
        ctx = self._require_open()
        with trt_messages(self._log) as messages:
            if not ctx.set_input_shape(INPUT_NAME, tuple(frames_dev.shape)):
                raise StageError(f"TensorRT rejected input shape {list(frames_dev.shape)} "
                                 f"(engine max batch {self.max_batch})"
                                 + _detail(messages))
            if not (ctx.set_tensor_address(INPUT_NAME, frames_dev.data_ptr())
                    and ctx.set_tensor_address(OUTPUT_NAME, labels_dev.data_ptr())):
                raise StageError("TensorRT rejected a tensor address" + _detail(messages))
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                raise StageError("TensorRT execute_async_v3 failed" + _detail(messages))

    def _check_frames(self, shape: tuple[int, ...], dtype_ok: bool) -> None:
        h, w = self.input_size
        if not dtype_ok or len(shape) != 4 or tuple(shape[1:]) != (h, w, 3):
            raise BadInput(f"TensorRT engine expects uint8 frames [N, {h}, {w}, 3], "
                           f"got {list(shape)}")

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """Segment a batch: uint8 [N, H, W, 3] BGR → uint8 [N, H, W] class ids (numpy)."""
        with torch.cuda.device(self._device_index):  # the calling thread may be on another GPU
            return self._infer_numpy(frames)

    def _infer_numpy(self, frames: np.ndarray) -> np.ndarray:
        self._require_open()
        frames = np.asarray(frames)
        self._check_frames(frames.shape, frames.dtype == np.uint8)
        n_total, (h, w) = frames.shape[0], self.input_size
        out = np.empty((n_total, h, w), dtype=np.uint8)
        for start in range(0, n_total, self.max_batch):
            n = min(self.max_batch, n_total - start)
            np.copyto(self._host_in_np[:n], frames[start:start + n])
            dev_in, dev_out = self._dev_in[:n], self._dev_out[:n]
            with torch.cuda.stream(self._stream):
                dev_in.copy_(self._host_in[:n], non_blocking=True)  # pinned → async H2D
                self._enqueue(dev_in, dev_out)
                self._host_out[:n].copy_(dev_out, non_blocking=True)
            self._stream.synchronize()  # one sync per chunk: the pinned buffers are reused
            out[start:start + n] = self._host_out_np[:n]
        return out

    def infer_torch(self, frames: torch.Tensor) -> torch.Tensor:
        """Segment frames already on the GPU: uint8 CUDA [N, H, W, 3] → uint8 CUDA [N, H, W].

        Waits for the caller's current stream before reading ``frames`` and synchronises its
        own stream before returning, so the result is ready and ``frames`` may be freed.
        """
        self._require_open()
        self._check_frames(tuple(frames.shape), frames.dtype == torch.uint8)
        if not frames.is_cuda or frames.device.index != self._device_index:
            raise BadInput(f"infer_torch needs frames on cuda:{self._device_index}, "
                           f"got {frames.device}")
        with torch.cuda.device(self._device_index):
            return self._infer_device(frames.contiguous())  # TensorRT reads dense NHWC

    def _infer_device(self, frames: torch.Tensor) -> torch.Tensor:
        h, w = self.input_size
        out = torch.empty((frames.shape[0], h, w), dtype=torch.uint8, device=frames.device)
        self._stream.wait_stream(torch.cuda.current_stream(frames.device))
        with torch.cuda.stream(self._stream):
            for start in range(0, frames.shape[0], self.max_batch):
                stop = min(start + self.max_batch, frames.shape[0])
                src, dst = frames[start:stop], out[start:stop]
                n = stop - start
                # A chunk of a larger batch (or a caller's view) may start off the 256-byte
                # alignment TensorRT requires: stage it through our own (aligned) buffers.
                src_in = src if aligned(src) else self._dev_in[:n].copy_(src)
                dst_out = dst if aligned(dst) else self._dev_out[:n]
                self._enqueue(src_in, dst_out)
                if dst_out is not dst:
                    dst.copy_(dst_out)  # on our stream, before the staging buffer's reuse
        self._stream.synchronize()  # frames/out referenced until here, so never freed early
        return out

    def _require_open(self) -> trt.IExecutionContext:
        """The execution context; StageError once closed."""
        if self._context is None:
            raise StageError("TensorRT backend used after close()")
        return self._context

    def _require_engine(self) -> trt.ICudaEngine:
        if self._engine is None:
            raise StageError("TensorRT backend used after close()")
        return self._engine

    def close(self) -> None:
        """Free the context, engine and buffers (context before engine, as TensorRT needs)."""
        self._context = None
        self._engine = None
        self._runtime = None
        self._dev_in = self._dev_out = self._host_in = self._host_out = None
        self._host_in_np = self._host_out_np = None
