"""Stop signals in the main thread while work runs on other threads.

Ctrl-C (SIGINT), SIGTERM (``docker stop``, ``systemctl stop``, Kubernetes, ``timeout``) and
SIGHUP (the terminal went away) all mean "stop": :func:`forward_stop_signals` hands them to a
callback instead of letting them kill the process or raise mid-finalisation;
:func:`stop_signals_raise` turns SIGTERM and SIGHUP into KeyboardInterrupt (as Python does for
Ctrl-C) where no callback is installed; :func:`start_all` holds them back while threads start.
:data:`received` remembers the last one, so the CLI can exit 128 + its number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Optional, Sequence

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
received: dict[str, Optional[int]] = {"signal": None}  # the last stop signal taken


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt (``signum`` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(signum: Optional[int]) -> str:
    """``"SIGTERM"`` for 15; ``"Ctrl-C"`` for SIGINT (what the user pressed)."""
    if signum is None or signum == signal.SIGINT:
        return "Ctrl-C"
    return signal.Signals(signum).name


def _ours(signum: int) -> bool:
    """Whether we may take ``signum``: not a SIGHUP that ``nohup`` told us to ignore. SIGINT
    and SIGTERM always stop a run cleanly, also in a job a shell started in the background
    (which starts with SIGINT ignored) and is then sent ``kill -INT``."""
    nohup = signum == getattr(signal, "SIGHUP", None)
    return not nohup or signal.getsignal(signum) is not signal.SIG_IGN


def _install(handler: Callable[[int, object], None], signums: Sequence[int]) -> dict:
    """Set ``handler`` for ``signums`` (main thread only); the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in signums:
        if _ours(signum):
            previous[signum] = signal.signal(signum, handler)
    return previous


def _restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextlib.contextmanager
def forward_stop_signals(on_stop: Callable[[int], None]):
    """Within the block, Ctrl-C, SIGTERM and SIGHUP call ``on_stop(signum)`` instead of
    raising or killing the process, so no signal — early, mid-run or just as the run ends —
    can skip the code that finalises the outputs (the CLI writes the run JSON inside it).
    Main thread only; elsewhere, where Python delivers no signals, it does nothing."""
    def handler(signum, _frame):
        received["signal"] = signum
        on_stop(signum)

    previous = _install(handler, STOP_SIGNALS)
    try:
        yield
    finally:
        _restore(previous)


@contextlib.contextmanager
def forward_sigint(on_interrupt: Callable[[], None]):
    """:func:`forward_stop_signals` for callbacks that need not know which signal came."""
    with forward_stop_signals(lambda _signum: on_interrupt()):
        yield


@contextlib.contextmanager
def stop_signals_raise():
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt)
    in the main thread, as Ctrl-C does, so ``finally`` blocks and Ctrl-C handling run for
    them too instead of the process dying at once."""
    def handler(signum, _frame):
        received["signal"] = signum
        raise Terminated(signum)

    def on_sigint(signum, frame):
        received["signal"] = signum
        signal.default_int_handler(signum, frame)

    previous = _install(handler, [s for s in STOP_SIGNALS if s != signal.SIGINT])
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_IGN):
        previous.update(_install(on_sigint, [signal.SIGINT]))
    try:
        yield
    finally:
        _restore(previous)


def start_all(threads: Sequence[threading.Thread]) -> None:
    """Start every thread with the stop signals held back, so one cannot land between a
    thread's start and our bookkeeping (which once started a thread twice); it is delivered
    in the main thread as soon as all are running."""
    block = getattr(signal, "pthread_sigmask", None)  # POSIX only
    previous = block(signal.SIG_BLOCK, set(STOP_SIGNALS)) if block else None
    try:
        for t in threads:
            t.start()
    finally:
        if block:
            block(signal.SIG_SETMASK, previous)
