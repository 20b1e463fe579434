"""Optimized BLAS for MLX's CPU backend on Linux.

The mlx CPU wheel ships a reference BLAS (~8 GFLOP/s sgemm on a 2-core x86 box); Debian's OpenBLAS
(`libopenblas0-pthread`) measured ~240 GFLOP/s there, and a LoRA step ~10x faster. A BLAS can only be swapped
before the process loads libmlx, so the CLI re-executes itself with LD_PRELOAD, and the trainer service sets
it in the environment its spawned run processes inherit.
"""

from __future__ import annotations

import glob
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

_CANDIDATES = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/*-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblas*.so*",
)
_MARKER = "PEFTLAB_BLAS_REEXEC"


def optimized_blas_path() -> str | None:
    if platform.system() != "Linux" or os.environ.get("PEFTLAB_NO_BLAS_PRELOAD"):
        return None
    for pattern in _CANDIDATES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def preload_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default os.environ) with the optimized BLAS preloaded, when one exists here."""
    env = dict(os.environ if env is None else env)
    path = optimized_blas_path()
    if path and path not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (path, env.get("LD_PRELOAD", "")) if p)
    return env


def ensure_preloaded() -> None:
    """Re-exec the current Python process once with the optimized BLAS preloaded (Linux only; no-op elsewhere).

    Must run before `mlx` is imported. Skipped where the preload is already active, or was tried once.
    """
    env = preload_env()
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD") or os.environ.get(_MARKER):
        return
    if "mlx.core" in sys.modules:
        log.warning("mlx already imported; cannot preload an optimized BLAS in this process")
        return
    env[_MARKER] = "1"
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def loaded_blas() -> str:
    """Which BLAS libmlx resolved to in this process, read from /proc/self/maps on Linux.

    numpy maps its own OpenBLAS too, so only a `libblas.so` counts: the preloaded system one, or the
    reference build bundled in mlx's wheel (mlx_cpu.libs).
    """
    if platform.system() == "Darwin":
        return "Accelerate"
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "libblas" in line}
    except OSError:
        return "unknown"
    preloaded = sorted(lib for lib in libs if "mlx_cpu.libs" not in lib)
    if preloaded:
        return f"optimized BLAS {preloaded[0]}"
    if libs:
        return "reference BLAS bundled with mlx (slow: install libopenblas0-pthread)"
    return "none mapped yet"


# OpenBLAS core types whose kernels stop at AVX2 (or earlier): forcing one on an AVX-512 CPU leaves speed unused.
_PRE_AVX512 = {"haswell", "zen", "sandybridge", "nehalem", "core2", "penryn", "dunnington", "atom", "prescott",
               "excavator", "steamroller", "piledriver", "bulldozer", "barcelona", "opteron", "katmai"}  # fmt: skip


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def coretype_warning(env: dict[str, str] | None = None, flags: set[str] | None = None) -> str:
    """Why OPENBLAS_CORETYPE slows this machine down, or "" when it does not.

    Measured on this project's 2-core AVX-512 EPYC (bench/results/engine.md): with OPENBLAS_CORETYPE=Haswell
    sgemm peaked at 127 GFLOP/s against 228 with it unset, and a LoRA step ran 1.75x slower.
    """
    forced = (os.environ if env is None else env).get("OPENBLAS_CORETYPE", "")
    if not forced or forced.lower() not in _PRE_AVX512:
        return ""
    if "avx512f" not in (cpu_flags() if flags is None else flags):
        return ""
    return (
        f"OPENBLAS_CORETYPE={forced} makes OpenBLAS use pre-AVX-512 kernels on a CPU that has AVX-512: "
        "matmuls can run up to ~1.8x slower; unset it in the trainer's environment unless it is there on purpose"
    )


if __name__ == "__main__":
    # `LD_PRELOAD=$(python -m services.trainer.engine.blas) cmd`: used by the Makefile for tests and benches.
    print(preload_env().get("LD_PRELOAD", ""))
