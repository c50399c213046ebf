"""Edits of an exported ONNX graph that keep what it computes: constant upsampling scales,
dead nodes out, the exporter's per-node debugging metadata out, and who reads each tensor (``rtseg.deploy.export`` and
``rtseg.deploy.quantize`` use them; ``fp16_graph`` holds the fp16 conversion)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def static_resize_scales(model: onnx.ModelProto) -> int:
    """Give each ``Resize`` whose output is a whole multiple of its input constant ``scales``
    instead of ``sizes`` computed at run time from ``Shape`` (how the exporter writes
    ``F.interpolate(scale_factor=2)`` with a dynamic batch); returns how many were changed.

    The same output either way (the scale is an exact integer), but a ``Shape`` reading a
    tensor keeps ONNX Runtime from running the upsampling and the concatenation after it in
    int8, and a constant is simpler for TensorRT too. The dead shape arithmetic is removed.
    """
    graph = model.graph
    shapes = {}
    for info in (*onnx.shape_inference.infer_shapes(model).graph.value_info, *graph.input):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    producer = {out: node for node in graph.node for out in node.output}
    constants = {t.name: t for t in graph.initializer}
    changed = 0
    for node in graph.node:
        if node.op_type != "Resize" or len(node.input) != 4:
            continue
        sizes, src = producer.get(node.input[3]), shapes.get(node.input[0])
        if (sizes is None or sizes.op_type != "Concat" or len(sizes.input) != 2
                or sizes.input[1] not in constants or not src or None in src[2:]):
            continue
        spatial = numpy_helper.to_array(constants[sizes.input[1]]).tolist()
        if len(spatial) != len(src) - 2 or any(o % i for o, i in zip(spatial, src[2:])):
            continue
        scales = np.array([1, 1, *(o // i for o, i in zip(spatial, src[2:]))], np.float32)
        name = f"{node.name}_scales"
        graph.initializer.append(numpy_helper.from_array(scales, name))
        node.input[2] = name
        del node.input[3]
        changed += 1
    drop_dead_nodes(graph)
    return changed


def tensor_readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """For each tensor name, the nodes that read it, in graph order."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove the nodes none of whose outputs is read (repeatedly, so whole dead chains go)
    and the initializers nothing reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)


def strip_node_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debugging metadata (Python stack traces with local file
    paths, FX node names, name scopes): nothing that runs the graph reads it, and a deploy
    graph should not reveal where it was exported."""
    for graph_nodes in [model.graph.node, *(f.node for f in model.functions)]:
        for node in graph_nodes:
            del node.metadata_props[:]
