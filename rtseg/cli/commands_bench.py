"""``rtseg bench``: engine speed per batch size, and the pipeline against the engine alone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from rtseg.cli.commands_run import default_engine
from rtseg.cli.common import Device, app, ensure_parent, log, write_json
from rtseg.errors import BadInput
from rtseg.files import atomic_write


def parse_batches(text: str) -> list[int]:
    """``"1,4,8"`` → [1, 4, 8]; BadInput for anything that is not a list of integers ≥ 1."""
    try:
        batches = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise BadInput(f"--batch expects comma-separated integers, e.g. 1,4,8; got {text!r}") \
            from None
    for b in batches:
        if b < 1:
            raise BadInput(f"--batch {b}: batch sizes must be at least 1")
    return batches


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
    console.print(f"pipeline vs engine alone: batch {result['pipeline_batch']}, "
                  f"{result['pipeline_frames']} frames of {result['source']}")
    pipe = Table(show_header=False)
    pipe.add_column(style="bold")
    pipe.add_column(justify="right")
    pipe.add_row("engine FPS", f"{result['engine_fps']:.2f}")
    pipe.add_row("pipeline FPS", f"{result['pipeline_fps']:.2f}")
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
    iters: int = typer.Option(20, help="Timed inference calls per batch size."),
    warmup: int = typer.Option(3, help="Untimed calls before each batch size."),
    rounds: int = typer.Option(1, help="Pipeline / engine-alone rounds (medians reported)."),
    max_frames: Optional[int] = typer.Option(
        None, help="Frames of the pipeline run (default: the whole file; 300 of a stream)."),
    device: Device = typer.Option(Device.auto),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the bench JSON here."),
    markdown: Optional[Path] = typer.Option(None, help="Write a Markdown table here."),
):
    """Measure engine latency and throughput per batch size, and pipeline FPS against it.

    \b
    Examples:
      1. rtseg bench --engine model.onnx --batch 1,4,8
      2. rtseg bench --engine model.plan --source drive.mp4 --batch 4 --json bench.json
      3. rtseg bench --source camvid/val --iters 50 --markdown bench.md
    """
    from rtseg.bench import validate

    batches = parse_batches(batch)
    validate(batches, iters, warmup, rounds, max_frames)
    if source is not None:
        _check_source(source)
    ensure_parent(json_path, "--json")
    ensure_parent(markdown, "--markdown")
    engine = engine if engine is not None else default_engine()

    from rtseg.backends import open_engine
    from rtseg.bench import bench, to_markdown

    with open_engine(engine, device.value) as backend:
        result = bench(backend, source, batches, iters, warmup, rounds, max_frames,
                       on_progress=log)
    result = {"engine": str(engine), **result}
    if json_path:
        write_json(json_path, result)
    if markdown:
        atomic_write(markdown, to_markdown(result))
    print_table(result)


def _check_source(source: str) -> None:
    """A file or directory source must exist (checked before the engine is loaded)."""
    from rtseg.pipeline.sources import is_stream_url

    if not (source.isdigit() or is_stream_url(source)) and not Path(source).exists():
        raise BadInput(f"--source {source}: no such file or directory")
