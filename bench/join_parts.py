"""Join weights that came back in parts (``MODEL.safetensors.partNN``, possibly from several
calls) and check them against the sha256 that ``bench/train_gpu.py`` recorded in its summary
(the last call's summary lists every file of the run).

    tar -xzf OUT2/train_gpu.tar.gz -C runs/gpu    # summary.json, histories, pred_*.png
    python bench/join_parts.py --parts OUT1 OUT2 --summary runs/gpu/summary.json --out runs/gpu_weights
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def join(parts_dirs: list[Path], name: str, info: dict, out: Path) -> Path:
    """``out/NAME.safetensors`` from its parts in ``parts_dirs``; ValueError when some are
    missing, two folders hold different copies of one, or the checksum differs."""
    found: dict[str, Path] = {}
    for folder in parts_dirs:
        for path in folder.glob(f"{name}.safetensors.part*"):
            if path.name in found and found[path.name].read_bytes() != path.read_bytes():
                raise ValueError(f"{path.name}: {found[path.name].parent} and {folder} hold "
                                 "different copies (weights of two runs?)")
            found[path.name] = path
    names = [f"{name}.safetensors.part{i:02d}" for i in range(info["parts"])]
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{name}: {len(missing)} of {info['parts']} parts missing "
                         f"({', '.join(missing)})")
    data = b"".join(found[n].read_bytes() for n in names)
    digest = hashlib.sha256(data).hexdigest()
    if digest != info["sha256"]:
        raise ValueError(f"{name}: sha256 {digest} of {len(names)} parts is not {info['sha256']}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.safetensors"
    path.write_bytes(data)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=Path, nargs="+", required=True,
                   help="the folders the parts came back in")
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    exported = json.loads(args.summary.read_text()).get("exported", {})
    for name, info in exported.items():
        try:
            path = join(args.parts, name, info, args.out)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
        print(f"{path}: {info['bytes'] / 2**20:.1f} MiB, sha256 ok")


if __name__ == "__main__":
    main()
