"""Your own data: ``--dataset folder --data-root DIR``.

``DIR/images/{train,val[,test]}/`` holds the frames, ``DIR/labels/{split}/`` a label PNG of the
same stem (and sub-folder) per frame, and ``DIR/classes.yaml`` (or ``classes.json``) the class
table::

    ignore_index: 255            # label value left out of training and scoring
    classes:                     # index = position in this list
      - {name: Sky, color: [128, 128, 128]}
      - {name: Road, color: [128, 64, 128]}
    label_map: {7: 1, 23: 0}     # optional: raw label value -> class index (others -> ignore)

A single-channel label holds class indices (or raw values mapped by ``label_map``); a
three-channel label is colour-coded and mapped through the classes' ``color`` (RGB), with an
optional ``ignore_color``. Every check names the file and what to fix (BadInput).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtseg.data.classes import DatasetSpec
from rtseg.errors import BadInput
from rtseg.metadata import EngineMetadata

TABLE_FILES = ("classes.yaml", "classes.yml", "classes.json")
TABLE_KEYS = ("classes", "ignore_index", "label_map", "ignore_color", "name")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def table_path(root: Path) -> Path:
    """The class table of a folder data set; BadInput when there is none."""
    for name in TABLE_FILES:
        if (root / name).is_file():
            return root / name
    raise BadInput(f"--data-root {root}: no classes.yaml (or classes.json) with the class table "
                   "(ignore_index, classes: [{name, color: [r, g, b]}], optional label_map)")


def _read_table(path: Path) -> dict:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix == ".json":
            table = json.loads(text)
        else:
            import yaml

            table = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / ValueError: one line, with the place
        problem = " ".join(str(exc).split())
        raise BadInput(f"{path}: cannot be parsed ({problem})") from None
    if not isinstance(table, dict):
        raise BadInput(f"{path}: expected a mapping with 'classes' and 'ignore_index'")
    unknown = [str(k) for k in table if k not in TABLE_KEYS]
    if unknown:
        raise BadInput(f"{path}: unknown key(s) {', '.join(unknown)}; "
                       f"expected {', '.join(TABLE_KEYS)}")
    return table


def _int(value: Any, low: int, high: int) -> int | None:
    """``value`` as an int in [low, high] (a string of digits too: JSON keys), else None."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _colour(value: Any, path: Path, what: str) -> tuple[int, int, int]:
    channels = value if isinstance(value, (list, tuple)) else ()
    rgb = [_int(c, 0, 255) for c in channels]
    if len(rgb) != 3 or None in rgb:
        raise BadInput(f"{path}: {what} colour {value!r} is not [r, g, b] with each in 0-255")
    return rgb[0], rgb[1], rgb[2]


def _classes(table: dict, path: Path) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    classes = table.get("classes")
    if not isinstance(classes, list) or not 2 <= len(classes) <= 255:
        raise BadInput(f"{path}: 'classes' must be a list of 2 to 255 entries "
                       "{name, color: [r, g, b]} (index = position)")
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    for i, entry in enumerate(classes):
        if not isinstance(entry, dict) or set(entry) != {"name", "color"}:
            raise BadInput(f"{path}: class {i} is {entry!r}; expected {{name: ..., color: "
                           "[r, g, b]}")
        name = entry["name"]
        if not isinstance(name, (str, int)) or not str(name).strip():
            raise BadInput(f"{path}: class {i} has no name")
        name = str(name).strip()
        if name in names:
            raise BadInput(f"{path}: duplicate class name {name!r} (classes {names.index(name)} "
                           f"and {i}); class names must be unique")
        colour = _colour(entry["color"], path, f"class {name!r}")
        if colour in colours:
            raise BadInput(f"{path}: classes {names[colours.index(colour)]!r} and {name!r} share "
                           f"the colour {list(colour)}; colours must be unique")
        names.append(name)
        colours.append(colour)
    return tuple(names), tuple(colours)


def _label_map(table: dict, path: Path, num_classes: int,
               ignore: int) -> tuple[tuple[int, int], ...]:
    raw = table.get("label_map") or {}
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: label_map must map raw label values to class indices, "
                       "e.g. {7: 1, 23: 0}")
    pairs = []
    for key, value in raw.items():
        k, v = _int(key, 0, 65535), _int(value, 0, 255)
        if k is None:
            raise BadInput(f"{path}: label_map key {key!r} is not a label value (0-65535)")
        if v is None or (v >= num_classes and v != ignore):
            raise BadInput(f"{path}: label_map {key}: {value!r} is not a class index "
                           f"(0-{num_classes - 1}) or the ignore index {ignore}")
        pairs.append((k, v))
    return tuple(sorted(pairs))


def _dataset_name(table: dict, root: Path, path: Path) -> str:
    if "name" in table:
        name = str(table["name"])
        if not _NAME.fullmatch(name):
            raise BadInput(f"{path}: name {name!r} must be letters, digits, '_', '.' or '-'")
        return name
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", root.resolve().name)[:64]
    return name if _NAME.fullmatch(name) else "folder"


def _default_size(root: Path) -> tuple[int, int]:
    """The network input of a folder data set: its first image's size, each side rounded
    down to a multiple of 32 (CamVid's 360×480 gives 352×480)."""
    for split in ("train", "val", "test"):
        images = split_images(root, split) if (root / "images" / split).is_dir() else []
        if images:
            image = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
            if image is not None:
                h, w = image.shape[:2]
                return max(32, h // 32 * 32), max(32, w // 32 * 32)
    return 352, 480


def load_folder_spec(root: Path | str) -> DatasetSpec:
    """The DatasetSpec of ``root``'s ``classes.yaml``: checked, BadInput naming the problem."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"data root not found: {root}")
    path = table_path(root)
    table = _read_table(path)
    names, colours = _classes(table, path)
    ignore = _int(table.get("ignore_index", 255), 0, 255)
    if ignore is None or ignore < len(names):
        raise BadInput(f"{path}: ignore_index {table.get('ignore_index')!r} must be a label "
                       f"value in {len(names)}-255 (0-{len(names) - 1} are the classes)")
    ignore_color = None
    if table.get("ignore_color") is not None:
        ignore_color = _colour(table["ignore_color"], path, "ignore_color")
        if ignore_color in colours:
            raise BadInput(f"{path}: ignore_color {list(ignore_color)} is also a class colour")
    size = _default_size(root)
    return DatasetSpec(name=_dataset_name(table, root, path), class_names=names,
                       palette=colours, ignore_index=ignore, input_size=size, train_crop=size,
                       layout="folder", label_map=_label_map(table, path, len(names), ignore),
                       ignore_color=ignore_color)


def spec_from_metadata(meta: EngineMetadata) -> DatasetSpec:
    """The folder DatasetSpec an engine was trained on, from its metadata (class table,
    ``label_map`` and ``ignore_color`` extras): how ``run --labels`` reads the user's labels."""
    try:
        label_map = tuple(sorted((int(k), int(v))
                                 for k, v in (meta.extra.get("label_map") or {}).items()))
        colour = meta.extra.get("ignore_color")
        ignore_color = None
        if colour is not None:
            r, g, b = (int(c) for c in colour)
            ignore_color = (r, g, b)
    except (TypeError, ValueError, AttributeError):
        raise BadInput("engine metadata has a malformed label_map or ignore_color") from None
    size = (int(meta.input_size[0]), int(meta.input_size[1]))
    return DatasetSpec(name=meta.dataset, class_names=tuple(meta.class_names),
                       palette=tuple(tuple(int(c) for c in rgb) for rgb in meta.palette),
                       ignore_index=meta.ignore_index, input_size=size, train_crop=size,
                       layout="folder", label_map=label_map, ignore_color=ignore_color)


def split_images(root: Path, split: str) -> list[Path]:
    """The images of ``root/images/split`` (sub-folders included), sorted."""
    image_dir = root / "images" / split
    return sorted(p for p in image_dir.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def folder_label_path(root: Path, split: str, image: Path) -> Path:
    """``images/split/a/x.jpg`` → ``labels/split/a/x.png``."""
    relative = image.relative_to(root / "images" / split)
    return (root / "labels" / split / relative).with_suffix(".png")


def folder_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """All (image, label) pairs of a split; BadInput for a missing or empty split, or images
    without a label."""
    image_dir = root / "images" / split
    if not image_dir.is_dir():
        raise BadInput(f"no {split} split: {image_dir} does not exist (expected "
                       f"{root}/images/{split}/ with labels in {root}/labels/{split}/)")
    images = split_images(root, split)
    if not images:
        raise BadInput(f"empty {split} split: no images (.png, .jpg, .bmp) in {image_dir}")
    pairs = [(image, folder_label_path(root, split, image)) for image in images]
    missing = [pair for pair in pairs if not pair[1].is_file()]
    if missing:
        image, label = missing[0]
        raise BadInput(f"{len(missing)} of {len(pairs)} images in {image_dir} have no label, "
                       f"e.g. {image.name}: expected {label}")
    return pairs


@lru_cache(maxsize=16)
def _index_lut(spec: DatasetSpec, size: int) -> np.ndarray:
    """Raw label value → class index, -1 for a value that is neither a class nor ignored."""
    lut = np.full(size, -1, dtype=np.int16)
    if spec.label_map:
        lut[:] = spec.ignore_index  # unmapped values are ignored
        for raw, index in spec.label_map:
            if raw < size:
                lut[raw] = index
    else:
        lut[:spec.num_classes] = np.arange(spec.num_classes)
        lut[spec.ignore_index] = spec.ignore_index
    return lut


@lru_cache(maxsize=16)
def _colour_table(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Sorted 24-bit RGB codes of the class colours (and ignore_color) and their indices."""
    colours = list(spec.palette)
    indices = list(range(spec.num_classes))
    if spec.ignore_color is not None:
        colours.append(spec.ignore_color)
        indices.append(spec.ignore_index)
    codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=np.int64)
    order = np.argsort(codes)
    return codes[order], np.array(indices, dtype=np.uint8)[order]


def _decode_colours(bgr: np.ndarray, path: Path, spec: DatasetSpec) -> np.ndarray:
    bgr = bgr[..., :3].astype(np.int64)
    code = (bgr[..., 2] << 16) | (bgr[..., 1] << 8) | bgr[..., 0]
    codes, indices = _colour_table(spec)
    pos = np.clip(np.searchsorted(codes, code), 0, len(codes) - 1)
    known = codes[pos] == code
    if not known.all():
        c = int(code[~known].flat[0])
        raise BadInput(f"label {path}: colour [{c >> 16}, {(c >> 8) & 255}, {c & 255}] is not a "
                       "class colour of classes.yaml (nor its ignore_color)")
    return indices[pos]


def read_folder_label(path: Path, spec: DatasetSpec) -> np.ndarray:
    """A folder data set's label as class indices (uint8, ignore index kept); BadInput
    naming the file and the value for a value outside the class table."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadInput(f"cannot read label {path}")
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        if raw.dtype != np.uint8:
            raise BadInput(f"label {path}: a colour-coded label must be 8-bit")
        return _decode_colours(raw, path, spec)
    if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        raise BadInput(f"label {path}: expected an 8- or 16-bit single-channel PNG of class "
                       "indices, or an RGB PNG in the class colours")
    label = _index_lut(spec, 256 if raw.dtype == np.uint8 else 65536)[raw]
    if (label < 0).any():
        value = int(raw[label < 0].flat[0])
        raise BadInput(f"label {path}: value {value} is not a class index (0-"
                       f"{spec.num_classes - 1}) nor the ignore index {spec.ignore_index}; "
                       "fix the label or map it in classes.yaml's label_map")
    return label.astype(np.uint8)
