"""TensorRT support: pure helpers, the ONNX pre-flight check and the fp32 → fp16 graph
conversion run anywhere; the build/run round trips need TensorRT and a CUDA GPU
(``-m tensorrt``) and skip without them, saying why.

Shapes: the tiny graphs are 16x16 and the real ones 64x96, so every frame of ``frames``
(H*W*3 bytes) and of ``labels`` (H*W bytes) is a multiple of 256 bytes and the per-chunk
pointers the backend hands ``set_tensor_address`` stay 256-byte aligned; one test feeds a
deliberately misaligned view to check the backend's staging path.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rtseg.backends import tensorrt_backend
from rtseg.backends.tensorrt_backend import (
    TensorRTBackend,
    aligned,
    sidecar_path,
    tensorrt_major,
    trt_logger,
    trt_messages,
)
from rtseg.deploy.tensorrt_ops import tensorrt_compat_problems
from rtseg.deploy.build_plan import (BuildPlan, check_io_tensors, format_parser_errors,
                                     plan_build, profile_shapes, read_onnx_metadata)
from rtseg.deploy.engine_build import build_engine, load_timing_cache
from rtseg.errors import BadInput, MissingDependency
from rtseg.deploy.fp16_graph import float32_nodes, graph_to_fp16

from helpers import CLASSES, CONTRACT_SIZE, contract_model, engine_meta, fake_build_engine

H, W = CONTRACT_SIZE
REAL_MODELS = ("segnet_vgg16", "unet_resnet18")  # a SegNet (unpooling mask) and a UNet


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
    shapes = profile_shapes((360, 480), 8)  # optimised for batch 1: what rtseg run sends
    assert shapes == {"min": (1, 360, 480, 3), "opt": (1, 360, 480, 3), "max": (8, 360, 480, 3)}
    assert profile_shapes([32, 64], 8, opt_batch=4)["opt"] == (4, 32, 64, 3)
    assert profile_shapes([32, 64], 2, opt_batch=2)["opt"] == (2, 32, 64, 3)
    with pytest.raises(BadInput, match="max-batch"):
        profile_shapes((32, 64), 0)
    with pytest.raises(BadInput, match="--opt-batch must be between 1 and --max-batch"):
        profile_shapes((32, 64), 4, opt_batch=5)
    with pytest.raises(BadInput, match="--opt-batch"):
        profile_shapes((32, 64), 4, opt_batch=0)


@pytest.mark.parametrize("trt_major, graph, requested, expected", [
    # fp16 from an fp32 export: the graph is converted to fp16, the network strongly typed.
    (10, "fp32", "fp16", BuildPlan(("STRONGLY_TYPED",), (), "fp16", convert_to_fp16=True)),
    (10, "fp16", "fp16", BuildPlan(("STRONGLY_TYPED",), (), "fp16")),
    (10, "fp32", "fp32", BuildPlan(("STRONGLY_TYPED",), (), "fp32")),
    # TensorRT 11+: strongly typed always; the flag is deprecated and ignored, so not passed.
    (11, "fp32", "fp16", BuildPlan((), (), "fp16", convert_to_fp16=True)),
    (11, "fp16", "fp16", BuildPlan((), (), "fp16")),
    (11, "fp32", "fp32", BuildPlan((), (), "fp32")),
    (12, "fp16", "fp16", BuildPlan((), (), "fp16")),
])
def test_plan_build_is_strongly_typed_on_every_tensorrt(trt_major, graph, requested, expected):
    plan = plan_build(trt_major, graph, requested)
    assert plan == expected
    assert plan.builder_flags == ()  # never BuilderFlag.FP16 (weak typing)
    assert plan.precision == requested


@pytest.mark.parametrize("flags, precision", [
    ({}, "auto"), ({"fp16": True}, "fp16"), ({"fp16": False}, "fp32"), ({"int8": True}, "int8")])
def test_a_build_request_resolves_its_precision_flags(tmp_path, flags, precision):
    from rtseg.deploy.build_plan import check_request

    graph = tmp_path / "m.onnx"
    graph.write_bytes(b"")  # only its existence is checked before the build
    assert check_request(graph, tmp_path / "m.plan", **flags) == precision


def test_plan_build_refuses_what_tensorrt_cannot_do():
    with pytest.raises(BadInput, match="without --fp16"):
        plan_build(10, "fp16", "fp32")
    with pytest.raises(BadInput, match="without --fp16"):
        plan_build(11, "fp16", "fp32")
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


def test_build_engine_without_tensorrt_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail here
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model(), path)
    with pytest.raises(MissingDependency, match=r'pip install "rtseg\[tensorrt-cu13\]"'):
        build_engine(path, tmp_path / "tiny.plan")
    assert not (tmp_path / "tiny.plan").exists()


def test_backend_without_tensorrt_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"not really a plan")
    sidecar_path(plan).write_text(json.dumps(engine_meta("tiny", (H, W)).to_dict()))
    with pytest.raises(MissingDependency, match=r"rtseg\[tensorrt-cu12\]"):
        TensorRTBackend(plan)


# -- timing cache, logger, alignment (pure logic; TensorRT stand-ins where needed) ---------------
class FakeBuilderConfig:
    """Stands in for ``trt.IBuilderConfig`` in the timing-cache logic only. Like TensorRT,
    ``create_timing_cache`` returns None for bytes it cannot read (it does not raise) and
    ``set_timing_cache`` returns False for a cache from another device."""

    def __init__(self, readable: bool = True, same_gpu: bool = True):
        self.readable, self.same_gpu = readable, same_gpu
        self.created: list[bytes] = []
        self.attached = None

    def create_timing_cache(self, blob: bytes):
        self.created.append(bytes(blob))
        if blob and not self.readable:
            return None
        return ("cache", bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert cache is not None, "a None cache reached set_timing_cache"
        assert ignore_mismatch is False
        if cache[1] and not self.same_gpu:
            return False
        self.attached = cache
        return True


@pytest.mark.parametrize("readable, same_gpu, warning", [
    (False, True, "stale or corrupt"),  # e.g. after a TensorRT upgrade
    (True, False, "another GPU"),
])
def test_an_unusable_timing_cache_is_replaced_by_a_fresh_one(tmp_path, readable, same_gpu,
                                                            warning):
    path = tmp_path / "m.plan.timing.cache"
    path.write_bytes(b"\x00stale timing cache\x00")
    config, logs = FakeBuilderConfig(readable, same_gpu), []
    load_timing_cache(config, path, logs.append)
    assert config.attached == ("cache", b"")  # a fresh, empty cache
    assert config.created[-1] == b""
    assert len(logs) == 1 and warning in logs[0] and "starting a new one" in logs[0]


def test_a_good_timing_cache_is_loaded_and_a_missing_one_started(tmp_path):
    path = tmp_path / "m.plan.timing.cache"
    config, logs = FakeBuilderConfig(), []
    load_timing_cache(config, path, logs.append)  # no file yet: fresh, nothing to warn about
    assert config.attached == ("cache", b"") and logs == []
    path.write_bytes(b"timings")
    config, logs = FakeBuilderConfig(), []
    load_timing_cache(config, path, logs.append)
    assert config.attached == ("cache", b"timings")
    assert len(logs) == 1 and "loaded" in logs[0] and "warning" not in logs[0]


class _Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class _FakeILogger:
    """``trt.ILogger``'s shape: a Severity enum and a base ``__init__``."""

    Severity = _Severity

    def __init__(self):
        pass


def test_one_process_wide_logger_attributes_errors_to_the_calling_block(monkeypatch, caplog):
    fake_trt = type(sys)("fake_tensorrt")
    fake_trt.ILogger = _FakeILogger
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    monkeypatch.setattr(tensorrt_backend, "_LOGGER", None)
    logger = trt_logger()
    assert trt_logger() is logger  # created once, kept for the process

    seen: list[str] = []
    with trt_messages(seen.append) as outer:
        logger.log(_Severity.WARNING, "slow tactic")
        logger.log(_Severity.INFO, "chatter")  # below WARNING: dropped
        with trt_messages() as inner:  # the innermost block collects
            logger.log(_Severity.ERROR, "engine A failed")
        logger.log(_Severity.INTERNAL_ERROR, "engine B failed")
    assert inner.errors == ["engine A failed"]
    assert outer.errors == ["engine B failed"] and outer.detail() == "engine B failed"
    assert seen == ["TensorRT warning: slow tactic", "TensorRT error: engine B failed"]

    # Two threads (two engines) at once: each call gets its own errors.
    barrier, results = threading.Barrier(2), {}

    def call(name: str) -> None:
        with trt_messages() as messages:
            barrier.wait()
            logger.log(_Severity.ERROR, f"error of {name}")
            barrier.wait()
        results[name] = messages.errors

    threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": ["error of a"], "b": ["error of b"]}

    with caplog.at_level(logging.WARNING, logger="rtseg.tensorrt"):
        logger.log(_Severity.ERROR, "nobody asked")  # outside every block: Python logging
    assert "TensorRT error: nobody asked" in caplog.text


def test_alignment_check_for_set_tensor_address():
    buffer = torch.zeros(4096, dtype=torch.uint8)
    k = (-buffer.data_ptr()) % 256  # first 256-byte boundary inside the buffer
    assert aligned(buffer[k:]) and aligned(buffer[k + 256:])
    assert not aligned(buffer[k + 1:]) and not aligned(buffer[k + 288:])


def test_cli_build_engine_passes_the_contract_flags(tmp_path, monkeypatch, capsys):
    from rtseg.cli import main
    from rtseg.deploy import engine_build

    calls = []  # the build's summary names the precision it resolved (fp32 graph: auto → fp16)
    monkeypatch.setattr(engine_build, "build_engine", fake_build_engine(calls))
    onnx_path, plan = tmp_path / "tiny.onnx", tmp_path / "tiny.plan"
    onnx.save(contract_model(), onnx_path)
    assert main(["build-engine", "--onnx", str(onnx_path), "--out", str(plan)]) == 0
    got_onnx, got_out, kw = calls[-1]
    assert (Path(got_onnx), Path(got_out)) == (onnx_path, plan)
    assert (kw["precision"], kw["max_batch"], kw["opt_batch"]) == ("auto", 8, 1)  # defaults
    assert Path(kw["timing_cache"]) == tmp_path / "tiny.plan.timing.cache"
    assert f"wrote {plan} (fp16, TensorRT 10.x, test GPU)" in capsys.readouterr().out
    assert main(["build-engine", "--onnx", str(onnx_path), "--out", str(plan), "--fp32",
                 "--max-batch", "4", "--opt-batch", "4", "--workspace", "2"]) == 0
    kw = calls[-1][2]
    assert (kw["precision"], kw["max_batch"], kw["opt_batch"], kw["workspace_gb"]) == \
        ("fp32", 4, 4, 2.0)


# -- fp32 → fp16 conversion for strongly typed fp16 engines ------------------------------------
def _cast_chain_after_argmax(model: onnx.ModelProto) -> list[int]:
    """The ``to`` types of the Cast chain from ArgMax to ``labels``."""
    consumers = {i: n for n in model.graph.node for i in n.input}
    node = next(n for n in model.graph.node if n.op_type == "ArgMax")
    chain = []
    while node.output[0] != "labels":
        node = consumers[node.output[0]]
        assert node.op_type == "Cast", node.op_type
        chain.append(next(a.i for a in node.attribute if a.name == "to"))
    return chain


def test_graph_to_fp16_of_the_contract_graph():
    ort = pytest.importorskip("onnxruntime")
    fp32 = contract_model("fp32")
    fp16 = graph_to_fp16(fp32)
    onnx.checker.check_model(fp16, full_check=True)
    assert tensorrt_compat_problems(fp16) == [] and float32_nodes(fp16) == []
    assert _cast_chain_after_argmax(fp16) == [TensorProto.FLOAT16, TensorProto.UINT8]
    assert all(t.data_type == TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert read_props(fp16)["precision"] == "fp16" and read_props(fp32)["precision"] == "fp32"
    frames = np.random.default_rng(3).integers(0, 256, (4, H, W, 3), dtype=np.uint8)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(["labels"], {"frames": frames})[0] for m in (fp32, fp16)]
    assert runs[1].dtype == np.uint8 and (runs[0] == runs[1]).mean() > 0.97


def read_props(model: onnx.ModelProto) -> dict:
    return {p.key: json.loads(p.value) for p in model.metadata_props}


def test_graph_to_fp16_keeps_resize_scales_float32():
    """Resize's scales are tensor(float) in ONNX: a constant feeding them stays float32, a
    computed one gets a Cast back to float32."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    half = numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "half")
    nodes = [
        helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["nchw", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Mul", ["scales", "half"], ["scales2"]),  # [1, 1, 1, 1], in fp16
        helper.make_node("Resize", ["up", "", "scales2"], ["up2"], mode="nearest"),
        helper.make_node("ArgMax", ["up2"], ["ids"], axis=1, keepdims=0),
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["idsf"], ["labels"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "resize",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", 4, 4, 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", 8, 8])],
        initializer=[scales, half])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    fp16 = graph_to_fp16(model)
    onnx.checker.check_model(fp16, full_check=True)
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    # "scales" also feeds the Mul, so it becomes fp16 and both Resizes read a Cast to fp32.
    assert inits == {"scales": TensorProto.FLOAT16, "half": TensorProto.FLOAT16}
    casts = [n for n in fp16.graph.node if "__fp32_for_" in n.output[0]]
    assert len(casts) == 2 and all(n.op_type == "Cast" for n in casts)
    assert float32_nodes(fp16) == [f"Cast {n.name}" for n in casts]  # only the scales
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["labels"], {"frames": frames})[0]
    assert got.shape == (2, 8, 8)
    # A constant read by Resize alone stays float32 (exact), with no Cast.
    nodes = nodes[:3] + [helper.make_node("ArgMax", ["up"], ["ids"], axis=1, keepdims=0),
                         *nodes[-2:]]
    graph = helper.make_graph(nodes, "resize", graph.input, graph.output, initializer=[scales])
    fp16 = graph_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert {t.name: t.data_type for t in fp16.graph.initializer} == {"scales": TensorProto.FLOAT}
    assert not [n for n in fp16.graph.node if "__fp32_for_" in n.output[0]]


def test_graph_to_fp16_refuses_what_fp16_cannot_hold():
    from rtseg.errors import RtsegError

    model = contract_model("fp32")
    big = numpy_helper.from_array(np.full((CLASSES, 3, 1, 1), 1e6, np.float32), "w")
    model.graph.initializer[0].CopyFrom(big)
    with pytest.raises(RtsegError, match="fp16 range"):
        graph_to_fp16(model)
    float_in = contract_model("fp32")
    float_in.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    with pytest.raises(BadInput, match="uint8"):
        graph_to_fp16(float_in)


def _ort_labels(model: onnx.ModelProto | Path, frames: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(["labels"], {"frames": frames})[0]


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model", REAL_MODELS)
def test_fp16_conversion_of_real_exports(model, graphs, val_frames):
    fp32 = onnx.load(str(graphs.fp32(model)))
    assert _cast_chain_after_argmax(fp32) == [TensorProto.FLOAT, TensorProto.UINT8]
    fp16 = graph_to_fp16(fp32)
    onnx.checker.check_model(fp16, full_check=True)
    assert tensorrt_compat_problems(fp16) == []
    assert float32_nodes(fp16) == []  # strongly typed TensorRT computes fp16 throughout
    assert _cast_chain_after_argmax(fp16) == [TensorProto.FLOAT16, TensorProto.UINT8]
    for value in (*fp16.graph.input, *fp16.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.UINT8
    assert read_props(fp16)["precision"] == "fp16"
    if model.startswith("segnet"):  # the unpooling mask compares fp16 with fp16
        types = {v.name: v.type.tensor_type.elem_type
                 for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
        equals = [n for n in fp16.graph.node if n.op_type == "Equal"]
        assert equals and all(types.get(i) == TensorProto.FLOAT16
                              for n in equals for i in n.input)

    expected, got = _ort_labels(fp32, val_frames), _ort_labels(fp16, val_frames)
    agreement = float((got == expected).mean())
    print(f"{model}: converted fp16 graph agrees with fp32 on {agreement:.4%} of pixels")
    assert agreement >= 0.995, agreement
    assert len(np.unique(expected)) >= 2  # the net segments: agreement is not trivial


# -- the real thing (NVIDIA GPU + TensorRT) ----------------------------------------------------
def _require_tensorrt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA GPU machines "
                                                 'only: pip install "rtseg[tensorrt-cu13]" or '
                                                 '"rtseg[tensorrt-cu12]")')
    if not hasattr(trt, "__version__"):
        pytest.skip("only TensorRT's type stubs (tensorrt-stubs) are installed, not TensorRT")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    return trt


@pytest.mark.tensorrt
@pytest.mark.parametrize("graph_precision, requested", [
    ("fp32", "fp32"), ("fp32", "fp16"), ("fp16", "fp16")])
def test_tensorrt_build_and_infer_match_onnxruntime(tmp_path, graph_precision, requested):
    trt = _require_tensorrt_gpu()
    onnx_path, plan = tmp_path / "tiny.onnx", tmp_path / "tiny.plan"
    onnx.save(contract_model(graph_precision), onnx_path)
    logs: list[str] = []
    summary = build_engine(onnx_path, plan, precision=requested, max_batch=2,
                           timing_cache=tmp_path / "tiny.timing.cache", log=logs.append)
    assert plan.is_file() and (tmp_path / "tiny.timing.cache").is_file()
    assert any("network input 'frames'" in line for line in logs)
    side = json.loads(sidecar_path(plan).read_text())
    assert side["precision"] == requested == summary["precision"]
    assert side["strongly_typed"] is True
    assert side["converted_to_fp16"] is (graph_precision != requested)
    assert side["tensorrt_version"] == trt.__version__
    assert side["max_batch"] == 2 and side["opt_batch"] == 1
    assert side["gpu_name"] == torch.cuda.get_device_name()

    # The reference is the graph the engine was built from (converted when fp16 was asked).
    built_from = contract_model(graph_precision)
    if side["converted_to_fp16"]:
        built_from = graph_to_fp16(built_from)
    frames = np.random.default_rng(2).integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    expected = _ort_labels(built_from, frames)
    on_gpu = torch.from_numpy(frames).cuda()
    raw = torch.zeros(frames.nbytes + 1, dtype=torch.uint8, device="cuda")
    misaligned = raw[1:].view(frames.shape)  # starts 1 byte past the allocation
    misaligned.copy_(on_gpu)
    assert not aligned(misaligned)
    with TensorRTBackend(plan) as backend:
        assert backend.max_batch == 2 and backend.precision == requested
        assert backend.device.startswith("cuda:")
        got = backend.infer(frames)  # 5 frames through a max-batch-2 engine: 3 chunks
        got_gpu = backend.infer_torch(on_gpu).cpu().numpy()  # chunks at 2 * 768-byte offsets
        got_staged = backend.infer_torch(misaligned).cpu().numpy()  # staged, not passed as is
    assert got.dtype == np.uint8 and got.shape == (5, H, W)
    np.testing.assert_array_equal(got, got_gpu)
    np.testing.assert_array_equal(got, got_staged)
    # TF32/fp16 arithmetic may flip a near-tie argmax; the labels must still agree.
    assert (got == expected).mean() > 0.97


@pytest.mark.tensorrt
def test_tensorrt_build_survives_a_stale_timing_cache(tmp_path):
    _require_tensorrt_gpu()
    onnx_path, plan = tmp_path / "tiny.onnx", tmp_path / "tiny.plan"
    cache = tmp_path / "tiny.timing.cache"
    onnx.save(contract_model(), onnx_path)
    junk = b"not a TensorRT timing cache" * 16
    cache.write_bytes(junk)
    logs: list[str] = []
    build_engine(onnx_path, plan, precision="fp32", max_batch=1, timing_cache=cache,
                 log=logs.append)
    assert plan.is_file() and cache.read_bytes() != junk  # replaced by a real cache
    assert sum("starting a new one" in line for line in logs) <= 1
    logs.clear()
    build_engine(onnx_path, plan, precision="fp32", max_batch=1, timing_cache=cache,
                 log=logs.append)
    assert any("timing cache: loaded" in line for line in logs), logs


@pytest.mark.slow
@pytest.mark.tensorrt
@pytest.mark.realdata
@pytest.mark.parametrize("model", REAL_MODELS)
def test_tensorrt_engines_of_real_exports_agree_with_onnxruntime(model, tmp_path, graphs,
                                                                 val_frames):
    """The default flow: rtseg export (fp32), then build-engine --fp16 (default) and --fp32;
    TensorRT's labels on real CamVid frames against ONNX Runtime's on the same graph."""
    from rtseg.errors import StageError

    _require_tensorrt_gpu()
    onnx_path = graphs.fp32(model)
    cache = tmp_path / "timing.cache"
    plans = {}
    for precision in ("fp16", "fp32"):
        plans[precision] = tmp_path / f"{model}_{precision}.plan"
        summary = build_engine(onnx_path, plans[precision], precision=precision, max_batch=4,
                               timing_cache=cache)
        side = json.loads(sidecar_path(plans[precision]).read_text())
        assert side["precision"] == summary["precision"] == precision
        assert side["strongly_typed"] is True
        assert side["converted_to_fp16"] is (precision == "fp16")

    fp32_graph = onnx.load(str(onnx_path))
    reference = {"fp32": _ort_labels(fp32_graph, val_frames),
                 "fp16": _ort_labels(graph_to_fp16(fp32_graph), val_frames)}
    assert len(np.unique(reference["fp32"])) >= 2
    # Both engines open at once, as rtseg bench --compare holds them.
    with TensorRTBackend(plans["fp16"]) as b16, TensorRTBackend(plans["fp32"]) as b32:
        got = {"fp16": b16.infer(val_frames), "fp32": b32.infer(val_frames)}  # 4 + 4
        # An error on one engine is reported by that call, and the other engine runs on.
        h, w = b16.input_size
        too_many = torch.zeros((5, h, w, 3), dtype=torch.uint8, device="cuda")
        labels = torch.zeros((5, h, w), dtype=torch.uint8, device="cuda")
        with pytest.raises(StageError, match="rejected input shape"):
            b16._enqueue(too_many, labels)  # past the profile's max batch of 4
        np.testing.assert_array_equal(b32.infer(val_frames), got["fp32"])
    assert not getattr(tensorrt_backend._calls, "stack", [])  # every block closed
    for precision in ("fp32", "fp16"):
        agreement = float((got[precision] == reference[precision]).mean())
        versus_fp32 = float((got[precision] == reference["fp32"]).mean())
        print(f"{model} {precision}: TensorRT agrees with ONNX Runtime on {agreement:.4%} "
              f"(with fp32 ONNX Runtime on {versus_fp32:.4%})")
        assert agreement >= 0.99, (precision, agreement)
        assert versus_fp32 >= 0.98, (precision, versus_fp32)


@pytest.mark.tensorrt
def test_tensorrt_rejects_a_file_that_is_not_a_plan(tmp_path):
    _require_tensorrt_gpu()
    plan = tmp_path / "junk.plan"
    plan.write_bytes(b"\0" * 64)
    sidecar_path(plan).write_text(json.dumps(engine_meta("tiny", (H, W)).to_dict()))
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
