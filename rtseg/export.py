"""Trained weights → the ONNX deploy graph (and a Triton model repository around it).

The graph is ``Segmenter.forward``: uint8 ``frames`` [N, H, W, 3] BGR → uint8 ``labels``
[N, H, W], N dynamic, H and W fixed. Exported with the ``torch.export``-based exporter
(``dynamo=True``): compared with the deprecated TorchScript exporter its graph has static
H/W on every tensor, no Shape/Gather chains for the reshapes of the unpooling mask, batch
norm folded into the convolutions, and correct output shape annotations — all of which
TensorRT's parser and ONNX Runtime's optimiser like.

Opset 18, the exporter's native opset: asking for 17 makes it down-convert the graph through
``onnx.version_converter`` after the fact, one more thing to go wrong, and 18 is inside the
range every TensorRT 10 parser accepts (9-20 for 10.0).

``fp16=True`` exports the Segmenter after ``.half()``: weights, normalisation, convolutions
and argmax are fp16 in the graph itself while ``frames``/``labels`` stay uint8 — the form a
strongly typed TensorRT network (TensorRT 11, or ``STRONGLY_TYPED`` in 10) needs.
``graph_to_fp16`` gives the same form from an fp32 deploy graph when only the ``.onnx`` is at
hand (``rtseg build-engine --fp16`` on an fp32 export).

``calib=Calibration(...)`` exports the fp32 graph and quantizes it to int8 Q/DQ, calibrated on
real frames (``rtseg.quantize``); an existing fp32 ``.onnx`` can be quantized the same way.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from rtseg import __version__ as rtseg_version
from rtseg.backends import PICKLE_SUFFIXES
from rtseg.errors import BadInput, RtsegError
from rtseg.files import atomic_write
from rtseg.metadata import INPUT_NAME, OUTPUT_NAME, EngineMetadata
from rtseg.models import Segmenter, load_checkpoint
from rtseg.models.registry import check_input_size
from rtseg.quantize import Calibration

OPSET = 18
_COMPARISONS = frozenset({"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"})

Log = Callable[[str], None]


def _drop_exact_upcasts(model: onnx.ModelProto) -> int:
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
    _drop_exact_upcasts(model)  # as the fp16 export does; a no-op unless fp32 casts remain
    leftover = _float32_compute(model)
    if leftover:
        raise RtsegError("fp16 conversion left float32 compute in the graph: "
                         + ", ".join(leftover[:5]))
    props = {p.key: p.value for p in model.metadata_props}
    if "precision" in props:  # values are JSON strings (EngineMetadata.to_strings)
        props.update(precision=json.dumps("fp16"), converted_from=json.dumps("fp32"))
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
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


def segmenter_to_onnx(segmenter: Segmenter, metadata: EngineMetadata, *, fp16: bool = False,
                      size: tuple[int, int] | None = None, opset: int = OPSET,
                      extra: dict | None = None) -> tuple[onnx.ModelProto, EngineMetadata]:
    """The deploy graph of ``segmenter`` as an in-memory ONNX model with metadata attached.

    ``size`` (H, W) overrides ``metadata.input_size``; ``extra`` adds metadata keys.
    ``segmenter`` itself is left as it is (a copy is exported).
    """
    h, w = check_input_size(size or metadata.input_size)
    precision = "fp16" if fp16 else "fp32"
    segmenter = copy.deepcopy(segmenter).eval().cpu().float()
    if fp16:
        segmenter = segmenter.half()
    # Batch 2 as the example: torch.export specialises sizes 0 and 1, and N must stay dynamic.
    example = torch.zeros(2, h, w, 3, dtype=torch.uint8)
    batch = torch.export.Dim("N", min=1, max=4096)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter; problems raise
            program = torch.onnx.export(
                segmenter, (example,), None, dynamo=True, external_data=False, optimize=True,
                opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: batch}}, verbose=False)
            model = program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RtsegError(f"torch.onnx.export failed for {metadata.model}: {first}") from exc
    if fp16:
        _drop_exact_upcasts(model)

    meta = metadata.with_updates(precision=precision, input_size=[h, w], opset=opset,
                                 exporter=f"torch.onnx dynamo (torch {torch.__version__})",
                                 **(extra or {}))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta.to_strings())
    model.graph.name = meta.model
    model.producer_name, model.producer_version = "rtseg", rtseg_version
    model.doc_string = (f"rtseg {meta.model} ({meta.dataset}, {precision}): uint8 BGR "
                        f"frames [N,{h},{w},3] -> uint8 class ids [N,{h},{w}]")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RtsegError(f"the exported graph of {meta.model} fails onnx.checker: "
                         f"{str(exc).splitlines()[0]}") from exc
    return model, meta


def _write_model(model: onnx.ModelProto, out: Path) -> int:
    """Serialise into one self-contained file, atomically; returns its size in bytes."""
    data = model.SerializeToString()  # protobuf refuses > 2 GiB; our models are < 200 MB
    atomic_write(out, data)
    return len(data)


def _load(checkpoint: Path | str) -> tuple[Segmenter, EngineMetadata, Path]:
    checkpoint = Path(checkpoint)
    if checkpoint.suffix.lower() in PICKLE_SUFFIXES:
        raise BadInput(f"{checkpoint.name}: pickle files are not loaded (they can run code); "
                       "export from a .safetensors checkpoint written by rtseg train")
    if checkpoint.suffix.lower() != ".safetensors":
        raise BadInput(f"--checkpoint {checkpoint.name}: expected a .safetensors file")
    segmenter, metadata = load_checkpoint(checkpoint)
    return segmenter, metadata, checkpoint


def _deploy_graph(checkpoint: Path | str, *, fp16: bool, size: tuple[int, int] | None,
                  opset: int, calib: Calibration | None, log: Log,
                  where: str = "") -> tuple[onnx.ModelProto, EngineMetadata]:
    """The deploy graph to write: exported from a ``.safetensors`` checkpoint and, with
    ``calib``, quantized to int8; or an fp32 ``.onnx`` quantized (``calib`` only). Every
    check of the inputs — calibration frames included — runs before the slow export."""
    from rtseg.quantize import load_fp32_graph, quantize_graph, read_calibration_frames

    if calib is not None:
        if fp16:
            raise BadInput("--int8 and --fp16 exclude each other: the int8 graph keeps fp32 "
                           "between its Q/DQ nodes (build-engine chooses the engine precision)")
        calib.check()
    if size is not None:
        check_input_size(size)  # before the slow part
    checkpoint = Path(checkpoint)
    if calib is not None and checkpoint.suffix.lower() == ".onnx":
        if size is not None:
            raise BadInput("--size: a deploy graph's input size is fixed; export the "
                           ".safetensors again to change it")
        model, meta = load_fp32_graph(checkpoint)
        frames = read_calibration_frames(calib, meta.input_size, log)
        log(f"quantizing {checkpoint} ({meta.model}, {meta.input_size[0]}x"
            f"{meta.input_size[1]}){where}")
    else:
        segmenter, metadata, checkpoint = _load(checkpoint)
        h, w = check_input_size(size or metadata.input_size)
        frames = None if calib is None else read_calibration_frames(calib, (h, w), log)
        precision = "int8" if calib else "fp16" if fp16 else "fp32"
        log(f"exporting {metadata.model} ({metadata.dataset}, {h}x{w}, {precision}) from "
            f"{checkpoint}, opset {opset}{where}")
        model, meta = segmenter_to_onnx(segmenter, metadata, fp16=fp16, size=(h, w),
                                        opset=opset, extra={"exported_from": checkpoint.name})
    if calib is not None:
        model = quantize_graph(model, frames, calib, log)
        meta = EngineMetadata.from_strings({p.key: p.value for p in model.metadata_props})
    return model, meta


def export_onnx(checkpoint: Path | str, out: Path | str, *, fp16: bool = False,
                size: tuple[int, int] | None = None, opset: int = OPSET,
                log: Log | None = None, calib: Calibration | None = None) -> EngineMetadata:
    """Write the deploy graph of a ``.safetensors`` checkpoint to ``out`` (one .onnx file).

    ``calib`` quantizes it to int8 Q/DQ, calibrated on real frames; then ``checkpoint`` may
    also be an fp32 ``.onnx`` deploy graph.

    Example::

        export_onnx("runs/segnet/best.safetensors", "segnet_fp16.onnx", fp16=True)
        export_onnx("best.safetensors", "segnet_int8.onnx", calib=Calibration("frames/"))

    Returns the metadata stored in the file's ``metadata_props``.
    """
    log = log or (lambda _msg: None)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise BadInput(f"--out {out.name}: the file name must end in .onnx")
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: directory {out.parent} does not exist")
    t0 = time.perf_counter()
    model, meta = _deploy_graph(checkpoint, fp16=fp16, size=size, opset=opset, calib=calib,
                                log=log)
    nbytes = _write_model(model, out)
    log(f"wrote {out} ({nbytes / 2**20:.1f} MiB, {len(model.graph.node)} nodes) in "
        f"{time.perf_counter() - t0:.1f} s")
    return meta


def triton_config(metadata: EngineMetadata, max_batch: int = 8, name: str | None = None) -> str:
    """``config.pbtxt`` text (a Triton ``ModelConfig``) for an rtseg deploy graph.

    Dims exclude the batch dimension, which Triton adds because ``max_batch_size > 0``.
    """
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    h, w = (int(v) for v in metadata.input_size)
    name = name or metadata.model
    return f"""\
# Written by rtseg export: {metadata.model} trained on {metadata.dataset}, {metadata.precision}.
# frames: uint8 BGR [N, {h}, {w}, 3]; labels: uint8 class ids [N, {h}, {w}]
# (class names and palette are in the model's ONNX metadata_props).
name: "{name}"
backend: "onnxruntime"
max_batch_size: {int(max_batch)}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {h}, {w}, 3 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {h}, {w} ]
  }}
]
dynamic_batching {{ }}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
"""


def export_triton_repo(checkpoint: Path | str, repo_dir: Path | str, fp16: bool = False,
                       size: tuple[int, int] | None = None, max_batch: int = 8,
                       log: Log | None = None, calib: Calibration | None = None) -> Path:
    """Write a Triton model repository: ``DIR/<model>/config.pbtxt`` and
    ``DIR/<model>/1/model.onnx`` (int8 Q/DQ with ``calib``, as ``export_onnx``). Returns the
    model's directory."""
    log = log or (lambda _msg: None)
    repo_dir = Path(repo_dir)
    if repo_dir.exists() and not repo_dir.is_dir():
        raise BadInput(f"--triton-repo {repo_dir} exists and is not a directory")
    if int(max_batch) < 1:
        raise BadInput(f"--max-batch must be at least 1, got {max_batch}")
    t0 = time.perf_counter()
    model, meta = _deploy_graph(checkpoint, fp16=fp16, size=size, opset=OPSET, calib=calib,
                                log=log, where=f" into Triton repository {repo_dir}")
    model_dir = repo_dir / meta.model
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    nbytes = _write_model(model, model_dir / "1" / "model.onnx")
    atomic_write(model_dir / "config.pbtxt", triton_config(meta, max_batch))
    log(f"wrote {model_dir}/config.pbtxt and 1/model.onnx ({nbytes / 2**20:.1f} MiB) in "
        f"{time.perf_counter() - t0:.1f} s")
    return model_dir
