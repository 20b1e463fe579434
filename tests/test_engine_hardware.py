"""Hardware detection and the CPU BLAS: what a run's log says about the machine it trains on."""

from __future__ import annotations

import platform

import pytest

from services.trainer.engine.blas import coretype_warning, cpu_flags, loaded_blas
from services.trainer.engine.hardware import backend_label, detect_hardware

AVX512 = {"sse2", "avx2", "avx512f", "avx512bw"}


@pytest.mark.parametrize(
    ("coretype", "flags", "warns"),
    [
        ("Haswell", AVX512, True),  # AVX2 kernels on an AVX-512 CPU: the case measured here
        ("zen", AVX512, True),
        ("Haswell", {"sse2", "avx2"}, False),  # an AVX2 CPU: Haswell kernels are its best
        ("SkylakeX", AVX512, False),  # already AVX-512 kernels
        ("", AVX512, False),  # OpenBLAS picks by itself
    ],
)
def test_a_forced_older_openblas_core_type_is_called_out(coretype, flags, warns):
    env = {"OPENBLAS_CORETYPE": coretype} if coretype else {}
    message = coretype_warning(env, flags)
    assert bool(message) is warns
    if warns:
        assert f"OPENBLAS_CORETYPE={coretype}" in message and "AVX-512" in message


def test_hardware_and_the_blas_in_use_are_read_from_this_machine():
    hw = detect_hardware()
    assert hw.total_memory_bytes > 0 and 0 < hw.available_memory_bytes <= hw.system_memory_bytes
    if platform.system() == "Linux":
        assert cpu_flags()  # /proc/cpuinfo has them
    if hw.device_kind == "cpu" and platform.system() == "Linux":
        # make test preloads Debian's OpenBLAS, as the trainer does for its run processes.
        assert loaded_blas().startswith("optimized BLAS"), loaded_blas()
        assert backend_label().startswith("cpu (optimized BLAS")
