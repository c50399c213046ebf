"""`rtseg bench --compare`: the model comparison scores exactly as `rtseg eval` does, its
agreement and Δ arithmetic, the best-batch choice, the Markdown/PNG outputs and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtseg.backends import open_engine
from rtseg.engines import untrained_engine
from rtseg.cli import main
from rtseg.compare import compare, plot, to_markdown
from rtseg.data import find_pairs, get_spec, load_pair
from rtseg.imageops import resize_frame, resize_nearest
from rtseg.scoring.evaluate import evaluate

from helpers import FakeBackend, blue_bands

INPUT = (64, 96)
LIMIT = 6


def all_sky(frames):
    return np.zeros(frames.shape[:3], np.uint8)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return [untrained_engine("unet_resnet18", INPUT, tmp_path_factory.mktemp(name), seed=seed)
            for name, seed in (("a", 0), ("b", 1))]


@pytest.mark.slow
def test_scores_equal_rtseg_eval_and_the_reference_agrees_with_itself(engines, camvid_root):
    with open_engine(engines[0], "cpu") as a, open_engine(engines[0], "cpu") as a_again, \
            open_engine(engines[1], "cpu") as b:
        result = compare([a, a_again, b], ["a", "a again", "b"], "camvid", camvid_root,
                         limit=LIMIT, batches=[1, 2], iters=2, warmup=0)
        expected = [evaluate(backend, "camvid", camvid_root, limit=LIMIT) for backend in (a, b)]
    rows = result["engines"]
    assert result["images"] == LIMIT and result["reference"] == "a"
    assert [r["engine"] for r in rows] == ["a", "a again", "b"]
    for row, truth in zip(rows, [expected[0], expected[0], expected[1]]):
        assert row["miou"] == truth["miou"]
        assert row["per_class_iou"] == truth["per_class_iou"]
        assert row["pixel_accuracy"] == truth["pixel_accuracy"]
    assert rows[0]["pixel_agreement"] == rows[1]["pixel_agreement"] == 1.0
    assert rows[0]["miou_delta_points"] == rows[1]["miou_delta_points"] == 0.0
    assert rows[2]["miou_delta_points"] == pytest.approx(100 * (rows[2]["miou"] - rows[0]["miou"]))
    assert 0.0 <= rows[2]["pixel_agreement"] < 1.0  # two different random networks


def test_agreement_is_the_fraction_of_pixels_labelled_like_the_reference(camvid_root):
    result = compare([FakeBackend(INPUT, rule=blue_bands), FakeBackend(INPUT, rule=all_sky)],
                     ["bands", "sky"], "camvid", camvid_root, limit=LIMIT, batches=[1], iters=1,
                     warmup=0)
    same = total = 0
    pairs = find_pairs("camvid", camvid_root, "val")[:LIMIT]
    for i in range(len(pairs)):
        image, label = load_pair(*pairs[i], "camvid")
        bands = resize_nearest(blue_bands(resize_frame(image, INPUT)[None])[0].astype(np.uint8),
                              label.shape)
        same += int((bands == 0).sum())
        total += label.size
    assert result["engines"][1]["pixel_agreement"] == pytest.approx(same / total, abs=1e-12)
    assert result["engines"][0]["pixel_agreement"] == 1.0


def test_speed_columns_follow_the_per_batch_results(camvid_root):
    result = compare([FakeBackend(INPUT, rule=all_sky)], ["sky"], "camvid", camvid_root, limit=2,
                     batches=[4, 1, 2], iters=2, warmup=0)
    row = result["engines"][0]
    assert [r["batch"] for r in row["results"]] == [1, 2, 4]
    best = max(row["results"], key=lambda r: r["fps"])
    assert (row["best_batch"], row["best_fps"]) == (best["batch"], best["fps"])
    assert row["fps_batch1"] == row["results"][0]["fps"]
    for r in row["results"]:
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]


def test_markdown_and_plot(camvid_root, tmp_path):
    result = compare([FakeBackend(INPUT, rule=blue_bands), FakeBackend(INPUT, rule=all_sky)],
                     ["bands.onnx", "sky.onnx"], "camvid", camvid_root, limit=2, batches=[1],
                     iters=1, warmup=0)
    text = to_markdown(result)
    assert "| `bands.onnx` |" in text and "| `sky.onnx` |" in text
    for name in get_spec("camvid").class_names:
        assert f"| {name} |" in text
    png = plot(result, tmp_path / "fps_vs_miou.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_cli_compare_end_to_end(engines, camvid_root, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    code = main(["bench", "--compare", str(engines[0]), str(engines[1]), "--data-root",
                 str(camvid_root), "--limit", "2", "--batch", "1", "--iters", "1", "--warmup",
                 "0", "--json", str(out), "--markdown", str(tmp_path / "cmp.md"),
                 "--plot", str(tmp_path / "cmp.png"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["dataset"] == "camvid" and result["images"] == 2
    assert [r["engine"] for r in result["engines"]] == [str(e) for e in engines]
    assert (tmp_path / "cmp.png").stat().st_size > 0 and (tmp_path / "cmp.md").exists()


def test_short_names_tell_engines_apart():
    from rtseg.compare import short_names

    assert short_names(["runs/a/best.safetensors", "runs/b/best.safetensors"]) == \
        ["a/best.safetensors", "b/best.safetensors"]
    assert short_names(["x/m.onnx", "y/n.onnx"]) == ["m.onnx", "n.onnx"]
    assert short_names(["m.safetensors", "m.safetensors@bf16"]) == \
        ["m.safetensors", "m.safetensors@bf16"]


@pytest.mark.parametrize("spec, expected", [
    ("m.safetensors@bf16", ("m.safetensors", "bf16")),
    ("runs/a@b/m.onnx", ("runs/a@b/m.onnx", "fp32")),  # an @ in a folder name is no precision
    ("m.onnx@int9", ("m.onnx@int9", "fp32")),
    ("m.onnx", ("m.onnx", "fp32"))])
def test_an_engine_argument_may_name_its_precision(spec, expected):
    from pathlib import Path

    from rtseg.backends import split_engine_spec

    path, precision = split_engine_spec(spec, "fp32")
    assert (path, precision) == (Path(expected[0]), expected[1])
