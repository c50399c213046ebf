"""Temporal consistency (TC), the flicker filter (--smooth) and their place in ``rtseg run``:
real CamVid frames, known motions, hand-computed scores."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtseg.cli import main
from rtseg.errors import BadInput
from rtseg.pipeline import Pipeline, RunConfig, open_source
from rtseg.pipeline.consistency import ConsistencyMonitor, check_sequence
from rtseg.pipeline.smooth import FlowSmoother, majority
from rtseg.pipeline.stats import format_status
from rtseg.scoring.flow import NO_LABEL, Alignment, DenseFlow, grey
from rtseg.scoring.temporal import TemporalConsistency, follows, pair_counts

from helpers import FakeBackend, save_tiny_graph

CLASSES = [f"c{i}" for i in range(11)]
FIRST = "0016E5_07959.png"  # the first frame of CamVid val (one continuous clip)


@pytest.fixture(scope="module")
def frame(camvid_root) -> tuple[np.ndarray, np.ndarray]:
    """A real CamVid frame (BGR) and its ground-truth labels, 360×480."""
    image = cv2.imread(str(camvid_root / "val" / FIRST))
    labels = cv2.imread(str(camvid_root / "valannot" / FIRST), cv2.IMREAD_GRAYSCALE)
    return image, labels


def crop(array: np.ndarray, dx: int, dy: int, size=(240, 320)) -> np.ndarray:
    """A window of ``array`` moved right by ``dx`` and down by ``dy``: a camera pan."""
    y, x = 40 + dy, 60 + dx
    return np.ascontiguousarray(array[y:y + size[0], x:x + size[1]])


def identity(shape, valid=None) -> Alignment:
    """The alignment of a still camera (every pixel stays where it is)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return Alignment(np.dstack([xs, ys]),
                     np.ones(shape, bool) if valid is None else valid)


# -- the metric --------------------------------------------------------------------------------
def test_identical_frames_and_predictions_score_1(frame):
    image, labels = crop(frame[0], 0, 0), crop(frame[1], 0, 0)
    tc = TemporalConsistency(CLASSES + ["Unlabelled"])
    for _ in range(3):
        tc.add(image, labels)
    result = tc.result()
    assert result["tc"] == 1.0 and result["tc_pairs"] == 2
    present = set(np.unique(labels).tolist())
    assert {i for i, v in enumerate(result["tc_per_class"].values()) if v is not None} == present
    assert result["tc_flow_rejected"] < 0.01


@pytest.mark.parametrize("dx, dy", [(4, 0), (7, -3)])
def test_a_pan_scores_at_least_098_and_the_flow_is_within_half_a_pixel(frame, dx, dy):
    """Frame t+1 is frame t seen 4–7 px further right (and up/down), its labels moved alike:
    the flow finds the motion (mean end-point error < 0.5 px where it is trusted; measured
    0.007 and 0.20 px) and TC stays ≥ 0.98 (measured 1.000 and 0.9996)."""
    a, b = crop(frame[0], 0, 0), crop(frame[0], dx, dy)
    la, lb = crop(frame[1], 0, 0), crop(frame[1], dx, dy)
    flow = DenseFlow()
    align = flow.align(grey(a), grey(b))
    # b shows a's pixel (x, y) at (x - dx, y - dy): the true flow is (-dx, -dy) everywhere.
    error = np.hypot(*(align.map_xy - flow.grid(*la.shape) + [dx, dy]).transpose(2, 0, 1))
    assert error[align.valid].mean() < 0.5
    assert align.rejected < 0.1  # the strip that leaves the picture, and a little more
    tc = TemporalConsistency(CLASSES + ["Unlabelled"], flow)
    tc.add(a, la)
    tc.add(b, lb)
    assert tc.result()["tc"] >= 0.98


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_random_flips_lower_tc_by_the_hand_computed_amount(frame, p):
    """A still real frame; the second prediction flips a share p of the pixels of a
    two-class map, as many in each class. For either class, intersection = n(1 - p) and
    union = n(1 + p) (n its pixels), so TC = (1 - p) / (1 + p)."""
    image = crop(frame[0], 0, 0)
    h, w = image.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2:] = 1
    rng = np.random.default_rng(0)
    flipped = labels.copy()
    for cls in (0, 1):
        where = np.flatnonzero(labels.ravel() == cls)
        chosen = rng.choice(where, int(round(p * where.size)), replace=False)
        flipped.ravel()[chosen] = 1 - cls
    tc = TemporalConsistency(["left", "right"])
    tc.add(image, labels)
    tc.add(image, flipped)
    assert tc.result()["tc_flow_rejected"] == 0.0
    assert tc.result()["tc"] == pytest.approx((1 - p) / (1 + p), abs=1e-3)


def test_tc_sums_intersections_and_unions_over_pairs_before_dividing():
    """Two hand-made 4×4 pairs, checked against sets of pixel positions; a rejected pixel
    counts in neither."""
    a1 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 1, 1], [2, 2, 2, 2]], np.uint8)
    b1 = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 2, 1], [2, 2, 2, 2]], np.uint8)
    a2 = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    b2 = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    valid2 = np.ones((4, 4), bool)
    valid2[0, 2] = False  # its flow failed: left out
    tc = TemporalConsistency(["x", "y", "z"])
    tc.add_pair(a1, b1, identity((4, 4)))
    tc.add_pair(a2, b2, identity((4, 4), valid2))

    def cells(m, c, valid):
        return {(i, j) for i in range(4) for j in range(4) if m[i, j] == c and valid[i, j]}

    expected = []
    for c in range(3):
        inter = union = 0
        for a, b, valid in ((a1, b1, np.ones((4, 4), bool)), (a2, b2, valid2)):
            inter += len(cells(a, c, valid) & cells(b, c, valid))
            union += len(cells(a, c, valid) | cells(b, c, valid))
        expected.append(inter / union)
    # by hand: x (3 + 8) / (4 + 11), y (5 + 4) / (7 + 7), z (6 + 0) / (7 + 0)
    assert expected == pytest.approx([11 / 15, 9 / 14, 6 / 7])
    result = tc.result()
    assert list(result["tc_per_class"].values()) == pytest.approx(expected)
    assert result["tc"] == pytest.approx(np.mean(expected))
    assert result["tc_flow_rejected"] == pytest.approx(1 / 32)
    inter, union = pair_counts(a1, b1, 3)
    assert inter.tolist() == [3, 5, 6] and union.tolist() == [4, 7, 7]


def test_warped_labels_follow_the_flow_and_mark_what_has_no_source():
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    align = identity((3, 4))
    align.map_xy[..., 0] += 1  # each pixel of a is one to the right in b
    warped = align.warp(labels)
    assert warped[:, :3].tolist() == labels[:, 1:].tolist()
    assert (warped[:, 3] == NO_LABEL).all()  # reads outside b


def test_frame_names_of_one_clip():
    assert follows("0016E5_07959.png", "0016E5_07961.png")
    assert follows("frame_0009.jpg", "frame_0010.jpg")
    assert not follows("0016E5_07961.png", "0016E5_07959.png")  # backwards
    assert not follows("0001TP_008550.png", "0016E5_07959.png")  # another clip
    assert not follows("frankfurt_000000_000294_leftImg8bit.png",
                       "frankfurt_000001_000019_leftImg8bit.png")  # one frame per sequence
    assert not follows("cat.png", "dog.png")
    assert not follows("frame19.png", "frame2.png")  # name order is not time order


# -- the flicker filter ------------------------------------------------------------------------
def test_smooth_keeps_a_still_scene_and_removes_a_one_frame_flip(frame):
    image, labels = crop(frame[0], 0, 0), crop(frame[1], 0, 0)
    flip = labels.copy()
    flip[100:140, 150:200] = 8  # a car for one frame
    smooth = FlowSmoother(3)
    outputs = [smooth(image, lab) for lab in (labels, labels, labels, flip, labels, labels)]
    for out in outputs:
        assert np.array_equal(out, labels)


def test_smooth_removes_a_flip_in_a_moving_scene(frame):
    """A pan of 3 px a frame; frame 3's prediction has a 40×50 blob of another class: the
    filter takes it out (≥ 99% of it back to the truth), keeps the rest (≥ 99%), and the
    frame after it is not dragged towards the blob."""
    smooth = FlowSmoother(3)
    blob = np.zeros((240, 320), bool)
    blob[100:140, 150:200] = True
    for t in range(5):
        image, labels = crop(frame[0], 3 * t, 0), crop(frame[1], 3 * t, 0)
        shown = np.where(blob, np.uint8(8), labels) if t == 3 else labels
        out = smooth(image, shown)
        if t >= 3:
            assert (out[blob] == labels[blob]).mean() >= 0.99, t
            assert (out[~blob] == labels[~blob]).mean() >= 0.99, t


def test_majority_ties_keep_the_current_prediction():
    now = np.array([[1, 1, 1, 1]], np.uint8)
    past = np.array([[[2, 2, 3, NO_LABEL]], [[2, 3, 4, 2]], [[2, 3, 5, NO_LABEL]]], np.uint8)
    assert majority(np.concatenate([now[None], past[:2]])).tolist() == [[2, 1, 1, 1]]
    assert majority(np.concatenate([now[None], past])).tolist() == [[2, 3, 1, 1]]


# -- live: the monitor thread and the run ------------------------------------------------------
def test_the_monitor_never_blocks_and_counts_the_pairs_it_skipped(frame,
                                                                  no_thread_outlives_a_test):
    image, labels = crop(frame[0], 0, 0), crop(frame[1], 0, 0)
    monitor = ConsistencyMonitor(CLASSES + ["Unlabelled"], queue_size=4)
    for index in range(6):  # the thread is not started: the queue takes 4, 2 are left out
        monitor.offer(index, image, labels)
    monitor.offer(9, image, labels)  # after a gap: not a pair with frame 3
    assert monitor.left_out == 3
    monitor.start()
    monitor.close()
    result = monitor.result()
    assert result["tc_pairs"] == 3 and result["tc_skipped"] == 7 - 1 - 3
    assert result["tc"] == 1.0


def val_run(camvid_root, frames: int = 6, **config):
    source = open_source(camvid_root / "val")
    backend = FakeBackend(input_size=(64, 96))
    return Pipeline(source, backend, RunConfig(max_frames=frames, batch=2, **config)).run()


def test_run_with_consistency_and_smooth_reports_tc(camvid_root, no_thread_outlives_a_test):
    result = val_run(camvid_root, consistency=True, smooth=3)
    assert result["frames"] == 6
    assert result["tc_pairs"] + result["tc_skipped"] == 5 and result["tc_pairs"] >= 1
    assert 0.0 <= result["tc"] <= 1.0
    assert set(result["tc_per_class"]) == set(FakeBackend().metadata.class_names)
    assert result["smooth"] == 3 and result["smooth_ms"] > 0
    plain = val_run(camvid_root)
    assert not {k for k in plain if k.startswith("tc") or k.startswith("smooth")}


def test_cli_run_reports_tc_in_json_and_table(camvid_root, tmp_path, capfd):
    engine = save_tiny_graph(tmp_path / "tiny.onnx")
    out = tmp_path / "run.json"
    code = main(["run", "--source", str(camvid_root / "val"), "--engine", str(engine),
                 "--max-frames", "4", "--consistency", "--smooth", "3", "--json", str(out)])
    stdout = capfd.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())
    assert result["tc_pairs"] + result["tc_skipped"] == 3 and result["smooth"] == 3
    assert "TC (temporal consistency)" in stdout and "--smooth 3 ms/frame" in stdout


def test_the_live_page_shows_tc(camvid_root, no_thread_outlives_a_test):
    from rtseg.pipeline import LiveServer
    from rtseg.pipeline.serve_page import PAGE

    with LiveServer(("127.0.0.1", 0)) as server:
        source = open_source(camvid_root / "val")
        Pipeline(source, FakeBackend(input_size=(64, 96)),
                 RunConfig(max_frames=3, consistency=True), server=server).run()
        stats = server.stats()  # what /stats.json serves
    assert stats["tc_pairs"] + stats["tc_skipped"] == 2 and "tc_per_class" in stats
    assert b'id="tc"' in PAGE and b"s.tc_pairs" in PAGE


def test_status_line_shows_tc():
    snap = {"frames": 3, "fps": 2.0, "dropped": 0, "stage_ms": {"infer": 1.0},
            "queues": {"capture": 0}, "tc": 0.95312}
    assert format_status(snap).endswith("| TC 0.953")


# -- bad input ---------------------------------------------------------------------------------
def unrelated_folder(tmp_path: Path, camvid_root: Path, names, size=None) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted((camvid_root / "val").glob("*.png"))[::30]
    for src, name in zip(sources, names):
        image = cv2.imread(str(src))
        if size is not None and name == names[-1]:
            image = cv2.resize(image, size)
        cv2.imwrite(str(folder / name), image)
    return folder


@pytest.mark.parametrize("value, fragment", [("0", "--smooth 0 must be"),
                                             ("2", "--smooth 2 must be"),
                                             ("1.5", "Invalid value for '--smooth'")])
def test_bad_smooth_is_one_line_exit_2(value, fragment, camvid_root, capfd):
    code = main(["run", "--source", str(camvid_root / "val"), "--smooth", value])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err


@pytest.mark.parametrize("names, size, fragment", [
    (["beach.png", "cat.png", "dog.png"], None, "not numbered as consecutive frames"),
    (["f_001.png", "f_002.png", "f_003.png"], (240, 180), "frames of one clip have one size"),
    (["f_001.png"], None, "needs at least two frames"),
])
def test_consistency_on_unrelated_images_is_one_line_exit_2(names, size, fragment, tmp_path,
                                                            camvid_root, capfd):
    folder = unrelated_folder(tmp_path, camvid_root, names, size)
    code = main(["run", "--source", str(folder), "--consistency"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--consistency" in err[0] and fragment in err[0], err
    with pytest.raises(BadInput):
        check_sequence(open_source(folder))


# -- eval and compare: TC when the split is one clip -------------------------------------------
def test_eval_scores_tc_on_a_clip_and_not_on_unrelated_frames(camvid_root, cityscapes_sample):
    from rtseg.compare import to_markdown
    from rtseg.scoring.evaluate import evaluate

    clip = evaluate(FakeBackend(input_size=(64, 96)), "camvid", camvid_root, "val", limit=4)
    assert clip["tc_pairs"] == 3 and 0.0 <= clip["tc"] <= 1.0  # CamVid val: sequence 0016E5
    single = evaluate(FakeBackend(input_size=(64, 96), dataset="cityscapes"), "cityscapes",
                      cityscapes_sample, "val")
    assert single["tc"] is None and "tc_pairs" not in single  # one frame: no pair to score
    row = {"engine": "a.onnx", "model": "m", "backend": "b", "precision": "fp32",
           "input_size": [64, 96], "miou_delta_points": 0.0, "pixel_agreement": 1.0,
           "fps_batch1": 1.0, "best_fps": 1.0, "best_batch": 1, **clip}
    table = to_markdown({"dataset": "camvid", "split": "val", "images": 4, "reference": "a",
                         "engines": [row]})
    assert "| TC |" in table and f"{clip['tc']:.4f} |" in table
