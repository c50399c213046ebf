"""``rtseg run --serve`` under load: pipeline FPS on the dashcam clip with 0 and with 8 viewers.

One pipeline run (the bundled model on the real clip, played ``--laps`` times, with a live
server, as ``rtseg run --serve`` runs it) in which 8 viewers — MJPEG readers in another
process, so their own reading is not billed to the server — connect and leave every
``--window`` frames. Each frame is timed as it is written, with the number of viewers then
connected, so both conditions are measured side by side, minutes apart at most: on a machine
shared with other jobs, whose load drifts, that is what makes the ratio mean something.
Criterion: FPS with 8 viewers / FPS with none ≥ 0.95.

Writes ``bench/results/serve_viewers.json`` and ``.md``; ``--screenshot FILE`` also saves a
screenshot of the page mid-run (headless Chromium, driven over the DevTools protocol on a
pipe: no browser download, no extra package), as in the README.

    python bench/serve_viewers.py                       # 4 laps, switching every 16 frames
    python bench/serve_viewers.py --laps 1 --window 8    # quicker
    python bench/serve_viewers.py --screenshot bench/results/serve_page.png --only-screenshot
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import http.client
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bench_data import REPO, default_clip

RESULTS = REPO / "bench" / "results"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio", "--remote-debugging-pipe"]


# --- a headless Chromium, driven over the DevTools protocol on a pipe ----------------------
def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium/Chrome on PATH); None when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class Chromium:
    """Headless Chromium with ``--remote-debugging-pipe``: DevTools commands are JSON
    messages ending in NUL on fd 3 (to the browser) and fd 4 (from it), as Playwright does.

    >>> with Chromium() as browser:
    ...     browser.open("http://127.0.0.1:8080/", 1280, 800)
    ...     png = browser.screenshot()
    """

    def __init__(self, binary: str | None = None, timeout: float = 30.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("no Chromium found (apt-get install chromium)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="rtseg-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Fds ≥ 10 in the child, which a tiny Python trampoline moves to 3 and 4 before it
        # execs the browser (no preexec_fn: the caller may have threads).
        hi_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        argv = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        trampoline = (f"import os, sys; os.dup2({hi_r}, 3); os.dup2({hi_w}, 4); "
                      f"os.close({hi_r}); os.close({hi_w}); os.execv(sys.argv[1], sys.argv[1:])")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", trampoline, *argv], pass_fds=(hi_r, hi_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(hi_r)
        os.close(hi_w)
        self._buffer, self._next_id, self.target = b"", 0, None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.target = self.call("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
        except BaseException:
            self.close()
            raise

    def call(self, method: str, **params) -> dict:
        """Send one command (to the page once attached) and wait for its answer."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.target is not None and not method.startswith("Target."):
            message["sessionId"] = self.target
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self._buffer += chunk

    def open(self, url: str, width: int = 1280, height: int = 800) -> None:
        """Load ``url`` in a ``width``×``height`` viewport."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, every: float = 0.2):
        """Poll ``expression`` until it is truthy; its value (TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never made {expression!r} true")
            time.sleep(every)

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Everything the page must show, as one JavaScript expression (truthy once it does).
PAGE_READY = ("(() => { const v = document.getElementById('video');"
              " const n = Number(document.getElementById('frames').textContent);"
              " return v.complete && v.naturalWidth > 0 && n > 0"
              " && /\\d/.test(document.getElementById('fps').textContent)"
              " && document.querySelectorAll('#stages tr').length === 5"
              " && document.querySelectorAll('#classes tr').length > 0; })()")


def page_screenshot(url: str, path: Path, width: int = 1440, height: int = 1000,
                    settle: float = 10.0) -> None:
    """Save a PNG of the page at ``url`` once it shows video and numbers (+``settle`` s)."""
    with Chromium() as browser:
        browser.open(url, width, height)
        browser.wait_for(PAGE_READY, timeout=60)
        time.sleep(settle)  # some seconds of chart
        path.write_bytes(browser.screenshot())


# --- MJPEG viewers in their own process ------------------------------------------------------
def read_stream(url: str, counts: list, index: int, stop: threading.Event) -> None:
    """One viewer: read MJPEG parts from ``url`` until ``stop``, counting them."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        if response.status != 200:
            counts[index] = -response.status
            return
        while not stop.is_set():
            line = response.readline()
            if not line:
                return
            if line.lower().startswith(b"content-length:"):
                response.readline()  # the blank line
                response.read(int(line.split(b":")[1]))
                counts[index] += 1
    except (OSError, http.client.HTTPException, ValueError):
        return
    finally:
        conn.close()


def viewers_client(url: str, n: int) -> None:
    """``--viewers-client URL N``: on ``on`` from stdin, ``n`` viewers connect; on ``off``
    they leave; on end of input, the frames each viewer received, as JSON, and exit."""
    counts = [0] * n
    stop, threads = threading.Event(), []
    for line in sys.stdin:
        if line.strip() == "on" and not threads:
            stop = threading.Event()
            threads = [threading.Thread(target=read_stream, args=(url, counts, i, stop),
                                        daemon=True) for i in range(n)]
            for t in threads:
                t.start()
        elif line.strip() == "off":
            stop.set()
            threads = []
        print("ok", flush=True)
    stop.set()
    print(json.dumps(counts), flush=True)


class Viewers:
    """``n`` MJPEG viewers of ``url`` in a child process, switched on and off."""

    def __init__(self, url: str, n: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--viewers-client", url, str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def switch(self, on: bool) -> None:
        self.proc.stdin.write("on\n" if on else "off\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> list[int]:
        """Frames each viewer received in all."""
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])


# --- the benchmark -------------------------------------------------------------------------------


def looped_clip(path: Path, laps: int):
    """The clip ``laps`` times over, as one source (frame names stay unique)."""
    from rtseg.pipeline import Source
    from rtseg.pipeline.sources import VideoFileSource

    class Looped(Source):
        def __init__(self):
            self.clip, self.lap, self.n = VideoFileSource(path), 1, 0
            self.size, self.fps, self.description = self.clip.size, self.clip.fps, str(path)

        def read(self, stop):
            got = self.clip.read(stop)
            if got is None and self.lap < laps:
                self.clip.close()
                self.clip, self.lap = VideoFileSource(path), self.lap + 1
                got = self.clip.read(stop)
            if got is None:
                return None
            self.n += 1
            return got[0], f"{self.n:06d}", None

        def close(self):
            self.clip.close()

    return Looped()


def interleaved_run(backend, clip: Path, viewers: int, window: int, laps: int) -> dict:
    """One pipeline run over ``laps`` laps of the clip; every ``window`` frames the viewers
    switch on or off. Each frame is timed as it is written, with the number of viewers then
    connected; an interval counts for a condition when both its ends saw that many viewers."""
    from rtseg.pipeline import LiveServer, Pipeline, RunConfig, Sink

    with LiveServer("127.0.0.1:0") as server:
        client = Viewers(server.url + "stream.mjpg", viewers)
        wanted: "queue.Queue[bool]" = queue.Queue()
        times: list[tuple[float, int]] = []

        class Probe(Sink):  # on the writer thread: a timestamp, and a flip every window
            def write(self, item):
                times.append((time.perf_counter(), server.viewers))
                if len(times) % window == 0:
                    wanted.put(len(times) // window % 2 == 1)

        def switch():
            while (on := wanted.get()) is not None:
                client.switch(on)

        switcher = threading.Thread(target=switch)
        switcher.start()
        try:
            pipeline = Pipeline(looped_clip(clip, laps), backend, RunConfig(), [Probe()],
                                server=server)
            cpu0 = time.process_time()
            result = pipeline.run()
            process_cpu = time.process_time() - cpu0
        finally:
            wanted.put(None)
            switcher.join()
            received = client.close()
    windows = []
    for start in range(0, len(times) - 1, window):
        span = times[start:start + window + 1]
        pairs = [(b[0] - a[0], a[1]) for a, b in zip(span, span[1:]) if a[1] == b[1]]
        for n in (0, viewers):
            dts = [dt for dt, v in pairs if v == n]
            if len(dts) >= window // 2:
                windows.append({"viewers": n, "frames": len(dts), "seconds": sum(dts)})
    fps = {n: sum(w["frames"] for w in windows if w["viewers"] == n) /
           sum(w["seconds"] for w in windows if w["viewers"] == n) for n in (0, viewers)}
    return {"frames": result["frames"], "fps": result["fps"], "fps_by_viewers": fps,
            "windows": windows, "jpeg_encodes": server.slot.encodes,
            "frames_received": received, "serve_cpu_s": server.cpu_seconds,
            "process_cpu_s": process_cpu, "seconds": result["seconds"]}


def benchmark(engine: Path, clip: Path, viewers: int, window: int, laps: int) -> dict:
    from rtseg.backends import open_engine
    from rtseg.bench import machine

    with open_engine(engine, "cpu") as backend:
        backend.infer(np.zeros((1, *backend.input_size, 3), np.uint8))  # warm-up
        run = interleaved_run(backend, clip, viewers, window, laps)
        info = machine(backend.device)
    fps0, fps_n = run["fps_by_viewers"][0], run["fps_by_viewers"][viewers]
    def window_fps(w):
        return w["frames"] / w["seconds"]

    pairs = [(window_fps(a) / window_fps(b)) ** (1 if a["viewers"] else -1)
             for a, b in zip(run["windows"], run["windows"][1:]) if a["viewers"] != b["viewers"]]
    return {"engine": str(engine), "clip": str(clip), "device": "cpu", "laps": laps,
            "window_frames": window, "viewers": viewers, "frames": run["frames"],
            "fps_0_viewers": fps0, f"fps_{viewers}_viewers": fps_n, "ratio": fps_n / fps0,
            "ratio_by_window_pair": {"median": float(np.median(pairs)) if pairs else None,
                                     "pairs": len(pairs)},
            "passed": fps_n / fps0 >= 0.95, "jpeg_encodes": run["jpeg_encodes"],
            "serve_cpu_s": run["serve_cpu_s"], "process_cpu_s": run["process_cpu_s"],
            "serve_cpu_ms_per_jpeg": 1000 * run["serve_cpu_s"] / max(run["jpeg_encodes"], 1),
            "seconds": run["seconds"],
            "frames_received": run["frames_received"], "windows": run["windows"],
            "machine": info}


def to_markdown(report: dict) -> str:
    n = report["viewers"]
    windows = report["windows"]
    lines = [f"# `rtseg run --serve`: pipeline FPS with 0 and {n} viewers, in one run", "",
             f"Engine `{Path(report['engine']).name}` on the CPU; `{Path(report['clip']).name}`"
             f" played {report['laps']}× ({report['frames']} frames) in one pipeline run, the "
             f"{n} viewers (MJPEG readers in another process) switched on and off every "
             f"{report['window_frames']} frames; FPS from the write times of the frames in "
             "each condition. Criterion: ratio ≥ 0.95.", "",
             "| viewers | windows | frames timed | FPS |", "|---:|---:|---:|---:|"]
    for v in (0, n):
        own = [w for w in windows if w["viewers"] == v]
        lines.append(f"| {v} | {len(own)} | {sum(w['frames'] for w in own)} | "
                     f"{report[f'fps_{v}_viewers']:.3f} |")
    pair = report["ratio_by_window_pair"]
    lines += ["", f"**Ratio {report['ratio']:.3f}** ({'pass' if report['passed'] else 'FAIL'});"
              f" median over {pair['pairs']} adjacent window pairs: "
              f"{pair['median']:.3f}." if pair["median"] else "",
              "", f"JPEGs encoded: {report['jpeg_encodes']} (once per frame shown, shared by "
              f"the {n} viewers); frames each viewer received: "
              f"{', '.join(map(str, report['frames_received']))}.", "",
              f"CPU time of the server's threads (encoding and sending to {n} viewers): "
              f"{report['serve_cpu_s']:.2f} s, {report['serve_cpu_ms_per_jpeg']:.1f} ms per "
              f"frame shown, {100 * report['serve_cpu_s'] / report['process_cpu_s']:.1f} % of "
              f"the process's {report['process_cpu_s']:.0f} CPU-s over the "
              f"{report['seconds']:.0f} s run: the part of the FPS the viewers could cost, "
              "measured without the noise of the machine's other jobs.", ""]
    m = report["machine"]
    lines.append(f"Machine: {m.get('processor', '?')}, {m.get('cpu_count', '?')} CPUs, "
                 f"torch threads {m.get('torch_threads', '?')}; shared with other jobs.")
    return "\n".join(lines) + "\n"


def screenshot(engine: Path, source: Path, labels: Path | None, path: Path) -> None:
    """The page mid-run (``source``, live mIoU when ``labels`` is given), saved to ``path``."""
    from rtseg.backends import open_engine
    from rtseg.pipeline import LiveServer, Pipeline, RunConfig, open_source

    with open_engine(engine, "cpu") as backend, LiveServer("127.0.0.1:0") as server:
        server.describe(engine=engine.name)
        pipeline = Pipeline(open_source(source, None), backend, RunConfig(labels=labels),
                            server=server)
        worker = threading.Thread(target=pipeline.run)
        worker.start()
        try:
            page_screenshot(server.url, path)
        finally:
            pipeline.interrupt()
            pipeline.interrupt()
            worker.join()
    print(f"screenshot: {path}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--viewers-client":
        return viewers_client(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=Path, help="default: the bundled model")
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--window", type=int, default=16, help="frames between switches")
    parser.add_argument("--laps", type=int, default=4, help="times the clip is played")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_viewers.json")
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the page here")
    parser.add_argument("--screenshot-source", type=Path,
                        help="frames for the screenshot (default: the clip)")
    parser.add_argument("--screenshot-labels", type=Path, help="their labels (live mIoU)")
    parser.add_argument("--only-screenshot", action="store_true")
    args = parser.parse_args()

    from rtseg.engines import default_engine
    from rtseg.files import write_json

    engine = args.engine or default_engine()
    clip = args.clip or default_clip()
    if args.screenshot:
        screenshot(engine, args.screenshot_source or clip, args.screenshot_labels,
                   args.screenshot)
    if args.only_screenshot:
        return
    report = benchmark(engine, clip, args.viewers, args.window, args.laps)
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(to_markdown(report))
    print(to_markdown(report))
    if not report["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
