"""Whether this machine has an NVIDIA GPU, asked of the CUDA driver itself (``libcuda`` through
ctypes) instead of PyTorch: on a machine without one, choosing the bundled model's form then
costs no PyTorch import (about 1.4 s of ``rtseg run``'s start on a 2-core CPU)."""

from __future__ import annotations

import ctypes
import sys

_LIBRARIES = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")


def driver_gpu_count() -> int:
    """How many GPUs the CUDA driver sees (honouring ``CUDA_VISIBLE_DEVICES``); 0 where there
    is no driver or it fails to start (also on AMD GPUs: ROCm builds of PyTorch are not asked,
    and the bundled model runs in its CPU form there unless ``--device cuda`` is given)."""
    for name in _LIBRARIES:
        try:
            driver = ctypes.CDLL(name)
            count = ctypes.c_int(0)
            if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
        except (OSError, AttributeError):  # no driver, or a library without these entry points
            continue
        return count.value
    return 0
