"""What this x86 CPU can do for int8 and bf16, read once from ``/proc/cpuinfo``: the one place
that decides "does this CPU have VNNI / native bf16 / AMX". No torch, no numpy.

The classes matter because ONNX Runtime and oneDNN pick their kernels by them: int8 runs on
VNNI's ``vpdpbusd`` (or AMX tiles) where present and on AVX2's saturating ``vpmaddubsw``
elsewhere; bf16 is native only with AVX-512 BF16 or AMX, emulated (slower than fp32) otherwise.

>>> features = read_cpu_features()
>>> features.isa_class, features.native_bf16
('avx512_vnni', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The flags reported in run and bench JSON (the ones the kernels above choose by), in order.
REPORTED = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_int8", "amx_bf16")
# From the fastest int8 path down; ``isa_class`` names the first one a CPU has.
ISA_CLASSES = ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "older")


@dataclass(frozen=True)
class CpuFeatures:
    """A CPU's model name and feature flags (as /proc/cpuinfo spells them)."""

    model: str
    flags: frozenset[str]

    @property
    def vnni(self) -> bool:
        """int8 dot products with 32-bit sums (AVX-512 VNNI or AVX-VNNI): no saturation."""
        return bool({"avx512_vnni", "avx_vnni"} & self.flags)

    @property
    def amx(self) -> bool:
        """AMX tiles (Intel Sapphire Rapids and newer): int8 and bf16 matrix units."""
        return "amx_tile" in self.flags

    @property
    def native_bf16(self) -> bool:
        """bf16 computed natively (AVX-512 BF16 or AMX-BF16) rather than emulated."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def isa_class(self) -> str:
        """The CPU's class for int8 speed: ``amx``, ``avx512_vnni``, ``avx_vnni``, ``avx512``,
        ``avx2`` or ``older``."""
        if self.amx:
            return "amx"
        if "avx512_vnni" in self.flags:
            return "avx512_vnni"
        if "avx_vnni" in self.flags:
            return "avx_vnni"
        if "avx512f" in self.flags:
            return "avx512"
        return "avx2" if "avx2" in self.flags else "older"

    def reported(self) -> list[str]:
        """The flags of ``REPORTED`` this CPU has, for run and bench JSON (never empty on an
        AVX2 CPU: ``["avx2", "fma"]``)."""
        return [f for f in REPORTED if f in self.flags]


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags in the text of ``/proc/cpuinfo``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CpuFeatures(fields.get("model name", ""), frozenset(fields.get("flags", "").split()))


@lru_cache(maxsize=1)
def read_cpu_features(path: str = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's CPU features; no flags where there is no ``/proc/cpuinfo`` (not Linux)."""
    try:
        return parse_cpuinfo(Path(path).read_text())
    except OSError:
        return CpuFeatures("", frozenset())
