"""`rtseg train` and `rtseg eval` on real CamVid images, end to end on the CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rtseg.cli import main
from rtseg.models import MODELS, read_checkpoint_metadata
from rtseg.training.train import TrainConfig, train

TINY = ["--epochs", "1", "--batch-size", "4", "--crop", "64x64", "--input-size", "64x64",
        "--train-limit", "8", "--val-limit", "4", "--workers", "0"]


@pytest.mark.parametrize("model", list(MODELS))
def test_each_model_trains_and_eval_reproduces_its_predictions(model, camvid_root, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", model, "--dataset", "camvid",
                 "--data-root", str(camvid_root), "--out", str(out), *TINY]) == 0
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "history.json"):
        assert (out / name).is_file(), name
    meta = read_checkpoint_metadata(out / "best.safetensors")
    assert meta.model == model and meta.dataset == "camvid" and meta.num_classes == 11
    assert meta.input_size == [64, 64] and meta.precision == "fp32"
    assert meta.extra["recipe"]["crop"] == [64, 64]

    report = tmp_path / "eval.json"
    grid = tmp_path / "grid"
    assert main(["eval", "--engine", str(out / "best.safetensors"), "--dataset", "camvid",
                 "--data-root", str(camvid_root), "--limit", "4", "--json", str(report),
                 "--grid", str(grid), "--device", "cpu"]) == 0
    result = json.loads(report.read_text())
    assert set(result) >= {"miou", "per_class_iou", "pixel_accuracy", "images", "engine",
                           "backend"}
    # Identical predictions ⇒ an identical confusion matrix ⇒ every score equal, bit for bit.
    assert result["miou"] == meta.extra["val_miou"]
    assert result["per_class_iou"] == meta.extra["per_class_iou"]
    assert result["images"] == 4 and result["backend"] == "pytorch"
    assert len(list(grid.glob("*.png"))) == 4


def test_training_lowers_the_loss(camvid_root, tmp_path):
    cfg = TrainConfig(model="unet_r50", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=6, batch_size=4, crop=(96, 128),
                      input_size=(96, 128), train_limit=8, val_limit=2, workers=0,
                      jitter=0.0, lr=2e-3)
    train(cfg)
    losses = [e["loss"] for e in json.loads((tmp_path / "history.json").read_text())["epochs"]]
    assert len(losses) == 6
    assert losses[-1] < 0.75 * losses[0], losses


def test_resume_continues_where_it_stopped(camvid_root, tmp_path):
    args = ["train", "--model", "segnet_r50", "--dataset", "camvid",
            "--data-root", str(camvid_root), "--out", str(tmp_path), *TINY]
    assert main(args) == 0
    args[args.index("--epochs") + 1] = "2"
    assert main(args + ["--resume"]) == 0
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    assert read_checkpoint_metadata(tmp_path / "last.safetensors").extra["epoch"] == 2


def test_torchrun_ddp_on_cpu_shards_the_data(camvid_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "rtseg", "train", "--model", "segnet_r50", "--dataset", "camvid",
           "--data-root", str(camvid_root), "--out", str(tmp_path),
           *[a for a in TINY if a != "4" or True]]
    cmd[cmd.index("--batch-size") + 1] = "2"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["best.safetensors",
                                                                      "last.safetensors"]
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    ranks = history[0]["rank_samples"]
    assert len(ranks) == 2 and len(ranks[0]) == len(ranks[1]) == 4
    assert not set(ranks[0]) & set(ranks[1])  # each rank saw different images
    assert proc.stdout.count("best val mIoU") == 1  # only rank 0 reports


BAD_INPUTS = [
    (["--model", "segnet_r5", "--dataset", "camvid"], "did you mean 'segnet_r50'"),
    (["--model", "segnet_r50", "--dataset", "kitti"], "Invalid value for '--dataset'"),
    (["--model", "segnet_r50", "--dataset", "camvid", "--crop", "60x64"], "not divisible by 32"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_train_input_is_one_line_exit_2(args, message, camvid_root, capsys):
    code = main(["train", *args, "--data-root", str(camvid_root), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_missing_data_root_via_the_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rtseg", "train", "--model", "segnet_r50",
                           "--dataset", "camvid", "--data-root", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: data root not found: {tmp_path / 'nope'}"


def test_label_image_size_mismatch_is_exit_2(camvid_root, tmp_path, capsys):
    import cv2

    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for src in sorted((camvid_root / split).iterdir())[:4]:
            (tmp_path / split / src.name).symlink_to(src)
            label = cv2.imread(str(camvid_root / f"{split}annot" / src.name), cv2.IMREAD_UNCHANGED)
            if split == "train":
                label = label[:300]  # wrong height
            cv2.imwrite(str(tmp_path / f"{split}annot" / src.name), label)
    code = main(["train", "--model", "segnet_r50", "--dataset", "camvid", "--data-root",
                 str(tmp_path), "--out", str(tmp_path / "out"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "label" in err[-1] and "480×300" in err[-1], err


def test_eval_rejects_an_engine_of_another_dataset(camvid_root, cityscapes_sample, tmp_path,
                                                    capsys):
    assert main(["train", "--model", "segnet_r50", "--dataset", "camvid", "--data-root",
                 str(camvid_root), "--out", str(tmp_path), *TINY]) == 0
    capsys.readouterr()
    code = main(["eval", "--engine", str(tmp_path / "best.safetensors"), "--dataset",
                 "cityscapes", "--data-root", str(cityscapes_sample)])
    assert code == 2 and "trained on camvid" in capsys.readouterr().err
    assert np.isfinite(read_checkpoint_metadata(tmp_path / "best.safetensors").extra["val_miou"])


def test_resume_refuses_a_run_of_another_model(camvid_root, tmp_path, capsys):
    args = ["train", "--dataset", "camvid", "--data-root", str(camvid_root), "--out",
            str(tmp_path), *TINY]
    assert main(["train", "--model", "unet_r50", *args[1:]]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "segnet_r50", *args[1:], "--resume"]) == 2
    assert "is a unet_r50 run on camvid, not segnet_r50" in capsys.readouterr().err


def test_eval_json_path_that_is_a_directory_fails_before_any_work(tmp_path, capsys):
    code = main(["eval", "--engine", str(tmp_path / "missing.safetensors"), "--dataset",
                 "camvid", "--data-root", str(tmp_path), "--json", str(tmp_path)])
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_batches_made_on_the_device_train_and_validate_every_n_epochs(camvid_root, tmp_path):
    cfg = TrainConfig(model="unet_r50", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=3, batch_size=4, crop=(64, 96),
                      input_size=(64, 96), train_limit=8, val_limit=2, workers=0,
                      data_on_device=True, val_every=2)
    result = train(cfg)
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert ["val_miou" in e for e in history] == [False, True, True]  # every 2nd, and the last
    meta = read_checkpoint_metadata(tmp_path / "best.safetensors")
    assert meta.extra["val_miou"] == result["best_miou"]
    assert meta.extra["recipe"]["data_on_device"] is True


def test_a_time_budget_shrinks_the_epoch_count(camvid_root, tmp_path):
    cfg = TrainConfig(model="unet_r50", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=50, batch_size=4, crop=(64, 96),
                      input_size=(64, 96), train_limit=8, val_limit=2, workers=0,
                      data_on_device=True, time_budget_s=0.01)
    logs = []
    result = train(cfg, log=logs.append)
    assert result["epochs"] == 1  # one epoch is always trained, then the budget is spent
    assert any("epochs fit" in line for line in logs), logs
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert len(history) == 1 and "val_miou" in history[0]


def test_planned_epochs_fit_the_budget_at_the_latest_pace():
    from rtseg.training.train import planned_epochs

    assert planned_epochs(100, 0, 0.0, 0.0, 60.0) == 100       # nothing measured yet
    # a slow first epoch (autotuning) does not shrink the plan: the rest run at 1 s/epoch
    assert planned_epochs(100, 2, 11.0, 1.0, 60.0) == 2 + 49
    assert planned_epochs(100, 2, 2.0, 0.1, 60.0) == 100       # never more than asked
    assert planned_epochs(100, 5, 50.0, 10.0, 20.0) == 5       # never fewer than done
    assert planned_epochs(100, 2, 4.0, 2.0, None) == 100
