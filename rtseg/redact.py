"""What of a ``--source`` may be shown: a camera URL's password never is.

``rtsp://user:pass@cam/live`` is shown, written and served as ``rtsp://***@cam/live``
(run JSON, terminal, ``/stats.json``, the live page, error messages, logs); query values that
are credentials (``?password=``, ``&pwd=``, ``token=``, …) as ``***``. The real URL is only
ever handed to the code that opens the stream. :func:`public_path` also keeps the absolute
paths of this machine off the live page.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence, TypeVar, overload

HIDDEN = "***"
# scheme://  userinfo@  — the userinfo ends at the last "@" before the path, query or fragment
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*@)")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[\w.\-]*(?:pass|pwd|token|secret|auth|key|sig)[\w.\-]*)=)(?P<value>[^&#\s]*)",
    re.IGNORECASE)

T = TypeVar("T", str, Path)


@overload
def redact(text: T) -> str: ...
@overload
def redact(text: Sequence[str | Path]) -> list[str]: ...


def redact(text):
    """``text`` (a source, a message, a list of sources) with every URL's user info and
    credential query values replaced by ``***``; anything else unchanged.

    >>> redact("rtsp://admin:hunter2@10.0.0.7:554/live?channel=1")
    'rtsp://***@10.0.0.7:554/live?channel=1'
    >>> redact(["cam.mp4", "http://cam/video.cgi?user=a&pwd=b"])
    ['cam.mp4', 'http://cam/video.cgi?user=a&pwd=***']
    """
    if isinstance(text, (list, tuple)):
        return [redact(t) for t in text]
    text = str(text)
    if "://" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{HIDDEN}" if m["value"] else m[0], text)


def public_path(text: str | Path | None) -> str | None:
    """A path or source as the live page may show it to whoever can reach it: URLs redacted,
    paths under the working directory relative to it, other absolute paths as ``…/NAME``."""
    if text is None:
        return None
    text = str(text)
    if "://" in text:
        return redact(text)
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        return str(path.relative_to(Path(os.getcwd())))
    except ValueError:
        return f"…/{path.name}"
