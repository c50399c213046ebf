"""``rtseg bench``: engine speed per batch size, and the pipeline against the engine alone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from rtseg.cli.common import (PRECISION_HELP, Dataset, Device, Precision, Split, app, log,
                              print_written)
from rtseg.engines import bundled_choice
from rtseg.errors import BadInput
from rtseg.files import atomic_write, ensure_parent, write_json


def print_table(result: dict) -> None:
    """The results table (and the pipeline figures) on stdout."""
    from rich.console import Console
    from rich.table import Table

    def ms(v):
        return "-" if v is None else f"{v:.2f}"

    h, w = result["input_size"]
    console = Console(file=sys.stdout)
    console.print(f"rtseg bench: {result['backend']} on {result['device']}, "
                  f"{result['precision']}, input {h}x{w}, {result['inputs']}")
    table = Table(title="engine alone")
    for name in ("batch", "FPS", "p50 ms", "p99 ms"):
        table.add_column(name, justify="right")
    for r in result["results"]:
        table.add_row(str(r["batch"]), f"{r['fps']:.2f}", ms(r["latency_ms"]["p50"]),
                      ms(r["latency_ms"]["p99"]))
    console.print(table)
    if result["pipeline_fps"] is None:
        return
    copies = f"{result['streams']} streams of " if result.get("streams", 1) > 1 else ""
    console.print(f"pipeline vs engine alone: batch {result['pipeline_batch']}, "
                  f"{result['pipeline_frames']} frames of {copies}{result['source']}")
    pipe = Table(show_header=False)
    pipe.add_column(style="bold")
    pipe.add_column(justify="right")
    pipe.add_row("engine FPS", f"{result['engine_fps']:.2f}")
    pipe.add_row("pipeline FPS", f"{result['pipeline_fps']:.2f}")
    if result.get("stream_fps"):
        pipe.add_row("FPS per stream", ", ".join(f"{v:.2f}" for v in result["stream_fps"]))
    pipe.add_row("ratio", f"{result['pipeline_ratio']:.3f}")
    for stage, v in result["stage_ms"].items():
        pipe.add_row(f"{stage} ms/frame", ms(v))
    pipe.add_row("bound by", str(result["bound_by"]))
    console.print(pipe)


@app.command("bench")
def bench_(
    engine: Optional[Path] = typer.Option(
        None, help=".safetensors, .onnx, .plan or .engine (default: the model in engines/)."),
    source: Optional[str] = typer.Option(
        None, help="Frames for the engine and a pipeline run to compare with (video file, "
                   "frame directory, camera index, URL); random frames without it."),
    batch: str = typer.Option("1", help="Batch sizes, comma-separated; the first one is the "
                                        "pipeline's."),
    streams: Optional[int] = typer.Option(
        None, metavar="N", help="Run N copies of --source (a file or frame directory) through "
                                "the pipeline at once, batched together, as rtseg run does "
                                "with N --source: aggregate and per-stream FPS."),
    iters: int = typer.Option(20, help="Timed inference calls per batch size."),
    warmup: int = typer.Option(3, help="Untimed calls before each batch size."),
    rounds: int = typer.Option(1, help="Pipeline / engine-alone rounds (medians reported)."),
    max_frames: Optional[int] = typer.Option(
        None, help="Frames of the pipeline run (default: the whole file; 300 of a stream)."),
    device: Device = typer.Option(Device.auto),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the bench JSON here."),
    markdown: Optional[Path] = typer.Option(None, help="Write a Markdown table here."),
    compare: bool = typer.Option(
        False, "--compare", help="Compare the ENGINES given as arguments: mIoU on --data-root's "
                                 "split, pixel agreement with the first, FPS per batch."),
    engines: Optional[list[str]] = typer.Argument(
        None, help="With --compare: engine files, the reference (e.g. the fp32 export) first; "
                   "FILE.safetensors@bf16 runs that one in bf16 (any --precision value)."),
    dataset: Optional[Dataset] = typer.Option(
        None, help="With --compare: label set of --data-root (default: the engines')."),
    data_root: Optional[Path] = typer.Option(
        None, help="With --compare: labelled dataset root (CamVid, Cityscapes or folder "
                   "layout)."),
    split: Split = typer.Option(Split.val, help="With --compare: the split to score."),
    limit: Optional[int] = typer.Option(None, help="With --compare: first N images only."),
    plot: Optional[Path] = typer.Option(
        None, help="With --compare: write a PNG of FPS against mIoU here (matplotlib)."),
):
    """Measure engine latency and throughput per batch size, and pipeline FPS against it.

    \b
    Examples:
      1. rtseg bench --engine model.onnx --batch 1,4,8
      2. rtseg bench --engine model.plan --source drive.mp4 --batch 4 --json bench.json
      3. rtseg bench --source camvid/val --iters 50 --markdown bench.md
      4. rtseg bench --compare unet_r50.onnx segnet_r50.onnx --data-root camvid --plot fps.png
      5. rtseg bench --compare m_fp32.onnx m_fp16.onnx --data-root camvid   (fp16 vs fp32)
      6. rtseg bench --source drive.mp4 --streams 4 --batch 4   (4 cameras, one engine)
    """
    from rtseg.bench import parse_batches, validate

    batches = parse_batches(batch)
    if compare or engines:
        _check_compare_flags(compare, engines, engine, source, data_root, limit)
        ensure_parent(json_path, "--json")
        ensure_parent(markdown, "--markdown")
        ensure_parent(plot, "--plot")
        return _compare(engines, dataset, data_root, split.value, limit, batches, iters, warmup,
                        device.value, precision.value, json_path, markdown, plot)
    for flag, value in (("--dataset", dataset), ("--data-root", data_root), ("--plot", plot),
                        ("--limit", limit)):
        if value is not None:
            raise BadInput(f"{flag} belongs to --compare (rtseg bench --compare ENGINE... "
                           "--data-root DIR)")
    validate(batches, iters, warmup, rounds, max_frames, streams, source)
    if source is not None:
        from rtseg.pipeline.sources import check_source

        check_source(source)
    ensure_parent(json_path, "--json")
    ensure_parent(markdown, "--markdown")
    if engine is None:
        engine, picked = bundled_choice(device.value, precision.value)
        log(picked)

    from rtseg.backends import open_engine
    from rtseg.bench import bench, to_markdown

    with open_engine(engine, device.value, precision.value) as backend:
        result = bench(backend, source, batches, iters, warmup, rounds, max_frames,
                       on_progress=log, streams=streams)
    result = {"engine": str(engine), **result}
    if json_path:
        write_json(json_path, result)
    if markdown:
        atomic_write(markdown, to_markdown(result))
    print_table(result)


def _check_compare_flags(compare: bool, engines: Optional[list[str]], engine: Optional[Path],
                         source: Optional[str], data_root: Optional[Path],
                         limit: Optional[int]) -> None:
    """--compare takes engine files as arguments and a labelled --data-root, nothing else."""
    usage = "rtseg bench --compare ENGINE [ENGINE...] --data-root DIR"
    if not compare:
        raise BadInput(f"engine files as arguments need --compare ({usage}); one engine is "
                       "--engine FILE")
    if not engines:
        raise BadInput(f"--compare needs engine files: {usage}")
    if engine is not None or source is not None:
        flag = "--engine" if engine is not None else "--source"
        raise BadInput(f"{flag} does not go with --compare: list the engines as arguments "
                       f"({usage})")
    if data_root is None:
        raise BadInput(f"--compare needs a labelled split to score: {usage}")
    if not data_root.is_dir():
        raise BadInput(f"--data-root {data_root}: no such directory")
    if limit is not None and limit < 1:
        raise BadInput(f"--limit {limit} must be at least 1")
    from rtseg.backends import check_engine_files

    check_engine_files(engines)


def _compare(engines: list[str], dataset: Optional[Dataset], data_root: Path, split: str,
             limit: Optional[int], batches: list[int], iters: int, warmup: int, device: str,
             precision: str, json_path: Optional[Path], markdown: Optional[Path],
             plot: Optional[Path]) -> None:
    """Compare the engine files, write and print the results."""
    from rtseg.compare import compare_files, plot as plot_png, to_markdown

    result = compare_files(engines, data_root, split, dataset and dataset.value, limit,
                           batches, iters, warmup, device, precision, on_progress=log)
    if json_path:
        write_json(json_path, result)
    if markdown:
        atomic_write(markdown, to_markdown(result))
    if plot:
        plot_png(result, plot)
    print_comparison(result)
    print_written([("JSON", json_path), ("Markdown", markdown), ("plot", plot)])


def print_comparison(result: dict) -> None:
    """The comparison table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['dataset']} {result['split']}, {result['images']} images "
                        f"(Δ and agreement vs the first)")
    for name in ("engine", "precision", "mIoU", "Δ pt", "agree %", "FPS b1", "best FPS"):
        table.add_column(name, justify="left" if name == "engine" else "right")
    from rtseg.compare import short_names

    for name, r in zip(short_names([r["engine"] for r in result["engines"]]), result["engines"]):
        b1 = "-" if r["fps_batch1"] is None else f"{r['fps_batch1']:.2f}"
        table.add_row(name, r["precision"], f"{r['miou']:.4f}",
                      f"{r['miou_delta_points']:+.2f}", f"{100 * r['pixel_agreement']:.2f}",
                      b1, f"{r['best_fps']:.2f} (b{r['best_batch']})")
    Console(file=sys.stdout).print(table)
