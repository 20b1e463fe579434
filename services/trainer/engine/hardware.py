"""What this machine can train on: device kind and name, memory, which MLX backends are available."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
from dataclasses import dataclass
from functools import cache

import mlx.core as mx
import psutil


@dataclass(frozen=True)
class Hardware:
    device_kind: str  # "apple" | "cuda" | "cpu"
    device_name: str  # e.g. "Apple M2 Max", "NVIDIA H100 80GB HBM3", "Intel(R) Xeon(R) ..."
    cpu_name: str
    cpu_cores: int
    total_memory_bytes: int  # memory the device can use (unified memory on Macs, GPU memory on CUDA)
    available_memory_bytes: int
    system_memory_bytes: int
    metal: bool
    cuda: bool
    recommended_working_set_bytes: int  # what MLX recommends keeping under; 0 when it does not say
    mlx_version: str
    platform: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@cache
def cpu_name() -> str:
    system = platform.system()
    try:
        if system == "Darwin":
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        if system == "Linux":
            with open("/proc/cpuinfo") as info:
                for line in info:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def _gpu_info() -> dict:
    try:
        return dict(mx.device_info()) if mx.default_device() == mx.gpu else {}
    except Exception:  # backends without device_info: treat as no GPU facts
        return {}


def detect_hardware() -> Hardware:
    vm = psutil.virtual_memory()
    metal = bool(getattr(mx, "metal", None) and mx.metal.is_available())
    cuda = bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
    info = _gpu_info()
    if metal:
        kind, name = "apple", str(info.get("device_name", cpu_name()))
        total = int(info.get("memory_size", vm.total))
        available = vm.available
    elif cuda:
        kind, name = "cuda", str(info.get("device_name", "CUDA GPU"))
        total = int(info.get("memory_size", 0)) or vm.total
        available = total - int(mx.get_active_memory())
    else:
        kind, name, total, available = "cpu", cpu_name(), vm.total, vm.available
    return Hardware(
        device_kind=kind,
        device_name=name,
        cpu_name=cpu_name(),
        cpu_cores=psutil.cpu_count(logical=True) or 1,
        total_memory_bytes=total,
        available_memory_bytes=available,
        system_memory_bytes=vm.total,
        metal=metal,
        cuda=cuda,
        recommended_working_set_bytes=int(info.get("max_recommended_working_set_size", 0)),
        mlx_version=mx.__version__,
        platform=f"{platform.system()} {platform.machine()}",
    )


def backend_label() -> str:
    hw = detect_hardware()
    if hw.device_kind == "cpu":
        from .blas import loaded_blas

        return f"cpu ({loaded_blas()})"
    return f"gpu ({'Metal' if hw.metal else 'CUDA'}: {hw.device_name})"
