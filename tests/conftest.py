"""Shared fixtures: real data from ``../shared/data`` (or ``$RTSEG_DATA``).

Without the data, tests that need it skip with a reason; with ``RTSEG_REQUIRE_DATA=1``
(set by ``.ci/run``) they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """``$RTSEG_DATA`` if set, else ``<repo>/../shared/data`` if it exists."""
    env = os.environ.get("RTSEG_DATA")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "data"]
    return next((p for p in candidates if p.is_dir()), None)


def _require(relative: str) -> Path:
    root = find_shared_data()
    path = root / relative if root else None
    if path is None or not path.exists():
        reason = (f"real data {relative} not found (set RTSEG_DATA or place shared/data "
                  "beside the checkout)")
        if os.environ.get("RTSEG_REQUIRE_DATA") == "1":
            pytest.fail(reason + " — required in CI", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder."""
    return _require(".")


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """CamVid in the SegNet layout (train/val with *annot label folders)."""
    return _require("camvid")


@pytest.fixture(scope="session")
def cityscapes_sample() -> Path:
    """One real Cityscapes val frame in the official layout."""
    return _require("cityscapes_sample")


@pytest.fixture(scope="session")
def dashcam_clip() -> Path:
    """The real 221-frame dashcam clip."""
    return _require("video/solidWhiteRight.mp4")


@pytest.fixture()
def no_thread_outlives_a_test():
    """Fails the test if it leaves a thread running (pipeline modules use it for every test)."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leftover, f"threads outlived the run: {leftover}"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, saying why, where PyTorch sees no CUDA GPU."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is false")
    for item in gpu_tests:
        item.add_marker(skip)
