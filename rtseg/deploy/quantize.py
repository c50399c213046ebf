"""INT8: calibrate an fp32 deploy graph on real frames and write it explicitly quantized.

TensorRT 11 takes INT8 only as explicit ``QuantizeLinear``/``DequantizeLinear`` (Q/DQ) nodes in
the ONNX graph (implicit quantization and its calibrators are gone), and ONNX Runtime on a CPU
with VNNI runs the same Q/DQ graph with integer kernels. The quantizer is ONNX Runtime's
``quantize_static`` (QDQ format); nothing here computes a scale or rounds a weight.

The scheme, as TensorRT's explicit quantization expects it ("Working with Quantized Types" /
"Explicit Quantization" in the TensorRT 10 and 11 documentation): **symmetric int8** (zero
points 0), **per-channel weights** (axis 0, stored int8 behind a ``DequantizeLinear``),
**per-tensor activations**, and the bias left in float (``QuantizeBias=False``: TensorRT does
not dequantize int32 and folds the bias into the convolution itself). Q/DQ nodes go around the
convolutions — their activation input, their weights and their output — so ONNX Runtime fuses
each ``DQ → Conv → Q`` into one ``QLinearConv`` and TensorRT fuses it into an int8 convolution
(an output Q/DQ pair is one of the two layouts the TensorRT guide shows it fusing), and around
the residual additions of ResNet encoders (TensorRT's guide: quantize the residual input;
ONNX Runtime: ``QLinearAdd``). Each reader gets its own Q/DQ pair (``DedicatedQDQPair``), and
a pair put on a tensor for a convolution's input belongs to that convolution: the tensor's
other readers read it in float (``keep_float_readers_float``). Two convolutions stay float,
as is usual: the first one, which reads the 3-channel image (no int8 speed-up with 3 input
channels, and the most sensitive layer), and the last one, whose logits go to the argmax
(int8 logits would turn near-ties into ties). Everything else of the
deploy graph is left as it is: the uint8 ``frames`` / ``labels`` ends, the normalisation, the
argmax and its casts, resizes, pools and SegNet's unpooling mask (its ``Equal`` compares a
pooled maximum with the window it came from, which must stay in one precision).

Calibration frames come from a frame folder or a video, spread evenly over it, resized
exactly as the live pipeline resizes them (``rtseg.imageops.resize_frame``).

>>> calib = Calibration("runs/frames", frames=64)
>>> frames = read_calibration_frames(calib, (352, 480))
>>> int8 = quantize_graph(onnx.load("segnet_fp32.onnx"), frames, calib)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtseg.errors import BadInput, RtsegError
from rtseg.metadata import INPUT_NAME

# How the activation ranges are found. The default is the one that keeps the mIoU on CamVid
# val for every model tried (bench/int8_cpu.py, bench/results/int8_*.md; CamVid train frames):
# with 128 frames entropy lost 0.03 point on both the bundled unet_vgg16 (192x256) and
# segnet_r50 (352x480); with 64 frames min-max lost up to 9.6 and percentile up to 4.4 —
# segnet_r50 has activation outliers that stretch a min-max range (entropy: +0.06). More frames
# help entropy: unet_vgg16 kept -0.36 with 64 frames, -0.03 with 128.
METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "entropy"
DEFAULT_FRAMES = 128
MIN_FRAMES = 8  # below this the ranges describe a handful of images, not the scene
CALIB_BATCH = 4  # frames per calibration run: bounds the memory of the recorded activations
QUANTIZED_OPS = ("Conv", "Add")
# Ops that mean "this graph is quantized already".
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                        "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})

Log = Callable[[str], None]

if TYPE_CHECKING:  # onnx and numpy load with the functions that use them: the CLI starts fast
    import numpy as np
    import onnx

    from rtseg.metadata import EngineMetadata


@dataclass(frozen=True)
class Calibration:
    """What ``rtseg export --int8`` calibrates on: ``--calib``, ``--calib-frames`` and the
    range method (``minmax``, ``percentile`` or ``entropy``)."""

    source: str | Path
    frames: int = DEFAULT_FRAMES
    method: str = DEFAULT_METHOD

    def check(self) -> None:
        """BadInput for settings that cannot calibrate, before any work is done."""
        if self.method not in METHODS:
            raise BadInput(f"--calib-method {self.method}: use one of {', '.join(METHODS)}")
        if int(self.frames) < MIN_FRAMES:
            raise BadInput(f"--calib-frames {self.frames}: calibration needs at least "
                           f"{MIN_FRAMES} frames ({DEFAULT_FRAMES} by default)")
        text = str(self.source)
        from rtseg.pipeline.sources import is_stream_url

        if text.isdigit() or is_stream_url(text):
            raise BadInput(f"--calib {text}: calibrate on a frame folder or a video file, "
                           "not a camera or a live stream")
        path = Path(text)
        if not path.exists():
            raise BadInput(f"--calib {text}: not found (expected a frame folder or a video file)")


def is_quantized(model: onnx.ModelProto) -> bool:
    """True if the graph already holds Q/DQ or integer-arithmetic nodes."""
    return any(node.op_type in _QUANT_OPS for node in model.graph.node)


def check_quantizable(model: onnx.ModelProto) -> None:
    """BadInput unless ``model`` is an fp32 graph without Q/DQ nodes (checked before the
    calibration frames are read, so a wrong graph fails at once)."""
    precision = _json({p.key: p.value for p in model.metadata_props}.get("precision"))
    if is_quantized(model) or precision == "int8":
        raise BadInput("this graph is already quantized (it has Q/DQ nodes); quantize the fp32 "
                       "export instead (rtseg export without --fp16 or --int8)")
    if precision not in (None, "fp32"):
        raise BadInput(f"this graph is {precision}; int8 calibration starts from the fp32 "
                       "export (rtseg export without --fp16)")


def load_fp32_graph(path: Path | str) -> tuple["onnx.ModelProto", "EngineMetadata"]:
    """An fp32 rtseg deploy graph to quantize, and its metadata; BadInput for a file that is
    missing, unreadable, lacks rtseg's metadata, or is not fp32 (``check_quantizable``)."""
    import onnx

    from rtseg.metadata import EngineMetadata

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"--checkpoint {path}: file not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"--checkpoint {path} is not a readable ONNX model: {first}") from None
    meta = EngineMetadata.from_strings({p.key: p.value for p in model.metadata_props},
                                       source=str(path))
    check_quantizable(model)
    return model, meta


def read_calibration_frames(calib: Calibration, size: tuple[int, int] | list[int],
                            log: Log | None = None) -> np.ndarray:
    """``calib.frames`` frames of ``calib.source``, evenly spread over it and resized to ``size``
    (H, W) as the pipeline resizes them: uint8 [N, H, W, 3] BGR.

    Unreadable frames of a folder are skipped with a warning. BadInput for a source that is
    missing, empty or unreadable, or that yields fewer than ``MIN_FRAMES`` frames; a source
    with fewer frames than asked for (but enough) is used whole, with a note.
    """
    import numpy as np

    log = log or (lambda _msg: None)
    calib.check()
    from rtseg.pipeline.sources import open_source
    from rtseg.imageops import resize_frame

    size = (int(size[0]), int(size[1]))
    wanted = int(calib.frames)
    source = open_source(calib.source, on_message=log)  # BadInput: empty, unreadable
    try:
        # Spread the frames over the whole source: consecutive video frames are near copies.
        total = len(getattr(source, "files", ())) or int(getattr(source, "expected", 0))
        stride = max(1, total // wanted) if total else 1
        frames = [resize_frame(image, size) for image in _every(source, stride, wanted)]
    finally:
        source.close()
    if len(frames) < MIN_FRAMES:
        raise BadInput(f"--calib {calib.source}: only {len(frames)} frame(s) could be read; "
                       f"calibration needs at least {MIN_FRAMES}")
    if len(frames) < wanted:
        log(f"note: --calib {calib.source} has {len(frames)} frames; calibrating on all of "
            f"them (--calib-frames {wanted})")
    return np.stack(frames)


def _every(source, stride: int, count: int) -> Iterator[np.ndarray]:
    """Every ``stride``-th frame of ``source``, at most ``count`` of them."""
    stop, index, kept = threading.Event(), 0, 0
    while kept < count:
        got = source.read(stop)
        if got is None:
            return
        if index % stride == 0:
            kept += 1
            yield got[0]
        index += 1


def float_boundary_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions kept in float: those that read the image (no Conv between
    them and a graph input) and those that make the logits (no Conv between them and a graph
    output)."""
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}

    def reach(starts: list[str], step: Callable[["onnx.NodeProto"], list["onnx.NodeProto"]],
              first: Callable[[str], list[onnx.NodeProto]]) -> set[str]:
        found, seen = set(), set()
        todo = [n for s in starts for n in first(s)]
        while todo:
            node = todo.pop()
            key = id(node)
            if key in seen:
                continue
            seen.add(key)
            if node.op_type == "Conv":
                found.add(node.name)
            else:
                todo.extend(step(node))
        return found

    downstream = lambda n: [c for o in n.output for c in consumers.get(o, [])]  # noqa: E731
    upstream = lambda n: [producer[i] for i in n.input if i in producer]  # noqa: E731
    first = reach([i.name for i in graph.input], downstream, lambda s: consumers.get(s, []))
    last = reach([o.name for o in graph.output], upstream,
                 lambda s: [producer[s]] if s in producer else [])
    return sorted(first | last)


def keep_float_readers_float(model: "onnx.ModelProto") -> int:
    """Give the float consumers of a tensor quantized *for a convolution's input* the tensor
    itself again, instead of its Q/DQ copy; returns how many inputs were re-pointed.

    ``quantize_static`` puts one Q/DQ pair on such a tensor and points every consumer at the
    dequantized copy. In TensorRT's explicit quantization a Q/DQ pair belongs to the layer it
    feeds, and that is what SegNet needs: its unpooling mask compares the pooled maximum with
    the window it came from (``Equal``), and with a rounded maximum against an exact window the
    mask comes out empty. Q/DQ pairs on a convolution's *output* stay shared — their consumers
    are what makes the convolution's output int8 (``DQ → Conv → Q``, ONNX Runtime's QLinearConv).
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    weights = {t.name for t in graph.initializer}
    moved = 0
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] in weights:
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        source = producer.get(q.input[0])
        if source is not None and source.op_type in QUANTIZED_OPS:
            continue  # an int8 output: its readers stay on the Q/DQ copy
        for node in graph.node:
            if node.op_type in QUANTIZED_OPS:
                continue
            for i, name in enumerate(node.input):
                if name == dq.output[0]:
                    node.input[i] = q.input[0]
                    moved += 1
    _drop_unread_qdq(graph)
    return moved


def _drop_unread_qdq(graph: "onnx.GraphProto") -> None:
    """Remove Q/DQ nodes nothing reads any more (a float reader's dedicated pair)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and n.output[0] not in read]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


class _FrameReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over frames in memory, in batches of
    ``CALIB_BATCH``; ``set_range`` lets the calibrator record a few batches at a time."""

    def __init__(self, frames: "np.ndarray", batch: int = CALIB_BATCH):
        self.batches = [frames[i:i + batch] for i in range(0, len(frames), batch)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, end_index

    def rewind(self) -> None:
        self.position = 0

    def get_next(self) -> dict | None:
        import numpy as np

        if self.position >= self.end:
            return None
        self.position += 1
        return {INPUT_NAME: np.ascontiguousarray(self.batches[self.position - 1])}


def quantize_graph(model: onnx.ModelProto, frames: np.ndarray, calib: Calibration,
                   log: Log | None = None) -> onnx.ModelProto:
    """The int8 Q/DQ deploy graph of the fp32 deploy graph ``model``, calibrated on ``frames``
    (uint8 [N, H, W, 3] BGR at the graph's input size).

    Metadata: ``precision`` becomes ``int8``; ``calibration_source``, ``calibration_frames``,
    ``calibration_method``, ``quantizer`` and ``float_layers`` are added. ``model`` is not
    changed. BadInput for a graph that is quantized already or is not fp32.
    """
    import onnx
    from onnxruntime import __version__ as ort_version

    log = log or (lambda _msg: None)
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    check_quantizable(model)
    props = {p.key: p.value for p in model.metadata_props}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calib.method]
    keep_float = float_boundary_convs(model)
    found = {op: sum(n.op_type == op for n in model.graph.node) for op in QUANTIZED_OPS}
    found["Conv"] -= len(keep_float)
    counts = ", ".join(f"{n} {op}" for op, n in found.items() if n)
    log(f"calibrating on {len(frames)} frames of {calib.source} ({calib.method}); int8 around "
        f"{counts}; float: {', '.join(keep_float) or 'none'}")
    reader = _FrameReader(frames)
    options = {
        "ActivationSymmetric": True,  # TensorRT: zero point 0 everywhere
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT does not dequantize int32; it folds float bias
        # One Q/DQ pair per reader: ONNX Runtime fuses a DQ into one QLinearConv only, and a
        # ResNet block's input feeds two convolutions (ModelOpt's TensorRT setting too).
        "DedicatedQDQPair": True,
        "CalibStridedMinMax": 1,  # record one batch at a time (memory), merge the ranges
    }
    with tempfile.TemporaryDirectory(prefix="rtseg-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        try:
            with _quiet_quantizer():
                quantize_static(
                    model, out, reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=keep_float,
                    per_channel=True, reduce_range=False, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method,
                    calibration_providers=["CPUExecutionProvider"], extra_options=options)
        except (ValueError, RuntimeError) as exc:  # ORT raises plain exceptions here
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RtsegError(f"onnxruntime quantize_static failed: {first}") from exc
        quantized = onnx.load(str(out))
    keep_float_readers_float(quantized)
    if not is_quantized(quantized):
        raise RtsegError("onnxruntime quantize_static inserted no Q/DQ node")
    props.update({k: json.dumps(v) for k, v in {
        "precision": "int8",
        "calibration_source": str(calib.source),
        "calibration_frames": int(len(frames)),
        "calibration_method": calib.method,
        "quantizer": f"onnxruntime {ort_version} quantize_static, QDQ: int8 symmetric, "
                     "per-channel weights, per-tensor activations, float bias",
        "float_layers": keep_float,
    }.items()})
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, props)
    quantized.producer_name = model.producer_name
    quantized.producer_version = model.producer_version
    quantized.graph.name, quantized.doc_string = model.graph.name, model.doc_string.replace(
        "fp32", "int8 Q/DQ")
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RtsegError(f"the int8 graph fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return quantized


@contextlib.contextmanager
def _quiet_quantizer():
    """Keep the quantizer's chatter off the terminal: its progress ``print``s (stdout is for
    results) and its advice to run its pre-processing (a root-logger warning about shape
    inference, which torch's exporter already did for every tensor)."""

    def advice(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(advice)


def _json(value: str | None):
    """A metadata value (JSON strings, see EngineMetadata.to_strings) or None."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
