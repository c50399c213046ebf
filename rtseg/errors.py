"""Typed errors. Library code raises these; only the CLI maps them to exit codes."""


class RtsegError(Exception):
    """Base class of every error rtseg raises on purpose."""

    result: dict | None = None  # a pipeline run that failed: its run JSON up to the failure


class BadInput(RtsegError):
    """The user handed us something we cannot use (file, flag, data). CLI exit code 2."""


class MissingDependency(BadInput):
    """An optional package (TensorRT, CUDA, a display) is not available here."""


class StageError(RtsegError):
    """A pipeline stage failed while running. CLI exit code 1."""
