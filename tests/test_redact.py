"""What of a source may be shown: a camera URL's user info and credential query values never,
for one source or several; paths on the live page relative or reduced to their name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rtseg.redact import public_path, redact


@pytest.mark.parametrize("text, shown", [
    ("rtsp://admin:hunter2@10.0.0.7:554/live", "rtsp://***@10.0.0.7:554/live"),
    ("rtsp://admin@cam/live", "rtsp://***@cam/live"),
    ("rtsp://user:p@ss@cam/x?y=1", "rtsp://***@cam/x?y=1"),  # an "@" in the password
    ("RTSPS://u:p@[fe80::1]:322/s", "RTSPS://***@[fe80::1]:322/s"),
    ("http://cam/video.cgi?user=a&pwd=b&res=1", "http://cam/video.cgi?user=a&pwd=***&res=1"),
    ("http://cam/s.mjpg?token=abc", "http://cam/s.mjpg?token=***"),
    ("cannot open rtsp://a:b@cam/1 (stalled)", "cannot open rtsp://***@cam/1 (stalled)"),
    ("http://cam/path@v2/stream", "http://cam/path@v2/stream"),  # "@" in the path: no user
    ("drive.mp4", "drive.mp4"), ("camera 0", "camera 0"), ("/data/a@b.mp4", "/data/a@b.mp4"),
])
def test_redact_hides_user_info_and_credentials(text, shown):
    assert redact(text) == shown
    assert redact(Path(text) if "://" not in text else text) == shown


def test_redact_takes_a_list_of_sources():
    sources = ["rtsp://a:b@cam1/live", "rtsp://c:d@cam2/live", "drive.mp4"]
    assert redact(sources) == ["rtsp://***@cam1/live", "rtsp://***@cam2/live", "drive.mp4"]
    assert redact(tuple(sources)) == redact(sources) and redact([]) == []


def test_public_path_keeps_this_machines_paths_off_the_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert public_path(tmp_path / "engines" / "m.onnx") == os.path.join("engines", "m.onnx")
    assert public_path("/home/someone/models/m.onnx") == "…/m.onnx"
    assert public_path("clip.mp4") == "clip.mp4" and public_path(None) is None
    assert public_path("rtsp://u:p@cam/live") == "rtsp://***@cam/live"
