"""``rtseg export`` and ``rtseg build-engine``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rtseg.cli.common import app, ensure_parent, log, parse_size
from rtseg.errors import BadInput


@app.command()
def export(
    checkpoint: Path = typer.Option(..., help="Trained weights (.safetensors)."),
    out: Optional[Path] = typer.Option(None, help="ONNX file to write (one self-contained file)."),
    triton_repo: Optional[Path] = typer.Option(
        None, help="Write a Triton model repository here instead: DIR/<model>/config.pbtxt "
                   "and DIR/<model>/1/model.onnx."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 graph (uint8 in/out stay uint8)."),
    size: Optional[str] = typer.Option(None, help="Network input HxW (default: the "
                                                  "checkpoint's input_size)."),
    max_batch: Optional[int] = typer.Option(
        None, min=1, help="Triton max_batch_size (--triton-repo only; default 8)."),
):
    """Export trained weights as the ONNX deploy graph: uint8 BGR frames in, class ids out.

    \b
    Examples:
      1. rtseg export --checkpoint runs/segnet_r50/best.safetensors --out segnet_r50.onnx
      2. rtseg export --checkpoint best.safetensors --out segnet_fp16.onnx --fp16
      3. rtseg export --checkpoint best.safetensors --triton-repo models/ --fp16
    """
    from rtseg.export import export_onnx, export_triton_repo

    if (out is None) == (triton_repo is None):
        raise BadInput("give exactly one of --out FILE.onnx or --triton-repo DIR")
    if out is not None and max_batch is not None:
        raise BadInput("--max-batch sets Triton's max_batch_size; it needs --triton-repo (the "
                       "ONNX graph's batch is dynamic, build-engine has its own --max-batch)")
    hw = parse_size(size, "--size")
    if out is not None:
        ensure_parent(out, "--out")
        meta = export_onnx(checkpoint, out, fp16=fp16, size=hw, log=log)
        print(f"wrote {out} ({meta.model}, {meta.precision}, "
              f"{meta.input_size[0]}x{meta.input_size[1]})")
    else:
        model_dir = export_triton_repo(checkpoint, triton_repo, fp16=fp16, size=hw,
                                       max_batch=max_batch or 8, log=log)
        print(f"wrote Triton model {model_dir.name} in {triton_repo}")


@app.command("build-engine")
def build_engine(
    onnx_file: Path = typer.Option(..., "--onnx", help="Deploy graph from rtseg export."),
    out: Path = typer.Option(..., help="TensorRT plan to write (.plan or .engine); the "
                                       "metadata goes to <out>.json."),
    fp16: bool = typer.Option(True, "--fp16/--fp32",
                              help="Engine precision (the network is strongly typed). An fp32 "
                                   "export is converted to fp16 for --fp16; an fp16 export "
                                   "builds fp16 only."),
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
    """
    if not 1 <= opt_batch <= max_batch:
        raise BadInput(f"--opt-batch {opt_batch} must be between 1 and --max-batch ({max_batch})")
    if out.suffix.lower() not in (".plan", ".engine"):
        raise BadInput(f"--out {out.name}: the file name must end in .plan or .engine")
    if not onnx_file.is_file():
        raise BadInput(f"--onnx {onnx_file}: file not found")
    ensure_parent(out, "--out")
    from rtseg.engine_build import build_engine as run_build

    result = run_build(onnx_file, out, precision="fp16" if fp16 else "fp32",
                       max_batch=max_batch, opt_batch=opt_batch, workspace_gb=workspace,
                       timing_cache=out.with_name(out.name + ".timing.cache"), log=log)
    print(f"wrote {result['plan']} ({result['precision']}, TensorRT "
          f"{result['tensorrt_version']}, {result['gpu_name']})")
