"""``rtseg run --serve`` under attack: pipeline FPS with and without 24 hostile connections.

One pipeline run (the bundled model on the real dashcam clip, ``--laps`` times, a live server
with a token, one legitimate viewer holding it) during which 24 hostile connections — in
another process, on loopback only — come and go every ``--window`` frames:

* 8 slow heads: one byte every 0.5 s, never finishing the request head;
* 8 floods without the token: ``GET /stats.json?<64 KB query>``, again and again;
* 8 malformed or cross-site: ``GET http://[0000…]/`` and a cross-site ``/stream.mjpg``.

Each frame is timed as it is written, with the phase it was written in, so both conditions
are measured side by side on a machine whose load drifts. Also: threads, open files and RSS
of this process before the server starts and after it is closed; whether the token holder was
served throughout (its ``/stats.json`` latency); what the hostile connections got back.
Criterion: FPS under attack / FPS without ≥ 0.9 (exit 1 otherwise). Bounded: ``--laps`` laps
of a 221-frame clip, hostile clients stop with the run (and after ``--max-seconds`` anyway).

Writes ``bench/results/serve_abuse.json`` and ``.md``.

    python bench/serve_abuse.py                  # 1 lap, switching every 20 frames
    python bench/serve_abuse.py --laps 2 --window 30
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench_data import REPO, default_clip

RESULTS = REPO / "bench" / "results"
TOKEN = "bench-" + "x" * 26  # a fixed 32-character token: the bench's own server only
HOSTILE = 24


# --- the hostile process -------------------------------------------------------------------
def _answer(sock: socket.socket) -> str:
    """The status code the server sent ("closed" if none)."""
    try:
        head = sock.recv(64)
    except OSError:
        return "closed"
    return head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.") else "closed"


def _slow_head(port: int, on: mp.Event, end: mp.Event, tally: dict) -> None:
    """Begin a request head and send a byte every 0.5 s; reconnect when dropped."""
    sock = None
    while not end.is_set():
        if not on.is_set():
            if sock is not None:
                sock.close()
                sock = None
            on.wait(0.2)
            continue
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.send(b"GET /stream.mjpg HTTP/1.1\r\n")
            sock.send(b"X")
            tally["slow head: bytes sent"] = tally.get("slow head: bytes sent", 0) + 1
        except OSError:
            tally["slow head: dropped by the server"] = (
                tally.get("slow head: dropped by the server", 0) + 1)
            sock.close()
            sock = None
        end.wait(0.5)


def _flood(port: int, on: mp.Event, end: mp.Event, tally: dict, kind: str) -> None:
    """One request after another on fresh connections while ``on``: without the token and
    a 64 KB query, or malformed, or cross-site."""
    query = b"&".join(b"k%d=%s" % (i, b"v" * 8) for i in range(6000))[:65000]
    requests = {
        "no token, 64 KB query": [b"GET /stats.json?" + query + b" HTTP/1.1\r\n"
                                  b"Host: 127.0.0.1\r\n\r\n"],
        "malformed or cross-site": [
            b"GET http://[" + b"0" * 4000 + b"/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: cross-site\r\n"
            b"Origin: http://evil.example\r\n\r\n"]}[kind]
    i = 0
    while not end.is_set():
        if not on.wait(0.2):
            continue
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(requests[i % len(requests)])
                got = _answer(sock)
        except OSError:
            got = "refused"
        key = f"{kind}: {got}"
        tally[key] = tally.get(key, 0) + 1
        i += 1
        end.wait(0.05)


def hostile(port: int, on: mp.Event, end: mp.Event, out: mp.Queue, max_seconds: float) -> None:
    """24 hostile connections (8 of each kind) while ``on``, until ``end`` or max_seconds."""
    threading.Timer(max_seconds, end.set).start()
    tally: dict = {}
    kinds = ([(_slow_head, ())] * 8 + [(_flood, ("no token, 64 KB query",))] * 8
             + [(_flood, ("malformed or cross-site",))] * 8)
    threads = [threading.Thread(target=f, args=(port, on, end, tally, *a), daemon=True)
               for f, a in kinds]
    for t in threads:
        t.start()
    end.wait()
    for t in threads:
        t.join(3)
    out.put(tally)


# --- this process: the run, the legitimate viewer, the numbers -------------------------------
def process_numbers() -> dict:
    """Threads, open file descriptors and resident memory of this process, now."""
    status = Path("/proc/self/status").read_text()
    field = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines()}
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            kind = os.readlink(f"/proc/self/fd/{fd}").split(":")[0].split("/")[1]
        except (OSError, IndexError):
            kind = "other"
        fds[kind] = fds.get(kind, 0) + 1
    return {"threads": int(field["Threads"]), "python_threads": threading.active_count(),
            "fds": sum(fds.values()), "fd_kinds": fds,
            "rss_mib": round(int(field["VmRSS"].split()[0]) / 1024, 1)}


def legit_viewer(port: int, stop: threading.Event, frames: list, latency_ms: list) -> None:
    """The token holder: reads the stream and polls /stats.json (its latency) throughout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stream.mjpg", headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200, response.status

    def poll():
        while not stop.wait(0.4):
            t0 = time.perf_counter()
            poller = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                poller.request("GET", "/stats.json", headers={"X-Rtseg-Token": TOKEN})
                ok = poller.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                poller.close()
            latency_ms.append((time.perf_counter() - t0) * 1000 if ok else None)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        while not stop.is_set():
            line = response.readline()
            if not line:
                break
            if line.lower().startswith(b"content-length:"):
                response.readline()
                response.read(int(line.split(b":")[1]))
                frames.append(time.perf_counter())
    except OSError:
        pass
    finally:
        conn.close()
        poller.join(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--laps", type=int, default=1, help="Times the clip is played.")
    parser.add_argument("--window", type=int, default=20, help="Frames per phase.")
    parser.add_argument("--engine", type=Path, default=None, help="Default: the bundled model.")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_abuse.json")
    args = parser.parse_args()

    from rtseg.backends import open_engine
    from rtseg.engines import default_engine
    from rtseg.pipeline import LiveServer, Pipeline, RunConfig
    from rtseg.pipeline.sinks import Sink
    from rtseg.pipeline.sources import Source, VideoFileSource

    clip = default_clip()

    class Laps(Source):
        """The clip ``laps`` times."""

        def __init__(self, laps: int):
            self.left, self.clip = laps - 1, VideoFileSource(clip)
            self.fps, self.size, self.description = self.clip.fps, self.clip.size, clip.name

        def read(self, stop):
            got = self.clip.read(stop)
            if got is None and self.left > 0:
                self.left -= 1
                self.clip.close()
                self.clip = VideoFileSource(clip)
                got = self.clip.read(stop)
            return got

        def close(self):
            self.clip.close()

    ctx = mp.get_context("spawn")  # a clean child: no copy of the engine or the server
    on, end = ctx.Event(), ctx.Event()
    written: list = []  # (time, phase) of every frame written

    class Clock(Sink):
        """Times each frame as it is written and switches the attack every ``window``."""

        def write(self, item):
            written.append((time.perf_counter(), on.is_set()))
            if len(written) % args.window == 0:
                (on.clear if on.is_set() else on.set)()

    engine = args.engine or default_engine(device="cpu")
    errors: list = []
    with open_engine(engine, "cpu") as backend:
        backend.infer(np.zeros((1, *backend.input_size, 3), np.uint8))  # its threads, arenas
        before = process_numbers()  # the engine loaded and run once, no server yet
        server = LiveServer(("127.0.0.1", 0), token=TOKEN, on_error=errors.append).start()
        results = ctx.Queue()
        attacker = ctx.Process(
            target=hostile, args=(server.port, on, end, results, args.max_seconds), daemon=True)
        attacker.start()
        seen, latency = [], []
        stop = threading.Event()
        viewer = threading.Thread(target=legit_viewer, args=(server.port, stop, seen, latency))
        viewer.start()
        time.sleep(1.0)  # the viewer connected, the attacker started
        during = {}

        def sample():  # the server's own numbers mid-attack
            while not stop.wait(0.5):
                if on.is_set() and not during:
                    time.sleep(2.0)
                    during.update(process_numbers(), pending=len(server._httpd.pending),
                                  connections=len(server._httpd.connections),
                                  viewers=server.viewers)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = Pipeline(Laps(args.laps), backend, RunConfig(), sinks=[Clock()],
                              server=server).run()
        finally:
            end.set()
            on.clear()
            stop.set()
            tally = results.get(timeout=30) if attacker.is_alive() or not results.empty() else {}
            attacker.join(10)
            attacker.close()  # the bench's own process handles: not the server's
            results.close()
            results.join_thread()
            server.close()
            viewer.join(10)
            sampler.join(2)
        time.sleep(0.5)  # sockets the client side closes last
        after = process_numbers()  # the server closed, the engine still loaded

    times = np.array([t for t, _ in written])
    hostile_on = np.array([h for _, h in written])
    gaps = np.diff(times)
    phase = hostile_on[1:]
    fps = {"without": float(1.0 / gaps[~phase].mean()), "with_24_hostile": float(
        1.0 / gaps[phase].mean())}
    served = [v for v in latency if v is not None]
    report = {
        "engine": engine.name, "clip": clip.name, "frames": result["frames"],
        "window": args.window, "fps": fps, "ratio": fps["with_24_hostile"] / fps["without"],
        "token_holder": {"stats_polls": len(latency), "failed": latency.count(None),
                         "latency_ms_p50": float(np.median(served)) if served else None,
                         "latency_ms_max": float(max(served)) if served else None,
                         "stream_frames": len(seen)},
        "hostile_answers": dict(sorted(tally.items())), "server_errors": errors,
        "process_before": before, "process_during_attack": during, "process_after": after,
        "machine": f"{os.cpu_count()}-core {_cpu_name()}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = _markdown(report)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"written: {args.out} and {args.out.with_suffix('.md')}")
    sys.exit(0 if report["ratio"] >= 0.9 and not errors else 1)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "CPU"


def _markdown(r: dict) -> str:
    b, d, a, t = r["process_before"], r["process_during_attack"], r["process_after"], \
        r["token_holder"]
    lines = [f"`rtseg run --serve` under attack: {r['engine']} on {r['clip']}, {r['frames']} "
             f"frames, phases of {r['window']} frames; {r['machine']}", "",
             "| | without | with 24 hostile connections |", "|---|---:|---:|",
             f"| pipeline FPS | {r['fps']['without']:.2f} | {r['fps']['with_24_hostile']:.2f} |",
             f"| ratio | | {r['ratio']:.3f} |", "",
             "| this process (engine loaded) | before the server | during the attack | "
             "after close |", "|---|---:|---:|---:|"]
    for key in ("threads", "fds", "rss_mib"):
        lines.append(f"| {key} | {b[key]} | {d.get(key, '-')} | {a[key]} |")
    lines += ["", f"token holder: {t['stats_polls']} /stats.json polls, {t['failed']} failed, "
                  f"p50 {t['latency_ms_p50']:.1f} ms, max {t['latency_ms_max']:.1f} ms; "
                  f"{t['stream_frames']} stream frames", "",
              "| hostile request: answer | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in r["hostile_answers"].items()]
    lines += ["", f"server errors reported: {len(r['server_errors'])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
