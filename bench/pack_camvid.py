"""A compact copy of CamVid to carry to a GPU machine: training frames as JPEG (quality 95,
about a quarter of the PNGs' size), labels and the val split unchanged (PNG), so validation
scores the very pixels ``rtseg eval`` scores.

    python bench/pack_camvid.py --src ../shared/data/camvid --out .gpu/camvid
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2


def pack(src: Path, out: Path, quality: int = 95) -> int:
    """Write the compact copy; returns its size in bytes."""
    for split in ("train", "trainannot", "val", "valannot"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for image in sorted((src / "train").glob("*.png")):
        frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
        cv2.imwrite(str(out / "train" / f"{image.stem}.jpg"), frame,
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
    for split in ("trainannot", "val", "valannot"):
        for path in sorted((src / split).glob("*.png")):
            shutil.copyfile(path, out / split / path.name)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quality", type=int, default=95)
    args = p.parse_args()
    size = pack(args.src, args.out, args.quality)
    print(f"{args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
