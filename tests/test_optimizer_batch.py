"""RecommendBatchSize is the engine's memory model (one model, not two copies): the answer is the largest
batch whose predicted peak fits, with the accumulation that reaches the target."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.memory import ModelShape, predict_peak_memory
from services.optimizer.batch import BatchSizeRequest, recommend_batch_size

SMOLLM2 = ModelShape(
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    vocab_size=49152,
)


@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "full"])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_largest_batch_that_fits_per_the_engine(method, checkpoint):
    budget = 6 * 10**9
    rec = recommend_batch_size(BatchSizeRequest(SMOLLM2, method, 512, budget, grad_checkpoint=checkpoint))
    assert rec.fits and rec.batch_size == rec.largest_fitting_batch and rec.grad_accumulation == 1
    kwargs = {"grad_checkpoint": checkpoint}
    assert rec.estimate == predict_peak_memory(SMOLLM2, method, rec.batch_size, 512, **kwargs)
    assert rec.estimate.peak_bytes <= budget
    assert predict_peak_memory(SMOLLM2, method, rec.batch_size + 1, 512, **kwargs).peak_bytes > budget
    assert f"{rec.batch_size}" in rec.explanation


def test_checkpointing_fits_a_larger_batch_and_accumulation_reaches_the_target():
    plain = recommend_batch_size(
        BatchSizeRequest(SMOLLM2, "lora", 1024, 4 * 10**9, target_effective_batch=256)
    )
    ckpt = recommend_batch_size(
        BatchSizeRequest(SMOLLM2, "lora", 1024, 4 * 10**9, grad_checkpoint=True, target_effective_batch=256)
    )
    assert ckpt.largest_fitting_batch > plain.largest_fitting_batch
    for rec in (plain, ckpt):
        assert rec.batch_size * rec.grad_accumulation >= 256
        assert rec.batch_size * (rec.grad_accumulation - 1) < 256


def test_nothing_fits():
    rec = recommend_batch_size(BatchSizeRequest(SMOLLM2, "full", 2048, 10**8))
    assert not rec.fits and rec.batch_size == 1 and rec.largest_fitting_batch == 0
    assert "gradient checkpointing" in rec.explanation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "prefix"}, "method"),
        ({"seq_len": 0}, "seq_len"),
        ({"memory_budget_bytes": 0}, "memory_budget_gb"),
        ({"rank": 0}, "rank"),
        ({"quant_bits": 3}, "quant_bits"),
        ({"shape": ModelShape(0, 1, 1, 1, 1, 1, 1)}, "model_shape.hidden_size"),
    ],
)
def test_bad_requests_name_the_field(kwargs, field):
    base = {"shape": SMOLLM2, "method": "lora", "seq_len": 256, "memory_budget_bytes": 10**9}
    with pytest.raises(InvalidArgument) as info:
        recommend_batch_size(BatchSizeRequest(**{**base, **kwargs}))
    assert info.value.field == field
