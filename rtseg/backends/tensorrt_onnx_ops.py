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


def tensorrt_compat_problems(model: onnx.ModelProto, *, opset_min: int = OPSET_MIN,
                             opset_max: int = OPSET_MAX) -> list[str]:
    """Human-readable reasons TensorRT 10's ONNX parser would reject ``model``.

    Checks the default-domain opset against TensorRT's range, operators against the support
    matrix (with the MaxPool-indices and Resize restrictions), custom domains (they need a
    TensorRT plugin) and external weights (rtseg deploys one self-contained file). An empty
    list means "expected to parse", not a guarantee: the parser on the build machine decides.

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
    return problems
