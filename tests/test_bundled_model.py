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
@pytest.mark.parametrize("form", ["deploy graph", pytest.param("weights", marks=pytest.mark.once)])
def test_bundled_model_reaches_its_stated_val_miou(form, camvid_root):
    """Every val frame: the deploy graph (the form a CPU runs) in every suite run; the weights
    (PyTorch fp32 on a CPU: minutes on an AVX2-only one) with ``-m once``, after re-bundling."""
    path = default_engine(ENGINES, **FORMS[form])
    with open_engine(path, "cpu") as backend:
        meta = backend.metadata
        report = evaluate(backend, "camvid", camvid_root, "val", batch_size=8)
    assert report["images"] == 101
    assert abs(report["miou"] - meta.extra["val_miou"]) <= 0.005
    assert abs(report["miou"] - _stated(path)) <= 0.005


@pytest.mark.slow
def test_the_weights_label_val_frames_as_the_deploy_graph_does(camvid_root):
    """The weights' stated score is the graph's within its int8 rounding: both forms label 12
    val frames alike (≥ 99.5 % of pixels), and the card's two scores are within 0.5 point."""
    from rtseg.compare import split_frames

    weights, graph = (default_engine(ENGINES, **kwargs) for kwargs in FORMS.values())
    with open_engine(weights, "cpu") as w, open_engine(graph, "cpu") as g:
        frames = split_frames("camvid", camvid_root, "val", tuple(g.metadata.input_size), 12)
        agreement = float((w.infer(frames) == g.infer(frames)).mean())
        assert w.metadata.extra["val_miou"] == pytest.approx(_stated(weights), abs=5e-5)
    assert agreement >= 0.995, agreement
    assert abs(_stated(weights) - _stated(graph)) <= 0.005


def _stated(path: Path) -> float:
    """The val mIoU engines/README.md states for ``path`` (its heading: "FILE — val mIoU **X**")."""
    card = (ENGINES / "README.md").read_text()
    stated = re.search(rf"{re.escape(path.name)}\W+val mIoU \*\*([0-9.]+)\*\*", card)
    assert stated, f"engines/README.md must state the val mIoU of {path.name}"
    return float(stated.group(1))
