"""Where the bench scripts find real data: ``$RTSEG_DATA``, else ``../shared/data`` beside the
checkout (the rule the tests follow), and the dashcam clip there, else the repository's copy."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RTSEG_DATA", REPO.parent / "shared" / "data"))
BUNDLED_CLIP = REPO / "bench" / "data" / "solidWhiteRight.mp4"


def default_clip() -> Path:
    """The dashcam clip under ``DATA``, else the copy in ``bench/data`` (the same file)."""
    clip = DATA / "video" / "solidWhiteRight.mp4"
    return clip if clip.is_file() else BUNDLED_CLIP
