"""Writing output files so that nothing half-written is ever seen: write a temporary file
beside the target, then rename it into place (atomic on one file system). And the checks of
an output path made before any work, so that no work is lost to a path that cannot be written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

from rtseg.errors import BadInput


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary file into place with the usual permissions (some writers,
    safetensors among them, create 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


def write_via_temp(path: Path | str, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` then publish ``tmp`` as ``path``; the temporary never outlives a
    failure."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write(path: Path | str, data: bytes | memoryview | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    payload = data.encode() if isinstance(data, str) else bytes(data)
    return write_via_temp(path, lambda tmp: tmp.write_bytes(payload))


def json_safe(value: Any) -> Any:
    """NaN/inf (e.g. the mIoU of a split with no scored pixel) become null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path | str, payload: Any) -> Path:
    """``payload`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")


def ensure_parent(path: Optional[Path], flag: str) -> None:
    """An output file's directory must exist (we do not invent directories for files), and
    the path must not be a directory — checked before any work, so nothing is wasted.
    BadInput naming ``flag`` otherwise; nothing to check for None."""
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
