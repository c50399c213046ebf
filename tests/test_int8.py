"""INT8: ``rtseg export --int8 --calib SRC`` — the calibrated Q/DQ deploy graph, its TensorRT
pre-flight, ONNX Runtime int8 against fp32 on real frames, and the commands that take it.

Small graphs (64x96) come from ``test_export.make_segmenter`` (real batch-norm statistics and a
classifier head fitted on CamVid frames); the agreement test uses the bundled trained model.
Every test that exports or quantizes is marked ``slow``; the rules about int8 graphs that need
no real network run on ``helpers.tiny_graph``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rtseg.backends.onnx_backend import OnnxBackend, disabled_optimizers
from rtseg.deploy.tensorrt_ops import tensorrt_compat_problems
from rtseg.cli import main
from rtseg.cpu_features import CpuFeatures, read_cpu_features
from rtseg.errors import BadInput
from rtseg.deploy.export import OPSET, export_onnx
from rtseg.deploy.graph_edits import static_resize_scales
from rtseg.metadata import REQUIRED_KEYS, EngineMetadata
from rtseg.deploy.calibration import MIN_FRAMES, TARGETS, Calibration, read_calibration_frames
from rtseg.deploy.quantize import (SCHEMES, float_boundary_convs, float_data_movers, is_quantized,
                                   quantize_graph)
from helpers import engine_meta, fake_build_engine, save_tiny_graph, tiny_graph
from small_models import CALIB_FRAMES, H, W

REPO = Path(__file__).resolve().parents[1]
MODELS = ("unet_r50", "segnet_vgg16")  # residual Adds; SegNet's mask unpooling (Equal)
QDQ = ("QuantizeLinear", "DequantizeLinear")


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# -- the graph --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", MODELS)
def test_int8_graph_is_explicitly_quantized_around_convolutions(model, graphs):
    fp32 = onnx.load(str(graphs.fp32(model)))
    int8 = onnx.load(str(graphs.int8(model)))
    onnx.checker.check_model(int8, full_check=True)
    assert is_quantized(int8) and not is_quantized(fp32)
    consts = _constants(int8)
    producer = {o: n for n in int8.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in int8.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    # symmetric int8: every zero point is an int8 0
    for node in (n for n in int8.graph.node if n.op_type in QDQ):
        zp = consts[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name

    kept_float = set(float_boundary_convs(fp32))
    assert len(kept_float) >= 2  # the image-reading conv and the logits conv
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in fp32.graph.node)
    for conv in convs:
        x, w = (producer.get(i) for i in conv.input[:2])
        if conv.name in kept_float:
            assert x is None or x.op_type != "DequantizeLinear", conv.name
            assert conv.input[1] in consts and consts[conv.input[1]].dtype == np.float32
            continue
        # activation in: per-tensor; weights: int8 per output channel; bias: float
        assert x.op_type == "DequantizeLinear" and consts[x.input[1]].size == 1, conv.name
        assert w.op_type == "DequantizeLinear", conv.name
        weight, scale = consts[w.input[0]], consts[w.input[1]]
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],), conv.name
        if len(conv.input) > 2:
            assert consts[conv.input[2]].dtype == np.float32, conv.name
        # output quantized too: ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv
        assert {c.op_type for c in consumers[conv.output[0]]} == {"QuantizeLinear"}, conv.name

    # a Q/DQ pair put on a tensor for a convolution's input is that convolution's alone: other
    # readers (SegNet's unpooling mask compares a pooled maximum with its window) read float
    for dq in (n for n in int8.graph.node if n.op_type == "DequantizeLinear"):
        q = producer.get(dq.input[0])
        if q is not None and producer.get(q.input[0], q).op_type not in ("Conv", "Add"):
            assert {c.op_type for c in consumers[dq.output[0]]} <= {"Conv", "Add"}, dq.name
    assert any(n.op_type == "Equal" for n in int8.graph.node) == model.startswith("segnet")

    # everything but Q/DQ is the fp32 graph's: uint8 ends, normalisation, argmax, casts
    ops = lambda m: sorted(n.op_type for n in m.graph.node if n.op_type not in QDQ)  # noqa: E731
    assert ops(int8) == ops(fp32)
    (frames,), (labels,) = int8.graph.input, int8.graph.output
    assert frames.type.tensor_type.elem_type == labels.type.tensor_type.elem_type == \
        onnx.TensorProto.UINT8
    assert [o.version for o in int8.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in int8.graph.initializer)
    assert graphs.int8(model).stat().st_size < 0.4 * graphs.fp32(model).stat().st_size


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", MODELS)
def test_int8_metadata(model, graphs, camvid_root):
    stored = EngineMetadata.from_onnx(onnx.load(str(graphs.int8(model))))
    original = engine_meta(model, (H, W))
    for key in REQUIRED_KEYS:
        want = "int8" if key == "precision" else getattr(original, key)
        assert getattr(stored, key) == want, key
    assert stored.extra["calibration_source"] == str(camvid_root / "val")
    assert stored.extra["calibration_frames"] == CALIB_FRAMES
    assert stored.extra["calibration_method"] == "minmax"
    assert "onnxruntime" in stored.extra["quantizer"]
    assert stored.extra["exported_from"] == f"{model}.safetensors"


# -- the TensorRT ONNX parser's op-set check ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", MODELS)
def test_int8_graph_passes_the_tensorrt_preflight(model, graphs):
    graph_model = onnx.load(str(graphs.int8(model)))
    assert tensorrt_compat_problems(graph_model) == []
    # as for fp32/fp16: the oldest TensorRT 10 parser's opsets, default domain only
    assert all(o.version <= 20 for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    assert all(n.domain in ("", "ai.onnx") for n in graph_model.graph.node)


def test_preflight_names_what_explicit_quantization_refuses():
    """A zero point that is not 0, a uint8 Q/DQ pair and an int32 (bias) DequantizeLinear are
    each reported — the forms ONNX Runtime's default quantizer settings would produce."""
    graph_model = tiny_graph(precision="int8")
    assert tensorrt_compat_problems(graph_model) == []
    graph = graph_model.graph
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear")
    zp = next(t for t in graph.initializer if t.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))
    graph.initializer.append(numpy_helper.from_array(np.array(0, np.uint8), "zp_u8"))
    graph.initializer.append(numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias_q"))
    graph.node.extend([
        onnx.helper.make_node("QuantizeLinear", ["x", "s", "zp_u8"], ["u8"], name="qu8"),
        onnx.helper.make_node("DequantizeLinear", ["bias_q", "s"], ["bias_f"], name="dqbias")])
    problems = "\n".join(tensorrt_compat_problems(graph_model))
    assert "zero point is not a constant 0" in problems
    assert "'qu8': quantizes to uint8" in problems
    assert "'dqbias': dequantizes int32" in problems


# -- ONNX Runtime: int8 against fp32 ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", MODELS)
def test_small_int8_graphs_run_and_segment(model, graphs, val_frames):
    with OnnxBackend(graphs.fp32(model), "cpu") as fp32, \
            OnnxBackend(graphs.int8(model), "cpu") as int8:
        assert int8.precision == "int8" and int8.input_size == (H, W)
        expected, got = fp32.infer(val_frames), int8.infer(val_frames)
        one = int8.infer(val_frames[2:3])  # dynamic batch
    np.testing.assert_array_equal(one[0], got[2])
    agreement = float((got == expected).mean())
    print(f"{model}: int8 agrees with fp32 on {agreement:.2%} of pixels")
    assert len(np.unique(expected)) >= 2
    assert agreement >= 0.9  # random-body nets; the trained model below is held to 97 %


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", MODELS)
def test_cpu_int8_graph_keeps_int8_between_convolutions(model, graphs, val_frames):
    """--int8-target cpu: uint8 activations with zero points, the ReLUs after quantized
    convolutions folded into their ranges, SegNet's unpooling mask still float; ONNX Runtime
    runs it and labels like the fp32 graph."""
    fp32 = onnx.load(str(graphs.fp32(model)))
    cpu = onnx.load(str(graphs.int8(model, "cpu")))
    onnx.checker.check_model(cpu, full_check=True)
    consts = _constants(cpu)
    weights = {t.name for t in cpu.graph.initializer}
    activation_zps = [consts[n.input[2]] for n in cpu.graph.node
                      if n.op_type in QDQ and n.input[0] not in weights]
    assert activation_zps and all(zp.dtype == np.uint8 for zp in activation_zps)
    relus = lambda m: sum(n.op_type == "Relu" for n in m.graph.node)  # noqa: E731
    assert relus(cpu) < relus(fp32) // 2, (relus(cpu), relus(fp32))
    meta = EngineMetadata.from_onnx(cpu)
    assert meta.precision == "int8" and meta.extra["int8_target"] == "cpu"
    assert "uint8 asymmetric activations" in meta.extra["quantizer"]
    assert (float_data_movers(fp32, SCHEMES["cpu"].ops) != []) == model.startswith("segnet")
    with OnnxBackend(graphs.fp32(model), "cpu") as reference, \
            OnnxBackend(graphs.int8(model, "cpu"), "cpu") as int8:
        expected, got = reference.infer(val_frames), int8.infer(val_frames)
    agreement = float((got == expected).mean())
    print(f"{model}: cpu int8 agrees with fp32 on {agreement:.2%} of pixels")
    # ONNX Runtime merges the cpu layout's identical Q nodes (it fuses only then); the signed
    # tensorrt layout keeps them apart (a signed Q read twice stays float on x86).
    assert disabled_optimizers(graphs.int8(model, "cpu")) == []
    assert disabled_optimizers(graphs.int8(model)) == ["CommonSubexpressionElimination"]
    assert disabled_optimizers(graphs.fp32(model)) == []
    assert agreement >= 0.9  # random-body nets, as the tensorrt layout above


def test_upsampling_has_constant_scales():
    """The exporter's ``Resize(sizes=Concat(Shape(x)[:2], HW))`` becomes ``Resize(scales)``
    (exact for whole multiples); a Shape would keep ONNX Runtime's int8 path off it."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", ["x"], ["s"], start=0, end=2),
             helper.make_node("Concat", ["s", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest")]
    graph = helper.make_graph(
        nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 12, 16])],
        [numpy_helper.from_array(np.array([12, 16], np.int64), "hw")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 8)).astype(np.float32)
    import onnxruntime as ort

    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert static_resize_scales(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Resize"]
    assert _constants(model)[model.graph.node[0].input[2]].tolist() == [1, 1, 2, 2]
    assert list(_constants(model)) == [model.graph.node[0].input[2]]  # hw: dropped, unread
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)


@pytest.fixture(scope="module")
def bundled_fp32(tmp_path_factory, camvid_root, dashcam_clip):
    """The bundled trained weights' fp32 graph at 160x224 (half its input size: a quarter of
    the calibration and inference work, and the trained net still segments), 24 CamVid val
    and 16 dashcam frames at that size, and its labels of them: made once for both targets."""
    from rtseg.bench import source_frames
    from rtseg.compare import split_frames
    from rtseg.engines import default_engine

    fp32_path = tmp_path_factory.mktemp("bundled") / "fp32.onnx"
    size = tuple(export_onnx(default_engine(REPO / "engines", "cuda"), fp32_path,
                             size=(160, 224)).input_size)
    frames = {"camvid val": split_frames("camvid", camvid_root, "val", size, 24),
              "dashcam": source_frames(dashcam_clip, size, 16)}
    with OnnxBackend(fp32_path, "cpu") as fp32:
        expected = {name: fp32.infer(batch) for name, batch in frames.items()}
    return fp32_path, frames, expected


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("target", TARGETS)
def test_int8_agrees_with_fp32_on_real_frames(target, bundled_fp32, tmp_path, camvid_root):
    """The bundled trained model, exported fp32 and int8 (calibrated on CamVid train), on 24
    CamVid val frames and 16 dashcam frames: ≥ 97 % of pixels labelled alike."""
    fp32_path, frames, expected = bundled_fp32
    int8_path = tmp_path / "int8.onnx"
    export_onnx(fp32_path, int8_path,
                calib=Calibration(camvid_root / "train", 32, target=target))
    with OnnxBackend(int8_path, "cpu") as int8:
        for name, batch in frames.items():
            agreement = float((int8.infer(batch) == expected[name]).mean())
            print(f"bundled {name}: int8 ({target}) agrees with fp32 on {agreement:.2%}")
            assert agreement >= 0.97, (name, agreement)
            assert len(np.unique(expected[name])) >= 3


# -- calibration frames -------------------------------------------------------------------------
@pytest.mark.realdata
def test_calibration_frames_spread_over_a_video_and_resized_like_the_pipeline(dashcam_clip):
    from rtseg.bench import source_frames

    frames = read_calibration_frames(Calibration(dashcam_clip, 8), (H, W))
    assert frames.shape == (8, H, W, 3) and frames.dtype == np.uint8
    first = source_frames(dashcam_clip, (H, W), 1)[0]  # the pipeline's resize of frame 0
    np.testing.assert_array_equal(frames[0], first)
    # 221 frames, 8 wanted: every 27th, so no two are the same near-copy
    assert all(np.abs(frames[i].astype(int) - frames[i + 1]).mean() > 1.0 for i in range(7))


@pytest.mark.realdata
def test_a_folder_with_fewer_frames_than_asked_is_used_whole(tmp_path, camvid_root):
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in sorted((camvid_root / "val").glob("*.png"))[:MIN_FRAMES + 1]:
        (folder / p.name).write_bytes(p.read_bytes())
    notes = []
    frames = read_calibration_frames(Calibration(folder, 64), (H, W), notes.append)
    assert len(frames) == MIN_FRAMES + 1
    assert any("calibrating on all of them" in n for n in notes)


# -- the CLI ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
def test_cli_export_int8_and_triton_repo(graphs, camvid_root, tmp_path, capsys):
    checkpoint = str(graphs.checkpoint("segnet_vgg16"))
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    calib = ["--int8", "--calib", str(camvid_root / "val"), "--calib-frames", "8",
             "--calib-method", "entropy"]
    assert main(["export", "--checkpoint", checkpoint, "--out", str(out), *calib]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {out} (segnet_vgg16, int8, {H}x{W})"  # no chatter
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]  # no temp files left
    with OnnxBackend(out, "cpu") as backend:
        assert backend.precision == "int8"
        assert backend.metadata.extra["calibration_method"] == "entropy"

    repo = tmp_path / "models"
    assert main(["export", "--checkpoint", checkpoint, "--triton-repo", str(repo), *calib,
                 "--max-batch", "4"]) == 0
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    assert files == ["segnet_vgg16/1/model.onnx", "segnet_vgg16/config.pbtxt"]
    text = (repo / "segnet_vgg16" / "config.pbtxt").read_text()
    assert "int8" in text.splitlines()[0] and text.count("TYPE_UINT8") == 2
    with OnnxBackend(repo / "segnet_vgg16" / "1" / "model.onnx", "cpu") as backend:
        assert backend.precision == "int8"
        assert backend.infer(np.zeros((2, H, W, 3), np.uint8)).shape == (2, H, W)


@pytest.mark.slow
@pytest.mark.realdata
def test_an_fp32_onnx_can_be_quantized_but_not_twice(graphs, camvid_root, tmp_path, val_frames):
    out = tmp_path / "from_onnx.onnx"
    calib = Calibration(camvid_root / "val", CALIB_FRAMES, "minmax")
    meta = export_onnx(graphs.fp32("unet_r50"), out, calib=calib)
    assert meta.precision == "int8" and meta.extra["exported_from"] == "unet_r50.safetensors"
    with OnnxBackend(out, "cpu") as a, OnnxBackend(graphs.int8("unet_r50"), "cpu") as b:
        np.testing.assert_array_equal(a.infer(val_frames), b.infer(val_frames))  # same recipe
    with pytest.raises(BadInput, match="already quantized"):
        export_onnx(out, tmp_path / "twice.onnx", calib=calib)
    with pytest.raises(BadInput, match="already quantized"):
        quantize_graph(onnx.load(str(out)), val_frames, calib)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from_onnx.onnx"]


@pytest.mark.slow
@pytest.mark.realdata
def test_run_eval_and_bench_take_the_int8_graph(graphs, camvid_root, tmp_path):
    int8 = str(graphs.int8("unet_r50"))
    out = tmp_path / "run"
    out.mkdir()
    frames = str(camvid_root / "val")
    assert main(["run", "--device", "cpu", "--engine", int8, "--source", frames,
                 "--max-frames", "3", "--output", str(out / "o.mp4"),
                 "--json", str(out / "run.json")]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["frames"] == 3 and (out / "o.mp4").stat().st_size > 0
    assert main(["eval", "--device", "cpu", "--engine", int8, "--dataset", "camvid",
                 "--data-root", str(camvid_root), "--limit", "4",
                 "--json", str(out / "eval.json")]) == 0
    assert json.loads((out / "eval.json").read_text())["images"] == 4
    assert main(["bench", "--device", "cpu", "--engine", int8, "--iters", "2",
                 "--warmup", "0", "--json", str(out / "bench.json")]) == 0
    assert json.loads((out / "bench.json").read_text())["precision"] == "int8"


@pytest.mark.slow
@pytest.mark.realdata
def test_bench_compare_shows_int8_beside_fp32_fp16_and_bf16(graphs, camvid_root, tmp_path,
                                                            monkeypatch, capsys):
    """bf16 is compared where this CPU computes it natively; where it does not (and on a CPU
    made to look AVX2-only) the comparison refuses it in one line instead."""
    from rtseg import devices

    checkpoint = graphs.checkpoint("unet_r50")
    fp16 = tmp_path / "fp16.onnx"
    export_onnx(checkpoint, fp16, fp16=True)
    result = tmp_path / "compare.json"
    bf16 = [f"{checkpoint}@bf16"] if read_cpu_features().native_bf16 else []
    args = ["--data-root", str(camvid_root), "--limit", "2", "--batch", "1", "--iters", "1",
            "--warmup", "0", "--device", "cpu", "--json", str(result)]
    assert main(["bench", "--compare", str(graphs.fp32("unet_r50")), str(fp16), *bf16,
                 str(graphs.int8("unet_r50")), *args]) == 0
    rows = json.loads(result.read_text())["engines"]
    assert [r["precision"] for r in rows] == ["fp32", "fp16", *(["bf16"] if bf16 else []), "int8"]
    assert rows[-1]["pixel_agreement"] > 0.8

    capsys.readouterr()
    monkeypatch.setattr(devices, "read_cpu_features",
                        lambda: CpuFeatures("AVX2-only CPU", frozenset({"avx2", "fma"})))
    assert main(["bench", "--compare", str(graphs.fp32("unet_r50")), f"{checkpoint}@bf16",
                 *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16" in err[0] and "use fp32" in err[0], err


# -- 7-bit weights: no u8s8 saturation on CPUs without VNNI ------------------------------------
def _conv_graph(tmp_path: Path) -> onnx.ModelProto:
    """uint8 frames → Conv(3→16) → ReLU → Conv(16→16) → ReLU → Conv(16→11) → argmax: the middle
    convolution is the one quantized (the first and last stay float)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
            for name, shape, scale in (("w1", (16, 3, 3, 3), 0.05), ("w2", (16, 16, 3, 3), 0.2),
                                       ("w3", (11, 16, 1, 1), 0.3))]
    nodes = [helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
             helper.make_node("ArgMax", ["c3"], ["ids"], axis=1, keepdims=0),
             helper.make_node("Cast", ["ids"], ["labels"], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("frames", TensorProto.UINT8,
                                                       ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", 32, 32])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, engine_meta("tiny", (32, 32)).to_strings())
    return model


@pytest.mark.parametrize("target", TARGETS)
def test_int8_weights_are_7_bit_so_avx2_cannot_saturate(target, tmp_path):
    """ONNX Runtime's int8 convolutions on x86 CPUs without VNNI add pairs of uint8 x int8
    products in 16 bits with saturation (``vpmaddubsw``): with 8-bit weights 2 x 255 x 127 =
    64770 overflows and an AVX2 CPU labels differently from a VNNI one (84 % against 96 % of
    pixels agreeing with fp32, bench/results/int8_avx2_emulated.md). The export keeps every
    quantized weight in [-64, 64], so no pair can exceed 32767 on any CPU."""
    frames = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), np.uint8)
    int8 = quantize_graph(_conv_graph(tmp_path), frames, Calibration(tmp_path, 8, "minmax", target))
    consts = _constants(int8)
    weights = [consts[n.input[0]] for n in int8.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in consts
               and consts[n.input[0]].ndim == 4]
    assert len(weights) == 1 and weights[0].dtype == np.int8  # conv2's, per output channel
    w = weights[0].astype(np.int32)
    assert np.abs(w).max() == 64  # the 7-bit range, used to its end
    worst_pair = 2 * 255 * np.abs(w).max()
    assert worst_pair <= np.iinfo(np.int16).max
    meta = EngineMetadata.from_onnx(int8)
    assert meta.extra["weight_bits"] == 7 and "7-bit range" in meta.extra["quantizer"]
    # 8 bits stay available to measure the difference, and use the whole int8 range
    wide = quantize_graph(_conv_graph(tmp_path), frames,
                          Calibration(tmp_path, 8, "minmax", target, weight_bits=8))
    assert max(np.abs(v.astype(np.int32)).max() for v in _constants(wide).values()
               if v.dtype == np.int8 and v.ndim == 4) == 127
    with pytest.raises(BadInput, match="use 7 or 8"):
        Calibration(tmp_path, 8, "minmax", target, weight_bits=6)


# -- build-engine: precision rules (pure; the build itself needs TensorRT) -----------------------
def test_int8_graphs_build_int8_engines_only():
    from rtseg.deploy.build_plan import check_precision, plan_build

    assert check_precision("int8", "auto") == "int8" and check_precision("fp32", "auto") == "fp16"
    for trt_major, flags in ((10, ("STRONGLY_TYPED",)), (11, ())):
        plan = plan_build(trt_major, "int8", "int8")
        assert plan.creation_flags == flags and plan.builder_flags == ()  # no BuilderFlag.INT8
        assert plan.precision == "int8" and not plan.convert_to_fp16
    for requested in ("fp16", "fp32"):
        with pytest.raises(BadInput, match="int8"):
            check_precision("int8", requested)
    with pytest.raises(BadInput, match="rtseg export --int8"):
        check_precision("fp32", "int8")


def test_cli_build_engine_builds_an_int8_graph_as_int8(tmp_path, monkeypatch, capsys):
    from rtseg.deploy import engine_build

    calls = []  # the build resolves the precision from the graph, as build_engine does
    monkeypatch.setattr(engine_build, "build_engine", fake_build_engine(calls))
    plan = str(tmp_path / "m.plan")
    int8 = str(save_tiny_graph(tmp_path / "int8.onnx", precision="int8"))
    fp32 = str(save_tiny_graph(tmp_path / "fp32.onnx"))
    assert main(["build-engine", "--onnx", int8, "--out", plan]) == 0
    assert main(["build-engine", "--onnx", int8, "--out", plan, "--int8"]) == 0
    assert main(["build-engine", "--onnx", fp32, "--out", plan]) == 0
    assert [kw["precision"] for _, _, kw in calls] == ["auto", "int8", "auto"]  # auto: the graph's
    built = [line.split("(")[1].split(",")[0] for line in capsys.readouterr().out.splitlines()]
    assert built == ["int8", "int8", "fp16"]
