"""``rtseg run --serve``: the live overlay and its numbers in any browser, over plain HTTP.

Routes, GET or HEAD, none reading a path from the request or a file from disk:
``/`` the page · ``/stream.mjpg`` the overlay as MJPEG (``multipart/x-mixed-replace``) ·
``/snapshot.jpg`` the newest frame · ``/stats.json`` the run JSON's keys, live, plus
``state``, ``fps_now``, ``latency_ms_now``, ``queues``, ``classes``, ``viewers``,
``frame_size``, ``jpeg_encodes``, ``serve_cpu_s`` and ``history`` (the chart's last minute).
With several sources ``/`` is a grid of every stream, ``/stream/N.mjpg`` and
``/snapshot/N.jpg`` stream N's frames (N from 0, in ``--source`` order; ``/stream.mjpg`` is
stream 0's), and ``/stats.json``'s ``streams`` has each stream's numbers, ``fps_now`` and
``route``.

This module holds what the page shows (:class:`LiveServer`: the address, the numbers, the
life cycle); ``serve_http`` the HTTP side, ``liveframe`` the frame hand-off. It never
touches the stage threads: the writer thread only swaps a reference, viewer threads encode
and send.

When the run ends, the page keeps the last frame and the final numbers (``state: ended``)
until the server is closed (the CLI: Ctrl-C, or ``--serve-linger``).

Whoever can reach the port sees what it serves: the source with a URL's user info hidden
and paths relative or reduced to their name (``rtseg.redact``); the token, when set, is at
least 16 characters and stays out of :attr:`LiveServer.url`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import threading
import time
from collections import deque
from typing import Callable, Optional, Protocol
from urllib.parse import quote, unquote_to_bytes, urlsplit

from rtseg.backends import Backend
from rtseg.errors import BadInput
from rtseg.files import json_safe
from rtseg.pipeline.liveframe import FrameSlot, ServeSink
from rtseg.pipeline.serve_http import HEAD_TIMEOUT_S, SEND_TIMEOUT_S, bind
from rtseg.pipeline.serve_address import (DEFAULT_HOST, check_token, exposure_warning, host_port,
                                          is_loopback, parse_address)
from rtseg.pipeline.serve_page import GRID_PAGE, PAGE
from rtseg.pipeline.stats import RunStats
from rtseg.redact import public_path

MAX_VIEWERS = 8  # MJPEG streams at once; the next one gets 503
STATS_CACHE_S = 0.2  # /stats.json is computed at most this often, however many poll it
HISTORY = (120, 0.5)  # samples kept for the chart, seconds between samples: the last minute
PATH_KEYS = ("source", "engine")  # shown to whoever reaches the page: no absolute paths


class WatchedRun(Protocol):
    """What the page reads from a run (a :class:`~rtseg.pipeline.runner.Pipeline`)."""

    backend: Backend
    stats: RunStats

    def result(self) -> dict:
        """The run JSON so far."""

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each queue between the stages, now."""


class LiveServer:
    """The HTTP server of the live page. Binds on construction (BadInput if it cannot:
    port in use, unknown host), serves from :meth:`start` until :meth:`close`.

    ``address``: ``"[HOST:]PORT"`` or ``(host, port)``; ``token``: required on every request
    when set (at least 16 characters); ``max_viewers``: MJPEG streams at once (the next gets
    503); ``send_timeout``: seconds a viewer may take nothing before it is dropped;
    ``head_timeout``: seconds a request head may take to arrive, in all; ``on_error(text)``:
    unexpected errors of a request (a viewer leaving is not one).

    >>> with LiveServer("8080", token=secrets.token_urlsafe()) as server:  # 127.0.0.1:8080
    ...     print(server.url)
    ...     result = run("drive.mp4", "engines/default.safetensors", server=server)
    ...     server.wait()  # the last frame and the final numbers stay up until Ctrl-C
    """

    def __init__(self, address: str | tuple[str, int] = (DEFAULT_HOST, 0),
                 token: Optional[str] = None, max_viewers: int = MAX_VIEWERS,
                 slot: Optional[FrameSlot] = None, send_timeout: float = SEND_TIMEOUT_S,
                 on_error: Optional[Callable[[str], None]] = None,
                 head_timeout: float = HEAD_TIMEOUT_S):
        host, port = parse_address(address) if isinstance(address, str) else address
        check_token(token)
        if max_viewers < 1:
            raise BadInput("at least one viewer must be allowed")
        self.host, self.token, self.max_viewers = host, token, max_viewers
        self._token = None if token is None else token.encode()
        self.send_timeout, self.head_timeout = send_timeout, head_timeout
        self.loopback = is_loopback(host)
        self.slot = slot or FrameSlot()
        self.on_error = on_error or (lambda _m: None)
        self.viewers = 0
        self.cpu_seconds = 0.0  # CPU time of every request, streams (and their JPEGs) included
        self._viewer_lock = threading.Lock()
        self.slots: dict[int, tuple[str, FrameSlot]] = {}  # several sources: each stream's
        self._pipeline: Optional[WatchedRun] = None
        self._extra: dict = {}
        self._history: deque = deque(maxlen=HISTORY[0])
        self._stats: tuple[float, bytes] = (float("-inf"), b"")
        self._stats_lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd = bind(host, port, self)
        self.port = self._httpd.server_address[1]

    # -- what the page shows ---------------------------------------------------------------
    @property
    def url(self) -> str:
        """The page's address, without the token (terminals and logs are read by others)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host_port(host, self.port)}/"

    @property
    def url_with_token(self) -> str:
        """The page's address with the token in the query (when one is set)."""
        query = f"?token={quote(self.token, safe='')}" if self.token else ""
        return self.url + query

    def warning(self) -> Optional[str]:
        """A line to print when the page can be reached from other machines, else None."""
        return exposure_warning(self.host, self.port, self.token)

    def sink(self) -> ServeSink:
        """The sink that feeds the page (Pipeline adds it when given ``server=``)."""
        return ServeSink(self.slot)

    def stream_sink(self, number: int, name: str) -> ServeSink:
        """The sink of stream ``number`` of a run over several sources (MultiPipeline adds
        one per stream): its frames are ``/stream/NUMBER.mjpg`` (stream 0's also
        ``/stream.mjpg``), and ``/`` becomes a grid of every stream."""
        slot = self.slot if number == 0 else FrameSlot()
        with self._stats_lock:
            self.slots[number] = (name, slot)
        return ServeSink(slot)

    def slot_for(self, number: int) -> Optional[FrameSlot]:
        """Stream ``number``'s frames (0: the only stream of a one-source run); None if no
        such stream."""
        if number == 0:
            return self.slot
        got = self.slots.get(number)
        return None if got is None else got[1]

    def page(self) -> bytes:
        """``/``: the one-stream page, or the grid of every stream of a several-source run."""
        return GRID_PAGE if len(self.slots) > 1 else PAGE

    def watch(self, pipeline: WatchedRun) -> None:
        """Take the live numbers from ``pipeline`` (a Pipeline given this server calls it)."""
        with self._stats_lock:
            self._pipeline = pipeline
            self._history.clear()
            self._stats = (float("-inf"), b"")

    def describe(self, **extra) -> None:
        """Keys the page shows besides the run's numbers (e.g. ``engine``)."""
        with self._stats_lock:
            self._extra.update(extra)

    def state(self) -> str:
        """``starting`` (no frame yet), ``running`` or ``ended`` (the last frame stays)."""
        slots = [slot for _name, slot in self.slots.values()] or [self.slot]
        if self._pipeline is None or (not any(s.frames for s in slots)
                                      and not all(s.ended for s in slots)):
            return "starting"
        return "ended" if all(s.ended for s in slots) else "running"

    def stats(self) -> dict:
        """What ``/stats.json`` serves (computed now)."""
        out: dict = {"state": self.state()}
        pipeline = self._pipeline
        if pipeline is not None:
            out.update(self._extra)
            out.update(pipeline.result())
            for key in PATH_KEYS:  # a list for several sources
                value = out.get(key)
                out[key] = ([public_path(v) for v in value] if isinstance(value, list)
                            else public_path(value))
            if isinstance(out.get("streams"), list):
                out["streams"] = self._stream_stats(pipeline, out["streams"])
            meta = pipeline.backend.metadata
            out.update(fps_now=pipeline.stats.recent_fps(),
                       latency_ms_now=pipeline.stats.recent_latency_ms(),
                       queues=pipeline.queue_depths(),
                       classes=[{"name": n, "color": "#%02x%02x%02x" % tuple(c)}
                                for n, c in zip(meta.class_names, meta.palette)])
        size, samples = self.slot.size, list(self._history)
        out.update(viewers=self.viewers, max_viewers=self.max_viewers,
                   frame_size=list(size) if size else None, jpeg_encodes=self.slot.encodes,
                   serve_cpu_s=self.cpu_seconds,
                   history={key: [s[i] for s in samples]
                            for i, key in enumerate(("t", "fps", "latency_ms"))})
        return out

    def _stream_stats(self, pipeline: WatchedRun, streams: list[dict]) -> list[dict]:
        """Each stream's numbers as the page shows them: paths made public, its FPS now, its
        route and its frame size."""
        live = getattr(pipeline, "streams", [])
        out = []
        for i, stream in enumerate(streams):
            stream = {**stream, **{k: public_path(stream.get(k))
                                   for k in ("source", "output", "masks")}}
            slot = self.slot_for(i)
            size = slot.size if slot is not None else None
            stream.update(route=f"/stream/{i}.mjpg", frame_size=list(size) if size else None,
                          fps_now=live[i].stats.recent_fps() if i < len(live) else None)
            out.append(stream)
        return out

    def stats_body(self) -> bytes:
        """``stats()`` as JSON, shared by every poller for ``STATS_CACHE_S``."""
        with self._stats_lock:
            t, body = self._stats
            if time.monotonic() - t >= STATS_CACHE_S:
                body = json.dumps(json_safe(self.stats()), separators=(",", ":")).encode()
                self._stats = (time.monotonic(), body)
            return body

    def _sample_history(self) -> None:
        """Every HISTORY[1] s while running: (seconds into the run, FPS, latency ms)."""
        while not self._closed.wait(HISTORY[1]):
            pipeline = self._pipeline
            if pipeline is None or self.state() != "running" or pipeline.stats.t_start is None:
                continue
            s = pipeline.stats
            self._history.append((round(time.perf_counter() - s.t_start, 2), s.recent_fps(),
                                  s.recent_latency_ms()))

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> "LiveServer":
        """Serve on background threads (never the pipeline's)."""
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._httpd.serve_forever, args=(0.1,),
                                 name="rtseg-serve"),
                threading.Thread(target=self._sample_history, name="rtseg-serve-history")]
            for t in self._threads:
                t.start()
        return self

    def wait(self, seconds: Optional[float] = None,
             stop: Optional[threading.Event] = None) -> None:
        """Block until ``seconds`` have passed (None: no limit), ``stop`` is set or the server
        is closed (Ctrl-C raises KeyboardInterrupt here, unless the caller forwards it)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        event = stop or self._closed
        while not (self._closed.is_set() or event.is_set()):
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return
            event.wait(left)

    def close(self) -> None:
        """Disconnect every viewer, stop serving and join every server thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.slot.close()
        for _name, slot in list(self.slots.values()):
            slot.close()
        if self._threads:
            self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()  # joins the connection threads
        for t in self._threads:
            t.join()

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- used by the request handler ---------------------------------------------------------
    def authorised(self, query: str, headers) -> bool:
        """No token set, or the right one in ``?token=``, ``X-Rtseg-Token`` or a Bearer header
        (UTF-8 in each; nothing but the ``token`` parameter of the query is decoded)."""
        if self._token is None:
            return True
        for given in _offered_tokens(query, headers):
            if hmac.compare_digest(given, self._token):
                return True
        return False

    def cross_site(self, headers) -> bool:
        """Whether a browser says the request comes from a page of another site (another
        origin: ``Sec-Fetch-Site``, or an ``Origin`` or ``Referer`` not of this host), so
        that no web page can take the viewer places by embedding the stream."""
        site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site and site not in ("same-origin", "none"):  # none: the user typed the address
            return True
        host = (headers.get("Host") or "").strip().lower()
        for name in ("Origin", "Referer"):
            value = headers.get(name)
            if value is None:
                continue
            try:
                netloc = urlsplit(value.strip()).netloc.lower()
            except ValueError:
                return True
            if netloc.rpartition("@")[2] != host:  # "null" too
                return True
        return False

    def host_allowed(self, host_header: Optional[str]) -> bool:
        """A Host header must be given; on a loopback bind a browser must have asked for a
        loopback name, so a web page cannot reach the video through DNS rebinding."""
        if not host_header:
            return False
        if not self.loopback:
            return True
        try:
            name = urlsplit(f"//{host_header}").hostname or ""
        except ValueError:  # not a host at all ("[", say)
            return False
        if name in ("localhost", self.host.lower()) or name.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def viewer_enter(self) -> bool:
        """Take a viewer place; False when all are taken."""
        with self._viewer_lock:
            if self.viewers >= self.max_viewers:
                return False
            self.viewers += 1
            return True

    def viewer_leave(self) -> None:
        with self._viewer_lock:
            self.viewers -= 1

    def add_cpu(self, seconds: float) -> None:
        with self._viewer_lock:
            self.cpu_seconds += seconds



def _offered_tokens(query: str, headers):
    """The tokens a request offers, as bytes: the query's ``token=`` values (percent-decoded;
    the query is split, not parsed), ``X-Rtseg-Token`` and ``Authorization: Bearer``. Headers
    arrive as ISO-8859-1 text: encoding them back gives the bytes sent (UTF-8 from clients)."""
    for part in query.split("&") if "token=" in query else ():
        if part.startswith("token="):
            yield unquote_to_bytes(part[6:].replace("+", " ").encode("latin-1", "replace"))
    given = headers.get("X-Rtseg-Token")
    if given:
        yield given.strip().encode("latin-1", "replace")
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        yield auth[7:].strip().encode("latin-1", "replace")
