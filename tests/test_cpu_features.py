"""The CPU's int8/bf16 features, read from /proc/cpuinfo text: the classes the int8 and bf16
choices depend on, checked on made-up cpuinfo of each class (so on every machine)."""

import pytest

from rtseg.cpu_features import parse_cpuinfo, read_cpu_features

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx"
CPUS = {  # flags as Linux prints them, trimmed
    "AMD EPYC 7B12 (Zen 2)": (f"{BASE} avx2 fma bmi2", "avx2", ["avx2", "fma"]),
    "Intel Xeon Platinum 8280 (Cascade Lake)": (
        f"{BASE} avx2 fma avx512f avx512bw avx512_vnni", "avx512_vnni",
        ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]),
    "AMD EPYC 9R14 (Zen 4)": (
        f"{BASE} avx2 fma avx512f avx512bw avx512_vnni avx512_bf16", "avx512_vnni",
        ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"]),
    "Intel Core i7-12700 (Alder Lake)": (f"{BASE} avx2 fma avx_vnni", "avx_vnni",
                                         ["avx2", "fma", "avx_vnni"]),
    "Intel Xeon Platinum 8480+ (Sapphire Rapids)": (
        f"{BASE} avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8",
        "amx", ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_int8", "amx_bf16"]),
    "Intel Xeon (Skylake-SP)": (f"{BASE} avx2 fma avx512f avx512bw", "avx512",
                                ["avx2", "fma", "avx512f", "avx512bw"]),
}


def _cpuinfo(model: str, flags: str) -> str:
    one = f"processor\t: {{n}}\nvendor_id\t: x\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
    return one.format(n=0) + one.format(n=1)


@pytest.mark.parametrize("model", CPUS)
def test_each_cpu_class_is_named_from_its_flags(model):
    flags, isa_class, reported = CPUS[model]
    cpu = parse_cpuinfo(_cpuinfo(model, flags))
    assert cpu.model == model
    assert cpu.isa_class == isa_class
    assert cpu.reported() == reported  # never empty on an AVX2 CPU
    assert cpu.vnni == ("vnni" in isa_class or isa_class == "amx")
    assert cpu.native_bf16 == ("avx512_bf16" in flags)
    assert cpu.amx == (isa_class == "amx")


def test_no_cpuinfo_means_no_features(tmp_path):
    read_cpu_features.cache_clear()
    try:
        cpu = read_cpu_features(str(tmp_path / "missing"))
        assert cpu.flags == frozenset() and cpu.isa_class == "older" and not cpu.native_bf16
    finally:
        read_cpu_features.cache_clear()
