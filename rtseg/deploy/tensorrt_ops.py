"""What the TensorRT 10 ONNX parser accepts, as data, and a pre-flight check of a graph.

Source: ``onnx/onnx-tensorrt``, ``docs/operators.md`` as published for the TensorRT 10.15 GA
release (ONNX-TensorRT changelog entry "TensorRT 10.15 GA Release - 2026-2-2"), whose header
reads "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24".
Earlier 10.x parsers accept less: the 10.0 version of the same file says "opset 9 to opset
20", and ``Attention``, ``RMSNormalization``, ``RotaryEmbedding`` and ``TensorScatter`` only
arrived in 10.15. The parser on the build machine is the final word; this module exists to
give a readable answer *before* a slow build, and on machines without TensorRT.

Restrictions we rely on (same file, "Restrictions" column):
- ``MaxUnpool``: not supported (SegNet's decoder must not export it for TensorRT).
- ``MaxPool``: "2D or 3D pooling only. `Indices` output tensor unsupported" — see also
  NVIDIA/TensorRT issue #3761 ("TensorRT does not support the indices output in MaxPool!").
- ``Resize``: modes ``nearest`` and ``linear`` only; antialiasing not supported.
- "UINT8 is only supported as network input or output tensor types" — which is exactly how the
  deploy graph uses it (``frames`` in, ``labels`` out).
- ``QuantizeLinear``: "`y_zero_point` must be 0"; ``DequantizeLinear``: "`x_zero_point` must be
  zero", quantized types INT8 (and FP8/INT4/FP4), not INT32 — so no quantized bias; TensorRT
  folds a float bias into the int8 convolution. TensorRT quantization is symmetric ("Working
  with Quantized Types"), and its Q/DQ scales are build-time constants.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

SOURCE = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15 GA)"
OPSET_MIN = 9  # inclusive, TensorRT 10.x
OPSET_MAX = 24  # inclusive, TensorRT 10.15; TensorRT 10.0 stops at 20

# Rows marked "Y" in the support matrix.
SUPPORTED_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
    "Atanh", "Attention", "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast",
    "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "GroupNormalization", "GRU", "HammingWindow", "HannWindow", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf",
    "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
    "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RMSNormalization",
    "RNN", "RoiAlign", "RotaryEmbedding", "Round", "STFT", "ScaledTanh", "Scan", "Scatter",
    "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin",
    "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "TensorScatter", "ThresholdedRelu",
    "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

# Rows marked "N": named explicitly so the message can say "listed as unsupported".
UNSUPPORTED_OPS: frozenset[str] = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
    "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer",
    "Unique",
})

# Op-specific hints: why it fails and what to do about it in rtseg.
OP_HINTS: dict[str, str] = {
    "MaxUnpool": "use rtseg.models.unpool's mask-based unpooling, which exports to "
                 "supported ops",
}
RESIZE_MODES = frozenset({"nearest", "linear"})
DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})


def _walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk_nodes(sub)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name}'" if node.name else f"{node.op_type} node"


def _node_problems(node: onnx.NodeProto) -> list[str]:
    """Problems of one default-domain node; empty if TensorRT 10 should parse it."""
    op, label = node.op_type, _node_label(node)
    if op in UNSUPPORTED_OPS:
        hint = OP_HINTS.get(op)
        return [f"{label}: {op} is not supported by TensorRT" + (f" ({hint})" if hint else "")]
    if op not in SUPPORTED_OPS:
        return [f"{label}: {op} is not in TensorRT 10's supported operator list ({SOURCE})"]
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        # The optional second output is the argmax indices SegNet-style unpooling needs.
        return [f"{label}: MaxPool with an Indices output is not supported by TensorRT "
                "(NVIDIA/TensorRT#3761); use rtseg.models.unpool.max_pool_with_mask"]
    if op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        found = []
        if mode not in RESIZE_MODES:
            found.append(f"{label}: Resize mode '{mode}' is not supported by TensorRT "
                         f"(only {', '.join(sorted(RESIZE_MODES))})")
        if _attr(node, "antialias", 0):
            found.append(f"{label}: Resize with antialias=1 is not supported by TensorRT")
        return found
    return []


def _uses_external_data(model: onnx.ModelProto) -> bool:
    tensors = list(model.graph.initializer)
    tensors += [t for node in _walk_nodes(model.graph) for a in node.attribute
                if a.type == onnx.AttributeProto.TENSOR for t in [a.t]]
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


# Types TensorRT's Q/DQ layers quantize to (ONNX TensorProto names).
QDQ_TYPES = frozenset({"INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"})


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and ``Constant`` node values of one graph, by name."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    found[node.output[0]] = a.t
    return found


def _qdq_problems(graph: onnx.GraphProto) -> list[str]:
    """Q/DQ nodes TensorRT's explicit quantization cannot take: a non-zero or non-constant
    zero point, a non-constant or non-positive scale, a quantized type other than int8 / fp8 /
    int4 / fp4 (uint8 only as network I/O; int32 — a quantized bias — never)."""
    from onnx import numpy_helper

    constants = _constants(graph)
    q_type = {}  # quantized tensor name -> element type name
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.domain in DEFAULT_DOMAINS:
            zp = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            to = _attr(node, "output_dtype", 0)
            elem = zp.data_type if zp is not None else (to or onnx.TensorProto.UINT8)
            q_type[node.output[0]] = onnx.TensorProto.DataType.Name(elem)
    problems = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or \
                node.domain not in DEFAULT_DOMAINS:
            continue
        label = _node_label(node)
        scale = constants.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            problems.append(f"{label}: its scale is not a constant; TensorRT needs Q/DQ "
                            "scales at build time")
        elif (numpy_helper.to_array(scale) <= 0).any():
            problems.append(f"{label}: a scale is not positive")
        if len(node.input) > 2 and node.input[2]:
            zp = constants.get(node.input[2])
            if zp is None or numpy_helper.to_array(zp).astype("int64").any():
                problems.append(f"{label}: zero point is not a constant 0; TensorRT quantizes "
                                "symmetrically (ActivationSymmetric/WeightSymmetric)")
        if node.op_type == "QuantizeLinear":
            elem = q_type[node.output[0]]
        else:
            x = node.input[0]
            elem = (onnx.TensorProto.DataType.Name(constants[x].data_type) if x in constants
                    else q_type.get(x))
            if elem is None and len(node.input) > 2 and node.input[2] in constants:
                elem = onnx.TensorProto.DataType.Name(constants[node.input[2]].data_type)
        if elem == "INT32":
            problems.append(f"{label}: dequantizes int32 (a quantized bias); TensorRT takes "
                            "8-bit and smaller types only — keep the bias float "
                            "(QuantizeBias=False)")
        elif elem is not None and elem not in QDQ_TYPES:
            verb = "quantizes to" if node.op_type == "QuantizeLinear" else "dequantizes"
            problems.append(f"{label}: {verb} {elem.lower()}; TensorRT takes int8 (fp8, int4, "
                            "fp4) Q/DQ, uint8 only as a network input or output")
    return problems


def tensorrt_compat_problems(model: onnx.ModelProto, *, opset_min: int = OPSET_MIN,
                             opset_max: int = OPSET_MAX) -> list[str]:
    """Human-readable reasons TensorRT 10's ONNX parser would reject ``model``.

    Checks the default-domain opset against TensorRT's range, operators against the support
    matrix (with the MaxPool-indices and Resize restrictions), Q/DQ nodes against explicit
    quantization's rules (symmetric, int8, constant scales, no int32 bias), custom domains
    (they need a TensorRT plugin) and external weights (rtseg deploys one self-contained
    file). An empty list means "expected to parse", not a guarantee: the parser on the build
    machine decides.

    Example::

        problems = tensorrt_compat_problems(onnx.load("segnet.onnx"))
    """
    problems: list[str] = []
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS and not opset_min <= opset.version <= opset_max:
            problems.append(f"ONNX opset {opset.version} is outside the range TensorRT 10 "
                            f"parses ({opset_min}-{opset_max}); export with an opset in range")
    if _uses_external_data(model):
        problems.append("weights are stored as ONNX external data; rtseg deploy graphs must be "
                        "one self-contained .onnx file")
    seen_domains: set[str] = set()
    for node in _walk_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
            if node.domain not in seen_domains:
                seen_domains.add(node.domain)
                problems.append(f"{_node_label(node)} uses custom op domain '{node.domain}', "
                                "which TensorRT can only run through a plugin")
            continue
        problems.extend(_node_problems(node))
    problems.extend(_qdq_problems(model.graph))
    return problems
