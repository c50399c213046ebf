"""The ``rtseg`` command line. The only module that knows about exit codes and the terminal.

Exit codes (contract): 0 done · 1 internal error · 2 bad usage or input · 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

try:  # typer ≥ 0.20 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError

from rtseg.errors import BadInput, RtsegError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Real-time semantic segmentation of road video: train, export, build TensorRT "
         "engines, run live and benchmark.")

_DEBUG = {"on": False}


class Dataset(str, Enum):
    camvid = "camvid"
    cityscapes = "cityscapes"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


def parse_size(text: Optional[str], flag: str) -> Optional[tuple[int, int]]:
    """``"352x480"`` → (352, 480); BadInput naming the flag otherwise."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise BadInput(f"{flag} expects HxW, e.g. 352x480; got {text!r}") from None
    if h <= 0 or w <= 0:
        raise BadInput(f"{flag} {text} must be positive in both dimensions")
    return h, w


def ensure_parent(path: Optional[Path], flag: str) -> None:
    """An output file's directory must exist (we do not invent directories for files)."""
    if path is not None and not path.parent.is_dir():
        raise BadInput(f"{flag} {path}: directory {path.parent} does not exist")


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def log(message: str) -> None:
    """Progress and status go to stderr; results go to stdout."""
    print(message, file=sys.stderr, flush=True)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")):
    _DEBUG["on"] = debug


@app.command()
def train(
    model: str = typer.Option(..., help="unet_vgg16, unet_r50, segnet_vgg16, segnet_r50 "
                                        "(or unet_<smp encoder>)."),
    dataset: Dataset = typer.Option(..., help="Label set of --data-root."),
    data_root: Path = typer.Option(..., help="CamVid (SegNet layout) or Cityscapes root."),
    epochs: int = typer.Option(100, min=1),
    batch_size: int = typer.Option(8, min=1, help="Per process."),
    crop: Optional[str] = typer.Option(None, help="Training crop HxW (default per dataset)."),
    input_size: Optional[str] = typer.Option(
        None, help="Network input HxW for validation and deployment (default per dataset)."),
    lr: float = typer.Option(1e-3, min=0.0),
    device: Device = typer.Option(Device.auto),
    out: Path = typer.Option(Path("runs/train"), help="Output directory."),
    resume: bool = typer.Option(False, help="Continue from OUT/train_state.pt."),
    encoder_weights: str = typer.Option("none", help="none, imagenet or a local weights file."),
    amp: Optional[bool] = typer.Option(None, help="bf16 autocast (default: on for CUDA)."),
    workers: int = typer.Option(2, min=0, help="Data-loader processes."),
    seed: int = typer.Option(0),
    train_limit: Optional[int] = typer.Option(None, min=1, help="First N training images."),
    val_limit: Optional[int] = typer.Option(None, min=1, help="First N val images."),
):
    """Train a model; writes OUT/best.safetensors, OUT/last.safetensors, history.json.

    Examples:
      1. rtseg train --model segnet_r50 --dataset camvid --data-root data/camvid --epochs 200
      2. torchrun --standalone --nproc_per_node 8 -m rtseg train --model unet_r50 ...
    """
    from rtseg.train import TrainConfig, train as run_training

    cfg = TrainConfig(model=model, dataset=dataset.value, data_root=data_root, out=out,
                      epochs=epochs, batch_size=batch_size, crop=parse_size(crop, "--crop"),
                      input_size=parse_size(input_size, "--input-size"), lr=lr,
                      device=device.value, amp=amp, resume=resume,
                      encoder_weights=encoder_weights, seed=seed, workers=workers,
                      train_limit=train_limit, val_limit=val_limit)
    result = run_training(cfg, log=log, show_progress=sys.stderr.isatty())
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best val mIoU {result['best_miou']:.4f}; weights in {result['out']}/best.safetensors")


@app.command("eval")
def eval_(
    engine: Path = typer.Option(..., help=".safetensors, .onnx, .plan or .engine"),
    dataset: Dataset = typer.Option(...),
    data_root: Path = typer.Option(...),
    split: Split = typer.Option(Split.val),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
    grid: Optional[Path] = typer.Option(None, help="Write input | truth | prediction PNGs here."),
    batch_size: int = typer.Option(4, min=1),
    limit: Optional[int] = typer.Option(None, min=1, help="First N images only."),
    device: Device = typer.Option(Device.auto),
):
    """Score an engine on a labelled split (mIoU, per-class IoU, pixel accuracy)."""
    from rtseg.backends import open_engine
    from rtseg.evaluate import evaluate

    ensure_parent(json_path, "--json")
    with open_engine(engine, device.value) as backend:
        result = evaluate(backend, dataset.value, data_root, split.value, batch_size, limit,
                          grid)
    result = {"engine": str(engine), **result}
    for name, iou in result["per_class_iou"].items():
        print(f"  {name:<14} {'   n/a' if iou is None else f'{iou:6.4f}'}")
    print(f"mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
          f"({result['images']} images, {result['backend']})")
    if json_path:
        write_json(json_path, result)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the cause
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0]


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the CLI and map errors to the contract's exit codes."""
    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        return 130
    except BadInput as exc:
        if _DEBUG["on"]:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 — the contract: a message, not a traceback
        if _DEBUG["on"]:
            traceback.print_exc()
        kind = "" if isinstance(exc, RtsegError) else f"{type(exc).__name__}: "
        print(f"error: {kind}{_one_line(exc)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


def run_main() -> None:
    """Console-script entry point."""
    sys.exit(main())
