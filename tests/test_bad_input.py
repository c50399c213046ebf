"""Bad input, table-driven: the one home of the CLI's bad-input cases.

Every case runs one command of the CLI in-process on one kind of bad input — a source, an
engine, a label set, a flag out of range, an output path, a name — and requires what the
contract promises: exit code 2, exactly one non-empty line on stderr, starting ``error: `` and
with a helpful fragment, no traceback, done within ``MAX_SECONDS``, and nothing left
behind (the outputs the case points at do not exist and the working directory lists exactly
as before).

A second table checks that rtseg never unpickles a file a user hands it: a payload that would
create a marker file goes to each path that loads a user's file — the engine of run, eval,
bench and bench --compare, export's checkpoint, build-engine's graph, train's --resume state
and --encoder-weights.

Inputs are made once per module, on first use, in one directory; cases name them as
``{placeholder}`` (see :class:`Inputs`). Real frames and labels come from ``../shared/data``
through conftest's fixtures, so cases that need them skip (or fail in CI) without it.
"""

from __future__ import annotations

import importlib
import json
import pickle
import shutil
import socket
import string
import struct
import time
import warnings
import zipfile
from dataclasses import dataclass
from functools import cached_property
from itertools import cycle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rtseg.cli import main

from helpers import save_tiny_graph

MAX_SECONDS = 10.0
FRAMES = 3  # real CamVid frames in the small frame directory and data root
OUTPUT_FLAGS = ("--output", "--json", "--masks", "--markdown", "--out", "--grid",
                "--triton-repo", "--plot")


# -- the inputs --------------------------------------------------------------------------------
def random_bytes(path: Path, size: int = 4096, seed: int = 7) -> Path:
    """``size`` seeded random bytes at ``path``."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    return path


def noise_video(path: Path, frames: int = 30, size: tuple[int, int] = (64, 96)) -> Path:
    """A real, decodable mp4 of random frames (noise compresses badly: the file is large)."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (w, h))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (h, w, 3), np.uint8))
    writer.release()
    return path


def mp4_header_only(clip: Path, path: Path) -> Path:
    """``clip`` cut just after its ``mdat`` box header: a complete ``moov`` (so the file
    opens and claims its frames) and not one byte of frame data."""
    data, offset = clip.read_bytes(), 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            path.write_bytes(data[:offset + 8])
            return path
        offset += size
    raise AssertionError(f"{clip} has no mdat box")


def rewrite_metadata(engine: Path, path: Path, drop: tuple[str, ...] = (), **changes) -> Path:
    """A copy of a .safetensors engine with header metadata keys dropped or changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(engine), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    for key in drop:
        meta.pop(key)
    meta.update({k: json.dumps(v) for k, v in changes.items()})
    save_file(tensors, str(path), metadata=meta)
    return path


def copy_pairs(camvid: Path, split: str, dst: Path, count: int, label_size=None,
               label_prefix: str = "") -> list[str]:
    """The first ``count`` CamVid frames of ``split`` into ``dst/split`` and their labels into
    ``dst/{split}annot`` (resized to ``label_size`` (W, H), renamed with ``label_prefix``)."""
    names = sorted(p.name for p in (camvid / split).glob("*.png"))[:count]
    (dst / split).mkdir(parents=True, exist_ok=True)
    (dst / f"{split}annot").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(camvid / split / name, dst / split / name)
        label = cv2.imread(str(camvid / f"{split}annot" / name), cv2.IMREAD_UNCHANGED)
        if label_size is not None:
            label = cv2.resize(label, label_size, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(dst / f"{split}annot" / f"{label_prefix}{name}"), label)
    return names


class Evil:
    """A pickle payload: unpickling it opens (so creates) ``marker`` for writing."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Inputs:
    """Every input a case can name as ``{placeholder}``: one cached property each, made on
    first use under ``root``. ``out`` is an empty directory for one case's outputs (see
    ``fresh_out``), so a case that leaves something behind cannot upset the next."""

    def __init__(self, root: Path, request: pytest.FixtureRequest):
        self.root, self.request = root, request
        self.out = self.fresh_out("default")

    def fresh_out(self, name: str) -> Path:
        """A new, empty output directory, made the current ``{out}``."""
        self.out = self.root / "out" / name
        self.out.mkdir(parents=True)
        return self.out

    def format(self, token: str, **given) -> str:
        """``token`` with its placeholders replaced: ``given`` values, else the inputs they
        name (made now)."""
        names = [f for _, f, _, _ in string.Formatter().parse(token) if f]
        return token.format(**{n: given[n] if n in given else getattr(self, n) for n in names})

    def _data(self, fixture: str) -> Path:
        return self.request.getfixturevalue(fixture)

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return path

    @property
    def tmp(self) -> Path:
        return self.root

    @cached_property
    def a_file(self) -> Path:
        path = self.root / "a_file.txt"
        path.write_text("a file, not a directory\n")
        return path

    # engines
    @cached_property
    def engine(self) -> Path:
        return self._data("engine_path")

    @cached_property
    def random_onnx(self) -> Path:
        return random_bytes(self.root / "random.onnx")

    @cached_property
    def random_plan(self) -> Path:
        return random_bytes(self.root / "random.plan")

    @cached_property
    def random_engine_file(self) -> Path:
        return random_bytes(self.root / "random.engine")

    @cached_property
    def random_safetensors(self) -> Path:
        return random_bytes(self.root / "random.safetensors")

    @cached_property
    def model_pt(self) -> Path:
        return random_bytes(self.root / "model.pt")

    @cached_property
    def model_pth(self) -> Path:
        return random_bytes(self.root / "model.pth")

    @cached_property
    def unknown_suffix(self) -> Path:
        return random_bytes(self.root / "model.tflite")

    @cached_property
    def no_keys(self) -> Path:
        return rewrite_metadata(self.engine, self.root / "no_keys.safetensors",
                                drop=("num_classes", "palette"))

    @cached_property
    def unknown_model(self) -> Path:
        return rewrite_metadata(self.engine, self.root / "unknown_model.safetensors",
                                model="nope_net")

    @cached_property
    def onnx_no_keys(self) -> Path:
        """A valid deploy graph without rtseg's metadata."""
        return save_tiny_graph(self.root / "no_keys.onnx", metadata=False)

    @cached_property
    def onnx_other_io(self) -> Path:
        """A graph with rtseg's metadata whose input is not called ``frames``."""
        return save_tiny_graph(self.root / "other_io.onnx", input_name="images")

    @cached_property
    def int8_onnx(self) -> Path:
        """An rtseg deploy graph that is quantized already (Q/DQ, precision int8)."""
        return save_tiny_graph(self.root / "int8.onnx", precision="int8")

    @cached_property
    def cpu_int8_onnx(self) -> Path:
        """An int8 graph quantized for ONNX Runtime on CPUs (``--int8-target cpu``)."""
        return save_tiny_graph(self.root / "cpu_int8.onnx", precision="int8", int8_target="cpu")

    @cached_property
    def fp32_onnx(self) -> Path:
        """An rtseg fp32 deploy graph (no Q/DQ)."""
        return save_tiny_graph(self.root / "fp32.onnx")

    # sources
    @cached_property
    def empty_mp4(self) -> Path:
        path = self.root / "empty.mp4"
        path.touch()
        return path

    @cached_property
    def text_mp4(self) -> Path:
        path = self.root / "text.mp4"
        path.write_text("this is not a video, whatever its name says\n")
        return path

    @cached_property
    def truncated_mp4(self) -> Path:
        """The first 2 KB of a real mp4 (OpenCV writes the index last: it is cut off)."""
        good = noise_video(self.root / "noise_full.mp4")
        path = self.root / "truncated.mp4"
        path.write_bytes(good.read_bytes()[:2048])
        good.unlink()
        return path

    @cached_property
    def zero_frame_mp4(self) -> Path:
        """What OpenCV leaves when a writer is opened and released without a frame."""
        path = self.root / "zero_frames.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (96, 64))
        writer.release()
        if not path.exists():
            path.touch()
        return path

    @cached_property
    def header_only_mp4(self) -> Path:
        return mp4_header_only(self._data("dashcam_clip"), self.root / "header_only.mp4")

    @cached_property
    def clip(self) -> Path:
        return self._data("dashcam_clip")

    @cached_property
    def empty_dir(self) -> Path:
        return self._dir("empty_dir")

    @cached_property
    def unreadable_frames(self) -> Path:
        """A frame directory whose every image is corrupt: a text file, a truncated PNG.
        (Not a truncated JPEG: libjpeg prints its own warning on stderr, which rtseg cannot
        silence.)"""
        path = self._dir("unreadable_frames")
        (path / "a.png").write_text("not an image\n")
        real = next((self.camvid_small / "val").glob("*.png"))
        (path / "b.png").write_bytes(real.read_bytes()[:3000])
        return path

    @cached_property
    def camvid(self) -> Path:
        return self._data("camvid_root")

    @cached_property
    def camvid_small(self) -> Path:
        """A CamVid root with FRAMES real pairs in train and val."""
        root = self.root / "camvid_small"
        for split in ("train", "val"):
            copy_pairs(self.camvid, split, root, FRAMES)
        return root

    @cached_property
    def busy_port(self) -> int:
        """A loopback port a listening socket holds for the module's life (``--serve``)."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        return self._listener.getsockname()[1]

    @cached_property
    def frames(self) -> Path:
        """FRAMES real CamVid val frames."""
        return self.camvid_small / "val"

    @cached_property
    def labels_small(self) -> Path:
        """Labels named like ``frames`` but half their size."""
        root = self.root / "labels_small"
        copy_pairs(self.camvid, "val", root, FRAMES, label_size=(240, 180))
        return root / "valannot"

    @cached_property
    def labels_nomatch(self) -> Path:
        """Real labels whose names match no frame."""
        root = self.root / "labels_nomatch"
        copy_pairs(self.camvid, "val", root, FRAMES, label_prefix="other_")
        return root / "valannot"

    @cached_property
    def camvid_bad_sizes(self) -> Path:
        """A CamVid root whose labels are half the size of their images."""
        root = self.root / "camvid_bad_sizes"
        for split in ("train", "val"):
            copy_pairs(self.camvid, split, root, FRAMES, label_size=(240, 180))
        return root

    @cached_property
    def camvid_corrupt(self) -> Path:
        """A CamVid root whose second val image is truncated."""
        root = self.root / "camvid_corrupt"
        for split in ("train", "val"):
            names = copy_pairs(self.camvid, split, root, FRAMES)
        image = root / "val" / names[1]
        image.write_bytes(image.read_bytes()[:3000])
        return root

    @cached_property
    def camvid_no_label(self) -> Path:
        """A CamVid root with one val label missing."""
        root = self.root / "camvid_no_label"
        for split in ("train", "val"):
            names = copy_pairs(self.camvid, split, root, FRAMES)
        (root / "valannot" / names[0]).unlink()
        return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, request) -> Inputs:
    """The module's inputs; the heavy imports happen here, not inside a timed case."""
    for module in ("rtseg.backends.onnx_backend", "rtseg.backends.torch_backend",
                   "rtseg.deploy.engine_build", "rtseg.deploy.export", "rtseg.pipeline",
                   "rtseg.training.train"):
        importlib.import_module(module)
    return Inputs(tmp_path_factory.mktemp("bad_input"), request)


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One command on one bad input: ``args`` (whitespace-separated, ``{placeholders}``) and
    the fragments the single stderr line must contain."""

    id: str
    args: str
    fragments: tuple[str, ...]


def case(id_: str, args: str, *fragments: str):
    """A table row as a pytest param with a readable id."""
    return pytest.param(Case(id_, args, fragments), id=id_)


RUN = "run --device cpu --engine {engine}"
EVAL = "eval --device cpu --dataset camvid --data-root {camvid_small} --json {out}/eval.json"
BENCH = "bench --device cpu --iters 1 --warmup 0 --json {out}/bench.json"
TRAIN = ("train --model unet_resnet18 --dataset camvid --data-root {camvid_small} --epochs 1 "
         "--batch-size 2 --crop 64x96 --input-size 64x96 --workers 0 --device cpu "
         "--out {out}/train")
EXPORT = "export --checkpoint {engine}"
RUN_OUT = "--output {out}/o.mp4 --json {out}/run.json --masks {out}/masks"

RUN_SOURCE = f"run --device cpu --source {{frames}} {RUN_OUT}"

PICKLE_HELP = ("pickle files are not loaded", "safetensors")
BAD_ENGINES = [  # (id, path, fragments) — each handed to run, eval and bench
    ("missing", "{tmp}/missing.safetensors", ("not found",)),
    ("random-bytes-onnx", "{random_onnx}", ("random.onnx", "not a usable ONNX model")),
    ("random-bytes-plan", "{random_plan}", ("random.plan is a TensorRT engine", "GPU only")),
    ("random-bytes-engine", "{random_engine_file}", ("random.engine is a TensorRT", "GPU only")),
    ("random-bytes-safetensors", "{random_safetensors}", ("not a readable safetensors",)),
    ("pt", "{model_pt}", PICKLE_HELP),
    ("pth", "{model_pth}", PICKLE_HELP),
    ("missing-metadata-keys", "{no_keys}", ("lacks metadata key(s) num_classes, palette",)),
    ("onnx-missing-metadata-keys", "{onnx_no_keys}", ("lacks metadata key(s)",)),
    ("unknown-model-name", "{unknown_model}", ("unknown model 'nope_net'",)),
    ("unknown-suffix", "{unknown_suffix}", ("unsupported engine model.tflite",)),
]
# Every engine and every source is opened by one function (open_engine, open_source) whatever
# the command: each bad file is handed to one command, the commands taking turns.
ENGINE_COMMANDS = (("run", RUN_SOURCE), ("eval", EVAL), ("bench", BENCH))
ENGINE_CASES = [
    case(f"{cmd}-engine-{id_}", f"{prefix} --engine {path}", *fragments)
    for (id_, path, fragments), (cmd, prefix) in zip(BAD_ENGINES, cycle(ENGINE_COMMANDS))
] + [
    case("run-engine-onnx-not-a-deploy-graph", f"{RUN_SOURCE} --engine {{onnx_other_io}}",
         "other_io.onnx", "not an rtseg deploy graph"),
    # on --device auto a plan's sidecar is checked first, on any machine
    case("bench-engine-random-bytes-plan-device-auto",
         f"{BENCH.replace('--device cpu', '--device auto')} --engine {{random_plan}}",
         "random.plan.json not found", "sidecar"),
]

BAD_SOURCES = [  # (id, source, fragments)
    ("missing", "{tmp}/missing.mp4", ("no such file or directory",)),
    ("empty-mp4", "{empty_mp4}", ("cannot open video", "empty.mp4")),
    ("text-named-mp4", "{text_mp4}", ("cannot open video", "text.mp4")),
    ("truncated-mp4", "{truncated_mp4}", ("cannot open video", "truncated.mp4")),
    ("zero-frame-mp4", "{zero_frame_mp4}", ("cannot open video", "zero_frames.mp4")),
    ("header-only-mp4", "{header_only_mp4}", ("no decodable frame", "header_only.mp4")),
    ("empty-dir", "{empty_dir}", ("no frames",)),
    ("all-frames-unreadable", "{unreadable_frames}", ("none of the 2 frames",)),
]
SOURCE_COMMANDS = (("run", f"{RUN} {RUN_OUT}"), ("bench", f"{BENCH} --engine {{engine}}"))
SOURCE_CASES = [
    case(f"{cmd}-source-{id_}", f"{prefix} --source {src}", *fragments)
    for (id_, src, fragments), (cmd, prefix) in zip(BAD_SOURCES, cycle(SOURCE_COMMANDS))
]

LABEL_CASES = [
    case("run-labels-size-mismatch", f"{RUN} {RUN_OUT} --source {{frames}} "
         "--labels {labels_small}", "is 240×180 but frame", "480×360"),
    case("run-labels-names-match-no-frame", f"{RUN} {RUN_OUT} --source {{frames}} "
         "--labels {labels_nomatch}", "no label", "matches a frame"),
    case("run-labels-with-video-source", f"{RUN} {RUN_OUT} --source {{clip}} "
         "--labels {labels_small}", "needs --source to be a directory of frames"),
    case("run-labels-missing-dir", f"{RUN} {RUN_OUT} --source {{frames}} "
         "--labels {tmp}/no_labels", "--labels", "not a directory"),
    case("run-labels-dir-without-pngs", f"{RUN} {RUN_OUT} --source {{frames}} "
         "--labels {empty_dir}", "no label PNGs"),
    case("eval-label-size-mismatch", "eval --device cpu --dataset camvid --data-root "
         "{camvid_bad_sizes} --engine {engine} --json {out}/e.json --grid {out}/grid",
         "is 240×180 but image", "480×360"),
    case("eval-label-missing", "eval --device cpu --dataset camvid --data-root "
         "{camvid_no_label} --engine {engine} --json {out}/e.json",
         "CamVid label missing for"),
    case("eval-corrupt-image", "eval --device cpu --dataset camvid --data-root "
         "{camvid_corrupt} --engine {engine} --json {out}/e.json --grid {out}/grid",
         "cannot read image"),
    case("eval-data-root-missing", "eval --device cpu --dataset camvid --data-root "
         "{tmp}/nowhere --engine {engine} --json {out}/e.json", "data root not found"),
    case("eval-split-missing", f"{EVAL} --engine {{engine}} --split test",
         "CamVid split not found"),
    case("eval-engine-of-another-dataset", "eval --device cpu --dataset cityscapes "
         "--data-root {camvid_small} --engine {engine}", "trained on camvid"),
    case("train-label-size-mismatch", TRAIN.replace("{camvid_small}", "{camvid_bad_sizes}"),
         "is 240×180 but image", "480×360"),
]

FLAG_CASES = [
    case("run-alpha-7", f"{RUN} --source {{frames}} --alpha 7", "--alpha 7", "between 0 and 1"),
    case("run-alpha-negative", f"{RUN} --source {{frames}} --alpha -0.5", "--alpha -0.5"),
    case("run-max-frames-0", f"{RUN} --source {{frames}} --max-frames 0", "--max-frames 0"),
    case("run-batch-0", f"{RUN} --source {{frames}} --batch 0", "--batch"),
    case("run-fps-0", f"{RUN} --source {{frames}} --fps 0", "--fps 0 must be positive"),
    case("run-device-unknown", f"{RUN} --source {{frames}} --device tpu", "'--device'"),
    case("bench-batch-0", f"{BENCH} --engine {{engine}} --batch 0", "--batch 0"),
    case("bench-batch-not-numbers", f"{BENCH} --engine {{engine}} --batch 1,x",
         "comma-separated integers"),
    case("bench-iters-0", "bench --device cpu --engine {engine} --iters 0", "--iters 0"),
    case("bench-warmup-negative", f"{BENCH} --engine {{engine}} --warmup -1", "--warmup -1"),
    case("bench-rounds-0", f"{BENCH} --engine {{engine}} --rounds 0", "--rounds 0"),
    case("bench-max-frames-0", f"{BENCH} --engine {{engine}} --max-frames 0", "--max-frames 0"),
    case("train-crop-0x0", f"{TRAIN} --crop 0x0", "--crop 0x0 must be positive"),
    case("train-crop-not-hxw", f"{TRAIN} --crop big", "--crop expects HxW"),
    case("train-crop-not-divisible-by-32", f"{TRAIN} --crop 100x100", "divisible by 32"),
    case("train-input-size-0x0", f"{TRAIN} --input-size 0x0", "--input-size 0x0"),
    case("train-epochs-0", f"{TRAIN} --epochs 0", "'--epochs'"),
    case("train-batch-size-0", f"{TRAIN} --batch-size 0", "'--batch-size'"),
    case("train-batch-larger-than-data", f"{TRAIN} --batch-size 64", "lower --batch-size"),
    case("train-lr-negative", f"{TRAIN} --lr -1", "'--lr'"),
    case("train-workers-negative", f"{TRAIN} --workers -1", "'--workers'"),
    case("train-train-limit-0", f"{TRAIN} --train-limit 0", "'--train-limit'"),
    case("train-resume-without-state", f"{TRAIN} --resume", "--resume: no train_state.pt"),
    case("train-encoder-weights-missing", f"{TRAIN} --encoder-weights {{tmp}}/no.pth",
         "encoder weights file not found"),
    case("eval-batch-size-0", f"{EVAL} --engine {{engine}} --batch-size 0", "'--batch-size'"),
    case("eval-limit-0", f"{EVAL} --engine {{engine}} --limit 0", "'--limit'"),
    case("eval-split-unknown", f"{EVAL} --engine {{engine}} --split dev", "'--split'"),
    case("export-size-0x0", f"{EXPORT} --out {{out}}/m.onnx --size 0x0", "--size 0x0"),
    case("export-size-not-divisible-by-32", f"{EXPORT} --out {{out}}/m.onnx --size 70x70",
         "divisible by 32"),
    case("export-size-not-hxw", f"{EXPORT} --out {{out}}/m.onnx --size 64", "--size expects HxW"),
    case("export-out-and-triton-repo", f"{EXPORT} --out {{out}}/m.onnx --triton-repo {{out}}/t",
         "exactly one of --out"),
    case("export-neither-out-nor-triton-repo", EXPORT, "exactly one of --out"),
    case("export-max-batch-without-triton", f"{EXPORT} --out {{out}}/m.onnx --max-batch 4",
         "--max-batch"),
    case("export-triton-max-batch-0", f"{EXPORT} --triton-repo {{out}}/t --max-batch 0",
         "'--max-batch'"),
    case("export-out-not-onnx", f"{EXPORT} --out {{out}}/m.txt", "must end in .onnx"),
    case("build-engine-max-batch-0", "build-engine --onnx {onnx_no_keys} --out {out}/m.plan "
         "--max-batch 0", "'--max-batch'"),
    case("build-engine-opt-batch-0", "build-engine --onnx {onnx_no_keys} --out {out}/m.plan "
         "--opt-batch 0", "--opt-batch 0 must be between 1 and --max-batch (8)"),
    case("build-engine-opt-batch-above-max", "build-engine --onnx {onnx_no_keys} --out "
         "{out}/m.plan --max-batch 4 --opt-batch 5", "--opt-batch 5", "--max-batch (4)"),
    case("build-engine-workspace-0", "build-engine --onnx {onnx_no_keys} --out {out}/m.plan "
         "--workspace 0", "--workspace must be positive"),
    case("build-engine-out-not-plan", "build-engine --onnx {onnx_no_keys} --out {out}/m.txt",
         "must end in .plan or .engine"),
]

OUTPUT_CASES = [
    case("run-output-in-missing-dir", f"{RUN} --source {{frames}} --output {{tmp}}/no/o.mp4",
         "--output", "does not exist"),
    case("run-json-in-missing-dir", f"{RUN} --source {{frames}} --json {{tmp}}/no/r.json",
         "--json", "does not exist"),
    case("run-masks-in-missing-dir", f"{RUN} --source {{frames}} --masks {{tmp}}/no/masks",
         "--masks", "does not exist"),
    case("run-output-is-a-directory", f"{RUN} --source {{frames}} --output {{out}}",
         "--output", "is a directory"),
    case("run-masks-is-a-file", f"{RUN} --source {{frames}} --masks {{a_file}}",
         "--masks", "not a directory"),
    case("eval-json-is-a-directory-checked-first", "eval --device cpu --dataset camvid "
         "--data-root {tmp}/nowhere --engine {tmp}/missing.safetensors --json {out}",
         "--json", "is a directory"),
    case("eval-json-in-missing-dir", "eval --device cpu --dataset camvid --data-root "
         "{camvid_small} --engine {engine} --json {tmp}/no/e.json", "--json", "does not exist"),
    case("bench-json-in-missing-dir", "bench --device cpu --engine {engine} --json "
         "{tmp}/no/b.json", "--json", "does not exist"),
    case("bench-markdown-in-missing-dir", "bench --device cpu --engine {engine} --markdown "
         "{tmp}/no/b.md", "--markdown", "does not exist"),
    case("export-out-in-missing-dir", f"{EXPORT} --out {{tmp}}/no/m.onnx",
         "--out", "does not exist"),
    case("export-triton-repo-is-a-file", f"{EXPORT} --triton-repo {{a_file}}",
         "--triton-repo", "not a directory"),
    case("build-engine-out-in-missing-dir", "build-engine --onnx {onnx_no_keys} --out "
         "{tmp}/no/m.plan", "--out", "does not exist"),
    case("train-out-is-a-file", TRAIN.replace("{out}/train", "{a_file}"),
         "--out", "not a directory"),
]

NAME_CASES = [
    case("train-model-unknown", TRAIN.replace("unet_resnet18", "segnet_r5"),
         "unknown model 'segnet_r5'", "did you mean 'segnet_r50'"),
    case("train-dataset-unknown", TRAIN.replace("--dataset camvid", "--dataset mars"),
         "'--dataset'", "mars"),
    case("eval-dataset-unknown", EVAL.replace("--dataset camvid", "--dataset mars")
         + " --engine {engine}", "'--dataset'", "mars"),
    case("train-data-root-missing", TRAIN.replace("{camvid_small}", "{tmp}/nowhere"),
         "data root not found"),
    case("export-model-unknown", "export --checkpoint {unknown_model} --out {out}/m.onnx",
         "unknown model 'nope_net'"),
    case("export-checkpoint-missing", "export --checkpoint {tmp}/no.safetensors "
         "--out {out}/m.onnx", "not found"),
    case("export-checkpoint-random-bytes", "export --checkpoint {random_safetensors} "
         "--out {out}/m.onnx", "not a readable safetensors"),
    case("export-checkpoint-missing-keys", "export --checkpoint {no_keys} --out {out}/m.onnx",
         "lacks metadata key(s)"),
    case("export-checkpoint-pt", "export --checkpoint {model_pt} --out {out}/m.onnx",
         "pickle files are not loaded", "safetensors"),
    case("export-checkpoint-pth", "export --checkpoint {model_pth} --out {out}/m.onnx",
         "pickle files are not loaded", "safetensors"),
    case("export-checkpoint-onnx", "export --checkpoint {random_onnx} --out {out}/m.onnx",
         "expected a .safetensors file"),
    case("build-engine-onnx-missing", "build-engine --onnx {tmp}/no.onnx --out {out}/m.plan",
         "file not found"),
    case("build-engine-onnx-random-bytes", "build-engine --onnx {random_onnx} --out "
         "{out}/m.plan", "not a readable ONNX model"),
    case("build-engine-onnx-missing-keys", "build-engine --onnx {onnx_no_keys} --out "
         "{out}/m.plan", "lacks metadata key(s)"),
]

SERVE = f"{RUN} {RUN_OUT} --source {{frames}}"
SERVE_CASES = [  # rtseg run --serve: every one before the engine loads or a frame is read
    case("run-serve-not-a-port", f"{SERVE} --serve abc", "--serve abc", "[HOST:]PORT"),
    case("run-serve-port-too-big", f"{SERVE} --serve 70000", "--serve 70000", "0 to 65535"),
    case("run-serve-empty-host", f"{SERVE} --serve :8080", "no host before ':'",
         "0.0.0.0:8080"),
    case("run-serve-ipv6-without-brackets", f"{SERVE} --serve ::1:8080", "[::1]:8080"),
    case("run-serve-unknown-host", f"{SERVE} --serve nosuchhost.invalid:8080", "unknown host"),
    case("run-serve-not-this-machine", f"{SERVE} --serve 192.0.2.1:8080",
         "192.0.2.1 is not an address of this machine"),
    case("run-serve-port-in-use", f"{SERVE} --serve 127.0.0.1:{{busy_port}}", "is in use",
         "pick another port"),
    case("run-serve-with-show-headless", f"{SERVE} --serve 127.0.0.1:0 --show", "--show needs",
         "drop --show"),
    case("run-serve-linger-without-serve", f"{SERVE} --serve-linger 5",
         "--serve-linger needs --serve"),
    case("run-serve-linger-negative", f"{SERVE} --serve 127.0.0.1:0 --serve-linger -1",
         "--serve-linger -1 must be 0 or more"),
    case("run-serve-token-without-serve", f"{SERVE} --serve-token abc",
         "--serve-token needs --serve"),
]

INT8 = f"{EXPORT} --out {{out}}/m.onnx --int8"
INT8_CASES = [  # rtseg export --int8 and build-engine on int8 graphs: all before any export
    case("export-int8-with-fp16", f"{INT8} --calib {{frames}} --fp16", "--int8 and --fp16"),
    case("export-int8-without-calib", INT8, "--int8 needs --calib"),
    case("export-calib-without-int8", f"{EXPORT} --out {{out}}/m.onnx --calib {{frames}}",
         "--calib", "add --int8"),
    case("export-int8-calib-missing", f"{INT8} --calib {{tmp}}/no_frames", "--calib",
         "not found"),
    case("export-int8-calib-empty-dir", f"{INT8} --calib {{empty_dir}}", "no frames"),
    case("export-int8-calib-unreadable-frames", f"{INT8} --calib {{unreadable_frames}}",
         "none of the 2 frames"),
    case("export-int8-calib-empty-mp4", f"{INT8} --calib {{empty_mp4}}", "cannot open video"),
    case("export-int8-calib-text-mp4", f"{INT8} --calib {{text_mp4}}", "cannot open video"),
    case("export-int8-calib-too-few-frames", f"{INT8} --calib {{frames}}",
         "only 3 frame(s)", "at least 8"),
    case("export-int8-triton-calib-too-few-frames", f"{EXPORT} --triton-repo {{out}}/t "
         "--int8 --calib {frames}", "only 3 frame(s)"),
    case("export-int8-calib-frames-2", f"{INT8} --calib {{frames}} --calib-frames 2",
         "--calib-frames 2", "at least 8"),
    case("export-int8-calib-camera", f"{INT8} --calib 0", "not a camera"),
    case("export-int8-calib-method-unknown", f"{INT8} --calib {{frames}} --calib-method kl",
         "'--calib-method'"),
    case("export-int8-target-unknown", f"{INT8} --calib {{frames}} --int8-target gpu",
         "'--int8-target'"),
    case("export-int8-target-without-int8", f"{EXPORT} --out {{out}}/m.onnx --int8-target cpu",
         "--int8-target", "add --int8"),
    case("build-engine-cpu-int8-graph", "build-engine --onnx {cpu_int8_onnx} --out {out}/m.plan",
         "quantized for cpu", "--int8-target tensorrt"),
    case("export-int8-already-quantized", "export --checkpoint {int8_onnx} --out {out}/m.onnx "
         "--int8 --calib {frames}", "already quantized"),
    case("export-onnx-without-int8", "export --checkpoint {fp32_onnx} --out {out}/m.onnx",
         "expected a .safetensors file"),
    case("build-engine-int8-graph-fp16", "build-engine --onnx {int8_onnx} --out {out}/m.plan "
         "--fp16", "graph is int8", "cannot give an fp16 engine"),
    case("build-engine-int8-from-fp32-graph", "build-engine --onnx {fp32_onnx} --out "
         "{out}/m.plan --int8", "rtseg export --int8"),
    case("build-engine-int8-and-fp32", "build-engine --onnx {int8_onnx} --out {out}/m.plan "
         "--int8 --fp32", "--int8 and --fp32 exclude each other"),
]

COMPARE_CASES = [  # rtseg bench --compare
    case("compare-without-data-root", "bench --compare {engine}", "--data-root"),
    case("compare-without-engines", "bench --compare --data-root {tmp}", "needs engine files"),
    case("compare-engines-without-compare", "bench {engine} --data-root {tmp}",
         "need --compare"),
    case("compare-with-engine-flag", "bench --compare {engine} --engine {engine} "
         "--data-root {tmp}", "--engine", "does not go with --compare"),
    case("compare-engine-missing", "bench --compare {tmp}/missing.onnx --data-root {tmp}",
         "not found"),
    case("compare-data-root-missing", "bench --compare {engine} --data-root {tmp}/none",
         "{tmp}/none"),
    case("compare-plot-in-missing-dir", "bench --compare {engine} --data-root {tmp} "
         "--plot {tmp}/no/dir/p.png", "--plot", "does not exist"),
    case("compare-data-root-without-compare", "bench --engine {engine} --data-root {tmp}",
         "--data-root belongs to --compare"),
]

ALL_CASES = (ENGINE_CASES + SOURCE_CASES + LABEL_CASES + FLAG_CASES + OUTPUT_CASES + NAME_CASES
             + SERVE_CASES + INT8_CASES + COMPARE_CASES)


# -- the checks --------------------------------------------------------------------------------
def listing(root: Path) -> set[str]:
    """Every file and directory under ``root``, relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def output_paths(argv: list[str]) -> list[Path]:
    """The paths the command was told to write."""
    return [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in OUTPUT_FLAGS]


def run_cli(argv: list[str], capfd) -> tuple[int, str, str, float]:
    """``main(argv)``: exit code, stdout, stderr and wall seconds. Stderr is captured at the
    file-descriptor level, so C libraries' chatter counts too, and Python warnings (which
    pytest would otherwise swallow, and a user would see) are appended to it."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.monotonic()
        code = main(argv)
        seconds = time.monotonic() - t0
    out, err = capfd.readouterr()
    err += "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    return code, out, err, seconds


def assert_one_clear_line(code: int, out: str, err: str, fragments) -> None:
    """Exit 2, one non-empty ``error: `` line on stderr with every fragment, no traceback
    anywhere."""
    assert "Traceback" not in out + err, err
    assert code == 2, f"exit {code}; stderr:\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.mark.parametrize("bad", ALL_CASES)
def test_bad_input_exits_2_with_one_line(bad: Case, inputs: Inputs, capfd):
    inputs.fresh_out(bad.id)
    argv = [inputs.format(token) for token in bad.args.split()]
    outputs = [p for p in output_paths(argv) if not p.exists()]
    before = listing(inputs.root)
    code, out, err, seconds = run_cli(argv, capfd)
    assert_one_clear_line(code, out, err, [inputs.format(f) for f in bad.fragments])
    assert seconds < MAX_SECONDS, f"took {seconds:.1f} s"
    assert [p for p in outputs if p.exists()] == [], "an output was left behind"
    assert listing(inputs.root) == before, "files were left behind"


# -- unreadable frames in a directory: skipped with a warning ---------------------------------
def test_unreadable_frames_among_good_ones_are_skipped(inputs: Inputs, capfd):
    """A frame directory with corrupt images among good ones: each bad file is skipped with
    one warning line naming it, the good frames are segmented, exit 0."""
    frames = inputs.root / "mixed_frames"
    shutil.copytree(inputs.frames, frames)
    names = sorted(p.name for p in frames.iterdir())
    (frames / names[1]).write_bytes((frames / names[1]).read_bytes()[:3000])  # truncated
    (frames / "zz_text.png").write_text("not an image\n")
    result = inputs.out / "mixed.json"
    code, out, err, seconds = run_cli(["run", "--device", "cpu", "--engine", str(inputs.engine),
                                       "--source", str(frames), "--json", str(result)], capfd)
    assert code == 0, err
    assert "Traceback" not in out + err
    warnings = [line for line in err.splitlines() if "skipping unreadable frame" in line]
    assert len(warnings) == 2 and names[1] in warnings[0] and "zz_text.png" in warnings[1], err
    assert json.loads(result.read_text())["frames"] == FRAMES - 1
    assert seconds < MAX_SECONDS
    result.unlink()
    shutil.rmtree(frames)


def test_a_video_cut_short_is_run_to_its_cut_with_a_note(inputs: Inputs, capfd):
    """A video whose data stops early (a copy cut off mid-file): the frames before the cut
    are segmented, exit 0, and the run says why it ended — FFmpeg's own complaints hidden."""
    cut = inputs.root / "cut.mp4"
    cut.write_bytes(inputs.clip.read_bytes()[:200_000])
    result = inputs.out / "cut.json"
    code, out, err, seconds = run_cli(["run", "--device", "cpu", "--engine", str(inputs.engine),
                                       "--source", str(cut), "--json", str(result)], capfd)
    assert code == 0, err
    assert err.strip() == "" and "Traceback" not in out, err
    run = json.loads(result.read_text())
    assert 0 < run["frames"] < 100 and "video ended at frame" in run["ended_by"]
    assert seconds < MAX_SECONDS
    cut.unlink()
    result.unlink()


# -- pickles are never unpickled --------------------------------------------------------------
def save_payload(how: str, marker: Path, path: Path) -> Path:
    """An :class:`Evil` payload written by ``pickle.dump`` or ``torch.save``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "pickle":
        path.write_bytes(pickle.dumps(Evil(marker)))
    else:
        torch.save({"net": Evil(marker)}, path)
    return path


def unpickle_unsafely(path: Path) -> None:
    """Load a payload the way a careless loader would (``pickle.loads``; torch.save's zip holds
    a plain pickle), closing the file its code opened."""
    data = path.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    loaded = pickle.loads(data)
    (loaded["net"] if isinstance(loaded, dict) else loaded).close()


@dataclass(frozen=True)
class PickleCase:
    """One path that loads a user's file: the command (``{payload}`` is the file), where the
    payload goes under ``{out}``, how it is written, the fragments of the refusal."""

    id: str
    args: str
    payload: str
    how: str
    fragments: tuple[str, ...]


def pickle_case(id_: str, args: str, payload: str, how: str, *fragments: str):
    """A pickle-table row as a pytest param with a readable id."""
    return pytest.param(PickleCase(id_, args, payload, how, fragments), id=id_)


PICKLE_CASES = [  # one per loading path; the suffixes and writers vary between them
    pickle_case("run-engine", f"{RUN_SOURCE} --engine {{payload}}", "model.pt", "torch.save",
                *PICKLE_HELP),
    pickle_case("eval-engine", f"{EVAL} --engine {{payload}}", "model.safetensors",
                "torch.save", "not a readable safetensors"),
    pickle_case("bench-engine", f"{BENCH} --engine {{payload}}", "model.ckpt", "pickle",
                *PICKLE_HELP),
    pickle_case("bench-compare-engine", "bench --compare {payload} {engine} --data-root "
                "{camvid_small} --device cpu --iters 1 --warmup 0", "model.pth", "torch.save",
                *PICKLE_HELP),
    pickle_case("export-checkpoint", "export --checkpoint {payload} --out {out}/m.onnx",
                "model.pth", "pickle", *PICKLE_HELP),
    pickle_case("build-engine-onnx", "build-engine --onnx {payload} --out {out}/m.plan",
                "model.onnx", "torch.save", "not a readable ONNX model"),
    pickle_case("train-resume-state", f"{TRAIN} --resume", "train/train_state.pt", "torch.save",
                "--resume", "train_state.pt", "cannot be loaded"),
    pickle_case("train-encoder-weights", f"{TRAIN} --encoder-weights {{payload}}",
                "encoder.pth", "torch.save", "cannot read encoder weights"),
]


@pytest.mark.parametrize("bad", PICKLE_CASES)
def test_a_pickle_handed_to_rtseg_is_never_unpickled(bad: PickleCase, inputs: Inputs, capfd):
    out = inputs.fresh_out(bad.id)
    marker = inputs.root / f"pwned-{bad.id}"
    payload = save_payload(bad.how, marker, out / bad.payload)
    argv = [inputs.format(token, payload=payload) for token in bad.args.split()]
    before = listing(inputs.root)
    code, stdout, err, seconds = run_cli(argv, capfd)
    assert not marker.exists(), "the pickle was executed"
    assert_one_clear_line(code, stdout, err, bad.fragments)
    assert seconds < MAX_SECONDS
    assert listing(inputs.root) == before, "files were left behind"
    unpickle_unsafely(payload)  # the payload is live: the check above was not vacuous
    assert marker.exists()
    marker.unlink()
