"""The singular values of a LoRA update: what the gateway reports of an adapter and what the optimizer's rank
recommendation is computed from."""

from __future__ import annotations

import numpy as np


def update_singular_values(lora_a: np.ndarray, lora_b: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Singular values of scale * lora_a @ lora_b (in x out, rank <= r), from an r x r matrix."""
    qa, ra = np.linalg.qr(np.asarray(lora_a, dtype=float))  # lora_a = Qa Ra
    qb, rb = np.linalg.qr(np.asarray(lora_b, dtype=float).T)  # lora_b^T = Qb Rb
    # lora_a @ lora_b = Qa (Ra Rb^T) Qb^T with orthonormal Qa, Qb: same singular values as Ra Rb^T.
    return abs(scale) * np.linalg.svd(ra @ rb.T, compute_uv=False)
