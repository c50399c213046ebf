"""`rtseg train` and `rtseg eval` on real CamVid images, end to end on the CPU, and the
training recipe's pieces: poly LR, class weights, loader workers."""

import json
import math
import os
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import torch

from rtseg.cli import main
from rtseg.data import find_pairs
from rtseg.models import MODELS, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from rtseg.training import distributed as ddp
from rtseg.training.config import TrainConfig
from rtseg.training.epoch import make_train_loader
from rtseg.training.schedule import class_weights, poly_lr
from rtseg.training.train import train

from helpers import signal_after_line


def tiny(batch_size: int = 4) -> list[str]:
    """Flags of a training run that takes seconds on the CPU."""
    return ["--epochs", "1", "--batch-size", str(batch_size), "--crop", "64x64",
            "--input-size", "64x64", "--train-limit", "8", "--val-limit", "4", "--workers", "0"]


TINY = tiny()


@pytest.mark.slow
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


@pytest.mark.slow
def test_training_lowers_the_loss(camvid_root, tmp_path):
    cfg = TrainConfig(model="unet_r50", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=6, batch_size=4, crop=(96, 128),
                      input_size=(96, 128), train_limit=8, val_limit=2, workers=0,
                      jitter=0.0, lr=2e-3)
    train(cfg)
    losses = [e["loss"] for e in json.loads((tmp_path / "history.json").read_text())["epochs"]]
    assert len(losses) == 6
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.slow
def test_resume_continues_where_it_stopped(camvid_root, tmp_path):
    args = ["train", "--model", "segnet_r50", "--dataset", "camvid",
            "--data-root", str(camvid_root), "--out", str(tmp_path), *TINY]
    assert main(args) == 0
    args[args.index("--epochs") + 1] = "2"
    assert main(args + ["--resume"]) == 0
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    assert read_checkpoint_metadata(tmp_path / "last.safetensors").extra["epoch"] == 2


@pytest.mark.parametrize("state_every_s, writes", [(1e9, [1, 3]), (0.0, [1, 2, 3])])
def test_the_resumable_state_is_written_at_most_every_interval_and_after_the_last_epoch(
        camvid_root, tmp_path, monkeypatch, state_every_s, writes):
    # The state (weights + optimizer moments) is the large write of a validation: on a GPU
    # that validates every few seconds it is throttled; a run still resumes from its end.
    from rtseg.training import train as train_module

    written = []
    save_state = train_module.save_state
    monkeypatch.setattr(train_module, "save_state",
                        lambda *a, **k: written.append(a[3]) or save_state(*a, **k))
    cfg = TrainConfig(model="segnet_r50", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=3, batch_size=4, crop=(64, 64), input_size=(64, 64),
                      workers=0, train_limit=8, val_limit=2, state_every_s=state_every_s)
    train(cfg)
    assert written == writes  # the epoch each state was written after
    # A best reached after the last state (here: made so) survives the resumed run's epochs.
    segmenter, meta = load_checkpoint(tmp_path / "best.safetensors")
    save_checkpoint(tmp_path / "best.safetensors", segmenter, meta.with_updates(val_miou=0.99))
    cfg.epochs, cfg.resume = 4, True
    assert train(cfg)["epochs"] == 4
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4]
    assert read_checkpoint_metadata(tmp_path / "best.safetensors").extra["val_miou"] == 0.99


@pytest.mark.slow
def test_torchrun_ddp_on_cpu_trains_and_only_rank_0_reports(camvid_root, tmp_path):
    # Which images each rank sees: tests/test_distributed.py, on the sampler itself.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "rtseg", "train", "--model", "segnet_r50", "--dataset", "camvid",
           "--data-root", str(camvid_root), "--out", str(tmp_path), *tiny(batch_size=2)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["best.safetensors",
                                                                      "last.safetensors"]
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1] and set(history[0]) == {
        "epoch", "loss", "lr", "train_seconds", "val_miou", "val_pixel_accuracy"}
    recipe = read_checkpoint_metadata(tmp_path / "best.safetensors").extra["recipe"]
    assert recipe["world_size"] == 2 and recipe["process_group"] == "gloo"
    assert proc.stdout.count("best val mIoU") == 1  # only rank 0 reports


@pytest.mark.slow
def test_missing_data_root_via_the_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rtseg", "train", "--model", "segnet_r50",
                           "--dataset", "camvid", "--data-root", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: data root not found: {tmp_path / 'nope'}"


@pytest.mark.slow
def test_eval_rejects_an_engine_of_another_dataset(camvid_root, cityscapes_sample, tmp_path,
                                                    capsys):
    assert main(["train", "--model", "segnet_r50", "--dataset", "camvid", "--data-root",
                 str(camvid_root), "--out", str(tmp_path), *TINY]) == 0
    capsys.readouterr()
    code = main(["eval", "--engine", str(tmp_path / "best.safetensors"), "--dataset",
                 "cityscapes", "--data-root", str(cityscapes_sample)])
    assert code == 2 and "trained on camvid" in capsys.readouterr().err
    assert np.isfinite(read_checkpoint_metadata(tmp_path / "best.safetensors").extra["val_miou"])


@pytest.mark.slow
def test_resume_refuses_a_run_of_another_model(camvid_root, tmp_path, capsys):
    args = ["train", "--dataset", "camvid", "--data-root", str(camvid_root), "--out",
            str(tmp_path), *TINY]
    assert main(["train", "--model", "unet_r50", *args[1:]]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "segnet_r50", *args[1:], "--resume"]) == 2
    assert "is a unet_r50 run on camvid, not segnet_r50" in capsys.readouterr().err


@pytest.mark.slow
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


@pytest.mark.slow
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
    from rtseg.training.schedule import planned_epochs

    assert planned_epochs(100, 0, 0.0, 0.0, 60.0) == 100       # nothing measured yet
    # a slow first epoch (autotuning) does not shrink the plan: the rest run at 1 s/epoch
    assert planned_epochs(100, 2, 11.0, 1.0, 60.0) == 2 + 49
    assert planned_epochs(100, 2, 2.0, 0.1, 60.0) == 100       # never more than asked
    assert planned_epochs(100, 5, 50.0, 10.0, 20.0) == 5       # never fewer than done
    assert planned_epochs(100, 2, 4.0, 2.0, None) == 100


def test_poly_lr_decays_from_the_base_rate_to_zero():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    assert poly_lr(0.01, 150, 100) == 0.0  # a resumed run past its plan stays at 0
    assert poly_lr(0.01, 25, 100, power=1.0) == pytest.approx(0.0075)
    rates = [poly_lr(1.0, step, 10) for step in range(11)]
    assert rates == sorted(rates, reverse=True)


def test_class_weights_are_enet_weights_with_mean_1_over_seen_classes(tmp_path):
    # Two 10×10 label maps: class 0 ×110 pixels, 1 ×30, 2 ×50, ignore (11) ×10; 3–10 never.
    first = np.zeros((10, 10), np.uint8)
    first[6:9], first[9] = 1, 11
    second = np.full((10, 10), 2, np.uint8)
    second[:5] = 0
    pairs = []
    for name, label in (("a.png", first), ("b.png", second)):
        cv2.imwrite(str(tmp_path / name), label)
        pairs.append((tmp_path / "unused.png", tmp_path / name))
    weights = class_weights(pairs, "camvid", 11, 11, workers=2).numpy()

    counts = np.array([110, 30, 50])
    enet = 1.0 / np.log(1.02 + counts / counts.sum())
    np.testing.assert_allclose(weights[:3], enet * 3 / enet.sum(), rtol=1e-6)
    assert weights[:3].mean() == pytest.approx(1.0)
    assert (weights[3:] == 0).all()  # never seen: not learned, not weighted
    assert weights[1] > weights[2] > weights[0]  # rarer classes weigh more


def first_batch(camvid_root, workers: int):
    """The first training batch of 8 CamVid images; scale 1, crop = input and no jitter
    leave the horizontal flip as the only random change."""
    cfg = TrainConfig(model="segnet_r50", dataset="camvid", data_root=camvid_root,
                      batch_size=4, workers=workers, scale_range=(1.0, 1.0), jitter=0.0)
    pairs = find_pairs("camvid", camvid_root, "train")[:8]
    loader, _ = make_train_loader(pairs, cfg, (64, 96), (64, 96), 11, ddp.DistInfo())
    return next(iter(loader))


def test_loader_workers_give_reproducible_batches_of_the_same_images(camvid_root):
    frames0, labels0 = first_batch(camvid_root, workers=0)
    frames2, labels2 = first_batch(camvid_root, workers=2)
    again, labels_again = first_batch(camvid_root, workers=2)
    assert torch.equal(frames2, again) and torch.equal(labels2, labels_again)
    assert frames2.shape == (4, 64, 96, 3) and labels2.shape == (4, 64, 96)
    for f0, l0, f2, l2 in zip(frames0, labels0, frames2, labels2):  # same images, same order
        assert (torch.equal(f0, f2) and torch.equal(l0, l2)) or (
            torch.equal(f0, f2.flip(1)) and torch.equal(l0, l2.flip(1)))


@pytest.mark.slow
def test_training_with_loader_workers(camvid_root, tmp_path):
    cfg = TrainConfig(model="segnet_r50", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=1, batch_size=4, crop=(64, 64),
                      input_size=(64, 64), train_limit=8, val_limit=4, workers=2)
    result = train(cfg)
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    assert history[0]["val_miou"] == result["best_miou"]


# --- Ctrl-C, SIGTERM: stop with the state saved ------------------------------------------------
@pytest.mark.slow
def test_sigterm_stops_training_with_the_state_saved_and_resumable(camvid_root, tmp_path):
    out = tmp_path / "run"
    # The state is written at most once a minute: after epoch 3 only epoch 1's exists,
    # so a state of epoch 3 or later was saved by the signal.
    code, stderr = signal_after_line(
        ["train", "--model", "unet_resnet18", "--dataset", "camvid", "--data-root", camvid_root,
         "--out", out, "--epochs", "500", "--batch-size", "2", "--crop", "32x32",
         "--input-size", "32x32", "--train-limit", "4", "--val-limit", "1", "--workers", "0",
         "--device", "cpu"], r"epoch 3/500", signal.SIGTERM)
    assert code == 143, stderr
    assert "state saved" in stderr and "interrupted (SIGTERM)" in stderr
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["epoch"] >= 3 and state["step"] >= 3 * 2
    cfg = TrainConfig(model="unet_resnet18", dataset="camvid", data_root=camvid_root, out=out,
                      epochs=state["epoch"] + 1, batch_size=2, crop=(32, 32),
                      input_size=(32, 32), train_limit=4, val_limit=1, workers=0,
                      device="cpu", resume=True)
    assert train(cfg)["interrupted"] is False
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == list(range(1, state["epoch"] + 2))


def test_a_stop_set_mid_epoch_ends_training_at_that_step_with_the_state_saved(camvid_root,
                                                                               tmp_path,
                                                                               monkeypatch):
    from rtseg.training import epoch as epoch_module

    stop, steps, real = threading.Event(), [], epoch_module.poly_lr

    def counting_lr(base, step, total, *a):  # called once a step: the stop comes at step 3
        steps.append(step)
        if step == 3:
            stop.set()
        return real(base, step, total, *a)

    monkeypatch.setattr(epoch_module, "poly_lr", counting_lr)
    cfg = TrainConfig(model="unet_resnet18", dataset="camvid", data_root=camvid_root,
                      out=tmp_path, epochs=5, batch_size=2, crop=(32, 32), input_size=(32, 32),
                      train_limit=8, val_limit=1, workers=0, device="cpu")
    result = train(cfg, stop=stop)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert result["interrupted"] is True and steps[-1] == 3
    assert state["epoch"] == 0 and state["step"] == 3  # the batch in hand was not applied
