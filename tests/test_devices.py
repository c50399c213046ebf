"""``--device`` and ``--precision`` resolution, and the training step's autocast dtype. CUDA
devices are simulated: ``torch.cuda.is_available`` and ``get_device_capability`` are
monkeypatched, so every rule is checked on every machine."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from rtseg import devices
from rtseg.cpu_features import CpuFeatures
from rtseg.errors import BadInput, MissingDependency

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture()
def gpu_of(monkeypatch):
    """``gpu_of(major, minor)``: the CUDA GPU torch reports has that compute capability."""
    def set_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
    return set_capability


def test_auto_precision_is_fp32_on_the_cpu_and_fp16_is_refused_there():
    assert devices.resolve_precision("auto", CPU) == "fp32"
    assert devices.resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(BadInput, match="fp16 runs on CUDA only"):
        devices.resolve_precision("fp16", CPU)
    with pytest.raises(BadInput, match="use auto, fp32, fp16 or bf16"):
        devices.resolve_precision("int4", CPU)


def test_auto_precision_is_fp16_on_cuda(gpu_of):
    gpu_of(7, 5)
    assert devices.resolve_precision("auto", CUDA) == "fp16"
    assert devices.resolve_precision("fp16", CUDA) == "fp16"
    assert devices.resolve_precision("fp32", CUDA) == "fp32"


@pytest.mark.parametrize("major, minor", [(7, 0), (7, 5)])
def test_bf16_is_refused_below_compute_capability_8(major, minor, gpu_of):
    gpu_of(major, minor)
    with pytest.raises(BadInput) as refused:
        devices.resolve_precision("bf16", CUDA)
    message = str(refused.value)
    assert "\n" not in message
    assert "bf16 needs a GPU of compute capability 8.0 or newer" in message
    assert "use fp16" in message


@pytest.mark.parametrize("major, minor", [(8, 0), (8, 6), (9, 0)])
def test_bf16_runs_from_compute_capability_8(major, minor, gpu_of):
    gpu_of(major, minor)
    assert devices.resolve_precision("bf16", CUDA) == "bf16"


@pytest.mark.parametrize("flags, native", [
    ("avx2 fma", False),                                  # AVX2-only (Zen 2/3, Haswell..)
    ("avx2 fma avx512f avx512bw avx512_vnni", False),     # Cascade Lake: VNNI, no bf16
    ("avx2 fma avx512f avx512_vnni avx512_bf16", True),   # Zen 4, Cooper Lake
    ("avx2 fma avx512f avx512_vnni amx_tile amx_int8 amx_bf16", True),  # Sapphire Rapids
])
def test_bf16_on_the_cpu_only_where_its_features_say_native(flags, native, monkeypatch):
    """Decided from the CPU's own feature flags, so the refusal is checked on every CPU."""
    monkeypatch.setattr(devices, "read_cpu_features",
                        lambda: CpuFeatures("test CPU", frozenset(flags.split())))
    if native:
        assert devices.resolve_precision("bf16", CPU) == "bf16"
    else:
        with pytest.raises(BadInput, match="this CPU has no native bf16 .* use fp32"):
            devices.resolve_precision("bf16", CPU)


def test_device_names(monkeypatch):
    assert devices.resolve_device("cpu") == CPU
    with pytest.raises(MissingDependency, match="unknown device"):
        devices.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == CPU
    for name in ("cuda", "cuda:0"):
        with pytest.raises(MissingDependency, match="sees no CUDA GPU"):
            devices.resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == CUDA
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)


def test_training_autocast_dtype(gpu_of):
    assert devices.amp_dtype(CPU, False) is None
    assert devices.amp_dtype(CPU, True) is torch.bfloat16
    gpu_of(7, 5)  # Turing: no bf16 tensor cores, fp16 with a loss scaler
    assert devices.amp_dtype(CUDA, False) is None
    assert devices.amp_dtype(CUDA, True) is torch.float16
    gpu_of(8, 0)
    assert devices.amp_dtype(CUDA, True) is torch.bfloat16


def test_an_fp16_training_step_with_a_loss_scaler_learns():
    """The step a GPU below sm80 takes (fp16 autocast, GradScaler on), run on the CPU: the
    loss is scaled for backward and unscaled before plain SGD steps, so it falls instead of
    blowing up — a step that skipped the unscale would move the weights 65536 times too far."""
    from rtseg.training.distributed import DistInfo
    from rtseg.training.epoch import train_one_epoch

    torch.manual_seed(0)
    frames = torch.rand(8, 3, 8, 8)
    labels = frames.argmax(dim=1)  # learnable by a 1x1 convolution
    loader = [(frames[i:i + 2], labels[i:i + 2]) for i in range(0, 8, 2)]
    model = nn.Conv2d(3, 3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    losses, step = [], 0
    for _ in range(5):
        loss, step = train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, CPU,
                                     torch.float16, scaler, base_lr=0.5, step=step,
                                     total_steps=100, info=DistInfo(), show=False, desc="")
        losses.append(loss)
    assert step == 20 and scaler.get_scale() == 65536.0  # no step was skipped as overflowed
    assert model.weight.dtype == torch.float32  # fp32 master weights
    assert losses[-1] < 0.9 * losses[0], losses


def test_cudnn_autotune_is_set_inside_the_block_and_restored_after_a_failure():
    from rtseg.devices import cudnn_autotune

    before = torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError):
        with cudnn_autotune(not before):
            assert torch.backends.cudnn.benchmark is (not before)
            raise RuntimeError("a failing training step")
    assert torch.backends.cudnn.benchmark is before


@pytest.fixture()
def both_forms(tmp_path, monkeypatch):
    """A bundled model in both forms (weights and int8 graph) in ``$RTSEG_ENGINES``."""
    for name in ("m.safetensors", "m_int8.onnx"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("RTSEG_ENGINES", str(tmp_path))
    return tmp_path


def test_the_bundled_form_is_chosen_without_pytorch_where_the_driver_sees_no_gpu(both_forms):
    """`rtseg run` without --engine, on a machine whose CUDA driver sees no GPU: the int8
    graph, and PyTorch (a second or more to import) is never loaded to decide it."""
    from rtseg.cuda_driver import driver_gpu_count

    if driver_gpu_count():
        pytest.skip("the CUDA driver sees a GPU here: the choice asks PyTorch")
    code = ("import sys; from rtseg.engines import bundled_engine; "
            "print(bundled_engine('auto', 'auto').name, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["m_int8.onnx", "False"]


@pytest.mark.parametrize("torch_sees_cuda, form", [(True, "m.safetensors"), (False, "m_int8.onnx")])
def test_where_the_driver_sees_a_gpu_pytorch_decides_the_bundled_form(
        monkeypatch, both_forms, torch_sees_cuda, form):
    from rtseg import engines

    monkeypatch.setattr(engines, "driver_gpu_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_sees_cuda)
    assert engines.bundled_engine("auto", "auto").name == form
