"""INT8: calibrate an fp32 deploy graph on real frames and write it explicitly quantized.

TensorRT 11 takes INT8 only as explicit ``QuantizeLinear``/``DequantizeLinear`` (Q/DQ) nodes in
the ONNX graph (implicit quantization and its calibrators are gone), and ONNX Runtime on a CPU
with VNNI runs Q/DQ graphs with integer kernels. The quantizer is ONNX Runtime's
``quantize_static`` (QDQ format); nothing here computes a scale or rounds a weight. Two
layouts (``--int8-target``, ``SCHEMES``):

**tensorrt** (the default), as TensorRT's explicit quantization expects it ("Working with
Quantized Types" / "Explicit Quantization" in the TensorRT 10 and 11 documentation):
**symmetric int8** (zero points 0), **per-channel weights** (axis 0, stored int8 behind a
``DequantizeLinear``), **per-tensor activations**, and the bias left in float
(``QuantizeBias=False``: TensorRT does not dequantize int32 and folds the bias into the
convolution itself). Q/DQ nodes go around the convolutions — their activation input, their
weights and their output — so ONNX Runtime fuses each ``DQ → Conv → Q`` into one
``QLinearConv`` and TensorRT fuses it into an int8 convolution (an output Q/DQ pair is one of
the two layouts the TensorRT guide shows it fusing), and around the residual additions of
ResNet encoders (TensorRT's guide: quantize the residual input; ONNX Runtime: ``QLinearAdd``).
The graph runs on ONNX Runtime too, CPUs included.

**cpu**, ONNX Runtime's own layout for x86 and Arm CPUs: **uint8 activations with zero
points** (asymmetric ranges), so a ReLU after a convolution disappears into its output range
(the quantized minimum is 0), and pooling, upsampling and the decoder's concatenations stay
int8 between the convolutions instead of going back to float around each one. Weights,
bias and the float layers are as above. TensorRT takes no zero points: ``rtseg build-engine``
refuses this graph. On a 2-core Xeon (AVX-512 VNNI) it ran the bundled unet_vgg16 at 2.82x
the fp32 graph's FPS, the tensorrt layout at 2.22x, losing 0.02 point of mIoU against 0.34
(bench/results/int8_bundled_320x448_targets_cpu.md).

In both, each reader gets its own Q/DQ pair (``DedicatedQDQPair``), and a pair put on a
tensor for a quantized op's input belongs to that op: the tensor's other readers read it in
float (``keep_float_readers_float``). Two convolutions stay float, as is usual: the first one,
which reads the 3-channel image (no int8 speed-up with 3 input channels, and the most
sensitive layer), and the last one, whose logits go to the argmax (int8 logits would turn
near-ties into ties). The uint8 ``frames`` / ``labels`` ends, the normalisation, the argmax
and its casts, and SegNet's unpooling mask (its ``Equal`` compares a pooled maximum with the
window it came from, which must stay in one precision) are left as they are.

>>> calib = Calibration("runs/frames", frames=64, target="cpu")
>>> frames = read_calibration_frames(calib, (352, 480))
>>> int8 = quantize_graph(onnx.load("segnet_fp32.onnx"), frames, calib)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtseg.deploy.calibration import Calibration, FrameReader, Log
from rtseg.deploy.graph_edits import drop_dead_nodes, tensor_readers
from rtseg.errors import BadInput, RtsegError
from rtseg.metadata import EngineMetadata

# Ops that mean "this graph is quantized already".
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                        "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})
# Ops that only move or pick values: int8 in, int8 out with the input's scale (ONNX Runtime
# runs them on the quantized tensor, QLinearConcat requantizes).
_DATA_MOVERS = ("MaxPool", "Resize", "Concat")

if TYPE_CHECKING:  # annotations only (the export, which imports this module, loads onnx)
    import numpy as np
    import onnx


@dataclass(frozen=True)
class Scheme:
    """How ``quantize_static`` lays out one ``--int8-target``."""

    ops: tuple[str, ...]  # op types quantized
    unsigned_activations: bool  # uint8 activations with zero points (else int8, zero point 0)
    description: str  # for the graph's ``quantizer`` metadata


SCHEMES = {
    "tensorrt": Scheme(("Conv", "Add"), False,
                       "int8 symmetric activations (TensorRT explicit quantization)"),
    "cpu": Scheme(("Conv", "Add", "Relu", *_DATA_MOVERS), True,
                  "uint8 asymmetric activations, ReLU folded, int8 pooling/resize/concat "
                  "(ONNX Runtime on CPUs; not TensorRT)"),
}


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

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"--checkpoint {path}: file not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"--checkpoint {path} is not a readable ONNX model: {first}") from None
    meta = EngineMetadata.from_onnx(model, source=str(path))
    check_quantizable(model)
    return model, meta


def float_boundary_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions kept in float: those that read the image (no Conv between
    them and a graph input) and those that make the logits (no Conv between them and a graph
    output)."""
    graph = model.graph
    consumers = tensor_readers(graph)
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


def float_data_movers(model: "onnx.ModelProto", ops: tuple[str, ...]) -> list[str]:
    """Names of the pools, resizes and concatenations in ``ops`` that must stay float because
    something reads their output in float (SegNet's unpooling mask, a graph output): an int8
    op there would hand its float readers rounded values. Found from the outputs back, in one
    pass (ONNX nodes are in topological order: a node's readers come after it)."""
    movers = [n for n in model.graph.node if n.op_type in _DATA_MOVERS and n.op_type in ops]
    readers = tensor_readers(model.graph)
    outputs = {o.name for o in model.graph.output}
    floating: set[str] = set()
    for node in reversed(movers):
        after = [r for o in node.output for r in readers.get(o, [])]
        if (any(o in outputs for o in node.output)
                or any(r.op_type not in ops or r.name in floating for r in after)):
            floating.add(node.name)
    return sorted(floating)


def keep_float_readers_float(model: "onnx.ModelProto", ops: tuple[str, ...],
                             float_nodes: Collection[str]) -> int:
    """Give the float consumers of a tensor quantized *for an op's input* (an op of ``ops``
    not named in ``float_nodes``) the tensor itself again, instead of its Q/DQ copy; returns
    how many inputs were re-pointed.

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
    int8 = lambda node: node.op_type in ops and node.name not in float_nodes  # noqa: E731
    moved = 0
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] in weights:
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        source = producer.get(q.input[0])
        if source is not None and int8(source):
            continue  # an int8 output: its readers stay on the Q/DQ copy
        for node in graph.node:
            if int8(node):
                continue
            for i, name in enumerate(node.input):
                if name == dq.output[0]:
                    node.input[i] = q.input[0]
                    moved += 1
    drop_dead_nodes(graph)  # the float readers' dedicated pairs
    return moved


def quantize_graph(model: onnx.ModelProto, frames: np.ndarray, calib: Calibration,
                   log: Log | None = None) -> onnx.ModelProto:
    """The int8 Q/DQ deploy graph of the fp32 deploy graph ``model``, calibrated on ``frames``
    (uint8 [N, H, W, 3] BGR at the graph's input size).

    Weights get ``calib.weight_bits`` bits (7 by default, safe on every x86 CPU: see
    ``calibration.WEIGHT_BITS``). Metadata: ``precision`` becomes ``int8``;
    ``calibration_source``, ``calibration_frames``, ``calibration_method``, ``weight_bits``,
    ``quantizer`` and ``float_layers`` are added. ``model`` is not changed. BadInput for a graph that is
    quantized already or is not fp32.
    """
    import onnx
    from onnxruntime import __version__ as ort_version

    log = log or (lambda _msg: None)
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    check_quantizable(model)
    scheme = SCHEMES[calib.target]
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calib.method]
    keep_float = float_boundary_convs(model)
    float_nodes = keep_float + float_data_movers(model, scheme.ops)
    found = Counter(n.op_type for n in model.graph.node
                    if n.op_type in scheme.ops and n.name not in float_nodes)
    counts = ", ".join(f"{found[op]} {op}" for op in scheme.ops if found[op])
    log(f"calibrating on {len(frames)} frames of {calib.source} ({calib.method}, for "
        f"{calib.target}); int8 around {counts}; float: {', '.join(keep_float) or 'none'}")
    reader = FrameReader(frames)
    activations = QuantType.QUInt8 if scheme.unsigned_activations else QuantType.QInt8
    options = {
        # TensorRT: zero point 0 everywhere; cpu: ranges of their own, ReLU folded into them.
        "ActivationSymmetric": not scheme.unsigned_activations,
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
                    op_types_to_quantize=list(scheme.ops),
                    nodes_to_exclude=float_nodes, per_channel=True,
                    reduce_range=calib.weight_bits == 7, activation_type=activations,
                    weight_type=QuantType.QInt8, calibrate_method=method,
                    calibration_providers=["CPUExecutionProvider"], extra_options=options)
        except (ValueError, RuntimeError) as exc:  # ORT raises plain exceptions here
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RtsegError(f"onnxruntime quantize_static failed: {first}") from exc
        quantized = onnx.load(str(out))
    keep_float_readers_float(quantized, scheme.ops, float_nodes)
    if not is_quantized(quantized):
        raise RtsegError("onnxruntime quantize_static inserted no Q/DQ node")
    EngineMetadata.from_onnx(model).with_updates(
        precision="int8", calibration_source=str(calib.source),
        calibration_frames=int(len(frames)), calibration_method=calib.method,
        int8_target=calib.target, weight_bits=calib.weight_bits,
        quantizer=f"onnxruntime {ort_version} quantize_static, QDQ: {scheme.description}; "
                  f"int8 symmetric per-channel weights ({calib.weight_bits}-bit range), per-tensor "
                  "activations, float bias",
        float_layers=keep_float).write_onnx(quantized)
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
