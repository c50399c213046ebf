"""Run a command on a slower CPU than this one: a Linux cgroup CPU quota gives the command
``--share`` of every core's time, so a fast CPU stands in for a slower one with the same
core count — e.g. a 2-core Zen 4 at about 175 fp32 GFLOP/s for a 2-core AVX2 EPYC at 75
(``--share 0.45``: ``bench/cpu_forms.py`` run inside measured 75.0). ``--gflops 75`` measures
this CPU first and derives the share, but a shared machine's rate moves by 10-20 % between
measurements: prefer a fixed ``--share`` checked by the matrix product inside the group.

    python bench/slow_cpu.py --share 0.45 -- rtseg run --source bench/data/solidWhiteRight.mp4 ...

The quota is enforced every ``--period-ms`` (10 ms: short, so that frames of ~100 ms see an
even slowdown rather than bursts of full speed and stalls). What it does not emulate: the
slower CPU's instruction set (limit PyTorch with ``ATEN_CPU_CAPABILITY=avx2`` for that),
caches and memory bandwidth. Needs root and a writable cgroup CPU controller (v1
``/sys/fs/cgroup/cpu`` or v2 ``cpu.max``); the group is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This process's fp32 matrix-product GFLOP/s (PyTorch, all its threads), best of
    ``repeats``."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(work) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def make_group(share: float, period_us: int) -> Path:
    """A cgroup whose members get ``share`` of each core this process may run on; OSError
    (with no group left behind) where none can be made."""
    quota = max(1000, int(share * len(os.sched_getaffinity(0)) * period_us))
    name = f"rtseg-slow-cpu-{os.getpid()}"
    v1 = (V1 / "cpu.cfs_quota_us").exists()
    group = (V1 if v1 else V2) / name
    group.mkdir()
    try:
        if v1:
            (group / "cpu.cfs_period_us").write_text(str(period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {period_us}")
    except OSError:
        group.rmdir()
        raise
    return group


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--share", type=float, help="fraction of each core's time (0-1)")
    how.add_argument("--gflops", type=float,
                     help="the slower CPU's fp32 matrix-product GFLOP/s: the share is this "
                          "over this CPU's, measured here first")
    p.add_argument("--period-ms", type=float, default=10.0)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to run after --")
    share = args.share
    if share is None:
        here = matmul_gflops()
        share = args.gflops / here
        print(f"this CPU: {here:.0f} GFLOP/s; share {share:.3f} for {args.gflops:.0f}",
              file=sys.stderr)
    if not 0 < share <= 1:
        p.error(f"share {share:.3f}: must be in (0, 1]")
    try:
        group = make_group(share, int(args.period_ms * 1000))
    except OSError as exc:
        print(f"slow_cpu: cannot make a cgroup ({exc}); needs root and a writable cgroup CPU "
              "controller", file=sys.stderr)
        return 2
    child = None
    try:
        child = subprocess.Popen(command, preexec_fn=lambda: (group / "cgroup.procs").write_text(
            str(os.getpid())))
        return child.wait()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"slow_cpu: cannot run {command[0]} in the group ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the child got the Ctrl-C too: let it finish its outputs
        return child.wait() if child is not None else 130
    finally:
        for _ in range(50):  # the group empties once the child is reaped
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
