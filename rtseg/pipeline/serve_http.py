"""The HTTP side of ``rtseg run --serve``: the standard library's ``ThreadingHTTPServer``.

Why not a framework: requests are parsed by ``http.server`` (maintained with CPython), rtseg
adds no dependency on GPU servers and edge boxes, and one thread per connection is the simple,
correct model for an MJPEG stream — a long series of blocking writes — to a bounded number of
viewers (8). What ``http.server``'s docs say it lacks is added here: no file is ever served
and no route reads a path from the request (four exact paths, else 404); a bounded number of
connections; socket timeouts; a Host check against DNS rebinding on loopback; an optional
token on every route (checked in ``LiveServer.authorised``).
"""

from __future__ import annotations

import errno
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Protocol
from urllib.parse import urlsplit

from rtseg.errors import BadInput
from rtseg.pipeline.liveframe import FrameSlot
from rtseg.pipeline.serve_page import PAGE

EXTRA_CONNECTIONS = 16  # page loads and stats polls beside the streams; more are refused
SEND_TIMEOUT_S = 10.0  # a viewer that takes nothing for this long is dropped (and idle sockets)
HEARTBEAT_S = 2.0  # with no new frame (the run ended), the last one is sent again this often
BOUNDARY = b"rtsegframe"


class LivePage(Protocol):
    """What the request handler needs of the live page (a
    :class:`~rtseg.pipeline.serve.LiveServer`): its frames, bounds and checks."""

    slot: FrameSlot
    max_viewers: int
    send_timeout: float
    on_error: Callable[[str], None]

    def host_allowed(self, host_header: Optional[str]) -> bool:
        """Whether a request with this Host header may be answered."""

    def authorised(self, query: str, headers) -> bool:
        """Whether the request carries the token (or none is needed)."""

    def stats_body(self) -> bytes:
        """``/stats.json``."""

    def viewer_enter(self) -> bool:
        """Take a viewer slot; False when all are taken."""

    def viewer_leave(self) -> None:
        """Give a viewer slot back."""

    def add_cpu(self, seconds: float) -> None:
        """Bill CPU time spent serving."""


class LiveHTTPServer(ThreadingHTTPServer):
    """One thread per connection (joined on close), a bounded number of connections."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address, live: LivePage, family: int):
        self.address_family = family
        self.live = live
        self.max_connections = live.max_viewers + EXTRA_CONNECTIONS
        self.connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # http.server's looks up the FQDN: slow DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def verify_request(self, request, client_address) -> bool:
        with self._conn_lock:
            if len(self.connections) >= self.max_connections:
                return False
            self.connections.add(request)
            return True

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Unblock every connection thread (a viewer that stopped reading, an idle poller)."""
        with self._conn_lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # a viewer leaving is not worth a word
            self.live.on_error(f"live view: {type(exc).__name__}: {exc}")


def bind(host: str, port: int, live: LivePage) -> LiveHTTPServer:
    """A server for ``live`` listening on ``host:port`` (not yet serving); BadInput, in one
    line that says what to do, when it cannot listen there."""
    where = f"--serve {host}:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as exc:
        raise BadInput(f"{where}: unknown host ({exc.strerror or exc})") from None
    try:
        return LiveHTTPServer((host, port), live, family)
    except PermissionError:
        raise BadInput(f"{where}: not allowed to listen on port {port} (ports below 1024 "
                       "need root); pick another, e.g. 8080") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BadInput(f"{where}: port {port} is in use; pick another port, or 0 for any "
                           "free one") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BadInput(f"{where}: {host} is not an address of this machine") from None
        raise BadInput(f"{where}: cannot listen: {exc.strerror or exc}") from None


class _Handler(BaseHTTPRequestHandler):
    """The four routes; anything else is 404."""

    server: LiveHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive for the stats polls
    server_version, sys_version = "rtseg", ""
    timeout = SEND_TIMEOUT_S

    def log_message(self, format, *args) -> None:  # noqa: A002 — the base class's name
        pass  # the terminal belongs to the status line

    def do_GET(self) -> None:  # noqa: N802 — http.server's name
        self._cpu_mark = time.thread_time()
        try:
            self._route(self.server.live)
        finally:
            self._bill()

    def _bill(self) -> None:
        """Add this thread's CPU time since the last bill to the server's ``cpu_seconds``."""
        now = time.thread_time()
        self.server.live.add_cpu(now - self._cpu_mark)
        self._cpu_mark = now

    def _route(self, live: LivePage) -> None:
        url = urlsplit(self.path)
        if not live.host_allowed(self.headers.get("Host")):
            return self._reply(403, b"this server answers to localhost, 127.0.0.1 and [::1] "
                                    b"only (it listens on loopback)\n", "text/plain")
        if not live.authorised(url.query, self.headers):
            return self._reply(401, b"token required: ?token=... or Authorization: Bearer\n",
                               "text/plain", {"WWW-Authenticate": "Bearer"})
        if url.path == "/":
            return self._reply(200, PAGE, "text/html; charset=utf-8")
        if url.path == "/stats.json":
            return self._reply(200, live.stats_body(), "application/json")
        if url.path == "/snapshot.jpg":
            got = live.slot.next_jpeg(0, timeout=0)
            if got is None:
                return self._reply(503, b"no frame yet\n", "text/plain", {"Retry-After": "1"})
            return self._reply(200, got[1], "image/jpeg")
        if url.path == "/stream.mjpg":
            return self._stream(live)
        return self._reply(404, b"not found\n", "text/plain")

    def _headers(self, content_type: str, extra: dict) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token stays on the page
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; img-src 'self'; connect-src 'self'; "
                         "style-src 'unsafe-inline'; script-src 'unsafe-inline'")
        for key, value in extra.items():
            self.send_header(key, value)

    def _reply(self, code: int, body: bytes, content_type: str, extra: dict | None = None):
        self.send_response(code)
        self._headers(content_type, {"Content-Length": str(len(body)), **(extra or {})})
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, live: LivePage) -> None:
        """The newest frame each time one is sent; the last again every HEARTBEAT_S when
        none comes (so a dead viewer is noticed); gone on a send error or SEND_TIMEOUT_S."""
        if not live.viewer_enter():
            return self._reply(503, f"too many viewers (at most {live.max_viewers}); try "
                                    "again later\n".encode(), "text/plain", {"Retry-After": "5"})
        try:
            self.close_connection = True
            self.connection.settimeout(live.send_timeout)
            self.send_response(200)
            self._headers(f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}",
                          {"Connection": "close"})
            self.end_headers()
            self.wfile.write(b"--" + BOUNDARY + b"\r\n")
            sent = 0
            while not live.slot.closed:
                got = live.slot.next_jpeg(sent, HEARTBEAT_S) or live.slot.cached()
                if got is None or live.slot.closed:
                    continue
                seq, jpeg = got
                # Each part ends with the next boundary, so a browser shows it at once.
                self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s"
                                 b"\r\n--%s\r\n" % (len(jpeg), jpeg, BOUNDARY))
                sent = seq
                self._bill()
        except OSError:  # the viewer left (reset, broken pipe) or stopped reading (timeout)
            pass
        finally:
            live.viewer_leave()
