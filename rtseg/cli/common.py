"""What every command module of the CLI shares: the typer app, choices, flag parsing."""

from __future__ import annotations

import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

import typer

from rtseg.cuda_driver import driver_gpu_count
from rtseg.engines import default_engine
from rtseg.errors import BadInput
from rtseg.files import write_json  # noqa: F401  (the commands' JSON writer)
from rtseg.redact import redact
from rtseg.signals import received, signal_name

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Real-time semantic segmentation of road video: train, export, build TensorRT "
         "engines, run live and benchmark.")

DEBUG = {"on": False}  # set by the --debug option of the app callback


class Dataset(str, Enum):
    camvid = "camvid"
    cityscapes = "cityscapes"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    """How a .safetensors engine runs; .onnx and TensorRT plans keep the precision they were
    built in (auto, or the same value, is accepted for them)."""
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


PRECISION_HELP = ("auto: fp16 on CUDA, fp32 on the CPU; bf16 ≈ 2× fp32 on CPUs with AVX-512 "
                  "BF16/AMX; applies to .safetensors.")


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
    """An output file's directory must exist (we do not invent directories for files), and
    the path must not be a directory — checked before any work, so nothing is wasted."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise BadInput(f"{flag} {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise BadInput(f"{flag} {path} is a directory; give a file name")
    if not os.access(path.parent, os.W_OK):
        raise BadInput(f"{flag} {path}: directory {path.parent} is not writable")


def ensure_output_dir(path: Path | None, flag: str) -> None:
    """An output directory (``--masks``): its parent must exist; it may exist already, as a
    directory. Checked before any work, like ``ensure_parent``."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise BadInput(f"{flag} {path}: directory {path.parent} does not exist")
    if path.exists() and not path.is_dir():
        raise BadInput(f"{flag} {path}: exists and is not a directory")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise BadInput(f"{flag} {path}: not writable")


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


def bundled_engine(device: "Device", precision: "Precision") -> Path:
    """The bundled model in the form that suits ``--device`` and ``--precision`` (the int8
    deploy graph on the CPU at precision auto, the weights otherwise)."""
    kind = device.value
    if kind == "auto" and not driver_gpu_count():  # no GPU: PyTorch need not be imported to ask
        kind = "cpu"
    elif kind == "auto":
        from rtseg.devices import resolve_device

        kind = resolve_device("auto").type
    return default_engine(device=kind, precision=precision.value)

