"""The model bundled in engines/, in both its forms — the fp16 weights and the int8 deploy
graph that ``rtseg run`` takes on a CPU: each loads, its metadata is complete, and it scores
on the CamVid val split what its model card (engines/README.md) and its metadata state."""

import re
from pathlib import Path

import pytest

from rtseg.backends import open_engine
from rtseg.engines import default_engine
from rtseg.metadata import REQUIRED_KEYS
from rtseg.scoring.evaluate import evaluate

ENGINES = Path(__file__).resolve().parents[1] / "engines"
FORMS = {"weights": dict(device="cuda"), "deploy graph": dict(device="cpu")}


@pytest.fixture(scope="module", params=list(FORMS))
def bundled(request) -> tuple[str, Path]:
    path = default_engine(ENGINES, **FORMS[request.param])
    assert path.parent == ENGINES
    return request.param, path


def test_bundled_model_is_small_with_complete_metadata(bundled):
    form, path = bundled
    assert path.stat().st_size <= 64 * 2**20
    with open_engine(path, "cpu") as backend:
        meta = backend.metadata
    assert set(REQUIRED_KEYS) <= set(meta.to_dict())
    assert meta.precision == {"weights": "fp16", "deploy graph": "int8"}[form]
    assert meta.dataset == "camvid" and meta.num_classes == 11
    for key in ("val_miou", "per_class_iou", "recipe", "training_hardware", "training_hours"):
        assert key in meta.extra, key


def test_both_forms_are_the_same_model_at_the_same_size():
    weights, graph = (default_engine(ENGINES, **kwargs) for kwargs in FORMS.values())
    with open_engine(weights, "cpu") as w, open_engine(graph, "cpu") as g:
        assert w.metadata.model == g.metadata.model
        assert list(w.metadata.input_size) == list(g.metadata.input_size)
        assert g.metadata.extra["weights_val_miou"] == pytest.approx(w.metadata.extra["val_miou"])


@pytest.mark.slow
def test_bundled_model_reaches_its_stated_val_miou(bundled, camvid_root):
    _, path = bundled
    with open_engine(path, "cpu") as backend:
        meta = backend.metadata
        report = evaluate(backend, "camvid", camvid_root, "val", batch_size=8)
    assert report["images"] == 101
    assert abs(report["miou"] - meta.extra["val_miou"]) <= 0.005
    card = (ENGINES / "README.md").read_text()
    # the card's heading: "FILE — val mIoU **X**" for each form
    stated = re.search(rf"{re.escape(path.name)}\W+val mIoU \*\*([0-9.]+)\*\*", card)
    assert stated, f"engines/README.md must state the val mIoU of {path.name}"
    assert abs(report["miou"] - float(stated.group(1))) <= 0.005
