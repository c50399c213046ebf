"""The ``rtseg`` command line — the only package that knows about exit codes and the terminal.

One module per group of commands registers on the shared typer ``app``.
Exit codes (contract): 0 done · 1 internal error · 2 bad usage or input · 130 Ctrl-C ·
143 SIGTERM, 129 SIGHUP (stopped like Ctrl-C: outputs finalised).
"""

from __future__ import annotations

import sys
import traceback
from typing import Optional

import typer

try:  # typer ≥ 0.20 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError

from rtseg.cli import commands_train  # noqa: F401  (registers train, eval)
from rtseg.cli import commands_run  # noqa: F401  (registers run)
from rtseg.cli import commands_export  # noqa: F401  (registers export, build-engine)
from rtseg.cli import commands_bench  # noqa: F401  (registers bench)
from rtseg.cli.common import DEBUG, INTERRUPTED, app, interrupted_exit
from rtseg.errors import BadInput, RtsegError
from rtseg.signals import received, stop_signals_raise
from rtseg.redact import redact

__all__ = ["app", "main", "run_main"]


def _report(prefix: str, exc: BaseException, suffix: str = "") -> None:
    """One clear line on stderr; details an error deliberately carries (TensorRT parser
    errors, say) follow it indented, never a traceback."""
    text = redact(str(exc).strip()) or type(exc).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the cause
        text = text.splitlines()[-1].split(": ", 1)[-1]
    first, *details = text.splitlines()
    print(f"error: {prefix}{first}{suffix}", file=sys.stderr)
    for line in details:
        print(f"  {line}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the CLI and map errors to the contract's exit codes."""
    received["signal"] = None
    INTERRUPTED["said"] = False
    try:
        with stop_signals_raise():  # SIGTERM and SIGHUP stop a command as Ctrl-C does
            result = app(args=argv, standalone_mode=False)
        if result == 130:  # typer turns a KeyboardInterrupt into exit code 130, silently
            return interrupted_exit()
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        return interrupted_exit()
    except BadInput as exc:
        if DEBUG["on"]:
            traceback.print_exc()
        _report("", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 — the contract: a message, not a traceback
        if DEBUG["on"]:
            traceback.print_exc()
        kind = "" if isinstance(exc, RtsegError) else f"{type(exc).__name__}: "
        _report(kind, exc, " (rerun as 'rtseg --debug ...' for the traceback)")
        return 1


def run_main() -> None:
    """Console-script entry point."""
    sys.exit(main())
