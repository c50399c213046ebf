"""Join weights that came back in parts (``MODEL.safetensors.partNN``) and check them against
the sha256 that ``bench/train_gpu.py`` recorded in its summary.

    tar -xzf OUT/train_gpu.tar.gz -C runs/gpu    # summary.json, histories, pred_*.png
    python bench/join_parts.py --parts OUT --summary runs/gpu/summary.json --out runs/gpu_weights
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def join(parts_dir: Path, name: str, sha256: str, out: Path) -> Path:
    """``out/NAME.safetensors`` from its parts; ValueError if the checksum differs."""
    parts = sorted(parts_dir.glob(f"{name}.safetensors.part*"))
    data = b"".join(p.read_bytes() for p in parts)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"{name}: sha256 {digest} of {len(parts)} parts is not {sha256}")
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.safetensors"
    target.write_bytes(data)
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=Path, required=True)
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    exported = json.loads(args.summary.read_text()).get("exported", {})
    for name, info in exported.items():
        try:
            path = join(args.parts, name, info["sha256"], args.out)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
        print(f"{path}: {info['bytes'] / 2**20:.1f} MiB, sha256 ok")


if __name__ == "__main__":
    main()
