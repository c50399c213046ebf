"""``rtseg run``: the live pipeline on a file, a frame directory, a camera or a stream."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from rtseg.cli.common import (PRECISION_HELP, Device, Precision, app, bundled_engine,
                              ensure_output_dir, ensure_parent, interrupted_exit, print_written,
                              write_json)
from rtseg.errors import BadInput, RtsegError
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
        self.end()
        self.stream.write(f"{redact(text)}\n")
        self.stream.flush()

    def end(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.open = False


def _bound_by(stage_ms: dict) -> str:
    known = {k: v for k, v in stage_ms.items() if v is not None}
    return max(known, key=known.get) if known else "-"


def print_summary(result: dict) -> None:
    """The final table on stdout."""
    from rich.console import Console
    from rich.table import Table

    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    table = Table(title="rtseg run", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("source", redact(str(result["source"])))
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
    table.add_row("bound by", _bound_by(result["stage_ms"]))
    Console(file=sys.stdout).print(table)


def format_tc(result: dict) -> str:
    """``0.9531  (219 pairs, 0 skipped, 4.1% of pixels flow-rejected)``."""
    tc, rejected = result["tc"], result["tc_flow_rejected"]
    text = "-" if tc is None else f"{tc:.4f}"
    text += f"  ({result['tc_pairs']} pairs, {result['tc_skipped']} skipped"
    return text + (")" if rejected is None else f", {100 * rejected:.1f}% of pixels "
                   "flow-rejected)")


@app.command("run")
def run_(
    source: str = typer.Option(..., help="Video file, directory of frames (file-name order), "
                                         "camera index (0), or rtsp:// / http(s):// URL."),
    engine: Optional[Path] = typer.Option(
        None, help=".safetensors, .onnx, .plan or .engine (default: the model in engines/)."),
    labels: Optional[Path] = typer.Option(
        None, help="Label PNGs matched to frames by file name: live mIoU (frame directories)."),
    output: Optional[Path] = typer.Option(None, help="Write the overlay video here (mp4)."),
    masks: Optional[Path] = typer.Option(None, help="Write class-id PNGs into this directory."),
    show: bool = typer.Option(False, help="Show the overlay in a window (needs a display)."),
    alpha: float = typer.Option(0.5, help="Weight of the class colours, 0 to 1."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many frames."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the run JSON here."),
    device: Device = typer.Option(Device.auto),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    batch: int = typer.Option(1, help="Frames per inference call."),
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
    """
    from rtseg.pipeline import RunConfig

    config = RunConfig(labels=labels, output=output, masks=masks, show=show, alpha=alpha,
                       max_frames=max_frames, batch=batch, fps=fps, hud=hud,
                       consistency=consistency, smooth=smooth)
    _check_paths(source, labels, output, masks, json_path, show, serve is not None)
    _check_serve_flags(serve, serve_token, serve_linger)
    if consistency:
        from rtseg.pipeline.consistency import check_sequence

        check_sequence(source)  # before the engine loads
    engine = engine if engine is not None else bundled_engine(device, precision)
    status = StatusLine()
    # binds now: a taken port or a bad token fails here
    server = _open_server(serve, serve_token, status.message, serve_show_token)
    with server if server is not None else contextlib.nullcontext():
        interrupted, result = _run(source, engine, config, json_path, device, precision, fps,
                                   status, server)
        print_summary(result)
        warn_flow(result, status)
        print_written([("overlay video", output), ("masks", masks), ("run JSON", json_path)])
        if interrupted:  # Ctrl-C: 130; SIGTERM: 143; SIGHUP: 129
            raise typer.Exit(interrupted_exit())
        if server is not None and serve_linger != 0:
            _linger(server, result, serve_linger, status)


def warn_flow(result: dict, status: StatusLine) -> None:
    """A warning when the flow was rejected on most pixels: TC then says little (frames that
    are not one clip, or motion too fast for the flow)."""
    rejected = result.get("tc_flow_rejected")
    if rejected is not None and rejected > 0.5:
        status.message(f"warning: the flow check rejected {100 * rejected:.0f}% of pixels: TC "
                       "covers only the rest (are these frames one clip?)")


def _run(source: str, engine: Path, config, json_path: Optional[Path], device: Device,
         precision: Precision, fps: Optional[float], status: StatusLine, server) -> tuple:
    """Open the engine and the source, run, write the JSON: (interrupted, run JSON)."""
    from rtseg.backends import open_engine
    from rtseg.pipeline import Pipeline, open_source
    from rtseg.signals import forward_stop_signals, signal_name

    quiet_opencv()
    pipeline, stops, forwarded = None, [], []

    def forward() -> None:
        """Hand the pipeline each stop signal not yet handed (a signal may come meanwhile)."""
        while len(forwarded) < len(stops):
            forwarded.append(None)  # first: a nested call then skips this one
            pipeline.interrupt(signal_name(stops[len(forwarded) - 1]))

    def on_stop(signum: int) -> None:
        """Ctrl-C, SIGTERM or SIGHUP: the pipeline finishes the frames in flight (a second
        stops it at once); before it exists, a second one stops opening the source."""
        stops.append(signum)
        if pipeline is not None:
            forward()
        elif len(stops) > 1:
            raise KeyboardInterrupt

    with open_engine(engine, device.value, precision.value) as backend, \
            forward_stop_signals(on_stop):
        # From here until the JSON is written, a stop signal asks the pipeline to finish
        # instead of raising: at any moment it still leaves the video finalised and the JSON
        # written (one that comes while the source opens stops the run at its start).
        src = open_source(source, fps, config.reconnect, status.message)
        if server is not None:
            server.describe(engine=str(engine))
        pipeline = Pipeline(src, backend, config, on_status=status, on_message=status.message,
                            server=server)
        forward()
        try:
            result = pipeline.run()
        except RtsegError as exc:  # a stage failed: the JSON still records the frames done
            write_failed_run(json_path, engine, exc)
            raise
        finally:
            status.end()
        result = {"engine": str(engine), **result}
        if json_path:
            write_json(json_path, result)
    # A press just as the run ended counts too.
    return bool(result["interrupted"] or pipeline.interrupted), result


def _check_serve_flags(serve: Optional[str], token: Optional[str],
                       linger: Optional[float]) -> None:
    if serve is None:
        if linger is not None:
            raise BadInput("--serve-linger needs --serve [HOST:]PORT")
        if token is not None and os.environ.get("RTSEG_SERVE_TOKEN") != token:
            raise BadInput("--serve-token needs --serve [HOST:]PORT")
        return  # a token from $RTSEG_SERVE_TOKEN alone is simply not used
    if linger is not None and linger < 0:
        raise BadInput(f"--serve-linger {linger:g} must be 0 or more seconds")


def _open_server(serve: Optional[str], token: Optional[str], say, show_token: bool = False):
    """The live page's server, bound (it serves once the caller enters it), before the engine
    loads, so the page is up at once and a bad address or token fails before any work; None
    without --serve. The token is printed only when asked (terminals end up in logs)."""
    if serve is None:
        return None
    from rtseg.pipeline.serve import LiveServer

    server = LiveServer(serve, token=token, on_error=say)
    warning = server.warning()
    if warning:
        say(warning)
    hint = "; open it with ?token= and the token" if token and not show_token else ""
    line = f"live view: {server.url}  (overlay, FPS, stage times{hint}; Ctrl-C stops)"
    if show_token:  # asked for: printed as it is (say() would hide the token)
        print(line.replace(server.url, server.url_with_token), file=sys.stderr, flush=True)
    else:
        say(line)
    return server  # serving starts as the caller enters it


def _linger(server, result: dict, seconds: Optional[float], status: StatusLine) -> None:
    """After the source ended: the page keeps the last frame and the final numbers until
    Ctrl-C (or ``seconds``). The run is complete and its outputs are written, so Ctrl-C here
    exits 0."""
    import threading

    from rtseg.pipeline.signals import forward_sigint

    until = "Ctrl-C" if seconds is None else f"{seconds:g} s"
    pressed = threading.Event()
    with forward_sigint(pressed.set):  # a press at any moment from here on just stops serving
        status.message(f"run ended ({result['ended_by']}): {server.url} shows the last frame "
                       f"and the final numbers until {until}")
        server.wait(seconds, stop=pressed)
    if pressed.is_set():
        status.message("stopped serving")


def quiet_opencv() -> None:
    """OpenCV's own warnings off (``[ WARN:0] ... FFmpeg: Failed to write frame`` on a full
    disk), unless --debug: rtseg reports what failed itself, in one line."""
    from rtseg.cli.common import DEBUG

    if not DEBUG["on"]:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def write_failed_run(json_path: Path | None, engine: Path, error: RtsegError) -> None:
    """The run JSON of a run a stage failure ended (``error.result``: the frames written,
    ``ended_by``, ``error``), when ``--json`` asked for one. Best effort: on a full disk the
    error that stopped the run, not this file, is the one to report."""
    if json_path is None or error.result is None:
        return
    with contextlib.suppress(OSError):
        write_json(json_path, {"engine": str(engine), **error.result})


def _check_paths(source: str, labels: Optional[Path], output: Optional[Path],
                 masks: Optional[Path], json_path: Optional[Path], show: bool,
                 serve: bool = False) -> None:
    """The cheap checks, before an engine is loaded."""
    from rtseg.errors import MissingDependency
    from rtseg.scoring.live import check_labels
    from rtseg.pipeline.sinks import check_display
    from rtseg.pipeline.sources import is_stream_url

    if show:
        try:
            check_display()
        except MissingDependency as exc:
            if not serve:
                raise
            raise MissingDependency(f"{exc}; --serve already shows the overlay in a browser: "
                                    "drop --show") from None

    is_file_source = not (source.isdigit() or is_stream_url(source))
    if is_file_source and not Path(source).exists():
        raise BadInput(f"--source {source}: no such file or directory")
    if labels is not None:
        if not labels.is_dir():
            raise BadInput(f"--labels {labels}: not a directory")
        if not (is_file_source and Path(source).is_dir()):
            raise BadInput("--labels needs --source to be a directory of frames (labels are "
                           f"matched by file name); {source} is a video or a stream")
        check_labels(labels, source)
    ensure_parent(output, "--output")
    ensure_parent(json_path, "--json")
    ensure_output_dir(masks, "--masks")
