"""``--device`` and ``--precision`` resolution, and the training step's autocast dtype."""

import pytest
import torch

from rtseg import devices
from rtseg.errors import BadInput, MissingDependency


def test_auto_precision_is_fp32_on_the_cpu_and_fp16_is_refused_there():
    cpu = torch.device("cpu")
    assert devices.resolve_precision("auto", cpu) == "fp32"
    assert devices.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(BadInput, match="fp16 runs on CUDA only"):
        devices.resolve_precision("fp16", cpu)
    with pytest.raises(BadInput, match="use auto, fp32, fp16 or bf16"):
        devices.resolve_precision("int4", cpu)


def test_bf16_on_the_cpu_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(BadInput, match="no native bf16"):
        devices.resolve_precision("bf16", cpu)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.resolve_precision("bf16", cpu) == "bf16"


def test_device_names():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(MissingDependency, match="unknown device"):
        devices.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MissingDependency, match="sees no CUDA GPU"):
            devices.resolve_device("cuda:0")


def test_mixed_precision_dtype_follows_the_device():
    assert devices.amp_dtype(torch.device("cpu"), False) is None
    assert devices.amp_dtype(torch.device("cpu"), True) is torch.bfloat16
    if torch.cuda.is_available():
        major = torch.cuda.get_device_capability()[0]
        want = torch.bfloat16 if major >= 8 else torch.float16
        assert devices.amp_dtype(torch.device("cuda"), True) is want
