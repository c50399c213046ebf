"""What every command module of the CLI shares: the typer app, choices, flag parsing."""

from __future__ import annotations

import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

import typer

from rtseg.metadata import PRECISIONS
from rtseg.redact import redact
from rtseg.signals import received, signal_name

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Real-time semantic segmentation of road video: train, export, build TensorRT "
         "engines, run live and benchmark.")

DEBUG = {"on": False}  # set by the --debug option of the app callback


class Dataset(str, Enum):
    """camvid and cityscapes in their official layouts; folder: your own classes
    (``DIR/images/{train,val}``, ``DIR/labels/{train,val}``, ``DIR/classes.yaml``)."""
    camvid = "camvid"
    cityscapes = "cityscapes"
    folder = "folder"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# How a .safetensors engine runs; .onnx and TensorRT plans keep the precision they were
# built in (auto, or the same value, is accepted for them). typer's choices, from the one
# table (rtseg.metadata.PRECISIONS).
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)

PRECISION_HELP = ("auto: fp16 on CUDA, fp32 on the CPU; bf16 needs a CPU with native bf16 "
                  "(AVX-512 BF16 or AMX) and is faster than fp32 on some such CPUs, slower "
                  "on others (docs/precision.md); applies to .safetensors.")


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


def log(message: str) -> None:
    """Progress and status go to stderr; results go to stdout (a camera's password never)."""
    print(redact(message), file=sys.stderr, flush=True)


INTERRUPTED = {"said": False}  # interrupted_exit() has told the user (reset by main)


def interrupted_exit() -> int:
    """Say (once) how the command was stopped; the exit code: 130 for Ctrl-C, 128 + N for
    signal N (143: SIGTERM, 129: SIGHUP), as a shell reports a process that signal ended."""
    signum = received["signal"] or signal.SIGINT
    if not INTERRUPTED["said"]:
        INTERRUPTED["said"] = True
        print("interrupted" if signum == signal.SIGINT else
              f"interrupted ({signal_name(signum)})", file=sys.stderr, flush=True)
    return 128 + signum


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")):
    DEBUG["on"] = debug


def print_written(outputs: Sequence[tuple[str, Optional[Path]]]) -> None:
    """``what: path`` on stdout for each output the user asked for, so they can find them."""
    for what, path in outputs:
        if path is not None:
            print(f"{what}: {path}")
