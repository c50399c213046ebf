"""The prepared GPU scripts, dry-run on the CPU, so that minutes on a lent GPU go to measuring
rather than to typos: bench/train_gpu.py (train, pack, join) and bench/gpu_check.sh."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import bench_script

REPO = Path(__file__).resolve().parents[1]


def train_gpu():
    """bench/train_gpu.py as a module."""
    return bench_script("train_gpu")


def run(cmd, check: bool = True, **env):
    """``cmd`` from the repository root with rtseg importable; its exit checked unless
    ``check`` is False."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, **env})
    if check:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def join_parts(folders, summary: Path, out: Path, check: bool = True):
    """bench/join_parts.py on the parts in ``folders``."""
    return run([sys.executable, "bench/join_parts.py", "--parts", *map(str, folders),
                "--summary", str(summary), "--out", str(out)], check=check)


@pytest.mark.slow
def test_train_gpu_dry_run_trains_packs_and_the_parts_join(camvid_root, tmp_path, monkeypatch):
    runs, out, out2 = tmp_path / "runs", tmp_path / "out", tmp_path / "out2"
    models = {"segnet_r50", "unet_vgg16"}
    run([sys.executable, "bench/train_gpu.py", "--dry-run", "--data-root", str(camvid_root),
         "--runs", str(runs), "--models", ",".join(sorted(models)), "--export", str(out)])
    with tarfile.open(out / "train_gpu.tar.gz") as tar:
        members = set(tar.getnames())
        summary = json.load(tar.extractfile("summary.json"))
    assert {"summary.json", "segnet_r50/history.json", "unet_vgg16/history.json"} <= members
    assert sum(m.startswith("segnet_r50/pred_") for m in members) == 3  # the picture's frames
    for name in models:
        result = summary["models"][name]
        assert 0 <= result["best_val_miou"] <= 1 and result["epochs"] == 2, result
    # Both fp16 files (51.7 + 45.4 MiB) do not fit in what one call brings back (60 MiB): the
    # chosen model's parts come now, as many others as fit; a second, --export-only call
    # sends the rest, each part once, and its summary lists both files.
    for name, record in summary["exported"].items():
        parts = sorted(out.glob(f"{name}.safetensors.part*"))
        assert [int(p.name[-2:]) for p in parts] == sorted(record["sent"])
        assert all(p.stat().st_size <= 15 * 2**20 for p in parts)  # each under the 16 MiB limit
    assert sum(p.stat().st_size for p in out.glob("*.part*")) <= 60 * 2**20
    run([sys.executable, "bench/train_gpu.py", "--runs", str(runs), "--export", str(out2),
         "--export-only", "--models", ",".join(sorted(models))])
    with tarfile.open(out2 / "train_gpu.tar.gz") as tar:
        summary = json.load(tar.extractfile("summary.json"))
    assert set(summary["exported"]) == models
    for name, record in summary["exported"].items():
        assert sorted(record["sent"]) == list(range(record["parts"])), name
    first = {p.name for p in out.glob("*.part*")}
    assert first.isdisjoint(p.name for p in out2.glob("*.part*"))  # nothing sent twice

    (tmp_path / "summary.json").write_text(json.dumps(summary))
    join_parts([out, out2], tmp_path / "summary.json", tmp_path / "joined")
    from rtseg.models import read_checkpoint_metadata

    for name in models:
        meta = read_checkpoint_metadata(tmp_path / "joined" / f"{name}.safetensors")
        assert meta.model == name and meta.precision == "fp16"
    assert_a_file_larger_than_a_call_comes_back_over_two(runs, tmp_path / "large", monkeypatch)


def assert_a_file_larger_than_a_call_comes_back_over_two(runs: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    """unet_vgg16's 45.4 MiB in 8 MiB parts (6) with 24 MiB a call: 3 parts, then the other
    3, then none; each part sent once, and the last summary joins them all."""
    script = train_gpu()
    summary = json.loads((runs / "summary.json").read_text())
    del summary["exported"]["unet_vgg16"]  # as if never sent
    (runs / "summary.json").write_text(json.dumps(summary))
    calls = [tmp_path / c for c in "abc"]
    monkeypatch.setattr(script, "PART_BYTES", 8 * 2**20)
    monkeypatch.setattr(script, "RETURN_BYTES", 24 * 2**20)
    for folder in calls:
        script.export(runs, ["unet_vgg16"], folder)
    script.export(runs, ["unet_vgg16"], tmp_path / "lost", resend=True)  # from the start
    sent = [sorted(p.name[-2:] for p in folder.glob("unet_vgg16.safetensors.part*"))
            for folder in [*calls, tmp_path / "lost"]]
    assert sent == [["00", "01", "02"], ["03", "04", "05"], [], ["00", "01", "02"]]
    with tarfile.open(calls[-1] / "train_gpu.tar.gz") as tar:
        record = json.load(tar.extractfile("summary.json"))["exported"]["unet_vgg16"]
    assert record["parts"] == 6 and sorted(record["sent"]) == list(range(6))
    (tmp_path / "summary.json").write_text(json.dumps({"exported": {"unet_vgg16": record}}))
    join_parts(calls[:2], tmp_path / "summary.json", tmp_path / "joined")
    # A part that did not come back is named, not joined into a corrupt file.
    (calls[1] / "unet_vgg16.safetensors.part04").unlink()
    proc = join_parts(calls[:2], tmp_path / "summary.json", tmp_path / "joined2", check=False)
    assert proc.returncode != 0
    assert "1 of 6 parts missing (unet_vgg16.safetensors.part04)" in proc.stderr
    # Two folders with different copies of one part (weights of two runs) are refused by name.
    (calls[1] / "unet_vgg16.safetensors.part04").write_bytes(b"another run")
    (calls[0] / "unet_vgg16.safetensors.part04").write_bytes(b"this run")
    proc = join_parts(calls[:2], tmp_path / "summary.json", tmp_path / "joined2", check=False)
    assert proc.returncode != 0 and "part04" in proc.stderr and "different copies" in proc.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step(shared_data, tmp_path):
    out = tmp_path / "check"
    run(["bash", "bench/gpu_check.sh", "--dry-run", str(out)], PYTHON=sys.executable,
        RTSEG_DATA=str(shared_data))
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


def test_train_gpu_budgets_shrink_to_end_the_call_in_time():
    script = train_gpu()
    # On plan: an even share of the budget.
    assert script.model_budget(440, 4, 0, 0.0, 540, overhead_s=20) == 110
    # Late (the earlier models took longer): what is left, less the overhead still to come
    # and the export, spread over the remaining models; never below the floor.
    late = script.model_budget(440, 4, 2, 330.0, 540, overhead_s=30)
    assert late == (540 - 330 - script.EXPORT_S - 30 * 2) / 2
    assert script.model_budget(440, 4, 3, 530.0, 540, overhead_s=30) == script.MIN_BUDGET_S
    assert script.model_budget(440, 4, 3, 530.0, None, overhead_s=30) == 110  # no limit
    sizes = script.model_batch_sizes("segnet_r50=32,unet_r50=32", ["segnet_r50", "unet_vgg16"], 16)
    assert sizes == {"segnet_r50": 32, "unet_vgg16": 16}
