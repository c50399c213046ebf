"""The model bundled in engines/: it loads, its metadata is complete, and it scores on the
CamVid val split what its model card (engines/README.md) and its metadata state."""

import re
from pathlib import Path

import pytest

from rtseg.backends import open_engine
from rtseg.engines import default_engine
from rtseg.scoring.evaluate import evaluate
from rtseg.metadata import REQUIRED_KEYS
from rtseg.models import read_checkpoint_metadata

ENGINES = Path(__file__).resolve().parents[1] / "engines"


@pytest.fixture(scope="module")
def bundled() -> Path:
    path = default_engine(ENGINES)
    assert path.parent == ENGINES
    return path


def test_bundled_model_is_small_fp16_with_complete_metadata(bundled):
    assert bundled.stat().st_size <= 64 * 2**20
    meta = read_checkpoint_metadata(bundled)
    assert set(REQUIRED_KEYS) <= set(meta.to_dict())
    assert meta.precision == "fp16" and meta.dataset == "camvid" and meta.num_classes == 11
    for key in ("val_miou", "per_class_iou", "recipe", "training_hardware", "training_hours"):
        assert key in meta.extra, key


@pytest.mark.slow
def test_bundled_model_reaches_its_stated_val_miou(bundled, camvid_root):
    meta = read_checkpoint_metadata(bundled)
    with open_engine(bundled, "cpu") as backend:
        report = evaluate(backend, "camvid", camvid_root, "val", batch_size=8)
    assert report["images"] == 101
    assert abs(report["miou"] - meta.extra["val_miou"]) <= 0.005
    card = (ENGINES / "README.md").read_text()
    stated = re.search(rf"{re.escape(bundled.name)}.*?val mIoU \*\*([0-9.]+)\*\*", card, re.S)
    assert stated, "engines/README.md must state the bundled model's val mIoU"
    assert abs(report["miou"] - float(stated.group(1))) <= 0.005
