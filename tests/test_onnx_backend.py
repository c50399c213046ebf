"""ONNX Runtime backend: a deploy graph's labels and frame checks, the execution providers
and the TensorRT provider's options (an explicit profile for ``frames`` and an engine cache)
and batch splitting, on the CPU; whether the provider really keeps one engine across batch
sizes needs onnxruntime-gpu with TensorRT (``-m tensorrt``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from rtseg.backends import onnx_backend
from rtseg.backends.onnx_backend import (
    TRT_PROFILE_MAX_BATCH,
    OnnxBackend,
    choose_providers,
    graph_input_size,
    tensorrt_provider_options,
)
from rtseg.errors import BadInput, MissingDependency

from helpers import CLASSES, CONTRACT_SIZE, contract_model, save_tiny_graph

H, W = CONTRACT_SIZE
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_ONLY = ["CPUExecutionProvider"]


def test_a_deploy_graph_labels_frames_and_checks_their_size(tmp_path):
    with OnnxBackend(save_tiny_graph(tmp_path / "tiny.onnx", input_size=(H, W)), "cpu") as b:
        frames = np.zeros((2, H, W, 3), np.uint8)
        frames[..., 1] = 7  # green channel wins the argmax over BGR
        assert (b.infer(frames) == 1).all()
        with pytest.raises(BadInput, match="frames must be uint8"):
            b.infer(np.zeros((1, H + 32, W, 3), np.uint8))


def test_tensorrt_provider_options_give_frames_a_profile(tmp_path):
    options = tensorrt_provider_options(0, (64, 96), cache_dir=tmp_path)
    assert options == {
        "device_id": 0,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(tmp_path),
        # "name:d0xd1x..." as ONNX Runtime documents it; batch 1 .. 32, optimised for 1
        "trt_profile_min_shapes": "frames:1x64x96x3",
        "trt_profile_opt_shapes": "frames:1x64x96x3",
        "trt_profile_max_shapes": f"frames:{TRT_PROFILE_MAX_BATCH}x64x96x3",
    }
    options = tensorrt_provider_options(1, [360, 480], max_batch=8, opt_batch=4,
                                        cache_dir=tmp_path)
    assert options["device_id"] == 1
    assert options["trt_profile_opt_shapes"] == "frames:4x360x480x3"
    assert options["trt_profile_max_shapes"] == "frames:8x360x480x3"
    assert not any(k.startswith("trt_profile") for k in
                   tensorrt_provider_options(0, None, cache_dir=tmp_path))
    with pytest.raises(ValueError, match="opt_batch"):
        tensorrt_provider_options(0, (64, 96), max_batch=2, opt_batch=3)


def test_choose_providers_passes_the_profile_to_tensorrt_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (trt, trt_options), (cuda, cuda_options), cpu = choose_providers("cuda:1", GPU,
                                                                     input_size=(64, 96))
    assert (trt, cuda, cpu) == tuple(GPU)
    assert trt_options["device_id"] == 1 and cuda_options == {"device_id": 1}
    assert trt_options["trt_profile_max_shapes"].startswith("frames:")
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "rtseg" / "onnxruntime-tensorrt")
    assert choose_providers("cpu", GPU, input_size=(64, 96)) == CPU_ONLY
    assert choose_providers("auto", CPU_ONLY) == CPU_ONLY
    with pytest.raises(MissingDependency, match="onnxruntime-gpu"):
        choose_providers("cuda", CPU_ONLY)


def test_graph_input_size(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model(), path)
    assert graph_input_size(path) == (H, W)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 not a model")
    assert graph_input_size(junk) is None


def test_backend_asks_the_tensorrt_provider_for_the_graphs_profile(tmp_path, monkeypatch):
    """Wiring only: the session ONNX Runtime creates here runs on the CPU, but the provider
    list it was handed must hold the profile for this graph's H and W."""
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model(), path)
    real_session, handed = onnx_backend.ort.InferenceSession, []

    def spy(model, sess_options=None, providers=None):
        handed.append(providers)
        return real_session(model, sess_options=sess_options,
                            providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnx_backend.ort, "get_available_providers", lambda: GPU)
    monkeypatch.setattr(onnx_backend.ort, "InferenceSession", spy)
    with OnnxBackend(path, "auto") as backend:
        assert backend.device == "cpu" and backend.max_batch is None
    (trt_name, trt_options), *_ = handed[0]
    assert trt_name == "TensorrtExecutionProvider"
    assert trt_options["trt_profile_min_shapes"] == f"frames:1x{H}x{W}x3"
    assert trt_options["trt_profile_max_shapes"] == f"frames:{TRT_PROFILE_MAX_BATCH}x{H}x{W}x3"


def test_batches_beyond_the_profile_are_split(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model(), path)
    frames = np.random.default_rng(4).integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    with OnnxBackend(path, "cpu") as backend:
        whole = backend.infer(frames)
        backend.max_batch = 2  # as on the TensorRT provider, with a profile max of 2
        split = backend.infer(frames)
        one = backend.infer(frames[:1])
    assert whole.shape == (5, H, W) and int(whole.max()) < CLASSES
    np.testing.assert_array_equal(whole, split)
    np.testing.assert_array_equal(whole[:1], one)


@pytest.mark.tensorrt
def test_tensorrt_provider_keeps_one_engine_across_batch_sizes(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no TensorRT execution provider "
                    "(pip install onnxruntime-gpu, with TensorRT's libraries)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = tmp_path / "tiny.onnx"
    onnx.save(contract_model(), path)
    frames = np.random.default_rng(5).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    cache = tmp_path / "rtseg" / "onnxruntime-tensorrt"
    with OnnxBackend(path, "cuda") as backend:
        if backend.device != "tensorrt":
            pytest.skip(f"onnxruntime could not start its TensorRT provider ({backend.device})")
        first = backend.infer(frames[:1])
        built = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.engine")}
        assert built, "the provider wrote no engine to its cache"
        rest = [backend.infer(frames[:n]) for n in (3, 2, 1)]  # a last, partial batch too
    # A rebuild for a new batch size would write the cached engine again.
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.engine")} == built
    np.testing.assert_array_equal(rest[2], first)
    assert rest[0].shape == (3, H, W)


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert onnx_backend.tensorrt_cache_dir() == Path(tmp_path, "rtseg", "onnxruntime-tensorrt")
