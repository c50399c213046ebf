"""``rtseg export`` and ``rtseg build-engine``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rtseg.cli.common import app, log
from rtseg.files import ensure_parent
from rtseg.metadata import parse_size
from rtseg.errors import BadInput
from rtseg.deploy.calibration import DEFAULT_FRAMES, DEFAULT_METHOD, METHODS, MIN_FRAMES, TARGETS

# typer's choices, from the one list each (rtseg.deploy.calibration).
CalibMethod = Enum("CalibMethod", {name: name for name in METHODS}, type=str)
Int8Target = Enum("Int8Target", {name: name for name in TARGETS}, type=str)


@app.command()
def export(
    checkpoint: Path = typer.Option(..., help="Trained weights (.safetensors); with --int8 "
                                              "also an fp32 deploy graph (.onnx)."),
    out: Optional[Path] = typer.Option(None, help="ONNX file to write (one self-contained file)."),
    triton_repo: Optional[Path] = typer.Option(
        None, help="Write a Triton model repository here instead: DIR/<model>/config.pbtxt "
                   "and DIR/<model>/1/model.onnx."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 graph (uint8 in/out stay uint8)."),
    size: Optional[str] = typer.Option(None, help="Network input HxW (default: the "
                                                  "checkpoint's input_size)."),
    max_batch: Optional[int] = typer.Option(
        None, min=1, help="Triton max_batch_size (--triton-repo only; default 8)."),
    int8: bool = typer.Option(False, "--int8", help="int8 graph with Q/DQ nodes (TensorRT "
                              "explicit quantization; ONNX Runtime's integer kernels on CPUs), "
                              "calibrated on --calib."),
    calib: Optional[str] = typer.Option(
        None, help="Calibration frames for --int8: a frame folder or a video file (real frames "
                   "of the scenes the model will see), resized as the pipeline resizes them."),
    calib_frames: Optional[int] = typer.Option(
        None, help=f"Frames to calibrate on, spread over --calib (default {DEFAULT_FRAMES}, "
                   f"at least {MIN_FRAMES})."),
    calib_method: Optional[CalibMethod] = typer.Option(
        None, help=f"Activation ranges: minmax, percentile or entropy (default "
                   f"{DEFAULT_METHOD}, which kept the most mIoU on CamVid)."),
    int8_target: Optional[Int8Target] = typer.Option(
        None, help="Who runs the int8 graph: tensorrt (default; symmetric int8 Q/DQ, also runs "
                   "on ONNX Runtime) or cpu (ONNX Runtime on CPUs only: uint8 activations, "
                   "faster there; TensorRT refuses it)."),
):
    """Export trained weights as the ONNX deploy graph: uint8 BGR frames in, class ids out.

    \b
    Examples:
      1. rtseg export --checkpoint runs/segnet_r50/best.safetensors --out segnet_r50.onnx
      2. rtseg export --checkpoint best.safetensors --out segnet_fp16.onnx --fp16
      3. rtseg export --checkpoint best.safetensors --triton-repo models/ --fp16
      4. rtseg export --checkpoint best.safetensors --out segnet_int8.onnx --int8 --calib drive.mp4
      5. rtseg export --checkpoint segnet_fp32.onnx --out segnet_int8.onnx --int8 --calib frames/
      6. rtseg export --checkpoint best.safetensors --out segnet_cpu.onnx --int8 --calib frames/ \\
           --int8-target cpu
    """
    from rtseg.deploy.export import export_onnx, int8_calibration
    from rtseg.deploy.triton import export_triton_repo

    calibration = int8_calibration(int8, calib, calib_frames, calib_method and calib_method.value,
                                   int8_target and int8_target.value)
    if (out is None) == (triton_repo is None):
        raise BadInput("give exactly one of --out FILE.onnx or --triton-repo DIR")
    if out is not None and max_batch is not None:
        raise BadInput("--max-batch sets Triton's max_batch_size; it needs --triton-repo (the "
                       "ONNX graph's batch is dynamic, build-engine has its own --max-batch)")
    hw = parse_size(size, "--size")
    if out is not None:
        ensure_parent(out, "--out")
        meta = export_onnx(checkpoint, out, fp16=fp16, size=hw, log=log, calib=calibration)
        print(f"wrote {out} ({meta.model}, {meta.precision}, "
              f"{meta.input_size[0]}x{meta.input_size[1]})")
    else:
        model_dir = export_triton_repo(checkpoint, triton_repo, fp16=fp16, size=hw,
                                       max_batch=max_batch or 8, log=log, calib=calibration)
        print(f"wrote Triton model {model_dir.name} in {triton_repo}")


@app.command("build-engine")
def build_engine(
    onnx_file: Path = typer.Option(..., "--onnx", help="Deploy graph from rtseg export."),
    out: Path = typer.Option(..., help="TensorRT plan to write (.plan or .engine); the "
                                       "metadata goes to <out>.json."),
    fp16: Optional[bool] = typer.Option(
        None, "--fp16/--fp32", help="Engine precision (the network is strongly typed; default "
                                    "fp16, int8 for an int8 graph). An fp32 export is converted "
                                    "to fp16 for --fp16; an fp16 export builds fp16 only."),
    int8: bool = typer.Option(False, "--int8", help="int8 engine from an int8 Q/DQ graph "
                              "(rtseg export --int8; what such a graph builds by default)."),
    max_batch: int = typer.Option(8, min=1, help="Largest batch of the dynamic profile."),
    opt_batch: int = typer.Option(1, help="Batch TensorRT optimises for, 1..--max-batch "
                                          "(default 1: what rtseg run sends)."),
    workspace: float = typer.Option(4.0, min=0.0, help="TensorRT workspace limit in GB."),
):
    """Build a TensorRT engine for this GPU from an ONNX deploy graph.

    \b
    Examples:
      1. rtseg build-engine --onnx segnet_r50.onnx --out segnet_r50.plan --fp16
      2. rtseg build-engine --onnx segnet_fp32.onnx --out segnet_fp32.plan --fp32 --max-batch 4
      3. rtseg build-engine --onnx segnet.onnx --out segnet_b8.plan --max-batch 8 --opt-batch 8
      4. rtseg build-engine --onnx segnet_int8.onnx --out segnet_int8.plan   # explicit int8
    """
    from rtseg.deploy.build_plan import check_request

    precision = check_request(onnx_file, out, fp16=fp16, int8=int8, max_batch=max_batch,
                              opt_batch=opt_batch)
    from rtseg.deploy.engine_build import build_engine as run_build

    result = run_build(onnx_file, out, precision=precision,
                       max_batch=max_batch, opt_batch=opt_batch, workspace_gb=workspace,
                       timing_cache=out.with_name(out.name + ".timing.cache"), log=log)
    print(f"wrote {result['plan']} ({result['precision']}, TensorRT "
          f"{result['tensorrt_version']}, {result['gpu_name']})")
