"""Small helpers shared by several test modules (imported as ``helpers``: pytest puts this
folder on the import path)."""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import subprocess
import socket
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from rtseg.backends import Backend
from rtseg.data import get_spec
from rtseg.data.classes import engine_metadata
from rtseg.metadata import EngineMetadata
from rtseg.pipeline.sources import Source, VideoFileSource

REPO = Path(__file__).resolve().parents[1]


def bench_script(name: str):
    """``bench/<name>.py`` imported as a module (bench/ holds scripts, not a package), once,
    and registered in ``sys.modules`` (dataclasses look their module up there)."""
    module_name = f"rtseg_bench_{name}"
    if str(REPO / "bench") not in sys.path:  # as `python bench/<name>.py` has it: its siblings
        sys.path.append(str(REPO / "bench"))
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decoded_frames(path: Path) -> int:
    """How many frames OpenCV decodes from ``path`` (read one by one, not the container's
    possibly estimated count; 0 when it cannot be opened)."""
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def engine_meta(model: str = "tiny", input_size=(64, 96), dataset: str = "camvid",
                precision: str = "fp32", **extra) -> EngineMetadata:
    """What ``rtseg train`` writes for ``model`` trained on ``dataset`` (CamVid unless said)
    at ``input_size``; ``extra`` adds keys such as the recipe."""
    meta = engine_metadata(model, get_spec(dataset), input_size, **extra)
    return meta if precision == "fp32" else meta.with_updates(precision=precision)


def blue_bands(frames: np.ndarray, num_classes: int = 11) -> np.ndarray:
    """Class ids from the blue channel in bands of 24: a label map that follows the picture."""
    return frames[..., 0] // 24 % num_classes


class FakeBackend(Backend):
    """An engine without a network: labels by ``rule`` (default :func:`blue_bands`).

    ``delay`` seconds per batch; from batch number ``fail_on`` on it raises. ``calls`` records
    each batch as (shape, dtype, copy of its first frame, thread)."""

    name = "fake"

    def __init__(self, input_size=(16, 24), delay: float = 0.0, fail_on: int | None = None,
                 dataset: str = "camvid", rule=None):
        super().__init__(engine_meta("fake", input_size, dataset), "cpu", "fp32")
        self.delay, self.fail_on, self.rule = delay, fail_on, rule
        self.calls: list[tuple] = []

    def infer(self, frames: np.ndarray) -> np.ndarray:
        self.calls.append((frames.shape, frames.dtype, frames[0].copy(),
                           threading.current_thread()))
        if self.fail_on is not None and len(self.calls) >= self.fail_on:
            raise RuntimeError("boom in the engine")
        time.sleep(self.delay)  # even 0: a real engine lets other threads run while it works
        if self.rule is None:
            return blue_bands(frames, self.metadata.num_classes).astype(np.uint8)
        return self.rule(frames).astype(np.uint8)


def tiny_graph(input_size=(64, 96), precision: str = "fp32", metadata: bool = True,
               input_name: str = "frames", **extra):
    """The smallest rtseg deploy graph: uint8 frames → argmax over B, G, R → uint8 labels,
    with rtseg's CamVid metadata at ``precision`` (none when ``metadata`` is false) and the
    ``extra`` keys. ``int8`` puts a symmetric Q/DQ pair before the argmax, as ``rtseg export
    --int8`` would."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = input_size
    nodes = [helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT)]
    inits = []
    if precision == "int8":
        inits = [numpy_helper.from_array(np.array(1.0, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, np.int8), "zp")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
                  helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq")]
    nodes += [helper.make_node("ArgMax", [nodes[-1].output[0]], ["ids"], axis=3, keepdims=0),
              helper.make_node("Cast", ["ids"], ["labels"], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", h, w])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if metadata:
        helper.set_model_props(model, engine_meta("tiny", input_size, precision=precision,
                                                  **extra).to_strings())
    onnx.checker.check_model(model)
    return model


def save_tiny_graph(path: Path, **kwargs) -> Path:
    """:func:`tiny_graph` saved at ``path``."""
    import onnx

    onnx.save(tiny_graph(**kwargs), str(path))
    return path


CONTRACT_SIZE = (16, 16)  # 768 bytes a frame in, 256 out: 256-byte aligned chunks
CLASSES = 11


def contract_model(precision: str = "fp32", opset: int = 17):
    """Smallest graph honouring the deploy contract: uint8 NHWC frames → uint8 labels, with
    the real export's int64 → float → uint8 cast of the argmax (TensorRT casts to uint8 only
    from fp32/fp16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ftype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    np_type = np.float16 if precision == "fp16" else np.float32
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((CLASSES, 3, 1, 1)).astype(np_type), "w")
    bias = numpy_helper.from_array(np.zeros(CLASSES, np_type), "b")
    nodes = [
        helper.make_node("Cast", ["frames"], ["x"], to=ftype, name="to_float"),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2], name="nhwc_to_nchw"),
        helper.make_node("Conv", ["nchw", "w", "b"], ["logits"], name="head"),
        helper.make_node("ArgMax", ["logits"], ["ids"], axis=1, keepdims=0, name="argmax"),
        helper.make_node("Cast", ["ids"], ["ids_float"], to=ftype, name="ids_to_float"),
        helper.make_node("Cast", ["ids_float"], ["labels"], to=TensorProto.UINT8,
                         name="to_uint8"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", *CONTRACT_SIZE, 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", *CONTRACT_SIZE])],
        initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    helper.set_model_props(model, engine_meta("tiny", CONTRACT_SIZE, precision=precision).to_strings())
    onnx.checker.check_model(model)
    return model


def fake_build_engine(calls: list):
    """A stand-in for ``engine_build.build_engine`` (TensorRT is not installed here): records
    each call as (onnx_path, out, keyword arguments) and resolves the precision from the
    graph's metadata, as the real build does."""
    from rtseg.deploy.build_plan import check_precision, read_onnx_metadata

    def build(onnx_path, out, **kw):
        calls.append((onnx_path, out, kw))
        precision = check_precision(read_onnx_metadata(onnx_path)[0].precision, kw["precision"])
        return {"plan": str(out), "precision": precision, "tensorrt_version": "10.x",
                "gpu_name": "test GPU"}
    return build


# --- a real rtseg process, stopped by a real signal ------------------------------------------
def rtseg_process(args: list) -> subprocess.Popen:
    """``python -m rtseg ARGS`` in a child process, stderr piped line by line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "rtseg", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, pattern: str, seen: list, timeout: float = 120):
    """Read stderr until a line matches ``pattern`` (the lines go to ``seen``)."""
    deadline = time.monotonic() + timeout
    while line := proc.stderr.readline():
        seen.append(line)
        if re.search(pattern, line):
            return
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s: {seen}"
    raise AssertionError(f"ended without {pattern!r}: {seen}")


def signal_after_line(args: list, pattern: str, signum: int) -> tuple[int, str]:
    """``python -m rtseg ARGS``, sent ``signum`` once a stderr line matches ``pattern``: its
    exit code and whole stderr (the child is killed whatever happens)."""
    proc = rtseg_process(args)
    seen: list = []
    try:
        wait_for_line(proc, pattern, seen)
        stderr = stop_with(proc, signum, seen)
    finally:
        proc.kill()
    return proc.returncode, stderr


def stop_with(proc: subprocess.Popen, signum: int, seen: list, timeout: float = 60) -> str:
    """Send ``signum``; the rest of stderr once the process has ended (killed after
    ``timeout`` s: a hang fails the test rather than blocking it)."""
    proc.send_signal(signum)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        rest = proc.stderr.read()
        proc.wait()
    finally:
        killer.cancel()
    return "".join(seen) + rest


class BreakingSource(Source):
    """A video file whose reads raise after ``frames`` frames (a camera driver failing)."""

    def __init__(self, clip: Path, frames: int):
        self.video, self.left = VideoFileSource(clip), frames
        self.fps, self.size, self.description = self.video.fps, self.video.size, str(clip)

    def read(self, stop):
        if self.left == 0:
            raise OSError(errno.EIO, "VIDIOC_DQBUF: Input/output error")
        self.left -= 1
        return self.video.read(stop)

    def close(self):
        self.video.close()
