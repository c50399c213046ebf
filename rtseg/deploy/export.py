"""Trained weights → the ONNX deploy graph (``rtseg.deploy.triton`` puts a Triton model repository around it).

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
real frames (``rtseg.deploy.quantize``); an existing fp32 ``.onnx`` can be quantized the same way.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import onnx
import torch

from rtseg import __version__ as rtseg_version
from rtseg.backends import PICKLE_SUFFIXES
from rtseg.errors import BadInput, RtsegError
from rtseg.files import atomic_write
from rtseg.deploy.fp16_graph import drop_exact_upcasts
from rtseg.deploy.graph_edits import static_resize_scales, strip_node_metadata
from rtseg.metadata import INPUT_NAME, OUTPUT_NAME, EngineMetadata
from rtseg.models import Segmenter, load_checkpoint
from rtseg.models.registry import check_input_size
from rtseg.deploy.calibration import Calibration, Log

OPSET = 18


def int8_calibration(int8: bool, source: str | None = None, frames: int | None = None,
                     method: str | None = None, target: str | None = None) -> Calibration | None:
    """The int8 settings of an export as a :class:`Calibration` (None without ``int8``; the
    values not given: Calibration's defaults). BadInput, naming the flag, for combinations
    that cannot work, checked before any file is read: a calibration setting without
    ``int8``, ``int8`` without a ``source``.

    >>> int8_calibration(True, "frames/", method="entropy")
    """
    if not int8:
        given = [flag for flag, value in (("--calib", source), ("--calib-frames", frames),
                                          ("--calib-method", method),
                                          ("--int8-target", target)) if value is not None]
        if given:
            raise BadInput(f"{given[0]} calibrates an int8 graph; add --int8")
        return None
    if source is None:
        raise BadInput("--int8 needs --calib SRC: a frame folder or a video of real frames")
    chosen = {"frames": frames, "method": method, "target": target}
    return Calibration(source, **{k: v for k, v in chosen.items() if v is not None})


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
        drop_exact_upcasts(model)
    static_resize_scales(model)

    meta = metadata.with_updates(precision=precision, input_size=[h, w], opset=opset,
                                 exporter=f"torch.onnx dynamo (torch {torch.__version__})",
                                 **(extra or {}))
    meta.write_onnx(model)
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


def write_model(model: onnx.ModelProto, out: Path) -> int:
    """Serialise into one self-contained file, atomically; returns its size in bytes."""
    strip_node_metadata(model)
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


def deploy_graph(checkpoint: Path | str, *, fp16: bool, size: tuple[int, int] | None,
                 opset: int, calib: Calibration | None, log: Log,
                 where: str = "") -> tuple[onnx.ModelProto, EngineMetadata]:
    """The deploy graph to write: exported from a ``.safetensors`` checkpoint and, with
    ``calib``, quantized to int8; or an fp32 ``.onnx`` quantized (``calib`` only). Every
    check of the inputs — calibration frames included — runs before the slow export."""
    from rtseg.deploy.calibration import read_calibration_frames
    from rtseg.deploy.quantize import load_fp32_graph, quantize_graph

    if calib is not None and fp16:
        raise BadInput("--int8 and --fp16 exclude each other: the int8 graph keeps fp32 "
                       "between its Q/DQ nodes (build-engine chooses the engine precision)")
    if size is not None:
        check_input_size(size)  # before the slow part
    checkpoint = Path(checkpoint)
    if calib is not None and checkpoint.suffix.lower() == ".onnx":
        if size is not None:
            raise BadInput("--size: a deploy graph's input size is fixed; export the "
                           ".safetensors again to change it")
        model, meta = load_fp32_graph(checkpoint)
        static_resize_scales(model)  # graphs exported before it was part of the export
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
        meta = EngineMetadata.from_onnx(model)
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
    model, meta = deploy_graph(checkpoint, fp16=fp16, size=size, opset=opset, calib=calib,
                                log=log)
    nbytes = write_model(model, out)
    log(f"wrote {out} ({nbytes / 2**20:.1f} MiB, {len(model.graph.node)} nodes) in "
        f"{time.perf_counter() - t0:.1f} s")
    return meta
