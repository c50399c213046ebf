"""Small helpers shared by several test modules (imported as ``helpers``: pytest puts this
folder on the import path)."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decoded_frames(path: Path) -> int:
    """How many frames OpenCV decodes from ``path`` (read one by one, not the container's
    possibly estimated count; 0 when it cannot be opened)."""
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count
