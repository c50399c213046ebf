"""The HTTP side of ``rtseg run --serve``: the standard library's ``ThreadingHTTPServer``.

Why not a framework: requests are parsed by ``http.server`` (maintained with CPython), rtseg
adds no dependency on GPU servers and edge boxes, and one thread per connection is the simple,
correct model for an MJPEG stream — a long series of blocking writes — to a bounded number of
viewers (8). What ``http.server``'s docs say it lacks is added here: no file is ever served
and no route reads a path from the request (four exact paths, else 404); GET and HEAD only;
a bounded request head (8 KiB line, 32 KiB in all) that must arrive within ``head_timeout``
(5 s) whatever the pace of its bytes; a connection still sending its head never holds a place
that a finished request needs (past ``PENDING`` such connections, the oldest is dropped); a
Host header required, and checked against DNS rebinding on loopback; the token (when set)
checked before the query or the path is parsed, a request without it answered 401 and its
connection closed; the stream refused to a page of another site (``Sec-Fetch-Site``,
``Origin``, ``Referer``); a malformed request answered 400, never a traceback.
"""

from __future__ import annotations

import errno
import re
import socket
import socketserver
import sys
import threading
import time
from http.client import LineTooLong
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Protocol
from urllib.parse import urlsplit

from rtseg.errors import BadInput
from rtseg.pipeline.liveframe import FrameSlot
from rtseg.redact import redact

EXTRA_CONNECTIONS = 16  # page loads and stats polls beside the streams, once their head is in
PENDING = 64  # connections still sending a request head; past this the oldest is dropped
SEND_TIMEOUT_S = 10.0  # a viewer that takes nothing for this long is dropped (and idle sockets)
HEAD_TIMEOUT_S = 5.0  # the whole request head (and a keep-alive wait) must arrive in this time
HEARTBEAT_S = 2.0  # with no new frame (the run ended), the last one is sent again this often
MAX_LINE, MAX_HEAD = 8192, 32768  # bytes of the request line, of the whole head
BACKLOG = 128  # connections the kernel queues before accept (the standard library's is 5)
BOUNDARY = b"rtsegframe"
ROUTES = ("/", "/stats.json", "/snapshot.jpg", "/stream.mjpg")
# several sources: /stream/N.mjpg and /snapshot/N.jpg, N a stream number (decimal digits only)
STREAM_ROUTE = re.compile(r"/(stream|snapshot)/([0-9]{1,4})\.(mjpg|jpg)")


class LivePage(Protocol):
    """What the request handler needs of the live page (a
    :class:`~rtseg.pipeline.serve.LiveServer`): its frames, bounds and checks."""

    slot: FrameSlot
    max_viewers: int
    send_timeout: float
    head_timeout: float
    on_error: Callable[[str], None]

    def host_allowed(self, host_header: Optional[str]) -> bool:
        """Whether a request with this Host header may be answered."""

    def authorised(self, query: str, headers) -> bool:
        """Whether the request carries the token (or none is needed)."""

    def cross_site(self, headers) -> bool:
        """Whether the request comes from a page of another site."""

    def stats_body(self) -> bytes:
        """``/stats.json``."""

    def slot_for(self, number: int) -> Optional[FrameSlot]:
        """Stream ``number``'s frames; None if there is no such stream."""

    def page(self) -> bytes:
        """``/``."""

    def viewer_enter(self) -> bool:
        """Take a viewer slot; False when all are taken."""

    def viewer_leave(self) -> None:
        """Give a viewer slot back."""

    def add_cpu(self, seconds: float) -> None:
        """Bill CPU time spent serving."""


class LiveHTTPServer(ThreadingHTTPServer):
    """One thread per connection (joined on close). Connections whose request head is still
    coming are bounded apart (``PENDING``, each dropped at its deadline), so they cannot
    take the places (``max_viewers + EXTRA_CONNECTIONS``) of requests that arrived."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = BACKLOG

    def __init__(self, address, live: LivePage, family: int):
        self.address_family = family
        self.live = live
        self.max_connections = live.max_viewers + EXTRA_CONNECTIONS
        self.connections: set[socket.socket] = set()
        self.pending: dict[socket.socket, float] = {}  # head still coming: its deadline
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # http.server's looks up the FQDN: slow DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def verify_request(self, request, client_address) -> bool:
        with self._conn_lock:
            if len(self.pending) >= PENDING:  # the oldest unfinished head makes room
                oldest = min(self.pending, key=self.pending.get)
                self._drop(oldest)
            if len(self.connections) >= self.max_connections + PENDING:
                return False  # every place taken by a request that arrived
            self.connections.add(request)
            self.pending[request] = time.monotonic() + self.live.head_timeout
            return True

    def expect_head(self, request) -> None:
        """The connection waits for a request head (again, on keep-alive): a new deadline."""
        with self._conn_lock:
            if request in self.connections:
                self.pending[request] = time.monotonic() + self.live.head_timeout

    def head_done(self, request) -> None:
        """The head arrived: the connection is no longer one the deadline watches."""
        with self._conn_lock:
            self.pending.pop(request, None)

    def service_actions(self) -> None:
        """Every poll of ``serve_forever`` (0.1 s): drop connections past their head deadline."""
        now = time.monotonic()
        with self._conn_lock:
            for sock in [s for s, t in self.pending.items() if t <= now]:
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        """Unblock the connection's thread (it then closes it); lock held."""
        self.pending.pop(sock, None)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self.connections.discard(request)
            self.pending.pop(request, None)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Unblock every connection thread (a viewer that stopped reading, an idle poller)."""
        with self._conn_lock:
            for sock in list(self.connections):
                self._drop(sock)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # a viewer leaving is not worth a word
            text = redact(f"live view: {type(exc).__name__}: {exc}")
            self.live.on_error(text if len(text) <= 200 else text[:199] + "…")


def bind(host: str, port: int, live: LivePage) -> LiveHTTPServer:
    """A server for ``live`` listening on ``host:port`` (not yet serving); BadInput, in one
    line that says what to do, when it cannot listen there."""
    where = f"--serve {f'[{host}]' if ':' in host else host}:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as exc:
        raise BadInput(f"{where}: unknown host ({exc.strerror or exc})") from None
    except (UnicodeError, ValueError):  # a name no resolver takes ("a" * 300, say)
        raise BadInput(f"{where}: not a host name or address") from None
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


class _HeadReader:
    """The connection's reader while a request head is read: ``readline`` as http.server
    and http.client call it, but LineTooLong (431) once the head passes ``budget`` bytes."""

    def __init__(self, rfile, budget: int):
        self.rfile, self.budget = rfile, budget

    def readline(self, limit: int = -1) -> bytes:
        line = self.rfile.readline(min(limit, self.budget + 1) if limit >= 0
                                   else self.budget + 1)
        self.budget -= len(line)
        if self.budget < 0:
            raise LineTooLong("request head")
        return line


class _Handler(BaseHTTPRequestHandler):
    """The four routes (GET and HEAD); anything else is 404."""

    server: LiveHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive for the stats polls
    server_version, sys_version = "rtseg", ""
    timeout = SEND_TIMEOUT_S

    def log_message(self, format, *args) -> None:  # noqa: A002 — the base class's name
        pass  # the terminal belongs to the status line

    def handle_one_request(self) -> None:
        """http.server's, with the head bounded in size and time (``service_actions`` drops
        a connection past its deadline) and every check made before any route runs."""
        self.server.expect_head(self.connection)
        rfile, self.rfile = self.rfile, _HeadReader(self.rfile, MAX_HEAD)
        try:
            self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > MAX_LINE:
                self.requestline = self.request_version = self.command = ""
                return self.send_error(414)
            if not self.parse_request():  # 400, 431 or 505 sent
                return
        except OSError:  # reset, or dropped at the head deadline
            self.close_connection = True
            return
        finally:
            self.rfile = rfile
            self.server.head_done(self.connection)
        self.head = self.command == "HEAD"
        if self.command not in ("GET", "HEAD"):
            return self.send_error(501, f"Unsupported method ({self.command!r})")
        self._cpu_mark = time.thread_time()
        try:
            self._checked(self.server.live)
            self.wfile.flush()
        except OSError:  # the client left or stopped reading
            self.close_connection = True
        finally:
            self._bill()

    def _bill(self) -> None:
        """Add this thread's CPU time since the last bill to the server's ``cpu_seconds``."""
        now = time.thread_time()
        self.server.live.add_cpu(now - self._cpu_mark)
        self._cpu_mark = now

    def _checked(self, live: LivePage) -> None:
        """Host, then the token (before the target is parsed), then the target, then the
        site the request comes from; then the route."""
        host = self.headers.get("Host")
        if not host:
            return self._refuse(400, b"a Host header is required\n")
        if not live.host_allowed(host):
            return self._refuse(403, b"this server answers to localhost, 127.0.0.1 and [::1] "
                                     b"only (it listens on loopback)\n")
        if not live.authorised(self.path.partition("?")[2], self.headers):
            return self._refuse(401, b"token required: ?token=... or Authorization: Bearer\n",
                                {"WWW-Authenticate": "Bearer"})
        path = self._route_path()
        if path is None:
            return self._refuse(400, b"malformed request target\n")
        if path != "/" and live.cross_site(self.headers):
            return self._refuse(403, b"refused: requested by a page of another site\n")
        self._route(live, path)

    def _route_path(self) -> Optional[str]:
        """The path of the request target (origin or absolute form); None if malformed."""
        target = self.path
        if not target.startswith("/"):
            try:
                url = urlsplit(target)
            except ValueError:  # "http://[0000…]/": not a URL at all
                return None
            if url.scheme.lower() not in ("http", "https") or not url.netloc:
                return None
            target = url.path or "/"
        return target.partition("?")[0].partition("#")[0]

    def _route(self, live: LivePage, path: str) -> None:
        if path == "/":
            return self._reply(200, live.page(), "text/html; charset=utf-8")
        if path == "/stats.json":
            return self._reply(200, live.stats_body(), "application/json")
        slot, kind = live.slot, path
        numbered = STREAM_ROUTE.fullmatch(path)
        if numbered and (numbered[1] == "stream") == (numbered[3] == "mjpg"):
            slot, kind = live.slot_for(int(numbered[2])), f"/{numbered[1]}"
        if slot is None:
            return self._reply(404, b"no such stream\n", "text/plain")
        if kind in ("/snapshot.jpg", "/snapshot"):
            got = slot.next_jpeg(0, timeout=0)
            if got is None:
                return self._reply(503, b"no frame yet\n", "text/plain", {"Retry-After": "1"})
            return self._reply(200, got[1], "image/jpeg")
        if kind in ("/stream.mjpg", "/stream"):
            return self._stream(live, slot)
        return self._reply(404, b"not found\n", "text/plain")

    def _headers(self, content_type: str, extra: dict) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token stays on the page
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; img-src 'self'; connect-src 'self'; "
                         "style-src 'unsafe-inline'; script-src 'unsafe-inline'")
        for key, value in extra.items():
            self.send_header(key, value)

    def _reply(self, code: int, body: bytes, content_type: str, extra: dict | None = None):
        self.send_response(code)
        self._headers(content_type, {"Content-Length": str(len(body)), **(extra or {})})
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def _refuse(self, code: int, body: bytes, extra: dict | None = None) -> None:
        """An error reply, and the connection closed: a refused client keeps no place."""
        self.close_connection = True
        self._reply(code, body, "text/plain", {"Connection": "close", **(extra or {})})

    def _stream(self, live: LivePage, slot: FrameSlot) -> None:
        """The newest frame each time one is sent; the last again every HEARTBEAT_S when
        none comes (so a dead viewer is noticed); gone on a send error or SEND_TIMEOUT_S."""
        if self.head:  # what a GET would start with; no frames, no viewer slot
            self.send_response(200)
            self._headers(f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}", {})
            return self.end_headers()
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
            while not slot.closed:
                got = slot.next_jpeg(sent, HEARTBEAT_S) or slot.cached()
                if got is None or slot.closed:
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
