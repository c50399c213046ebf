"""An fp32 deploy graph as an fp16 one: float32 initializers, constants and casts become fp16,
while the uint8 ends, the argmax → cast → uint8 chain and what ONNX requires in float32
(Resize scales) stay as they are. Used by ``rtseg export --fp16`` and by ``rtseg build-engine``
(TensorRT builds strongly typed networks, so fp16 must be in the graph itself)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import numpy_helper

from rtseg.errors import BadInput, RtsegError
from rtseg.metadata import EngineMetadata

_COMPARISONS = frozenset({"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"})


def drop_exact_upcasts(model: onnx.ModelProto) -> int:
    """Let comparisons read fp16 directly where the exporter casted both inputs to fp32.

    torch's decompositions compute ``eq`` of half tensors in float32 (the unpooling mask's
    ``window == pooled``). fp16 → fp32 is exact, so comparing the fp16 values gives the same
    booleans without materialising fp32 copies. Returns the number of Cast nodes removed.
    """
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    producer = {out: node for node in graph.node for out in node.output}

    def fp16_source(name: str) -> str | None:
        node = producer.get(name)
        if node is None or node.op_type != "Cast":
            return None
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        src = node.input[0]
        ok = to == onnx.TensorProto.FLOAT and types.get(src) == onnx.TensorProto.FLOAT16
        return src if ok else None

    for node in graph.node:
        if node.op_type in _COMPARISONS:
            sources = [fp16_source(i) for i in node.input]
            if all(sources):
                node.input[:] = sources
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
    for node in dead:
        graph.node.remove(node)
    dead_names = {n.output[0] for n in dead}
    kept_info = [v for v in graph.value_info if v.name not in dead_names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return len(dead)


def float32_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that produce a float32 tensor (after shape inference), as "OpType name".

    For an fp16 export this should be empty: any entry is fp32 compute TensorRT would run
    in a strongly typed network.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.value_info, *graph.output]}
    return [f"{n.op_type} {n.name or n.output[0]}" for n in graph.node
            if any(types.get(o) == onnx.TensorProto.FLOAT for o in n.output)]


# Inputs ONNX types as tensor(float) whatever the data type: they stay float32 in an fp16 graph.
_FLOAT32_INPUTS = {"Resize": (2,), "Upsample": (1,)}
_FP16_MAX = float(np.finfo(np.float16).max)


def _to_fp16_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    values = numpy_helper.to_array(tensor)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > _FP16_MAX:
        raise RtsegError(f"tensor '{tensor.name}' holds values beyond the fp16 range "
                         f"(|x| up to {float(np.abs(finite).max()):.3g}); build this graph "
                         "with --fp32")
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def graph_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 deploy graph converted to fp16, as ``rtseg export --fp16`` would have written it.

    Every float32 initializer, ``Constant``/``ConstantOfShape`` value and ``Cast(to=FLOAT)``
    becomes fp16; the uint8 ``frames``/``labels`` ends and the int → float → uint8 cast of the
    argmax stay as they are (the float step becomes fp16, which holds class ids < 2048
    exactly). Inputs ONNX defines as float32 only (Resize scales) keep float32. The result
    passes ``onnx.checker`` and has no float32 compute (``float32_nodes``), so a strongly
    typed TensorRT network built from it runs in fp16 throughout — in particular SegNet's
    pooled maximum and the window it is compared with (the unpooling mask's ``Equal``) are
    both fp16. ``model`` is left unchanged; metadata ``precision`` becomes ``fp16``.

    Example::

        fp16 = graph_to_fp16(onnx.load("segnet_fp32.onnx"))
    """
    model = copy.deepcopy(model)
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            raise BadInput(f"'{value.name}' is not uint8: graph_to_fp16 converts rtseg deploy "
                           "graphs (uint8 frames in, uint8 labels out) only")
    _graph_to_fp16(graph)
    drop_exact_upcasts(model)  # as the fp16 export does; a no-op unless fp32 casts remain
    leftover = _float32_compute(model)
    if leftover:
        raise RtsegError("fp16 conversion left float32 compute in the graph: "
                         + ", ".join(leftover[:5]))
    if any(p.key == "precision" for p in model.metadata_props):  # an rtseg deploy graph
        EngineMetadata.from_onnx(model).with_updates(
            precision="fp16", converted_from="fp32").write_onnx(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _graph_to_fp16(graph: onnx.GraphProto) -> None:
    """Convert one graph (and its subgraphs) in place; see ``graph_to_fp16``."""
    float32_slots: dict[str, int] = {}  # tensor name -> how many float32-only inputs read it
    readers: dict[str, int] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            readers[name] = readers.get(name, 0) + 1
            if name and i in _FLOAT32_INPUTS.get(node.op_type, ()):
                float32_slots[name] = float32_slots.get(name, 0) + 1
    # Constants read only by float32-only inputs stay float32 (exact); anything else that
    # feeds such an input is fp16 after the conversion and gets a Cast back to float32.
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    keep32 = {n for n, k in float32_slots.items() if readers[n] == k and n in constants}
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == FLOAT and tensor.name not in keep32:
            graph.initializer[i].CopyFrom(_to_fp16_tensor(tensor))
    new_nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _graph_to_fp16(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _graph_to_fp16(sub)
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = FLOAT16
        elif node.op_type in ("Constant", "ConstantOfShape") and node.output[0] not in keep32:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t))
                elif attr.name in ("value_float", "value_floats"):
                    values = np.array(onnx.helper.get_attribute_value(attr), np.float32)
                    node.attribute.remove(attr)
                    node.attribute.append(onnx.helper.make_attribute(
                        "value", numpy_helper.from_array(values.astype(np.float16))))
                    break
        for i in _FLOAT32_INPUTS.get(node.op_type, ()):
            source = node.input[i] if i < len(node.input) else ""
            if source and source not in keep32:
                cast_out = f"{source}__fp32_for_{node.name or node.op_type}_{len(new_nodes)}"
                new_nodes.append(onnx.helper.make_node(
                    "Cast", [source], [cast_out], to=FLOAT, name=f"{cast_out}_cast"))
                node.input[i] = cast_out
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    for value in graph.value_info:
        if value.type.tensor_type.elem_type == FLOAT and value.name not in keep32:
            value.type.tensor_type.elem_type = FLOAT16


def _float32_compute(model: onnx.ModelProto) -> list[str]:
    """``float32_nodes`` less those whose float32 output only feeds float32-only inputs."""
    graph = model.graph
    slots = {node.input[i] for node in graph.node
             for i in _FLOAT32_INPUTS.get(node.op_type, ()) if i < len(node.input)}
    producer = {f"{n.op_type} {n.name or n.output[0]}": n for n in graph.node}
    return [label for label in float32_nodes(model)
            if not all(o in slots for o in producer[label].output)]
