"""Your own data (``--dataset folder``): CamVid read through it gives what the camvid loader
gives, colour-coded labels decode to the same indices, a custom model carries its classes into
``rtseg run``, and every bad input is one line and exit 2."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from rtseg.cli import main
from rtseg.data import CAMVID, find_pairs, get_spec, load_pair, read_label
from rtseg.data.folder import load_folder_spec
from rtseg.errors import BadInput
from rtseg.visualize import palette_lut

VAL_FRAMES = 2  # CamVid val frames compared between the two loaders


def camvid_table(ignore_color=None) -> dict:
    """CamVid's class table as a classes.yaml would hold it."""
    table = {"ignore_index": CAMVID.ignore_index,
             "classes": [{"name": n, "color": list(c)}
                         for n, c in zip(CAMVID.class_names, CAMVID.palette)]}
    if ignore_color is not None:
        table["ignore_color"] = ignore_color
    return table


def write_table(root: Path, table: dict, name: str = "classes.yaml") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(yaml.safe_dump(table, sort_keys=False))


def camvid_as_folder(camvid_root: Path, root: Path, count: int = VAL_FRAMES,
                     colour: bool = False) -> list[tuple[Path, Path]]:
    """The first ``count`` CamVid val pairs laid out as a folder data set under ``root``
    (images linked; labels linked, or written colour-coded through CamVid's palette)."""
    pairs = find_pairs("camvid", camvid_root, "val")[:count]
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    lut = palette_lut(CAMVID.palette)  # BGR per class id; the ignore id (11) → black
    for image, label in pairs:
        (root / "images" / "val" / image.name).symlink_to(image)
        target = root / "labels" / "val" / (image.stem + ".png")
        if colour:
            assert cv2.imwrite(str(target), lut[read_label(label, "camvid")])
        else:
            target.symlink_to(label)
    write_table(root, camvid_table(ignore_color=[0, 0, 0] if colour else None))
    return pairs


# -- CamVid through the folder data set ------------------------------------------------------
def test_camvid_as_a_folder_gives_the_camvid_tensors_and_miou(camvid_root, tmp_path):
    from rtseg.backends import open_engine
    from rtseg.engines import default_engine
    from rtseg.scoring.evaluate import evaluate
    from rtseg.scoring.loop import eval_batches

    root = tmp_path / "camvid_folder"
    pairs = camvid_as_folder(camvid_root, root)
    spec = get_spec("folder", root)
    assert spec.class_names == CAMVID.class_names and spec.palette == CAMVID.palette
    assert spec.ignore_index == CAMVID.ignore_index
    assert spec.input_size == CAMVID.input_size  # 360×480 rounded down to multiples of 32
    folder_pairs = find_pairs("folder", root, "val")
    assert [i.name for i, _ in folder_pairs] == [i.name for i, _ in pairs]
    for (image, label), folder_pair in zip(pairs, folder_pairs):
        a, b = load_pair(image, label, "camvid"), load_pair(*folder_pair, spec)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for (ia, la), (ib, lb) in zip(eval_batches(pairs, "camvid", 2),
                                  eval_batches(folder_pairs, spec, 2)):
        assert all(np.array_equal(x, y) for x, y in zip(ia + la, ib + lb))

    with open_engine(default_engine(device="cpu", precision="auto"), "cpu") as backend:
        camvid = evaluate(backend, "camvid", camvid_root, limit=VAL_FRAMES)
        folder = evaluate(backend, "folder", root)
    assert folder["images"] == camvid["images"] == VAL_FRAMES
    assert round(folder["miou"], 4) == round(camvid["miou"], 4)
    assert folder["per_class_iou"] == camvid["per_class_iou"]
    assert folder["dataset"] == "camvid_folder"


def test_colour_coded_labels_load_to_the_same_indices(camvid_root, tmp_path):
    root = tmp_path / "colour"
    pairs = camvid_as_folder(camvid_root, root, count=2, colour=True)
    spec = load_folder_spec(root)
    for (_, label), (_, colour_label) in zip(pairs, find_pairs(spec, root, "val")):
        assert cv2.imread(str(colour_label), cv2.IMREAD_UNCHANGED).ndim == 3
        indices = read_label(label, "camvid")
        assert (indices == CAMVID.ignore_index).any()  # the black pixels come back ignored
        assert np.array_equal(read_label(colour_label, spec), indices)


def test_label_map_maps_raw_values_and_ignores_the_rest(tmp_path):
    root = tmp_path / "mapped"
    write_table(root, {"ignore_index": 255, "label_map": {7: 1, 23: 0},
                       "classes": [{"name": "Sky", "color": [70, 130, 180]},
                                   {"name": "Road", "color": [128, 64, 128]}]})
    raw = np.array([[7, 23, 0], [255, 8, 7]], np.uint8)
    cv2.imwrite(str(root / "l.png"), raw)
    label = read_label(root / "l.png", load_folder_spec(root))
    assert label.tolist() == [[1, 0, 255], [255, 255, 1]]
    (root / "classes.yaml").unlink()  # the same table as JSON (its keys are strings)
    write_json_table = {"ignore_index": 255, "label_map": {"7": 1, "23": 0},
                        "classes": [{"name": "Sky", "color": [70, 130, 180]},
                                    {"name": "Road", "color": [128, 64, 128]}]}
    (root / "classes.json").write_text(json.dumps(write_json_table))
    assert np.array_equal(read_label(root / "l.png", load_folder_spec(root)), label)


# -- a custom model, end to end --------------------------------------------------------------
THREE = [{"name": "background", "color": [0, 0, 0]},
         {"name": "lane_marking", "color": [255, 220, 0]},
         {"name": "obstacle", "color": [220, 20, 200]}]


def three_class_data(root: Path, size: int = 64, per_split: int = 4) -> None:
    """A 3-class folder data set: dark frames with a bright bar (class 1) and a box (class 2)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(per_split):
            label = np.zeros((size, size), np.uint8)
            x = int(rng.integers(8, size - 16))
            label[:, x:x + 6] = 1
            y = int(rng.integers(4, size - 20))
            label[y:y + 14, 4:20] = 2
            label[0, :4] = 255  # a few ignored pixels
            image = np.array([[20, 20, 20], [0, 220, 255], [200, 20, 220]], np.uint8)[
                np.minimum(label, 2)]
            image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "images" / split / f"f{i:02d}.jpg"), image)
            cv2.imwrite(str(root / "labels" / split / f"f{i:02d}.png"), label)
    write_table(root, {"ignore_index": 255, "classes": THREE})


def trained_three_class(root: Path) -> Path:
    """``root`` with ``data/`` (``three_class_data``) and ``run/``: a unet_resnet18 trained
    on it for one epoch on the CPU (``run/best.safetensors``)."""
    three_class_data(root / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", "--model", "unet_resnet18", "--dataset", "folder", "--data-root",
                     str(root / "data"), "--epochs", "1", "--batch-size", "2", "--workers", "0",
                     "--device", "cpu", "--out", str(root / "run")])
    assert code == 0
    return root


def cli(argv: list[str], capfd) -> tuple[int, str, str]:
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.slow
def test_a_custom_model_carries_its_classes_into_run(tmp_path, capfd):
    from rtseg.models import read_checkpoint_metadata
    from rtseg.pipeline.overlay import Overlay

    data = tmp_path / "lanes"
    three_class_data(data)
    code, out, err = cli(["train", "--model", "unet_resnet18", "--dataset", "folder",
                          "--data-root", data, "--epochs", "1", "--batch-size", "2",
                          "--workers", "0", "--device", "cpu", "--out", tmp_path / "run"],
                         capfd)
    assert code == 0, err
    weights = tmp_path / "run" / "best.safetensors"
    meta = read_checkpoint_metadata(weights)
    assert meta.class_names == [c["name"] for c in THREE]
    assert meta.palette == [c["color"] for c in THREE]
    assert (meta.num_classes, meta.ignore_index, meta.dataset) == (3, 255, "lanes")
    assert meta.input_size == [64, 64]

    # eval and export take it too
    code, out, err = cli(["eval", "--engine", weights, "--dataset", "folder", "--data-root",
                          data, "--device", "cpu", "--json", tmp_path / "eval.json"], capfd)
    assert code == 0, err
    assert set(json.loads((tmp_path / "eval.json").read_text())["per_class_iou"]) == \
        {c["name"] for c in THREE}

    code, out, err = cli(["export", "--checkpoint", weights, "--out", tmp_path / "m.onnx"], capfd)
    assert code == 0, err
    from rtseg.backends import open_engine
    with open_engine(tmp_path / "m.onnx", "cpu") as backend:
        assert backend.metadata.class_names == meta.class_names
        assert backend.metadata.palette == meta.palette

    # bench --compare: the data set named, or taken from the engine (its classes.yaml read
    # from --data-root)
    for named in (["--dataset", "folder"], []):
        code, out, err = cli(["bench", "--compare", tmp_path / "m.onnx", *named, "--data-root",
                              data, "--batch", "1", "--iters", "1", "--warmup", "0",
                              "--device", "cpu", "--json", tmp_path / "cmp.json"], capfd)
        assert code == 0, err
        compared = json.loads((tmp_path / "cmp.json").read_text())
        assert compared["dataset"] == "lanes" and compared["images"] == 4
        assert set(compared["engines"][0]["per_class_iou"]) == {c["name"] for c in THREE}

    # rtseg run on larger frames (the legend needs room), scored against the labels
    frames, labels = tmp_path / "frames", tmp_path / "labels"
    frames.mkdir()
    labels.mkdir()
    for image in sorted((data / "images" / "val").iterdir()):
        big = cv2.resize(cv2.imread(str(image)), (320, 240), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(frames / f"{image.stem}.png"), big)
        label = cv2.imread(str(data / "labels" / "val" / f"{image.stem}.png"), -1)
        cv2.imwrite(str(labels / f"{image.stem}.png"),
                    cv2.resize(label, (320, 240), interpolation=cv2.INTER_NEAREST))
    code, out, err = cli(["run", "--source", frames, "--engine", weights, "--labels", labels,
                          "--device", "cpu", "--output", tmp_path / "out.mp4",
                          "--json", tmp_path / "run.json"], capfd)
    assert code == 0, err
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["miou"] is not None and 0 <= result["miou"] <= 1

    video = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    ok, frame = video.read()
    video.release()
    assert ok and frame.shape == (240, 320, 3)
    patch, y, x = Overlay(meta.palette, meta.class_names)._legend_patch(240, 320)
    drawn = frame[y:y + patch.shape[0], x:x + patch.shape[1]].astype(int)
    assert np.abs(drawn - patch).mean() < 12  # the user's legend (mp4 is lossy)
    camvid_patch = Overlay(CAMVID.palette, CAMVID.class_names)._legend_patch(240, 320)[0]
    assert camvid_patch.shape != patch.shape  # not CamVid's 11 rows
    row, _ = Overlay._row(240)
    pad = max(2, row // 4)
    for i, colour in enumerate(meta.palette):  # each class's swatch, in the user's colour
        cy, cx = y + pad + i * row + row // 2 - 1, x + pad + row // 2 - 1
        assert np.abs(frame[cy, cx].astype(int) - colour[::-1]).max() < 40, i


def test_a_custom_engine_scores_live_with_its_own_classes(tmp_path):
    """``run --labels`` reads a folder engine's labels through the table in its metadata
    (label_map included), with its class names."""
    from rtseg.data import engine_dataset
    from rtseg.data.classes import engine_metadata
    from rtseg.scoring.live import LiveScorer

    root = tmp_path / "d"
    write_table(root, {"ignore_index": 255, "label_map": {7: 1, 23: 0},
                       "classes": [{"name": "Sky", "color": [70, 130, 180]},
                                   {"name": "Road", "color": [128, 64, 128]}]})
    meta = engine_metadata("unet_resnet18", load_folder_spec(root), (32, 32))
    labels = tmp_path / "labels"
    labels.mkdir()
    cv2.imwrite(str(labels / "x.png"), np.array([[7, 23], [23, 9]], np.uint8))
    scorer = LiveScorer(labels, engine_dataset(meta), meta.num_classes)
    scorer(Path("frames/x.jpg"), np.array([[1, 0], [1, 1]], np.uint8))
    result = scorer.result()
    assert list(result["per_class_iou"]) == ["Sky", "Road"]
    # truth [[Road, Sky], [Sky, ignored]]: one Sky pixel called Road, the ignored one not counted
    assert result["per_class_iou"] == {"Sky": 0.5, "Road": 0.5}


# -- bad input: one line, exit 2 -------------------------------------------------------------
def _good(root: Path) -> Path:
    three_class_data(root, size=32, per_split=2)
    return root


def _no_table(root):
    (_good(root) / "classes.yaml").unlink()


def _duplicate_names(root):
    _good(root)
    write_table(root, {"ignore_index": 255, "classes": THREE + [{"name": "obstacle",
                                                                  "color": [1, 2, 3]}]})


def _bad_colour(root):
    _good(root)
    write_table(root, {"ignore_index": 255,
                       "classes": THREE[:2] + [{"name": "obstacle", "color": [300, 0, 0]}]})


def _bad_colour_shape(root):
    _good(root)
    write_table(root, {"ignore_index": 255,
                       "classes": THREE[:2] + [{"name": "obstacle", "color": [1, 2]}]})


def _value_outside(root):
    label = _good(root) / "labels" / "train" / "f01.png"
    bad = cv2.imread(str(label), -1)
    bad[5, 5] = 9
    cv2.imwrite(str(label), bad)


def _image_without_label(root):
    (_good(root) / "labels" / "val" / "f01.png").unlink()


def _empty_split(root):
    _good(root)
    for p in (root / "images" / "val").iterdir():
        p.unlink()


def _missing_split(root):
    _good(root)
    for p in (root / "images" / "val").iterdir():
        p.unlink()
    (root / "images" / "val").rmdir()


def _not_yaml(root):
    _good(root)
    (root / "classes.yaml").write_text("classes: [ {name: a, color: [1, 2, 3]\n")


@pytest.mark.parametrize("make, fragments", [
    (_no_table, ["no classes.yaml"]),
    (_duplicate_names, ["duplicate class name 'obstacle'", "classes.yaml"]),
    (_bad_colour, ["[300, 0, 0]", "0-255"]),
    (_bad_colour_shape, ["[1, 2]", "[r, g, b]"]),
    (_value_outside, ["f01.png", "value 9", "ignore index 255"]),
    (_image_without_label, ["no label", "f01.jpg", "f01.png"]),
    (_empty_split, ["empty val split"]),
    (_missing_split, ["no val split"]),
    (_not_yaml, ["classes.yaml", "cannot be parsed"]),
], ids=lambda v: getattr(v, "__name__", "")[1:] or None)
def test_bad_folder_data_is_one_line_and_exit_2(make, fragments, tmp_path, capfd):
    root = tmp_path / "data"
    make(root)
    t0 = time.monotonic()
    code, out, err = cli(["train", "--model", "unet_resnet18", "--dataset", "folder",
                          "--data-root", root, "--epochs", "1", "--batch-size", "1",
                          "--workers", "0", "--device", "cpu", "--out", tmp_path / "run"],
                         capfd)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip() and "error" in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_the_table_is_checked_before_anything_is_read(tmp_path):
    root = tmp_path / "d"
    for table, message in [
        ({"classes": THREE, "ignore_index": 1}, "ignore_index 1"),
        ({"classes": THREE[:1]}, "2 to 255"),
        ({"classes": THREE, "label_map": {7: 5}}, "label_map 7"),
        ({"classes": THREE, "clases": []}, "unknown key(s) clases"),
        ({"classes": THREE[:2] + [{"name": "x", "color": [0, 0, 0]}]}, "share the colour"),
        ({"classes": THREE, "ignore_color": [0, 0, 0]}, "also a class colour"),
        ({"classes": [{"name": "a"}, {"name": "b", "color": [1, 1, 1]}]}, "class 0"),
    ]:
        write_table(root, table)
        with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_folder_spec(root)
    write_table(root, {"classes": THREE})  # ignore_index defaults to 255
    assert load_folder_spec(root).ignore_index == 255
