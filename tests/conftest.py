"""Shared fixtures: real data from ``../shared/data`` (or ``$RTSEG_DATA``), a tiny engine.

Without the data, tests that need it skip with a reason; with ``RTSEG_REQUIRE_DATA=1``
(set by ``.ci/run``) they fail instead, so CI can never pass by skipping them.

PyTorch runs one thread per process here unless ``OMP_NUM_THREADS`` says otherwise: the tests'
inputs are a few thousand pixels, and on a busy shared CPU an OpenMP team waits for its
descheduled threads at every layer (a forward of segnet_r50 at 32x64 took 2.7 s with two
threads, 0.04 s with one, on two shared cores). Set before torch is imported, it holds in
every thread and in the processes tests start.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def engine_path(tmp_path_factory) -> Path:
    """An untrained, seeded CamVid engine (unet_resnet18, 64×96 input): fast on a CPU."""
    from rtseg.engines import untrained_engine

    return untrained_engine("unet_resnet18", (64, 96), tmp_path_factory.mktemp("engine"))


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


@pytest.fixture(scope="session")
def graphs(tmp_path_factory, camvid_root):
    """Small real checkpoints and their fp32/int8 deploy graphs, each made once."""
    from small_models import Graphs

    return Graphs(tmp_path_factory.mktemp("graphs"), camvid_root)


@pytest.fixture(scope="session")
def val_frames(camvid_root):
    """8 real CamVid val frames at the small models' 64x96 (BGR uint8)."""
    from small_models import load_frames

    return load_frames(camvid_root, "val", 8, stride=12)[0]

