"""The GPU scripts, dry-run on the CPU, so that a typo shows here rather than on a GPU
machine: bench/train_gpu.py (trains the four models and writes their weights),
bench/recipe_gpu.py (the recipe ablation on a held-out sequence, then the model to ship) and
bench/gpu_check.sh (every CUDA check in one command)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import bench_script

REPO = Path(__file__).resolve().parents[1]


def train_gpu():
    """bench/train_gpu.py as a module."""
    return bench_script("train_gpu")


def run(cmd, **env):
    """``cmd`` from the repository root with rtseg importable; it must exit 0."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, **env})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.mark.slow
def test_train_gpu_dry_run_writes_weights_histories_and_the_summary(camvid_root, tmp_path):
    runs = tmp_path / "runs"
    models = {"segnet_r50", "unet_vgg16"}
    run([sys.executable, "bench/train_gpu.py", "--dry-run", "--data-root", str(camvid_root),
         "--runs", str(runs), "--models", ",".join(sorted(models))])
    summary = json.loads((runs / "summary.json").read_text())
    assert set(summary["models"]) == models
    from rtseg.models import read_checkpoint_metadata

    for name in models:
        result = summary["models"][name]
        assert 0 <= result["best_val_miou"] <= 1 and result["epochs"] == 2, result
        assert (runs / name / "history.json").is_file()
        assert len(list((runs / name).glob("pred_*.png"))) == 3  # the picture's frames
        meta = read_checkpoint_metadata(runs / name / "best.safetensors")
        assert meta.model == name
        assert meta.extra["val_miou"] == pytest.approx(result["best_val_miou"])


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step(shared_data, engine_path, tmp_path):
    """Every step of the GPU check on a CPU at tiny sizes (the pipeline step with a small
    engine), and gpu_bench.py's dry run, whose JSON and Markdown are checked here."""
    out = tmp_path / "check"
    run(["bash", "bench/gpu_check.sh", "--dry-run", str(out)], PYTHON=sys.executable,
        RTSEG_DATA=str(shared_data), RTSEG_GPU_MODEL=str(engine_path))
    steps = dict(line.split("\t")[:2] for line in (out / "steps.tsv").read_text().splitlines())
    assert steps == {"environment": "0", "gpu_tests": "0", "gpu_bench": "0", "pipeline": "0"}
    for name in ("environment.json", "gpu_bench.json", "gpu_bench.md", "pipeline.json",
                 "check.md", "gpu_tests.xml"):
        assert (out / name).is_file(), name
    bench = json.loads((out / "gpu_bench.json").read_text())
    assert {r["model"] for r in bench["rows"]} == {"unet_vgg16", "unet_r50", "segnet_vgg16",
                                                   "segnet_r50"}
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert pipeline["pipeline_fps"] > 0 and pipeline["bound_by"]
    assert "skipped" in (out / "gpu_tests.log").read_text()  # no CUDA here: gpu tests skip

    doc = json.loads((out / "gpu_bench.json").read_text())
    for key in ("device", "torch", "cuda", "cudnn", "peaks_tflops", "matmul_bf16_tflops",
                "rows", "best_batches", "summary", "skipped", "failed", "notes", "elapsed_s"):
        assert key in doc, key
    assert doc["failed"] == [] and doc["skipped"] == []
    assert {r["precision"] for r in doc["rows"]} == {"fp16", "fp32", "tf32", "bf16"}
    assert {r["batch"] for r in doc["rows"]} == {1, 2}
    for row in doc["rows"]:
        assert row["gflops_per_frame"] > 0 and row["fps"] > 0
        assert row["latency_ms_p50"] <= row["latency_ms_p99"]
    assert [s["model"] for s in doc["summary"]] == ["unet_vgg16", "unet_r50", "segnet_vgg16",
                                                   "segnet_r50"]
    assert all(s["fp16_over_fp32_eager_b1"] > 0 for s in doc["summary"])
    markdown = (out / "gpu_bench.md").read_text()
    assert "## Summary at 64x96" in markdown and markdown.count("| segnet_r50 |") >= 2
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporaries


def test_train_gpu_budgets_shrink_to_end_the_run_within_its_wall_limit():
    script = train_gpu()
    # On plan: an even share of the budget.
    assert script.model_budget(440, 4, 0, 0.0, 540, overhead_s=20) == 110
    # Late (the earlier models took longer): what is left, less the overhead still to come,
    # spread over the remaining models; never below the floor.
    late = script.model_budget(440, 4, 2, 330.0, 540, overhead_s=30)
    assert late == (540 - 330 - 30 * 2) / 2
    assert script.model_budget(440, 4, 3, 530.0, 540, overhead_s=30) == script.MIN_BUDGET_S
    assert script.model_budget(440, 4, 3, 530.0, None, overhead_s=30) == 110  # no limit
    sizes = script.model_batch_sizes("segnet_r50=32,unet_r50=32", ["segnet_r50", "unet_vgg16"], 16)
    assert sizes == {"segnet_r50": 32, "unet_vgg16": 16}


def recipe_gpu():
    """bench/recipe_gpu.py as a module."""
    return bench_script("recipe_gpu")


@pytest.mark.slow
def test_recipe_gpu_dry_run_scores_each_variant_on_the_held_out_sequence_and_val(camvid_root,
                                                                                 tmp_path):
    runs = tmp_path / "runs"
    run([sys.executable, "bench/recipe_gpu.py", "--dry-run", "--data-root", str(camvid_root),
         "--runs", str(runs), "--model", "unet_resnet18", "--variants", "baseline,camera,dice"])
    doc = json.loads((runs / "recipe.json").read_text())
    from rtseg.data import CAMVID
    from rtseg.models import read_checkpoint_metadata

    assert list(doc["runs"]) == ["baseline", "camera", "dice", "chosen", "final"]
    for name in ("baseline", "camera", "dice", "chosen"):
        row = doc["runs"][name]
        assert row["gap"] == round(row["val_miou"] - row["holdout_miou"], 4), name
        assert list(row["holdout_per_class_iou"]) == list(CAMVID.class_names)
        assert list(row["val_per_class_iou"]) == list(CAMVID.class_names)
        assert row["epochs"] == doc["base_recipe"]["ablation_epochs"] and not row["capped"]
        recipe = read_checkpoint_metadata(runs / name / "best.safetensors").extra["recipe"]
        assert recipe["holdout_sequence"] == "0006R0" and recipe["train_on_val"] is False
    assert read_checkpoint_metadata(runs / "camera" / "best.safetensors").extra[
        "recipe"]["camera_augment"] is True
    # the dry run keeps every option (min gain < 0): both, measured together as "chosen"
    options, kept = recipe_gpu().choose(doc["runs"], doc["min_gain"])
    assert doc["choice"]["kept"] == kept and set(kept) == {"camera", "dice"}
    assert doc["choice"]["options"] == {"camera_augment": True, "loss": "ce+dice"}
    assert doc["gap"] == {"before": doc["runs"]["baseline"]["gap"],
                          "after": doc["runs"]["chosen"]["gap"]}
    final = read_checkpoint_metadata(runs / "final" / "best.safetensors").extra["recipe"]
    assert final["train_on_val"] is True and final["holdout_sequence"] is None
    assert final["camera_augment"] is True and final["loss"].startswith("ce+dice")
    assert "val frames were trained on" in doc["runs"]["final"]["val_note"]
    assert len(list((runs / "final").glob("pred_*.png"))) == 3


def test_recipe_gpu_keeps_what_helped_on_the_held_out_sequence():
    script = recipe_gpu()
    runs = {"baseline": {"holdout_miou": 0.50}, "scale": {"holdout_miou": 0.52},
            "camera": {"holdout_miou": 0.503}, "ohem": {"holdout_miou": 0.51},
            "dice": {"holdout_miou": 0.53}, "broken": {"error": "x"}}
    options, kept = script.choose(runs, min_gain=0.005)
    assert kept == ["dice", "scale"]  # camera: +0.003 is noise; ohem: a worse loss than dice
    assert options == {"loss": "ce+dice", "scale_range": (0.5, 2.0)}
    assert script.choose({"baseline": {"holdout_miou": 0.5}, "ohem": {"holdout_miou": 0.4}},
                         0.005) == ({}, [])
    assert script.choose({"baseline": {"error": "x"}}, 0.005) == ({}, [])


def test_recipe_gpu_budgets_shrink_together_to_fit_the_wall_limit():
    fit = recipe_gpu().fit_budgets
    assert fit([25, 25, 100], 0.0, 440, overhead_s=25) == [25, 25, 100]  # room enough
    squeezed = fit([25, 25, 100], 200.0, 440, overhead_s=30)  # room: 440 - 200 - 90 = 150
    assert squeezed == [25, 25, 100]
    squeezed = fit([25, 25, 100], 260.0, 440, overhead_s=30)  # room 90 of 150 asked
    assert squeezed == pytest.approx([15, 15, 60])
    assert fit([25, 100], 430.0, 440, overhead_s=30) == [5.0, 5.0]  # never below the floor
    assert fit([25, 100], 430.0, None, overhead_s=30) == [25, 100]
