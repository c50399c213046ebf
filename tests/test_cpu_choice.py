"""`rtseg run` / `bench` without --engine on a CPU: the bundled model and form fastest on that
CPU's features — the int8 graph where VNNI or AMX make int8 pay, the light model elsewhere —
said in one line; an explicit --engine is never overridden. Checked with the cpuinfo of six
CPU classes, so on every machine."""

import json
import shutil
import warnings

import pytest

from rtseg import engines
from rtseg.cli import main
from rtseg.cpu_features import parse_cpuinfo
from test_cpu_features import CPUS, _cpuinfo

FASTEST = {"avx2": "light", "avx512": "light", "avx_vnni": "int8", "avx512_vnni": "int8",
           "amx": "int8"}


def _features(model: str):
    return parse_cpuinfo(_cpuinfo(model, CPUS[model][0]))


@pytest.fixture()
def bundle(tmp_path, monkeypatch):
    """A bundled folder as engines/ is laid out: the full model's weights and int8 graph,
    the light model in light/ (empty files: the choice reads names only)."""
    (tmp_path / "light").mkdir()
    for name in ("m.safetensors", "m_int8.onnx", "light/l.onnx", "light/l.safetensors"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("RTSEG_ENGINES", str(tmp_path))
    monkeypatch.setattr(engines, "driver_gpu_count", lambda: 0)
    return tmp_path


@pytest.mark.parametrize("model", CPUS)
def test_each_cpu_class_gets_the_form_fastest_on_it(bundle, model):
    features = _features(model)
    path, why = engines.bundled_choice("auto", "auto", features)
    expected = {"light": bundle / "light" / "l.onnx", "int8": bundle / "m_int8.onnx"}
    assert path == expected[FASTEST[features.isa_class]]
    assert why.startswith(f"model: {path.relative_to(bundle)} ")
    if FASTEST[features.isa_class] == "light":
        assert features.isa_class in why and f"--engine {bundle / 'm_int8.onnx'} " in why
    else:
        assert "where int8 pays" in why


@pytest.mark.parametrize("model", CPUS)
def test_without_a_light_model_every_cpu_gets_the_int8_graph(bundle, model):
    shutil.rmtree(bundle / "light")
    path, _ = engines.bundled_choice("cpu", "auto", _features(model))
    assert path == bundle / "m_int8.onnx"


def test_another_precision_or_a_gpu_takes_the_full_weights(bundle, monkeypatch):
    avx2 = _features("AMD EPYC 7B12 (Zen 2)")
    assert engines.bundled_choice("cpu", "fp32", avx2)[0] == bundle / "m.safetensors"
    monkeypatch.setattr(engines, "driver_gpu_count", lambda: 1)
    monkeypatch.setattr("rtseg.devices.resolve_device", lambda _d: type("D", (), {"type": "cuda"}))
    assert engines.bundled_choice("auto", "auto", avx2)[0] == bundle / "m.safetensors"


@pytest.fixture()
def real_bundle(tmp_path, monkeypatch, engine_path):
    """Two real (untrained) engines told apart by input size: the full one, and light/."""
    from rtseg.engines import untrained_engine

    shutil.copy(engine_path, tmp_path / "full.safetensors")
    (tmp_path / "light").mkdir()
    untrained_engine("unet_resnet18", (64, 64), tmp_path / "light")
    monkeypatch.setenv("RTSEG_ENGINES", str(tmp_path))
    monkeypatch.setattr(engines, "driver_gpu_count", lambda: 0)
    monkeypatch.setattr(engines, "read_cpu_features",
                        lambda: _features("AMD EPYC 7B12 (Zen 2)"))  # AVX2 only
    return tmp_path


def _run(argv, capfd):
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    return code, capfd.readouterr().err


def test_run_says_what_it_picked_and_an_explicit_engine_wins(real_bundle, dashcam_clip,
                                                              tmp_path, capfd):
    out = tmp_path / "run.json"
    code, err = _run(["run", "--source", dashcam_clip, "--max-frames", 3, "--json", out], capfd)
    assert code == 0, err
    picked = [line for line in err.splitlines() if line.startswith("model: ")]
    assert len(picked) == 1 and "light model" in picked[0] and "avx2" in picked[0], err
    result = json.loads(out.read_text())
    assert result["engine"].endswith("light/unet_resnet18_64x64.safetensors")

    full = real_bundle / "full.safetensors"
    code, err = _run(["run", "--source", dashcam_clip, "--engine", full, "--max-frames", 3,
                      "--json", out], capfd)
    assert code == 0, err
    assert not any(line.startswith("model: ") for line in err.splitlines()), err
    assert json.loads(out.read_text())["engine"] == str(full)


def test_bench_without_engine_takes_the_same_choice(real_bundle, tmp_path, capfd):
    out = tmp_path / "bench.json"
    code, err = _run(["bench", "--batch", 1, "--iters", 2, "--warmup", 1, "--json", out], capfd)
    assert code == 0, err
    assert "light model" in err
    assert json.loads(out.read_text())["engine"].endswith("light/unet_resnet18_64x64.safetensors")
