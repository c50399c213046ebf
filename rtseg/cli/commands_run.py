"""``rtseg run``: the live pipeline on a file, a frame directory, a camera or a stream."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from rtseg.cli.common import PRECISION_HELP, Device, Precision, app, interrupted_exit, print_written
from rtseg.redact import redact


class StatusLine:
    """The live status line on stderr: rewritten in place on a terminal, else every 5 s."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up now: stderr may have been redirected
        self.tty = self.stream.isatty()
        self.last = time.monotonic()  # not a tty (a log): first line after 5 s
        self.open = False

    def __call__(self, snapshot: dict) -> None:
        from rtseg.pipeline import format_status

        now = time.monotonic()
        if self.tty:  # one terminal row, or "\r" cannot rewrite it
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + format_status(snapshot)[:width] + "\x1b[K")
            self.open = True
        elif now - self.last >= 5.0:
            self.stream.write(format_status(snapshot) + "\n")
            self.last = now
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (the library has hidden camera passwords already)."""
        self.end()
        self.stream.write(f"{text}\n")
        self.stream.flush()

    def end(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.open = False


def print_summary(result: dict) -> None:
    """The final table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from rtseg.pipeline.stats import bound_by

    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    table = Table(title="rtseg run", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    several = result.get("streams") is not None
    table.add_row("source", f"{len(result['streams'])} streams" if several
                  else redact(str(result["source"])))
    table.add_row("frames", f"{result['frames']}  ({result['ended_by']})")
    table.add_row("seconds", f"{result['seconds']:.2f}")
    table.add_row("FPS", f"{result['fps']:.2f}")
    table.add_row("dropped", str(result["dropped"]))
    table.add_row("backend", f"{result['backend']} on {result['device']}, batch {result['batch']}")
    if result["miou"] is not None:
        table.add_row("mIoU", f"{result['miou']:.4f}  ({result['scored_frames']} frames scored)")
    if "tc_pairs" in result:
        table.add_row("TC (temporal consistency)", format_tc(result))
    if result.get("smooth"):
        table.add_row(f"--smooth {result['smooth']} ms/frame", ms(result["smooth_ms"]))
    for stage, v in result["stage_ms"].items():
        table.add_row(f"{stage} ms/frame", ms(v))
    table.add_row("latency p50 / p99 ms",
                  f"{ms(result['latency_ms']['p50'])} / {ms(result['latency_ms']['p99'])}")
    table.add_row("bound by", bound_by(result["stage_ms"]) or "-")
    for stream in result.get("streams") or ():
        table.add_row(f"  {stream['name']}", stream_row(stream))
    Console(file=sys.stdout).print(table)


def stream_row(stream: dict) -> str:
    """``221 frames 24.1 FPS, dropped 0, p50 83 ms, mIoU 0.61 (end of stream)``."""
    p50 = stream["latency_ms"]["p50"]
    text = (f"{stream['frames']} frames {stream['fps']:.1f} FPS, dropped {stream['dropped']}, "
            f"p50 {'-' if p50 is None else f'{p50:.0f}'} ms")
    if stream["miou"] is not None:
        text += f", mIoU {stream['miou']:.4f}"
    return text + f" ({stream['error'] or stream['ended_by']})"


def format_tc(result: dict) -> str:
    """``0.9531  (219 pairs, 0 skipped, 4.1% of pixels flow-rejected)``."""
    tc, rejected = result["tc"], result["tc_flow_rejected"]
    text = "-" if tc is None else f"{tc:.4f}"
    text += f"  ({result['tc_pairs']} pairs, {result['tc_skipped']} skipped"
    return text + (")" if rejected is None else f", {100 * rejected:.1f}% of pixels "
                   "flow-rejected)")


@app.command("run")
def run_(
    source: List[str] = typer.Option(
        ..., metavar="SRC", help="Video file, directory of frames (file-name order), camera index (0), or "
                  "rtsp:// / http(s):// URL. Repeat for several streams in one run (batched "
                  "together; see --batch, --batch-timeout)."),
    engine: Optional[Path] = typer.Option(
        None, help=".safetensors, .onnx, .plan or .engine (default: the model in engines/)."),
    labels: Optional[List[Path]] = typer.Option(
        None, metavar="DIR", help="Label PNGs matched to frames by file name: live mIoU (frame directories). "
                   "Several sources: once per source, or once per frame directory, in order."),
    output: Optional[Path] = typer.Option(
        None, help="Write the overlay video here (mp4). Several sources: a pattern with "
                   "{stream} (out/{stream}.mp4) or an existing directory."),
    masks: Optional[Path] = typer.Option(
        None, help="Write class-id PNGs into this directory. Several sources: a pattern with "
                   "{stream}, or a directory (one subdirectory per stream)."),
    show: bool = typer.Option(False, help="Show the overlay in a window (needs a display)."),
    alpha: float = typer.Option(0.5, help="Weight of the class colours, 0 to 1."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many frames."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the run JSON here."),
    device: Device = typer.Option(Device.auto),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    batch: int = typer.Option(1, help="Frames per inference call (several sources: gathered "
                                      "across the streams, round-robin)."),
    batch_timeout: Optional[float] = typer.Option(
        None, metavar="MS",
        help="Send a batch that is not full this many milliseconds after its first frame: with "
             "several sources a stalled camera never holds the others back (default 40); one "
             "live source waits this long for a fuller batch (default: no wait)."),
    fps: Optional[float] = typer.Option(None, help="Frame rate of a frame directory (25)."),
    hud: bool = typer.Option(True, help="Draw FPS and stage times on the overlay."),
    serve: Optional[str] = typer.Option(
        None, metavar="[HOST:]PORT",
        help="Watch live in a browser at http://HOST:PORT/ (overlay, FPS, stage times, mIoU). "
             "HOST defaults to 127.0.0.1 (this machine only; over SSH: ssh -L PORT:localhost:"
             "PORT); 0.0.0.0 is every interface; PORT 0 picks a free one."),
    serve_token: Optional[str] = typer.Option(
        None, envvar="RTSEG_SERVE_TOKEN",
        help="With --serve: every request needs this token (?token=TOKEN or "
             "Authorization: Bearer TOKEN); also read from $RTSEG_SERVE_TOKEN. At least 16 "
             "characters: python -c \"import secrets; print(secrets.token_urlsafe())\"."),
    serve_show_token: bool = typer.Option(
        False, help="With --serve-token: print the page's address with the token in it "
                    "(kept out of the terminal and logs by default)."),
    consistency: bool = typer.Option(
        False, "--consistency",
        help="Measure temporal consistency (TC, flicker; no labels needed) on its own thread: "
             "in the JSON, HUD, status line and --serve page. Needs one clip's frames."),
    smooth: Optional[int] = typer.Option(
        None, metavar="K",
        help="Flicker filter: each pixel's label is the majority of the last K predictions "
             "aligned by optical flow (K from 3 to 15; any engine)."),
    device_frames: bool = typer.Option(
        False, "--device-frames",
        help="PyTorch engines (.safetensors): upload each frame once and resize, segment, "
             "colour and blend on the engine's device (CUDA: only the overlay comes back)."),
    serve_linger: Optional[float] = typer.Option(
        None, metavar="SECONDS",
        help="With --serve: once the source ends, keep showing the last frame and the final "
             "numbers this long (default: until Ctrl-C)."),
):
    """Segment a video, frame directory, camera or stream live.

    \b
    Examples:
      1. rtseg run --source drive.mp4 --output overlay.mp4
      2. rtseg run --source camvid/val --labels camvid/valannot --json run.json
      3. rtseg run --source 0 --show --engine model.onnx
      4. rtseg run --source rtsp://camera.local/stream --masks masks/ --max-frames 1000
      5. rtseg run --source drive.mp4 --serve 8080   (then open http://127.0.0.1:8080/)
      6. rtseg run --source drive.mp4 --consistency --smooth 3 --json run.json
      7. rtseg run --source front.mp4 --source rear.mp4 --batch 2 --output out/{stream}.mp4
    """
    from rtseg import pipeline

    if serve is None and serve_token == os.environ.get("RTSEG_SERVE_TOKEN"):
        serve_token = None  # a token from $RTSEG_SERVE_TOKEN alone is simply not used
    quiet_opencv()
    status = StatusLine()

    def on_end(result: dict) -> None:
        """The run's outputs are written: the summary, before a --serve page lingers."""
        status.end()
        print_summary(result)
        streams = result.get("streams") or ()
        print_written([(f"overlay video ({s['name']})", s["output"]) for s in streams]
                      + [(f"masks ({s['name']})", s["masks"]) for s in streams]
                      + ([] if streams else [("overlay video", output), ("masks", masks)])
                      + [("run JSON", json_path)])

    try:
        result = pipeline.run(
            source, engine, device.value, precision.value, on_status=status,
            on_message=status.message, json_path=json_path, serve=serve,
            serve_token=serve_token, serve_show_token=serve_show_token,
            serve_linger=serve_linger, on_end=on_end, labels=labels, output=output,
            masks=masks, show=show, alpha=alpha, max_frames=max_frames, batch=batch,
            batch_timeout_ms=batch_timeout, fps=fps,
            hud=hud, consistency=consistency, smooth=smooth, device_frames=device_frames)
    finally:
        status.end()
    if result["interrupted"]:  # Ctrl-C: 130; SIGTERM: 143; SIGHUP: 129
        raise typer.Exit(interrupted_exit())


def quiet_opencv() -> None:
    """OpenCV's own warnings off (``[ WARN:0] ... FFmpeg: Failed to write frame`` on a full
    disk), unless --debug: rtseg reports what failed itself, in one line."""
    from rtseg.cli.common import DEBUG

    if not DEBUG["on"]:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

