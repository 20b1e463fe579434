"""The contenders of bench/engine.py: which runner, which data, which method, in the order the tables list them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    runner: str  # engine | mlx_lm | torch | sgemm | profile
    data: str = "synthetic"  # synthetic | chat
    method: str = "lora"
    packing: bool = True
    label: str = ""
    optional: bool = False  # run only when named in --only
    native_jit: bool = False  # MLX's CPU JIT (mx.compile'd kernels) built with -march=native


CASES = (
    Case("sgemm", "sgemm", label="MLX sgemm probe"),
    Case("ours_lora", "engine", label="ours LoRA"),
    Case("ours_lora_native_jit", "engine", native_jit=True, label="ours LoRA, JIT -march=native"),
    Case("mlx_lm_lora", "mlx_lm", label="mlx_lm.lora LoRA"),
    Case("torch_lora", "torch", label="PyTorch+PEFT LoRA"),
    Case("ours_dora", "engine", method="dora", label="ours DoRA"),
    Case("ours_full", "engine", method="full", label="ours full"),
    Case("ours_qlora", "engine", method="qlora", label="ours QLoRA (4-bit base)"),
    Case("ours_lora_chat", "engine", data="chat", label="ours LoRA, packed"),
    Case("mlx_lm_lora_chat", "mlx_lm", data="chat", label="mlx_lm.lora LoRA, padded"),
    Case(
        "ours_lora_chat_unpacked",
        "engine",
        data="chat",
        packing=False,
        label="ours LoRA, padded",
        optional=True,
    ),
    Case("profile", "profile", label="profile of our LoRA step"),
)
