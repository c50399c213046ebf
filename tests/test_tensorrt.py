"""TensorRT support: pure helpers and the ONNX pre-flight check run anywhere; the build/run
round trip needs TensorRT and a CUDA GPU (``-m tensorrt``) and skips without them."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rtseg.backends.tensorrt_backend import TensorRTBackend, sidecar_path, tensorrt_major
from rtseg.backends.tensorrt_onnx_ops import (
    OPSET_MAX,
    OPSET_MIN,
    SUPPORTED_OPS,
    UNSUPPORTED_OPS,
    tensorrt_compat_problems,
)
from rtseg.engine_build import (
    BuildPlan,
    build_engine,
    check_io_tensors,
    format_parser_errors,
    plan_build,
    profile_shapes,
    read_onnx_metadata,
)
from rtseg.errors import BadInput, MissingDependency
from rtseg.metadata import EngineMetadata

H, W, CLASSES = 8, 12, 3


def tiny_metadata(precision: str = "fp32") -> EngineMetadata:
    return EngineMetadata(model="tiny", num_classes=CLASSES, class_names=["a", "b", "c"],
                          palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], ignore_index=255,
                          input_size=[H, W], dataset="camvid", mean=[0.0] * 3, std=[1.0] * 3,
                          precision=precision)


def contract_model(precision: str = "fp32", opset: int = 17) -> onnx.ModelProto:
    """Smallest graph honouring the deploy contract: uint8 NHWC frames → uint8 labels."""
    ftype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    np_type = np.float16 if precision == "fp16" else np.float32
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((CLASSES, 3, 1, 1)).astype(np_type), "w")
    bias = numpy_helper.from_array(np.zeros(CLASSES, np_type), "b")
    nodes = [
        helper.make_node("Cast", ["frames"], ["x"], to=ftype, name="to_float"),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2], name="nhwc_to_nchw"),
        helper.make_node("Conv", ["nchw", "w", "b"], ["logits"], name="head"),
        helper.make_node("ArgMax", ["logits"], ["ids"], axis=1, keepdims=0, name="argmax"),
        helper.make_node("Cast", ["ids"], ["labels"], to=TensorProto.UINT8, name="to_uint8"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", H, W, 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", H, W])],
        initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    helper.set_model_props(model, tiny_metadata(precision).to_strings())
    onnx.checker.check_model(model)
    return model


def single_node_model(node: onnx.NodeProto, inputs, outputs, opset: int = 17,
                      initializer=()) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=list(initializer))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def fvi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


# -- pure helpers ------------------------------------------------------------------------------
def test_sidecar_sits_beside_the_plan(tmp_path):
    assert sidecar_path(tmp_path / "segnet.plan") == tmp_path / "segnet.plan.json"
    assert sidecar_path("a/b.engine").name == "b.engine.json"


def test_tensorrt_major():
    assert tensorrt_major("10.15.1.29") == 10
    assert tensorrt_major("11.0.0") == 11


def test_profile_shapes():
    shapes = profile_shapes((360, 480), 8)
    assert shapes == {"min": (1, 360, 480, 3), "opt": (4, 360, 480, 3), "max": (8, 360, 480, 3)}
    assert profile_shapes([32, 64], 2)["opt"] == (2, 32, 64, 3)  # opt capped by max
    assert profile_shapes([32, 64], 8, opt_batch=1)["opt"] == (1, 32, 64, 3)
    with pytest.raises(BadInput, match="max-batch"):
        profile_shapes((32, 64), 0)
    with pytest.raises(BadInput, match="between 1 and"):
        profile_shapes((32, 64), 4, opt_batch=5)


@pytest.mark.parametrize("trt_major, graph, requested, expected", [
    (10, "fp32", "fp16", BuildPlan((), ("FP16",), "fp16")),
    (10, "fp16", "fp16", BuildPlan(("STRONGLY_TYPED",), (), "fp16")),
    (10, "fp32", "fp32", BuildPlan(("STRONGLY_TYPED",), (), "fp32")),
    (11, "fp16", "fp16", BuildPlan((), (), "fp16")),
    (11, "fp32", "fp32", BuildPlan((), (), "fp32")),
    (12, "fp16", "fp16", BuildPlan((), (), "fp16")),
])
def test_plan_build_per_tensorrt_version(trt_major, graph, requested, expected):
    plan = plan_build(trt_major, graph, requested)
    assert plan == expected
    assert "FP16" not in plan.builder_flags or trt_major == 10  # removed in TensorRT 11


def test_plan_build_refuses_what_tensorrt_cannot_do():
    with pytest.raises(BadInput, match="rtseg export --fp16"):
        plan_build(11, "fp32", "fp16")  # TensorRT 11: strongly typed only
    with pytest.raises(BadInput, match="without --fp16"):
        plan_build(10, "fp16", "fp32")
    with pytest.raises(BadInput, match="precision"):
        plan_build(10, "fp32", "int8")
    with pytest.raises(MissingDependency, match="TensorRT 10 or newer"):
        plan_build(8, "fp32", "fp16")


def test_check_io_tensors_accepts_the_contract():
    check_io_tensors([("frames", (-1, H, W, 3), "uint8")], [("labels", (-1, H, W), "uint8")],
                     [H, W])


@pytest.mark.parametrize("inputs, outputs, message", [
    ([("frames", (-1, H, W, 3), "float32")], [("labels", (-1, H, W), "uint8")], "float32"),
    ([("frames", (1, H, W, 3), "uint8")], [("labels", (1, H, W), "uint8")], "fixed batch"),
    ([("input", (-1, 3, H, W), "uint8")], [("labels", (-1, H, W), "uint8")], "'frames'"),
    ([("frames", (-1, H, W, 3), "uint8")], [("labels", (-1, H, W + 1), "uint8")], "input_size"),
    ([("frames", (-1, H, W, 3), "uint8")], [("labels", (-1, 1, H, W), "uint8")], "rank 3"),
])
def test_check_io_tensors_names_the_problem(inputs, outputs, message):
    with pytest.raises(BadInput, match=message):
        check_io_tensors(inputs, outputs, [H, W])


def test_parser_errors_are_reported_in_full():
    msg = format_parser_errors("m.onnx", ["In node 3 (MaxUnpool): unsupported", "second error"],
                               ["MaxUnpool node: not supported"])
    assert "2 error(s)" in msg and "[0] In node 3 (MaxUnpool): unsupported" in msg
    assert "[1] second error" in msg and "MaxUnpool node: not supported" in msg


# -- ONNX pre-flight check ---------------------------------------------------------------------
def test_op_lists_are_disjoint_and_cover_what_we_export():
    assert not SUPPORTED_OPS & UNSUPPORTED_OPS
    assert {"Conv", "Relu", "BatchNormalization", "MaxPool", "Resize", "ArgMax", "Cast",
            "Transpose", "Concat", "ConvTranspose", "Sub", "Div"} <= SUPPORTED_OPS
    assert "MaxUnpool" in UNSUPPORTED_OPS
    assert (OPSET_MIN, OPSET_MAX) == (9, 24)


def test_clean_contract_graph_passes_and_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = contract_model()
    assert tensorrt_compat_problems(model) == []
    frames = np.random.default_rng(1).integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (labels,) = sess.run(["labels"], {"frames": frames})
    assert labels.dtype == np.uint8 and labels.shape == (2, H, W)
    assert labels.max() < CLASSES


def test_max_unpool_is_flagged():
    node = helper.make_node("MaxUnpool", ["x", "idx"], ["y"], kernel_shape=[2, 2],
                            strides=[2, 2], name="unpool1")
    model = single_node_model(node, [fvi("x", [1, 1, 2, 2]), fvi("idx", [1, 1, 2, 2],
                                     TensorProto.INT64)], [fvi("y", [1, 1, 4, 4])], opset=11)
    problems = tensorrt_compat_problems(model)
    assert len(problems) == 1 and "MaxUnpool" in problems[0] and "unpool1" in problems[0]


def test_max_pool_with_indices_is_flagged_but_plain_max_pool_is_not():
    with_idx = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2],
                                strides=[2, 2], name="pool1")
    model = single_node_model(with_idx, [fvi("x", [1, 1, 4, 4])],
                              [fvi("y", [1, 1, 2, 2]), fvi("idx", [1, 1, 2, 2], TensorProto.INT64)])
    problems = tensorrt_compat_problems(model)
    assert len(problems) == 1 and "Indices" in problems[0] and "3761" in problems[0]
    plain = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    model = single_node_model(plain, [fvi("x", [1, 1, 4, 4])], [fvi("y", [1, 1, 2, 2])])
    assert tensorrt_compat_problems(model) == []


def test_segnet_style_graph_reports_every_problem():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["p", "idx"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "segnet", [fvi("x", [1, 1, 4, 4])], [fvi("y", [1, 1, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    problems = tensorrt_compat_problems(model)
    assert len(problems) == 2
    assert any("MaxPool" in p for p in problems) and any("MaxUnpool" in p for p in problems)


@pytest.mark.parametrize("opset", [8, 25])
def test_opset_outside_tensorrt_range_is_flagged(opset):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = single_node_model(node, [fvi("x", [1])], [fvi("y", [1])], opset=opset)
    assert any(f"opset {opset}" in p for p in tensorrt_compat_problems(model))


def test_custom_domain_unknown_op_and_resize_mode_are_flagged():
    nodes = [
        helper.make_node("MyPlugin", ["x"], ["a"], domain="com.example"),
        helper.make_node("FancyNewOp", ["a"], ["b"]),
        helper.make_node("Resize", ["b", "", "scales"], ["y"], mode="cubic"),
    ]
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph(nodes, "g", [fvi("x", [1, 1, 2, 2])], [fvi("y", [1, 1, 4, 4])],
                              initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    problems = tensorrt_compat_problems(model)
    assert len(problems) == 3
    assert "com.example" in problems[0] and "plugin" in problems[0]
    assert "FancyNewOp" in problems[1] and "cubic" in problems[2]


def test_external_data_is_flagged():
    model = contract_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="weights.bin")
    assert any("external data" in p for p in tensorrt_compat_problems(model))


# -- ONNX metadata, and what happens without TensorRT ------------------------------------------
def test_read_onnx_metadata(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model("fp16"), path)
    meta, model = read_onnx_metadata(path)
    assert meta.input_size == [H, W] and meta.precision == "fp16" and meta.num_classes == CLASSES
    assert model.graph.input[0].name == "frames"
    with pytest.raises(BadInput, match="not found"):
        read_onnx_metadata(tmp_path / "missing.onnx")
    bare = contract_model()
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(BadInput, match="lacks metadata"):
        read_onnx_metadata(tmp_path / "bare.onnx")


def test_build_engine_without_tensorrt_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail here
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model(), path)
    with pytest.raises(MissingDependency, match=r'pip install "rtseg\[tensorrt\]"'):
        build_engine(path, tmp_path / "tiny.plan")
    assert not (tmp_path / "tiny.plan").exists()


def test_backend_needs_its_sidecar(tmp_path):
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"not really a plan")
    with pytest.raises(BadInput, match="sidecar"):
        TensorRTBackend(plan)


def test_backend_without_tensorrt_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"not really a plan")
    sidecar_path(plan).write_text(json.dumps(tiny_metadata().to_dict()))
    with pytest.raises(MissingDependency, match="rtseg\\[tensorrt\\]"):
        TensorRTBackend(plan)


# -- the real thing (NVIDIA GPU + TensorRT) ----------------------------------------------------
def _require_tensorrt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA GPU machines "
                                                 'only: pip install "rtseg[tensorrt]")')
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    return trt, torch


@pytest.mark.tensorrt
@pytest.mark.parametrize("graph_precision, requested", [
    ("fp32", "fp32"), ("fp32", "fp16"), ("fp16", "fp16")])
def test_tensorrt_build_and_infer_match_onnxruntime(tmp_path, graph_precision, requested):
    trt, torch = _require_tensorrt_gpu()
    ort = pytest.importorskip("onnxruntime")
    if tensorrt_major(trt.__version__) >= 11 and graph_precision != requested:
        pytest.skip("TensorRT 11 builds the graph's own precision only")
    onnx_path, plan = tmp_path / "tiny.onnx", tmp_path / "tiny.plan"
    onnx.save(contract_model(graph_precision), onnx_path)
    logs: list[str] = []
    summary = build_engine(onnx_path, plan, precision=requested, max_batch=2,
                           timing_cache=tmp_path / "tiny.timing.cache", log=logs.append)
    assert plan.is_file() and (tmp_path / "tiny.timing.cache").is_file()
    assert any("network input 'frames'" in line for line in logs)
    side = json.loads(sidecar_path(plan).read_text())
    assert side["precision"] == requested == summary["precision"]
    assert side["tensorrt_version"] == trt.__version__ and side["max_batch"] == 2
    assert side["gpu_name"] == torch.cuda.get_device_name()

    frames = np.random.default_rng(2).integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    sess = ort.InferenceSession(contract_model("fp32").SerializeToString(),
                                providers=["CPUExecutionProvider"])
    (expected,) = sess.run(["labels"], {"frames": frames})
    with TensorRTBackend(plan) as backend:
        assert backend.max_batch == 2 and backend.precision == requested
        assert backend.device.startswith("cuda:")
        got = backend.infer(frames)  # 5 frames through a max-batch-2 engine: 3 chunks
        got_gpu = backend.infer_torch(torch.from_numpy(frames).cuda()).cpu().numpy()
    assert got.dtype == np.uint8 and got.shape == (5, H, W)
    np.testing.assert_array_equal(got, got_gpu)
    # TF32/fp16 arithmetic may flip a near-tie argmax; the labels must still agree.
    assert (got == expected).mean() > 0.97


@pytest.mark.tensorrt
def test_tensorrt_rejects_a_file_that_is_not_a_plan(tmp_path):
    _require_tensorrt_gpu()
    plan = tmp_path / "junk.plan"
    plan.write_bytes(b"\0" * 64)
    sidecar_path(plan).write_text(json.dumps(tiny_metadata().to_dict()))
    with pytest.raises(BadInput, match="not a TensorRT engine"):
        TensorRTBackend(plan)


def test_device_index_is_honoured_and_checked(monkeypatch):
    """Pure logic of choosing the GPU (torch's CUDA queries stubbed: no GPU here)."""
    from rtseg.backends.tensorrt_backend import require_cuda

    for name, value in (("is_available", lambda: True), ("init", lambda: None),
                        ("device_count", lambda: 2), ("current_device", lambda: 0)):
        monkeypatch.setattr(torch.cuda, name, value)
    assert require_cuda("auto") == 0 and require_cuda("cuda") == 0
    assert require_cuda("cuda:1") == 1
    with pytest.raises(BadInput, match="has 2 CUDA GPU"):
        require_cuda("cuda:2")
    with pytest.raises(BadInput, match="cuda:N"):
        require_cuda("cuda:x")
