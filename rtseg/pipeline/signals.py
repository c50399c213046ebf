"""Ctrl-C in the main thread while pipeline threads run: forwarded to a callback instead of
raised (:func:`forward_sigint`), and held back while threads start (:func:`start_all`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Sequence


@contextlib.contextmanager
def forward_sigint(on_interrupt: Callable[[], None]):
    """Within the block, Ctrl-C calls ``on_interrupt()`` instead of raising KeyboardInterrupt,
    so no press — early, mid-run or just as the run ends — can skip the code that finalises
    the outputs (the CLI writes the run JSON inside it). Main thread only; elsewhere, where
    Python delivers no signals, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: on_interrupt())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_all(threads: Sequence[threading.Thread]) -> None:
    """Start every thread with SIGINT held back, so a Ctrl-C cannot land between a thread's
    start and our bookkeeping (which once started a thread twice); it is delivered, as a
    KeyboardInterrupt in the main thread, as soon as all are running."""
    block = getattr(signal, "pthread_sigmask", None)  # POSIX only
    previous = block(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
    try:
        for t in threads:
            t.start()
    finally:
        if block:
            block(signal.SIG_SETMASK, previous)
