"""`rtseg run --serve`: the live page over HTTP — the MJPEG stream, /stats.json, /snapshot.jpg,
the token, the viewer bound, viewers that leave or stop reading, Ctrl-C with viewers
connected, the page after a file ends — and in a real headless Chromium.

Every server binds 127.0.0.1 on an ephemeral port; every test joins what it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from rtseg.backends import Backend
from rtseg.cli import main
from rtseg.errors import BadInput
from rtseg.data import get_spec
from rtseg.pipeline import LiveServer, Pipeline, RunConfig, Source, run
from rtseg.pipeline.liveframe import FrameSlot
from rtseg.pipeline.serve_address import exposure_warning, is_loopback, parse_address
from rtseg.pipeline.sources import VideoFileSource

from helpers import FakeBackend, bench_script

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"frames", "seconds", "fps", "dropped", "backend", "miou", "stage_ms",
                 "latency_ms"}
STAGES = {"capture", "preprocess", "infer", "overlay", "write"}
LOCAL = ("127.0.0.1", 0)

pytestmark = pytest.mark.usefixtures("no_thread_outlives_a_test")


# --- fakes and HTTP helpers --------------------------------------------------------------------
class Moving(Source):
    """``n`` frames, every one different (noise and a moving bar), one per ``period`` s."""

    def __init__(self, n: int = 100_000, size=(120, 160), period: float = 0.02,
                 live: bool = False):
        self.n, self.size, self.period, self.live = n, size, period, live
        self.description = "moving bars"
        self.i = 0
        self.rng = np.random.default_rng(0)

    def read(self, stop):
        if self.i >= self.n or (self.period and stop.wait(self.period)):
            return None
        h, w = self.size
        image = self.rng.integers(0, 256, (h, w, 3), np.uint8)
        x = (self.i * 7) % w
        image[:, x:x + 10] = 255
        self.i += 1
        return image, f"{self.i:06d}", None


class LoopedClip(Source):
    """A video file played again and again (a source that outlasts a browser's start)."""

    def __init__(self, path: Path):
        self.path, self.clip = path, VideoFileSource(path)
        self.size, self.fps, self.description = self.clip.size, self.clip.fps, f"{path} (looped)"

    def read(self, stop):
        got = self.clip.read(stop)
        if got is None:
            self.clip.close()
            self.clip = VideoFileSource(self.path)
            got = self.clip.read(stop)
        return got

    def close(self):
        self.clip.close()


def request(port: int, path: str, headers: dict | None = None, method: str = "GET"):
    """(status, response, body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


class SmallBufferConnection(http.client.HTTPConnection):
    """A connection with a tiny receive buffer: a reader that stops fills it at once."""

    def connect(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.host, self.port))


class Stream:
    """An MJPEG viewer: ``frame()`` reads the next JPEG of the stream."""

    def __init__(self, port: int, path: str = "/stream.mjpg", headers: dict | None = None,
                 small_buffer: bool = False):
        kind = SmallBufferConnection if small_buffer else http.client.HTTPConnection
        self.conn = kind("127.0.0.1", port, timeout=10)
        self.conn.request("GET", path, headers=headers or {})
        self.sock = self.conn.sock  # the response takes it over: http.client forgets it
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def frame(self) -> bytes:
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            if line.lower().startswith(b"content-length:"):
                self.response.readline()
                return self.response.read(int(line.split(b":")[1]))

    def close(self):
        self.response.close()  # the response holds the socket open too
        self.conn.close()


class Reader(threading.Thread):
    """A viewer that keeps reading on its own thread, collecting JPEGs (at most ``keep``)."""

    def __init__(self, port: int, keep: int = 20):
        super().__init__(name="test-viewer")
        self.stream, self.keep, self.jpegs, self.count = Stream(port), keep, [], 0
        self.start()

    def run(self):
        with contextlib.suppress(OSError, EOFError, ValueError, http.client.HTTPException):
            while True:
                jpeg = self.stream.frame()
                self.count += 1
                if len(self.jpegs) < self.keep:
                    self.jpegs.append(jpeg)

    def stop(self):
        with contextlib.suppress(OSError):
            self.stream.sock.shutdown(socket.SHUT_RDWR)  # its read returns, then close
        self.join(10)
        self.stream.close()


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def wait_until(condition, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def stats(port: int, **headers) -> dict:
    status, _, body = request(port, "/stats.json", headers)
    assert status == 200, body
    return json.loads(body)


@contextlib.contextmanager
def serving(source: Source, backend: Backend | None = None, server: dict | None = None,
            **options):
    """A started LiveServer showing a Pipeline that runs on a thread; stopped on exit."""
    with LiveServer(LOCAL, **(server or {})) as live:
        pipeline = Pipeline(source, backend or FakeBackend(), RunConfig(**options), server=live)
        box: dict = {}
        worker = threading.Thread(target=lambda: box.update(result=pipeline.run()))
        worker.start()
        try:
            yield live, pipeline, box
        finally:
            if worker.is_alive():
                pipeline.interrupt()
                pipeline.interrupt()
            worker.join(30)


# --- addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("8080", ("127.0.0.1", 8080)), ("0", ("127.0.0.1", 0)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:9000", ("localhost", 9000)), ("[::1]:8080", ("::1", 8080)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


def test_only_loopback_binds_go_without_a_warning():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert exposure_warning("127.0.0.1", 8080, None) is None
    warning = exposure_warning("0.0.0.0", 8080, None)
    assert warning.startswith("warning:") and "--serve-token" in warning
    assert "token" in exposure_warning("192.0.2.7", 8080, "t")
    assert "\n" not in warning


# --- the routes ------------------------------------------------------------------------------
def test_stream_yields_distinct_jpegs_of_the_overlay_size():
    with serving(Moving(size=(120, 160))) as (live, _, _):
        stream = Stream(live.port)
        assert stream.status == 200
        assert stream.response.getheader("Content-Type").startswith("multipart/x-mixed-replace")
        frames = [decode(stream.frame()) for _ in range(6)]
        stream.close()
    assert all(f.shape == (120, 160, 3) for f in frames)
    assert len({f.tobytes() for f in frames}) >= 5


def test_stats_json_has_the_run_keys_and_its_frames_grow():
    with serving(Moving()) as (live, _, _):
        wait_until(lambda: stats(live.port)["frames"] > 0, what="a frame")
        first = stats(live.port)
        time.sleep(0.6)
        second = stats(live.port)
    assert set(first) >= CONTRACT_KEYS and set(first["stage_ms"]) == STAGES
    assert first["state"] == "running" and second["frames"] > first["frames"]
    assert set(first["queues"]) == {"capture", "batches", "labels", "rendered"}
    assert [c["name"] for c in first["classes"]] == list(get_spec("camvid").class_names)
    assert re.fullmatch(r"#[0-9a-f]{6}", first["classes"][0]["color"])
    assert first["fps_now"] > 0 and first["viewers"] == 0 and first["max_viewers"] == 8
    assert first["frame_size"] == [120, 160]


def test_page_snapshot_and_404():
    with serving(Moving(size=(48, 64))) as (live, _, _):
        status, response, page = request(live.port, "/")
        assert status == 200 and response.getheader("Content-Type").startswith("text/html")
        assert b"stream.mjpg" in page and b"stats.json" in page
        assert "default-src 'none'" in response.getheader("Content-Security-Policy")
        wait_until(lambda: request(live.port, "/snapshot.jpg")[0] == 200, what="a snapshot")
        assert decode(request(live.port, "/snapshot.jpg")[2]).shape == (48, 64, 3)
        for path in ("/index.html", "/etc/passwd", "/../README.md", "/%2e%2e/README.md",
                     "//etc/passwd", "/stream.mjpg/x", "/stats.json/../x", "/favicon.ico"):
            assert request(live.port, path)[0] == 404, path
        assert request(live.port, "/stats.json", method="POST")[0] == 501
        assert request(live.port, "/", {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
        assert request(live.port, "/", {"Host": "["})[0] == 403
        assert request(live.port, "/", {"Host": f"localhost:{live.port}"})[0] == 200


def test_snapshot_before_the_first_frame_is_503():
    with LiveServer(LOCAL) as live:
        status, response, _ = request(live.port, "/snapshot.jpg")
        assert status == 503 and response.getheader("Retry-After")
        assert stats(live.port)["state"] == "starting"


TOKEN = "s3cret-s3cret-s3cret"


def test_the_token_is_required_on_every_route():
    with serving(Moving(), server={"token": TOKEN}) as (live, _, _):
        assert TOKEN not in live.url and live.url_with_token.endswith(f"/?token={TOKEN}")
        wait_until(lambda: live.slot.frames > 0, what="a frame")
        for path in ("/", "/stats.json", "/snapshot.jpg", "/stream.mjpg", "/nope"):
            assert request(live.port, path)[0] == 401, path
            assert request(live.port, path + "?token=wrong")[0] == 401, path
            assert request(live.port, path, {"Authorization": "Bearer nope"})[0] == 401, path
        for path in ("/", "/stats.json", "/snapshot.jpg"):
            assert request(live.port, path + f"?token={TOKEN}")[0] == 200, path
            assert request(live.port, path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
            assert request(live.port, path, {"X-Rtseg-Token": TOKEN})[0] == 200
        assert request(live.port, f"/nope?token={TOKEN}")[0] == 404
        stream = Stream(live.port, f"/stream.mjpg?token={TOKEN}")
        assert stream.status == 200 and decode(stream.frame()) is not None
        stream.close()


def test_the_viewer_past_the_bound_gets_503_and_a_freed_slot_is_reused():
    with serving(Moving()) as (live, _, _):
        streams = [Stream(live.port) for _ in range(8)]
        for s in streams:
            assert s.status == 200 and s.frame()
        ninth = Stream(live.port)
        assert ninth.status == 503 and ninth.response.getheader("Retry-After")
        ninth.close()
        assert stats(live.port)["viewers"] == 8  # the page and stats still answer
        streams.pop().close()
        wait_until(lambda: live.viewers == 7, what="the closed viewer's slot")
        again = Stream(live.port)
        assert again.status == 200 and again.frame()
        for s in [*streams, again]:
            s.close()
        wait_until(lambda: live.viewers == 0, what="every viewer gone")


def test_viewers_that_disconnect_abruptly_leave_no_trace():
    errors = []
    with serving(Moving(), server={"on_error": errors.append}) as (live, _, _):
        for _ in range(3):  # three waves, more viewers in all than the bound
            streams = [Stream(live.port) for _ in range(8)]
            assert all(s.status == 200 for s in streams)
            for s in streams:
                s.frame()
                s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
                s.close()
            wait_until(lambda: live.viewers == 0, what="every viewer gone")
    assert errors == []


def test_jpeg_encoding_only_with_viewers_and_at_most_once_per_frame():
    with LiveServer(LOCAL) as live:
        run(Moving(30, period=0.0), FakeBackend(), server=live)
        assert live.slot.encodes == 0  # nobody watched: not one JPEG
        readers = [Reader(live.port) for _ in range(4)]
        wait_until(lambda: live.viewers == 4, what="4 viewers")
        result = run(Moving(60, period=0.01), FakeBackend(), server=live)
        wait_until(lambda: all(r.count and r.jpegs for r in readers), what="frames")
        for r in readers:
            r.stop()
        assert result["frames"] == 60
        # 1: the first run's last frame, sent to the viewers as they connected.
        assert 0 < live.slot.encodes <= 60 + 1
        assert sum(r.count for r in readers) > live.slot.encodes  # shared, not per viewer


def test_the_encoder_keeps_to_its_rate_however_fast_frames_come():
    slot = FrameSlot(max_fps=20)
    image = np.zeros((32, 32, 3), np.uint8)
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            slot.publish(image.copy())
            time.sleep(0.001)

    def viewer(got):
        seq = 0
        while not stop.is_set():
            answer = slot.next_jpeg(seq, 0.5)
            if answer:
                seq = answer[0]
                got.append(seq)

    counts = [[] for _ in range(4)]
    threads = [threading.Thread(target=publish)] + [
        threading.Thread(target=viewer, args=(c,)) for c in counts]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    slot.close()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    assert slot.frames > 200 and slot.encodes <= 20 * seconds + 2
    assert all(c == sorted(c) and len(set(c)) == len(c) for c in counts)  # newer each time


@pytest.mark.slow
def test_a_viewer_that_stops_reading_does_not_slow_the_pipeline():
    """A paced source (10 ms a frame): a stalled viewer must not stretch the run; the server
    drops it once it has taken nothing for ``send_timeout``."""
    def run_with(stalled: bool) -> tuple[dict, LiveServer, int]:
        with LiveServer(LOCAL, send_timeout=1.0) as live:
            reader = Reader(live.port) if stalled else None
            viewer = Stream(live.port, small_buffer=True) if stalled else None  # never read
            wait_until(lambda: live.viewers == (2 if stalled else 0), what="viewers")
            result = run(Moving(200, size=(240, 320), period=0.01), FakeBackend(), server=live)
            if stalled:
                wait_until(lambda: live.viewers == 1, timeout=20, what="the stalled viewer dropped")
                reader.stop()
                viewer.close()
                return result, live, reader.count
            return result, live, 0

    alone, _, _ = run_with(stalled=False)
    watched, live, read = run_with(stalled=True)
    assert watched["frames"] == alone["frames"] == 200
    assert watched["fps"] >= 0.8 * alone["fps"], (watched["fps"], alone["fps"])
    assert read > 20  # the viewer that kept reading got frames throughout


def test_the_page_keeps_the_last_frame_and_final_numbers_after_a_file_ends():
    with LiveServer(LOCAL) as live:
        result = run(Moving(12, size=(48, 64), period=0.0), FakeBackend(), server=live)
        final = stats(live.port)
        assert final["state"] == "ended" and final["frames"] == result["frames"] == 12
        assert final["ended_by"] == "end of stream" and final["fps"] == result["fps"]
        late = Stream(live.port)  # a viewer arriving afterwards still sees the last frame
        assert decode(late.frame()).shape == (48, 64, 3)
        late.close()
        assert decode(request(live.port, "/snapshot.jpg")[2]).shape == (48, 64, 3)
        time.sleep(0.3)
        assert stats(live.port)["frames"] == 12 and stats(live.port)["state"] == "ended"


def test_a_live_source_is_served_with_its_drops():
    with serving(Moving(period=0.002, live=True), batch=1) as (live, _, _):
        stream = Stream(live.port)
        assert len({stream.frame() for _ in range(5)}) >= 4
        stream.close()
        snapshot = stats(live.port)
        assert snapshot["live"] is True and "dropped" in snapshot


def test_live_miou_and_per_class_iou_with_labels(camvid_root, tmp_path):
    frames, labels = tmp_path / "frames", tmp_path / "labels"
    frames.mkdir()
    labels.mkdir()
    for image in sorted((camvid_root / "val").glob("*.png"))[:4]:
        (frames / image.name).symlink_to(image)
        (labels / image.name).symlink_to(camvid_root / "valannot" / image.name)
    from rtseg.pipeline import open_source

    with LiveServer(LOCAL) as live:
        result = run(open_source(frames, None), FakeBackend(), server=live, labels=labels)
        final = stats(live.port)
    assert final["miou"] == pytest.approx(result["miou"]) and final["scored_frames"] == 4
    assert set(final["per_class_iou"]) == set(get_spec("camvid").class_names)


# --- abuse: idle connections, malformed requests, other sites --------------------------------
def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        with contextlib.suppress(socket.timeout, ConnectionResetError):
            while chunk := sock.recv(65536):
                out += chunk
        return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def test_24_idle_connections_lock_out_no_one_and_are_dropped_at_the_head_deadline():
    errors = []
    with serving(Moving(), server={"token": TOKEN, "head_timeout": 1.0,
                                   "on_error": errors.append}) as (live, _, _):
        hostile = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(30)]
        for sock in hostile:
            sock.send(b"G")  # a head begun, never finished
        t0 = time.monotonic()
        assert request(live.port, "/", {"X-Rtseg-Token": TOKEN})[0] == 200
        viewer = Stream(live.port, f"/stream.mjpg?token={TOKEN}")
        assert viewer.status == 200 and decode(viewer.frame()) is not None
        assert time.monotonic() - t0 < 1.0 and live.viewers == 1  # the idle ones hold none
        trickle = socket.create_connection(("127.0.0.1", live.port))
        for byte in b"GET / HTTP/1.1\r\n":  # a byte every 0.1 s: 1.6 s for the line alone
            with contextlib.suppress(OSError):
                trickle.send(bytes([byte]))
            time.sleep(0.1)
        for sock in [*hostile, trickle]:  # all dropped by the 1 s deadline for the head
            sock.settimeout(2.0)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""  # closed (a timeout here would fail the test)
            sock.close()
        wait_until(lambda: not live._httpd.pending, timeout=3, what="no pending connection")
        assert decode(viewer.frame()) is not None  # the viewer kept streaming throughout
        viewer.close()
    assert errors == []


def test_malformed_and_oversized_requests_get_4xx_and_no_traceback():
    errors = []
    with serving(Moving(size=(48, 64)), server={"on_error": errors.append}) as (live, _, _):
        port, host = live.port, b"Host: 127.0.0.1\r\n"
        bad_ipv6 = b"GET http://[" + b"0" * 60000 + b"]/ HTTP/1.1\r\n" + host + b"\r\n"
        assert status_of(raw(port, bad_ipv6)) == 414  # longer than a request line may be
        assert status_of(raw(port, b"GET http://[0000::zz/ HTTP/1.1\r\n" + host + b"\r\n")) == 400
        assert status_of(raw(port, b"GET ftp://x/ HTTP/1.1\r\n" + host + b"\r\n")) == 400
        assert status_of(raw(port, b"GET /?" + b"a=1&" * 16000 + b" HTTP/1.1\r\n\r\n")) == 414
        many = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(40))
        assert status_of(raw(port, b"GET / HTTP/1.1\r\n" + host + many + b"\r\n")) == 431
        assert status_of(raw(port, b"GET / HTTP/1.0\r\n\r\n")) == 400  # no Host
        assert status_of(raw(port, b"GET http://127.0.0.1/stats.json HTTP/1.1\r\n" + host
                             + b"Connection: close\r\n\r\n")) == 200  # absolute form
        assert b"400" in raw(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")  # TLS
        head = raw(port, b"HEAD / HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
        assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")  # headers, no body
        assert request(port, "/stream.mjpg", method="HEAD")[0] == 200
        assert live.viewers == 0  # HEAD takes no viewer place
    assert errors == []


def test_a_page_of_another_site_cannot_take_the_stream():
    def status(path: str, headers: dict) -> int:
        if path != "/stream.mjpg":
            return request(live.port, path, headers)[0]
        stream = Stream(live.port, path, headers)  # the status only: a stream never ends
        stream.close()
        return stream.status

    with serving(Moving()) as (live, _, _):
        wait_until(lambda: live.slot.frames > 0, what="a frame")
        here = f"http://127.0.0.1:{live.port}"
        for path in ("/stream.mjpg", "/snapshot.jpg", "/stats.json"):
            for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                            {"Origin": "http://evil.example"}, {"Origin": "null"},
                            {"Referer": "http://evil.example/page.html"},
                            {"Referer": "http://127.0.0.1:1/other-port"}):
                assert status(path, headers) == 403, (path, headers)
            for headers in ({"Sec-Fetch-Site": "same-origin", "Referer": here + "/"},
                            {"Sec-Fetch-Site": "none"}, {"Origin": here}, {}):
                assert status(path, headers) == 200, (path, headers)
        wait_until(lambda: live.viewers == 0, what="the viewers gone")
        # A link from elsewhere still opens the page (it cannot be framed: X-Frame-Options).
        assert request(live.port, "/", {"Sec-Fetch-Site": "cross-site"})[0] == 200


def test_tokens_are_checked_before_the_query_is_parsed_and_may_be_utf8():
    token = "jeton-秘密-0123456789"
    with serving(Moving(), server={"token": token}) as (live, _, _):
        assert request(live.port, "/", {"X-Rtseg-Token": token.encode().decode("latin-1")}
                       )[0] == 200  # http.client sends a header's text as ISO-8859-1 bytes
        assert request(live.port, "/", {"Authorization": "Bearer "
                                        + token.encode().decode("latin-1")})[0] == 200
        assert request(live.port, "/?token=" + quote(token))[0] == 200
        query = "&".join(f"k{i}=%zz" for i in range(1500))  # 9 KB: over the line limit
        assert request(live.port, "/stats.json?" + query)[0] == 414
        answer = raw(live.port, b"GET /?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(answer) == 401 and b"Connection: close" in answer  # not kept open


@pytest.mark.parametrize("token", ["", "short", "fifteen-chars-x"])
def test_short_tokens_are_refused_with_a_hint(token):
    with pytest.raises(BadInput, match="at least 16.*secrets.token_urlsafe"):
        LiveServer(LOCAL, token=token)


def test_the_listen_backlog_takes_a_burst_of_connections():
    live = LiveServer(LOCAL)  # bound, not accepting yet: every connect waits in the backlog
    try:
        socks = []
        for _ in range(60):
            socks.append(socket.create_connection(("127.0.0.1", live.port), timeout=0.5))
        for sock in socks:
            sock.close()
    finally:
        live.close()


@pytest.mark.parametrize("value", ["²", "８０９５", "80٠", "", " ", ":", "host:", "[::1]", "a:b:1",
                                   "99999", "-1", "ホスト:80", "a" * 300 + ":80", "\x00:80"])
def test_bad_serve_values_are_one_line_and_exit_2(value, tmp_path, capfd):
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"")  # checked for existence only: the address fails first
    code = main(["run", "--source", str(clip), "--engine", str(tmp_path / "e.onnx"),
                 "--serve", value])
    err = capfd.readouterr().err
    assert code == 2 and err.startswith("error: --serve") and err.count("\n") == 1, err


def test_warnings_write_ipv6_addresses_in_brackets():
    assert "--serve [2001:db8::1]:8080 " in exposure_warning("2001:db8::1", 8080, None)


# --- the command line ----------------------------------------------------------------------------
class Cli:
    """``rtseg run ... --serve 127.0.0.1:0`` in a child process; ``url`` from its stderr."""

    def __init__(self, args: list, background: bool = False):
        """``background``: started as a shell starts a background job, with SIGINT ignored."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
        self.proc = subprocess.Popen([sys.executable, "-m", "rtseg", "run", *map(str, args),
                                      "--serve", "127.0.0.1:0", "--device", "cpu"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=ignore)
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self.wait_for_line(r"live view: (http://\S+)").group(1)
        self.port = int(re.search(r":(\d+)/", self.url).group(1))

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}: {self.err}") from None
            self.err.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def interrupt(self, timeout: float = 60, signum: int = signal.SIGINT) -> tuple[int, str, str]:
        """Send ``signum``; (exit code, stdout, stderr). A run still going ``timeout`` s later
        is killed and the test fails, rather than hanging the suite."""
        self.proc.send_signal(signum)
        killer = threading.Timer(timeout, self.proc.kill)  # stderr is the reader thread's
        killer.start()
        try:
            out = self.proc.stdout.read()
            self.proc.wait()
        finally:
            hung = not killer.is_alive()
            killer.cancel()
            self.proc.kill()
        if hung:
            raise AssertionError(f"still running {timeout} s after {signal.Signals(signum).name}: "
                                 f"{''.join(self.err)}")
        self._reader.join(10)
        while not self.lines.empty():
            self.err.append(self.lines.get())
        return self.proc.returncode, out, "".join(self.err)


def video_frames(path: Path) -> int:
    cap, count = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def camera_url(live: LiveServer) -> str:
    """The MJPEG stream of a test's own LiveServer, as a camera URL for ``rtseg run``."""
    return f"http://127.0.0.1:{live.port}/stream.mjpg"


def interrupt_with_viewers(cli: "Cli", frames: int, signum: int):
    """Two viewers on ``cli``'s stream (one reading, one stalled with a small buffer): five
    decoded JPEGs, then ``signum`` once ``frames`` frames are done; (jpegs, cli.interrupt())."""
    try:
        stalled = Stream(cli.port, small_buffer=True)
        watching = Stream(cli.port)
        jpegs = [decode(watching.frame()) for _ in range(5)]
        wait_until(lambda: stats(cli.port)["frames"] >= frames, timeout=60,
                   what=f"{frames} frames")
        ended = cli.interrupt(signum=signum)
        watching.close()
        stalled.close()
    finally:
        cli.proc.kill()
    return jpegs, ended


@pytest.mark.slow
def test_cli_ctrl_c_with_viewers_connected_finalises_the_mp4_and_json(dashcam_clip, engine_path,
                                                                        tmp_path):
    out, report, masks = tmp_path / "o.mp4", tmp_path / "run.json", tmp_path / "masks"
    with serving(LoopedClip(dashcam_clip)) as (camera, _, _):  # live: it never ends by itself
        cli = Cli(["--source", camera_url(camera), "--engine", engine_path, "--output", out,
                   "--json", report, "--masks", masks])
        assert cli.url.startswith("http://127.0.0.1:")
        jpegs, (code, stdout, stderr) = interrupt_with_viewers(cli, 10, signal.SIGINT)
    assert all(j.shape == (540, 960, 3) for j in jpegs)  # the overlay's size
    assert len({j.tobytes() for j in jpegs}) == 5
    assert code == 130, stderr
    result = json.loads(report.read_text())
    assert set(result) >= CONTRACT_KEYS and result["interrupted"] is True
    assert result["frames"] >= 10 and result["ended_by"] == "interrupted"
    assert video_frames(out) == result["frames"] == len(list(masks.iterdir()))
    assert "interrupted" in stderr and "frames" in stdout


def test_cli_sigterm_with_viewers_connected_finalises_the_mp4_and_json(dashcam_clip,
                                                                       engine_path, tmp_path):
    """``docker stop``, ``systemctl stop``, Kubernetes, ``timeout``: SIGTERM stops the run
    like Ctrl-C (frames in flight finished, mp4 published, JSON written), exit 143."""
    out, report = tmp_path / "o.mp4", tmp_path / "run.json"
    with serving(LoopedClip(dashcam_clip)) as (camera, _, _):  # live: it never ends by itself
        cli = Cli(["--source", camera_url(camera), "--engine", engine_path, "--output", out,
                   "--json", report])
        jpegs, (code, stdout, stderr) = interrupt_with_viewers(cli, 5, signal.SIGTERM)
    assert all(j is not None for j in jpegs)
    assert code == 143, stderr
    result = json.loads(report.read_text())
    assert result["interrupted"] is True and result["frames"] >= 5
    assert video_frames(out) == result["frames"]
    assert not list(tmp_path.glob(".*partial*"))  # published, nothing hidden left behind
    assert "interrupted (SIGTERM)" in stderr and "frames" in stdout


def test_a_camera_password_is_never_printed_written_or_served(engine_path, tmp_path, capfd):
    """The source is a real HTTP MJPEG stream with user info (this test's own live server):
    every output file, terminal line and served byte shows ``***@`` instead."""
    secret = "hunter2-SECRET"
    out, report, masks = tmp_path / "o.mp4", tmp_path / "run.json", tmp_path / "masks"
    with serving(Moving(size=(48, 64))) as (camera, _, _):
        url = f"http://admin:{secret}@127.0.0.1:{camera.port}/stream.mjpg"
        cli = Cli(["--source", url, "--engine", engine_path, "--output", out, "--json", report,
                   "--masks", masks, "--max-frames", "12"])
        try:
            cli.wait_for_line(r"run ended")
            served = [request(cli.port, path)[2] for path in ("/", "/stats.json")]
            code, stdout, stderr = cli.interrupt()
        finally:
            cli.proc.kill()
    assert code == 0, stderr
    live = json.loads(served[1])
    assert live["source"] == f"http://***@127.0.0.1:{camera.port}/stream.mjpg"
    assert live["engine"] == f"…/{engine_path.name}"  # no absolute path of this machine
    written = [report.read_bytes(), out.read_bytes(), *(p.read_bytes() for p in masks.iterdir())]
    assert json.loads(written[0])["frames"] == 12 and "***@127.0.0.1" in stdout + stderr
    for blob in [*served, *written, stdout.encode(), stderr.encode()]:
        assert secret.encode() not in blob and b"admin" not in blob

    # An error naming the source (nothing listens on port 9) redacts it too.
    code = main(["run", "--source", f"rtsp://admin:{secret}@127.0.0.1:9/live", "--engine",
                 str(engine_path), "--device", "cpu"])
    err = capfd.readouterr().err
    assert code == 2 and "rtsp://***@127.0.0.1:9/live" in err and secret not in err


def test_a_background_job_stops_on_kill_int_after_the_file_ends(dashcam_clip, engine_path,
                                                                 tmp_path):
    """A shell starts a background job with SIGINT ignored; ``kill -INT`` still stops rtseg
    (here while the page lingers after the file ended), as Ctrl-C would."""
    cli = Cli(["--source", dashcam_clip, "--engine", engine_path, "--max-frames", "3",
               "--json", tmp_path / "run.json"], background=True)
    try:
        cli.wait_for_line(r"run ended \(max frames\)")
        code, _, stderr = cli.interrupt(timeout=20)
    finally:
        cli.proc.kill()
    assert code == 0 and "stopped serving" in stderr, stderr


@pytest.mark.slow
def test_cli_after_the_file_ends_serves_the_last_frame_until_ctrl_c(dashcam_clip, engine_path,
                                                                     tmp_path):
    report = tmp_path / "run.json"
    cli = Cli(["--source", dashcam_clip, "--engine", engine_path, "--json", report,
               "--max-frames", "8"])
    try:
        cli.wait_for_line(r"run ended \(max frames\): .* shows the last frame")
        assert json.loads(report.read_text())["frames"] == 8  # written before the wait
        final = stats(cli.port)
        assert final["state"] == "ended" and final["frames"] == 8
        assert final["engine"] == f"…/{engine_path.name}"  # no absolute path served
        viewer = Stream(cli.port)
        assert decode(viewer.frame()).shape == (540, 960, 3)
        viewer.close()
        code, _, stderr = cli.interrupt()
    finally:
        cli.proc.kill()
    assert code == 0, stderr  # the run was complete: Ctrl-C only stops the serving


def test_cli_serve_linger_zero_returns_at_the_end(dashcam_clip, engine_path, tmp_path, capfd):
    code = main(["run", "--source", str(dashcam_clip), "--engine", str(engine_path),
                 "--max-frames", "3", "--serve", "127.0.0.1:0", "--serve-linger", "0",
                 "--json", str(tmp_path / "r.json"), "--device", "cpu"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert re.search(r"live view: http://127\.0\.0\.1:\d+/", err)


def test_cli_keeps_the_token_out_of_the_printed_address_unless_asked(dashcam_clip, engine_path,
                                                                      tmp_path, capfd):
    args = ["run", "--source", str(dashcam_clip), "--engine", str(engine_path),
            "--max-frames", "1", "--serve", "127.0.0.1:0", "--serve-token", TOKEN,
            "--serve-linger", "0", "--device", "cpu"]
    assert main(args) == 0
    err = capfd.readouterr().err
    assert re.search(r"live view: http://127\.0\.0\.1:\d+/  \(.*with \?token= and the token", err)
    assert TOKEN not in err
    assert main(args + ["--serve-show-token"]) == 0
    assert f"/?token={TOKEN}  " in capfd.readouterr().err


# --- a real browser ------------------------------------------------------------------------------
def load_bench():
    """bench/serve_viewers.py as a module: its headless-Chromium driver."""
    return bench_script("serve_viewers")


@pytest.fixture(scope="module")
def chromium():
    """The driver module, once a Chromium is found (CI installs Debian's chromium)."""
    bench = load_bench()
    if bench.find_chromium() is None:
        reason = "no Chromium here (apt-get install chromium)"
        if os.environ.get("RTSEG_REQUIRE_DATA") == "1":
            pytest.fail(reason + " — required in CI", pytrace=False)
        pytest.skip(reason)
    return bench


@pytest.mark.slow
def test_a_real_browser_shows_the_moving_video_and_the_numbers(chromium, dashcam_clip,
                                                               engine_path):
    from rtseg.backends import open_engine

    with open_engine(engine_path, "cpu") as backend, \
            serving(LoopedClip(dashcam_clip), backend) as (live, _, _), \
            chromium.Chromium() as browser:
        browser.open(live.url, 1280, 900)
        browser.wait_for(chromium.PAGE_READY, timeout=60)
        box = browser.evaluate("JSON.stringify(document.getElementById('video')"
                               ".getBoundingClientRect())")
        first_frames = int(browser.evaluate("document.getElementById('frames').textContent"))
        shots = [browser.screenshot()]
        time.sleep(1.0)
        shots.append(browser.screenshot())
        numbers = browser.evaluate("[...document.querySelectorAll('#fps, #frames, #latency, "
                                   "#stages td.v')].map(e => e.textContent)")
        rows = browser.evaluate("document.querySelectorAll('#classes tr').length")
    rect = json.loads(box)
    x0, y0 = int(rect["x"]), int(rect["y"])
    x1, y1 = x0 + int(rect["width"]), y0 + int(rect["height"])
    videos = [decode(png)[y0:y1, x0:x1].astype(np.int16) for png in shots]
    assert videos[0].shape[0] > 200 and videos[0].shape[1] > 400
    for v in videos:  # not blank: a real picture
        assert v.std() > 20 and 20 < v.mean() < 235, (v.mean(), v.std())
    assert np.abs(videos[0] - videos[1]).mean() > 2.0  # it moved in a second
    assert all(re.search(r"\d", n) for n in numbers), numbers
    assert float(numbers[0]) > 0 and int(numbers[1]) >= first_frames > 0
    assert rows == 11  # the CamVid legend
