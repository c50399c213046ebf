"""The stop signals of a run: :mod:`rtseg.signals` (a leaf module, so the CLI can take them
without loading the pipeline), under the name the pipeline has always used."""

from rtseg.signals import (STOP_SIGNALS, Terminated, forward_sigint, forward_stop_signals,
                           received, signal_name, start_all, stop_signals_raise)

__all__ = ["STOP_SIGNALS", "Terminated", "forward_sigint", "forward_stop_signals", "received",
           "signal_name", "start_all", "stop_signals_raise"]
