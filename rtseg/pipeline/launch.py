"""One whole ``rtseg run`` as a library call: :func:`run`.

Around one :class:`~rtseg.pipeline.runner.Pipeline` it does what the command does, so a
Python caller gets the same behaviour: every cheap check before the engine loads; the live
page bound before any work (a taken port fails at once); Ctrl-C, SIGTERM and SIGHUP handed to
the pipeline, which finishes the frames in flight; the run JSON written however the run ends
(a failed run's too, with ``ended_by`` and ``error``); the page kept up after the end when
asked. Messages for the user go to ``on_message``, with camera passwords already hidden.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

from rtseg.backends import Backend, open_engine
from rtseg.cpu_features import read_cpu_features
from rtseg.engines import bundled_choice
from rtseg.errors import BadInput, RtsegError
from rtseg.files import write_json
from rtseg.pipeline.config import RunConfig, check_run, check_serve
from rtseg.pipeline.consistency import check_sequence
from rtseg.pipeline.multirunner import MultiPipeline
from rtseg.pipeline.runner import MessageCallback, Pipeline, StatusCallback
from rtseg.pipeline.serve import LiveServer
from rtseg.pipeline.sinks import Sink
from rtseg.pipeline.sources import Source, open_source
from rtseg.pipeline.streams import StreamPlan, plan_streams
from rtseg.redact import redact
from rtseg.signals import forward_sigint, forward_stop_signals, signal_name

FLOW_REJECTED_WARN = 0.5  # above this share of flow-rejected pixels, TC says little


def run(source: str | Path | Source, engine: Backend | str | Path | None = None,
        device: str = "auto", precision: str = "auto", sinks: Sequence[Sink] = (),
        on_status: StatusCallback | None = None, on_message: MessageCallback | None = None,
        server: Optional[LiveServer] = None, json_path: str | Path | None = None,
        serve: Optional[str] = None, serve_token: Optional[str] = None,
        serve_show_token: bool = False, serve_linger: Optional[float] = None,
        on_end: Optional[Callable[[dict], None]] = None, **options) -> dict:
    """The Python face of ``rtseg run``: segment ``source`` with ``engine``; the run JSON.

    ``source``: a path, camera index, URL or a Source; or a list of paths, camera indices
    and URLs: several streams in one run (:class:`~rtseg.pipeline.multirunner.MultiPipeline`;
    ``labels`` then a list, ``output``/``masks`` a ``{stream}`` pattern or a directory, see
    :mod:`~rtseg.pipeline.streams`; ``sinks`` are for one source only: BadInput with several). ``engine``: a
    loaded Backend, or an engine file (opened on ``device`` in ``precision`` and closed
    afterwards; None: the bundled model). ``options`` are RunConfig's fields (``output``, ``masks``, ``labels``,
    ``alpha``, ``max_frames``, ``batch``, ``consistency``, ``smooth``, …). Everything is
    checked (BadInput, naming the flag) before the engine or the source is opened.

    ``json_path``: write the run JSON there, also when a stage failure ends the run (then
    the error, raised here, carries it as ``result``). In the main thread, Ctrl-C, SIGTERM
    and SIGHUP finish the frames in flight (a second stops at once) and the result says
    ``interrupted`` (a signal just as the run ended counts too).

    ``serve``: ``"[HOST:]PORT"`` of a live page opened (and closed) here, with
    ``serve_token`` required by it; once the source ends it keeps the last frame and the
    final numbers for ``serve_linger`` seconds (None: until Ctrl-C; never after an
    interrupted run). ``serve_show_token``: the address announced through ``on_message``
    carries the token. ``server``: a LiveServer of the caller's instead (not closed here).
    ``on_end(result)``: called once the outputs are written, before the page lingers.

    >>> run("drive.mp4", "engines/default.safetensors", output="overlay.mp4")["fps"]
    """
    source, labels = one_or_several(source, options.pop("labels", None))
    several = isinstance(source, list)
    if not several:
        options["labels"] = labels
    for key in ("labels", "output", "masks"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    json_path = None if json_path is None else Path(json_path)
    given_source = source if isinstance(source, Source) else None
    try:
        config = RunConfig(**options)
        serving = serve is not None or server is not None
        if several:
            if sinks:
                raise BadInput("sinks= takes the frames of one source; with several, give "
                               "output or masks a {stream} pattern")
            plans = check_streams(source, labels, config, json_path, serving)
        else:
            check_run(source, config, json_path, serving=serving)
        check_serve(serve, serve_token, serve_linger)
        if serve is not None and server is not None:
            raise BadInput("give serve (an address to open a page on) or server (a page "
                           "already open), not both")
        if config.consistency and not several:
            check_sequence(source)  # before the engine loads
        picked = None
        if engine is None:
            engine, picked = bundled_choice(device, precision)
        # binds now: a taken port or a bad token fails before the engine loads
        own = (None if serve is None
               else open_server(serve, serve_token, on_message, serve_show_token))
    except BaseException:
        if given_source is not None:  # ours to close, as a Pipeline's would be
            given_source.close()
        raise
    say = _redacting(on_message)
    if picked is not None:
        say(picked)
    with own if own is not None else contextlib.nullcontext():
        page = server or own
        if several:
            make = partial(_open_streams, plans, config, on_status, page)
        else:
            make = partial(_open_one, source, config, sinks, on_status, page)
        result = _run_once(make, engine, device, precision, page, json_path, say)
        warn_flow(result, say)
        if on_end is not None:
            on_end(result)
        if own is not None and not result["interrupted"] and serve_linger != 0:
            linger(own, result, serve_linger, say)
    return result


def _redacting(on_message: MessageCallback | None) -> MessageCallback:
    """``on_message`` with every URL's password hidden (None: messages are dropped)."""
    if on_message is None:
        return lambda _m: None
    return lambda text: on_message(redact(text))


def one_or_several(source, labels) -> tuple:
    """``(source, labels)`` for one source (a list of one is one), or ``(list of sources,
    list of label directories)`` for several; BadInput for several ``labels`` with one
    source."""
    if not isinstance(source, (list, tuple)):
        source = [source]
    sources = list(source)
    if not sources:
        raise BadInput("--source is missing: give at least one")
    given = [] if labels is None else (list(labels) if isinstance(labels, (list, tuple))
                                       else [labels])
    if len(sources) > 1:
        return sources, [Path(p) for p in given]
    if len(given) > 1:
        raise BadInput(f"--labels is given {len(given)} times for 1 source: give it once")
    return sources[0], (given[0] if given else None)


def check_streams(sources: Sequence[str | Path], labels: Sequence[Path], config: RunConfig,
                  json_path: Optional[Path], serving: bool) -> list[StreamPlan]:
    """The cheap checks of a run over several sources (see :func:`check_run`); their plans."""
    if config.consistency or config.smooth:
        raise BadInput("--consistency and --smooth follow one clip: give one --source")
    if any(isinstance(s, Source) for s in sources):
        raise BadInput("several sources are given as paths, camera indices or URLs")
    plans = plan_streams(sources, labels, config.output, config.masks)
    for plan in plans:
        check_run(plan.spec, replace(config, labels=plan.labels, output=None, masks=None),
                  json_path, serving=serving)
    return plans


def _open_one(source: str | Path | Source, config: RunConfig, sinks: Sequence[Sink],
              on_status: StatusCallback | None, server: Optional[LiveServer],
              backend: Backend, say: MessageCallback) -> Pipeline:
    """The pipeline of a run over one source (opened here unless it is a Source)."""
    if not isinstance(source, Source):
        source = open_source(source, config.fps, config.reconnect, say)
    return Pipeline(source, backend, config, sinks, on_status, say, server)


def _open_streams(plans: Sequence[StreamPlan], config: RunConfig,
                  on_status: StatusCallback | None, server: Optional[LiveServer],
                  backend: Backend, say: MessageCallback) -> Pipeline:
    """The pipeline of a run over several sources, each opened here in order (those opened
    are closed again if one cannot be)."""
    sources: list[Source] = []
    try:
        for plan in plans:
            sources.append(open_source(plan.spec, config.fps, config.reconnect, say))
    except BaseException:
        for source in sources:
            source.close()
        raise
    return MultiPipeline(sources, plans, backend, config, on_status, say, server)


def _run_once(make: Callable[[Backend, MessageCallback], Pipeline],
              engine: Backend | str | Path, device: str, precision: str,
              server: Optional[LiveServer], json_path: Optional[Path], say: MessageCallback
              ) -> dict:
    """Open the engine and the sources (``make``: the pipeline, given the engine), run with
    the stop signals forwarded, write the JSON."""
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

    given = isinstance(engine, Backend)
    head = {} if given else {"engine": str(engine)}
    with (contextlib.nullcontext(engine) if given
          else open_engine(engine, device, precision)) as backend, \
            forward_stop_signals(on_stop):
        # From here until the JSON is written, a stop signal asks the pipeline to finish
        # instead of raising: at any moment it still leaves the video finalised and the JSON
        # written (one that comes while the source opens stops the run at its start).
        if server is not None:
            server.describe(**head)
        pipeline = make(backend, say)
        forward()
        try:
            result = {**head, **pipeline.run(), "cpu": cpu_info()}
        except RtsegError as exc:  # a stage failed: the JSON still records the frames done
            if exc.result is not None:
                exc.result = {**head, **exc.result, "cpu": cpu_info()}
                write_failed_run(json_path, exc.result)
            raise
        if json_path is not None:
            write_json(json_path, result)
    if pipeline.interrupted:  # a signal just as the run ended (the JSON says what was run)
        result["interrupted"] = True
    return result


def cpu_info() -> dict:
    """The CPU the run ran on, for the run JSON: its model name, its class for int8 speed
    and the feature flags the kernels choose by (see :mod:`rtseg.cpu_features`)."""
    features = read_cpu_features()
    return {"model": features.model, "class": features.isa_class,
            "features": features.reported()}


def write_failed_run(json_path: Optional[Path], result: dict) -> None:
    """The run JSON of a run a stage failure ended (the frames written, ``ended_by``,
    ``error``), when one was asked for. Best effort: on a full disk the error that stopped
    the run, not this file, is the one to report."""
    if json_path is None:
        return
    with contextlib.suppress(OSError):
        write_json(json_path, result)


def warn_flow(result: dict, say: MessageCallback) -> None:
    """A warning when the flow was rejected on most pixels: TC then says little (frames that
    are not one clip, or motion too fast for the flow)."""
    rejected = result.get("tc_flow_rejected")
    if rejected is not None and rejected > FLOW_REJECTED_WARN:
        say(f"warning: the flow check rejected {100 * rejected:.0f}% of pixels: TC covers "
            "only the rest (are these frames one clip?)")


def open_server(serve: str, token: Optional[str], on_message: MessageCallback | None,
                show_token: bool = False) -> LiveServer:
    """The live page's server, bound (it serves once the caller enters it), its address
    announced through ``on_message``: without the token unless ``show_token`` (terminals
    end up in logs)."""
    say = _redacting(on_message)
    server = LiveServer(serve, token=token, on_error=say)
    warning = server.warning()
    if warning:
        say(warning)
    hint = "; open it with ?token= and the token" if token and not show_token else ""
    line = f"live view: {server.url}  (overlay, FPS, stage times{hint}; Ctrl-C stops)"
    if show_token and on_message is not None:  # asked for: as it is (say() hides the token)
        on_message(line.replace(server.url, server.url_with_token))
    else:
        say(line)
    return server


def linger(server: LiveServer, result: dict, seconds: Optional[float],
           say: MessageCallback) -> None:
    """After the source ended: the page keeps the last frame and the final numbers until
    Ctrl-C (or ``seconds``). The run is complete and its outputs are written, so Ctrl-C here
    only stops the serving."""
    until = "Ctrl-C" if seconds is None else f"{seconds:g} s"
    pressed = threading.Event()
    with forward_sigint(pressed.set):  # a press at any moment from here on just stops serving
        say(f"run ended ({result['ended_by']}): {server.url} shows the last frame and the "
            f"final numbers until {until}")
        server.wait(seconds, stop=pressed)
    if pressed.is_set():
        say("stopped serving")
