"""Models side by side — accuracy on a labelled split and speed, one row per engine.

:func:`compare` regenerates the report's model comparison with speed added: every engine is
scored on the same frames of a labelled split in one pass (mIoU, per-class IoU, pixel
accuracy — the very numbers ``rtseg eval`` gives, through its scoring loop
:func:`rtseg.scoring.loop.score`), its label maps are compared pixel by pixel with those of
the first engine (the *reference*: give the fp32 export first and the fp16 one second, and
the row of the fp16 engine is the FP16-vs-FP32 report), and then each engine alone is timed
per batch size on frames of that split (:func:`rtseg.bench.time_engine`).

>>> rows = compare([open_engine("a_fp32.onnx"), open_engine("a_fp16.onnx")],
...                ["a_fp32.onnx", "a_fp16.onnx"], "camvid", "data/camvid")
>>> rows["engines"][1]["miou_delta_points"], rows["engines"][1]["pixel_agreement"]

:func:`compare_files` does the same from engine files (``"m.safetensors@bf16"`` names a
precision), opening and closing them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from rtseg.backends import Backend, open_engine, split_engine_spec
from rtseg.bench import POOL, machine, on_worker, time_engine, validate
from rtseg.data import engine_dataset, find_pairs, get_spec, load_pair
from rtseg.data.datasets import DatasetLike
from rtseg.errors import BadInput, MissingDependency
from rtseg.files import write_via_temp
from rtseg.scoring.evaluate import check_engine_matches, is_clip
from rtseg.scoring.loop import EngineScore, engine_frames, eval_batches, score

Progress = Callable[[str], None]


def score_together(backends: Sequence[Backend], dataset: DatasetLike, data_root: Path | str,
                   split: str = "val", limit: int | None = None, batch_size: int = 4,
                   on_progress: Progress | None = None) -> tuple[list[dict], int]:
    """Score every backend on the same frames: per backend the eval numbers plus
    ``pixel_agreement`` with the first backend's label maps (all pixels, ignore included).
    Returns (rows, number of images)."""
    spec = get_spec(dataset, data_root)
    for backend in backends:
        check_engine_matches(backend, spec)
    pairs = find_pairs(spec, data_root, split)[:limit]
    if not pairs:
        raise BadInput(f"--data-root {data_root}: no labelled {split} images found")
    if on_progress:
        on_progress(f"scoring {len(backends)} engine(s) on {len(pairs)} {spec.name} {split} images")
    clip = is_clip(pairs)  # frames of one clip: temporal consistency too
    engines = [EngineScore(backend, spec, temporal=clip) for backend in backends]
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        on_progress(f"scored {done}/{len(pairs)} images")

    score(engines, eval_batches(pairs, spec, batch_size), progress if on_progress else None)
    return [engine.report() | {"pixel_agreement": engine.agreement()} for engine in engines], \
        len(pairs)


def split_frames(dataset: DatasetLike, data_root: Path | str, split: str,
                 input_size: tuple[int, int],
                 count: int = POOL) -> np.ndarray:
    """The first ``count`` images of the split, resized to ``input_size``: uint8 [N, H, W, 3]."""
    spec = get_spec(dataset, data_root)
    pairs = find_pairs(spec, data_root, split)[:count]
    return engine_frames([load_pair(*pair, spec)[0] for pair in pairs], input_size)


def speed(backend: Backend, pool: np.ndarray, batches: Sequence[int], iters: int,
          warmup: int) -> dict:
    """Engine alone per batch size (on a worker thread, as the pipeline runs it): the
    results list, FPS at the smallest batch, and the best batch and its FPS."""
    results = on_worker(lambda: [time_engine(backend, pool, b, iters, warmup)
                                 for b in sorted(set(batches))])
    best = max(results, key=lambda r: r["fps"])
    return {"results": results, "fps_batch1": results[0]["fps"] if results[0]["batch"] == 1
            else None, "best_batch": best["batch"], "best_fps": best["fps"]}


def compare(backends: Sequence[Backend], names: Sequence[str], dataset: DatasetLike,
            data_root: Path | str, split: str = "val", limit: int | None = None,
            batches: Sequence[int] = (1, 4), iters: int = 10, warmup: int = 2,
            on_progress: Progress | None = None) -> dict:
    """Score and time ``backends`` (named ``names``, the first one the reference).

    Returns {"dataset", "split", "images", "reference", "engines": [row, ...], "machine"}; a
    row holds the engine's name, model, backend, precision, device, input size, ``miou``,
    ``per_class_iou``, ``pixel_accuracy``, ``miou_delta_points`` (100 × the mIoU difference
    to the reference), ``pixel_agreement`` (fraction of pixels labelled as the reference
    labels them), ``results`` per batch size, ``fps_batch1``, ``best_batch``, ``best_fps``.
    """
    if len(backends) != len(names) or not backends:
        raise BadInput("--compare needs at least one engine file")
    validate(list(batches), iters, warmup)
    say = on_progress or (lambda _m: None)
    dataset = get_spec(dataset, data_root)
    scores, images = score_together(backends, dataset, data_root, split, limit,
                                    on_progress=say)
    rows = []
    for name, backend, accuracy in zip(names, backends, scores):
        say(f"timing {name}: batches {', '.join(map(str, sorted(set(batches))))}")
        pool = split_frames(dataset, data_root, split, backend.input_size)
        meta = backend.metadata
        rows.append({"engine": str(name), "model": meta.model, "backend": backend.name,
                     "precision": backend.precision, "device": backend.device,
                     "input_size": list(backend.input_size), **accuracy,
                     "miou_delta_points": 100.0 * (accuracy["miou"] - scores[0]["miou"]),
                     **speed(backend, pool, batches, iters, warmup)})
    return {"dataset": dataset.name, "split": split, "images": images,
            "reference": str(names[0]), "engines": rows,
            "machine": machine(backends[0].device), "iters": iters, "warmup": warmup}


def compare_files(engines: Sequence[str], data_root: Path | str, split: str = "val",
                  dataset: str | None = None, limit: int | None = None,
                  batches: Sequence[int] = (1, 4), iters: int = 10, warmup: int = 2,
                  device: str = "auto", precision: str = "auto",
                  on_progress: Progress | None = None) -> dict:
    """:func:`compare` of engine files, opened on ``device`` and closed after.

    ``engines``: paths, the reference first; ``"m.safetensors@bf16"`` runs that one in bf16,
    the others run at ``precision``. ``dataset``: the label set of ``data_root`` (default:
    the first engine's).

    >>> compare_files(["m_fp32.onnx", "m.safetensors@bf16"], "data/camvid", limit=50)
    """
    with ExitStack() as stack:
        specs = [split_engine_spec(spec, precision) for spec in engines]
        backends = [stack.enter_context(open_engine(path, device, prec)) for path, prec in specs]
        # Without a dataset: the first engine's (a folder data set's classes.yaml is read from
        # data_root).
        name = dataset if dataset is not None else engine_dataset(backends[0].metadata).kind
        return compare(backends, list(engines), name, data_root, split, limit,
                       batches, iters, warmup, on_progress=on_progress)


def short_names(engines: Sequence[str]) -> list[str]:
    """File names, with as many parent folders as it takes to tell them apart
    (``runs/a/best.safetensors``, ``runs/b/best.safetensors`` → ``a/best.safetensors``, …)."""
    parts = [Path(e).parts for e in engines]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(e) for e in engines]


def _fps(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def to_markdown(result: dict) -> str:
    """The comparison as Markdown: the main table (with temporal consistency, TC, when the
    split is one clip), then per-class IoU (classes × engines)."""
    rows = result["engines"]
    clip = any("tc" in r for r in rows)
    lines = [f"{result['dataset']} {result['split']}, {result['images']} images; reference "
             f"for Δ and agreement: `{result['reference']}`", "",
             "| engine | model | backend | precision | input | mIoU | Δ mIoU (pt) | "
             "agreement | FPS b1 | best FPS (batch) |" + (" TC |" if clip else ""),
             "|---|---|---|---|---|---:|---:|---:|---:|---:|" + ("---:|" if clip else "")]
    names = short_names([r["engine"] for r in rows])
    for name, r in zip(names, rows):
        h, w = r["input_size"]
        tc = f" {r['tc']:.4f} |" if clip and r["tc"] is not None else " - |" if clip else ""
        lines.append(f"| `{name}` | {r['model']} | {r['backend']} | "
                     f"{r['precision']} | {h}×{w} | {r['miou']:.4f} | "
                     f"{r['miou_delta_points']:+.2f} | {100 * r['pixel_agreement']:.2f} % | "
                     f"{_fps(r['fps_batch1'])} | {r['best_fps']:.2f} ({r['best_batch']}) |"
                     + tc)
    lines += ["", "| class | " + " | ".join(f"`{n}`" for n in names) + " |",
              "|---|" + "---:|" * len(rows)]
    for cls in rows[0]["per_class_iou"]:
        cells = [r["per_class_iou"].get(cls) for r in rows]
        lines.append(f"| {cls} | " + " | ".join("n/a" if c is None else f"{c:.3f}"
                                                 for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path | str) -> Path:
    """FPS (best batch) against mIoU, one labelled point per engine, as a PNG."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency('--plot needs matplotlib: pip install "rtseg[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rows = result["engines"]
    labels = short_names([r["engine"] for r in rows])
    if len({r["model"] for r in rows}) == len(rows):  # one engine per model: name the models
        labels = [r["model"] for r in rows]
    if len({r["precision"] for r in rows}) > 1:
        labels = [f"{label} {r['precision']}" for label, r in zip(labels, rows)]
    for i, (label, r) in enumerate(zip(labels, rows)):
        ax.scatter(r["best_fps"], 100 * r["miou"], s=40)
        ax.annotate(f"{label} (b{r['best_batch']})", (r["best_fps"], 100 * r["miou"]),
                    textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -12), fontsize=8)
    first = result["engines"][0]
    ax.set_xlabel(f"frames per second, best batch ({first['backend']} on {first['device']})")
    ax.set_ylabel(f"mIoU (%), {result['dataset']} {result['split']}")
    ax.set_title("speed vs accuracy")
    ax.grid(alpha=0.3)
    ax.margins(0.25)
    fig.tight_layout()
    try:
        return write_via_temp(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
