"""ONNX export, the Triton repository and the export CLI.

Each of the four models gets a checkpoint at 64x96 with batch-norm statistics and a
classifier head fitted on real CamVid frames (see ``make_segmenter``), exported once per
precision for the whole module: every test that exports is marked ``slow``.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from rtseg.backends import open_engine
from rtseg.backends.onnx_backend import OnnxBackend
from rtseg.cli import main
from rtseg.data.classes import CAMVID
from rtseg.errors import BadInput
from rtseg.deploy.export import OPSET, export_onnx
from rtseg.deploy.triton import triton_config
from rtseg.deploy.fp16_graph import float32_nodes
from rtseg.metadata import REQUIRED_KEYS, EngineMetadata
from rtseg.models import MODELS, save_checkpoint

from helpers import engine_meta
from small_models import H, PROBE_STEPS, W, make_segmenter

PRECISIONS = ("fp32", "fp16")
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.995}
TRAINED = {"val_miou": 0.0, "recipe": {"probe_steps": PROBE_STEPS}}  # extras a checkpoint has


class Exports:
    """Checkpoints and ONNX files, each made once and kept for the module."""

    def __init__(self, folder: Path, camvid: Path | None):
        self.folder, self.camvid = folder, camvid
        self._expected: dict[str, np.ndarray] = {}

    def checkpoint(self, model: str) -> Path:
        path = self.folder / model / "weights.safetensors"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, make_segmenter(model, self.camvid),
                            engine_meta(model, (H, W), **TRAINED))
        return path

    def onnx(self, model: str, precision: str) -> Path:
        path = self.folder / model / precision / f"{model}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(self.checkpoint(model), path, fp16=precision == "fp16")
        return path

    def pytorch_labels(self, model: str, frames: np.ndarray) -> np.ndarray:
        """The PyTorch backend's fp32 CPU prediction for ``frames`` (the module's val frames)."""
        if model not in self._expected:
            with open_engine(self.checkpoint(model), "cpu") as reference:
                self._expected[model] = reference.infer(frames)
        return self._expected[model]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, request) -> Iterator[Exports]:
    try:
        camvid = request.getfixturevalue("camvid_root")
    except pytest.skip.Exception:  # structural tests still run; agreement tests skip
        camvid = None
    folder = tmp_path_factory.mktemp("exports")
    yield Exports(folder, camvid)
    shutil.rmtree(folder, ignore_errors=True)  # 1 GB of graphs: free the disk for later modules



# -- the graph agrees with PyTorch ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_agrees_with_pytorch_on_camvid_frames(model, precision, exports, val_frames):
    expected = exports.pytorch_labels(model, val_frames)
    with OnnxBackend(exports.onnx(model, precision), "cpu") as backend:
        got = backend.infer(val_frames)
    agreement = float((got == expected).mean())
    print(f"{model} {precision}: ONNX Runtime agrees with PyTorch fp32 on "
          f"{agreement:.4%} of {expected.size} pixels")
    assert agreement >= MIN_AGREEMENT[precision], agreement
    # Agreement on a constant map would prove nothing: the net must segment.
    assert len(np.unique(expected)) >= 2


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", list(MODELS))
def test_eval_miou_of_weights_and_both_onnx_agree(model, exports, camvid_root):
    """`rtseg eval` on the same val frames: .safetensors, fp32 .onnx and fp16 .onnx within
    0.005 mIoU of each other."""
    from rtseg.scoring.evaluate import evaluate

    scores = {}
    for name, path in (("weights", exports.checkpoint(model)),
                       ("fp32", exports.onnx(model, "fp32")),
                       ("fp16", exports.onnx(model, "fp16"))):
        with open_engine(path, "cpu") as backend:
            scores[name] = evaluate(backend, "camvid", camvid_root, "val", batch_size=4,
                                    limit=12)["miou"]
    print(f"{model}: eval mIoU {scores}")
    # (that these nets predict several classes is asserted by the agreement test above)
    assert abs(scores["fp32"] - scores["weights"]) <= 0.005
    assert abs(scores["fp16"] - scores["weights"]) <= 0.005


# -- the file follows the deploy contract -----------------------------------------------------
def _shape(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", list(MODELS))
def test_graph_io_metadata_and_single_file(model, precision, exports):
    path = exports.onnx(model, precision)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .data sidecar
    graph_model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(graph_model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                   for t in graph_model.graph.initializer)
    assert [o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]

    (frames,), (labels,) = graph_model.graph.input, graph_model.graph.output
    assert frames.name == "frames" and labels.name == "labels"
    assert frames.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert labels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch = _shape(frames)[0]
    assert isinstance(batch, str) and _shape(frames)[1:] == [H, W, 3]
    assert _shape(labels) == [batch, H, W]

    stored = EngineMetadata.from_strings({p.key: p.value for p in graph_model.metadata_props})
    original = engine_meta(model, (H, W), **TRAINED)
    for key in REQUIRED_KEYS:
        want = precision if key == "precision" else getattr(original, key)
        assert getattr(stored, key) == want, key
    assert stored.extra["recipe"] == original.extra["recipe"]
    assert stored.extra["exported_from"] == "weights.safetensors"
    assert stored.extra["opset"] == OPSET
    # the exporter's per-node stack traces would hold this machine's paths: none are kept
    assert not any(node.metadata_props for node in graph_model.graph.node)
    assert str(Path(__file__).resolve().parents[1]).encode() not in path.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_dynamic_batch_in_onnx_runtime(model, exports):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    with OnnxBackend(exports.onnx(model, "fp32"), "cpu") as backend:
        assert backend.name == "onnxruntime" and backend.device == "cpu"
        assert backend.precision == "fp32" and backend.input_size == (H, W)
        three = backend.infer(frames)
        one = backend.infer(frames[1:2])
    assert three.dtype == np.uint8 and three.shape == (3, H, W)
    assert one.shape == (1, H, W)
    np.testing.assert_array_equal(one[0], three[1])
    assert int(three.max()) < CAMVID.num_classes


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_fp16_graph_computes_in_fp16_between_uint8_ends(model, exports):
    graph_model = onnx.load(str(exports.onnx(model, "fp16")))
    assert float32_nodes(graph_model) == []
    # fp32 constants may only be what ONNX requires to be float32: Resize scales.
    resize_scales = {n.input[2] for n in graph_model.graph.node
                     if n.op_type == "Resize" and len(n.input) > 2}
    for tensor in graph_model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            assert tensor.name in resize_scales, tensor.name
    weights = [t for t in graph_model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    fp32_size = exports.onnx(model, "fp32").stat().st_size
    assert exports.onnx(model, "fp16").stat().st_size < 0.55 * fp32_size


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", list(MODELS))
def test_graphs_pass_the_tensorrt_preflight(model, precision, exports):
    ops = pytest.importorskip("rtseg.deploy.tensorrt_ops")
    graph_model = onnx.load(str(exports.onnx(model, precision)))
    assert ops.tensorrt_compat_problems(graph_model) == []
    # Stricter than the pre-flight: the oldest TensorRT 10 parser (opsets 9-20).
    assert all(o.version <= 20 for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    nodes = list(graph_model.graph.node)
    assert not [n for n in nodes if n.op_type == "MaxUnpool"]
    assert not [n for n in nodes if n.op_type == "MaxPool" and len([o for o in n.output if o]) > 1]
    assert all(n.domain in ("", "ai.onnx") for n in nodes)


# -- Triton model repository ------------------------------------------------------------------
def _model_config_pb2():
    """tritonclient's ModelConfig message; the file alone when tritonclient lacks grpcio."""
    try:
        return importlib.import_module("tritonclient.grpc.model_config_pb2")
    except (ImportError, RuntimeError):  # tritonclient without grpcio raises RuntimeError
        pass
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install tritonclient)")
    path = Path(list(spec.submodule_search_locations)[0], "grpc", "model_config_pb2.py")
    module_spec = importlib.util.spec_from_file_location("model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def triton_repo(exports, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton") / "models"
    assert main(["export", "--checkpoint", str(exports.checkpoint("segnet_r50")),
                 "--triton-repo", str(repo), "--fp16", "--max-batch", "4"]) == 0
    return repo


@pytest.mark.slow
def test_triton_repository_layout_and_model(triton_repo):
    files = sorted(str(p.relative_to(triton_repo)) for p in triton_repo.rglob("*") if p.is_file())
    assert files == ["segnet_r50/1/model.onnx", "segnet_r50/config.pbtxt"]
    with OnnxBackend(triton_repo / "segnet_r50" / "1" / "model.onnx", "cpu") as backend:
        assert backend.precision == "fp16" and backend.metadata.model == "segnet_r50"
        assert backend.infer(np.zeros((2, H, W, 3), np.uint8)).shape == (2, H, W)


@pytest.mark.slow
def test_triton_config_text(triton_repo):
    text = (triton_repo / "segnet_r50" / "config.pbtxt").read_text()
    for line in ('name: "segnet_r50"', 'backend: "onnxruntime"', "max_batch_size: 4",
                 'name: "frames"', 'name: "labels"', "data_type: TYPE_UINT8",
                 f"dims: [ {H}, {W}, 3 ]", f"dims: [ {H}, {W} ]", "dynamic_batching {",
                 "instance_group ["):
        assert line in text, line
    assert text.count("TYPE_UINT8") == 2


@pytest.mark.slow
def test_triton_config_parses_as_model_config(triton_repo):
    pb2 = _model_config_pb2()
    from google.protobuf import text_format

    config = text_format.Parse((triton_repo / "segnet_r50" / "config.pbtxt").read_text(),
                               pb2.ModelConfig())
    assert config.name == "segnet_r50" and config.backend == "onnxruntime"
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    (frames,), (labels,) = config.input, config.output
    assert (frames.name, frames.data_type, list(frames.dims)) == ("frames", pb2.TYPE_UINT8,
                                                                 [H, W, 3])
    assert (labels.name, labels.data_type, list(labels.dims)) == ("labels", pb2.TYPE_UINT8,
                                                                 [H, W])
    assert config.instance_group[0].count == 1


def test_triton_config_needs_a_positive_batch():
    with pytest.raises(BadInput, match="max-batch"):
        triton_config(engine_meta("segnet_r50", (H, W)), max_batch=0)


# -- CLI --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_export_with_size_override(exports, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    assert main(["export", "--checkpoint", str(exports.checkpoint("segnet_r50")),
                 "--out", str(out), "--size", "32x64"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]  # no temp files left
    with OnnxBackend(out, "cpu") as backend:
        assert backend.metadata.input_size == [32, 64] and backend.precision == "fp32"
        assert backend.infer(np.zeros((1, 32, 64, 3), np.uint8)).shape == (1, 32, 64)
