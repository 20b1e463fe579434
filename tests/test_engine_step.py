"""The fast training step computes what the plain one did: loss and gradients of the engine's step (fast
LoRA/DoRA layers, head only at loss positions, chunked, length buckets, causal mask for one-sample rows) equal
mlx_lm's layers with the whole float32 logits, to 1e-5 in float32; gradient checkpointing saves the memory the
memory model says it saves."""

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear

from services.common.datasets.samples import BatchPlan, load_dataset
from services.common.memory import predict_for_model
from services.common.spec import RunSpec
from services.trainer.engine import losses
from services.trainer.engine.methods import apply_method, load_base
from services.trainer.engine.training import Loop, build_optimizer, to_device


def prepared(model, data, method, **extra):
    spec = RunSpec.from_dict(
        dict(model=str(model), data=str(data), method=method, dtype="float32", batch_size=4,
             max_seq_length=96, iters=4, warmup_steps=0, **extra)
    )  # fmt: skip
    mx.random.seed(3)
    p = load_base(spec)
    splits = load_dataset(spec.data_path, p.tokenizer, spec.max_seq_length, spec.mask_prompt)
    apply_method(p, spec)
    # Non-zero B (mlx_lm starts it at zero), so the adapters' gradients and outputs are not trivially zero.
    for _, m in p.model.named_modules():
        if isinstance(m, (LoRALinear, DoRALinear)):
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
    return spec, p.model, splits


def as_reference(model) -> None:
    """mlx_lm's own adapter layers, as the engine ran them before the fast path."""
    for _, m in model.named_modules():
        for base in (LoRALinear, DoRALinear):
            if isinstance(m, base):
                m.__class__ = base


def reference_loss(model, inputs, targets, mask, segments):
    return losses.full_logits_cross_entropy(model, inputs, targets, mask, segments)


def max_rel_diff(a: dict, b: dict) -> float:
    fa, fb = dict(tree_flatten(a)), dict(tree_flatten(b))
    assert fa.keys() == fb.keys()
    scale = max(float(mx.abs(v).max()) for v in fb.values())
    return max(float(mx.abs(fa[k] - fb[k]).max()) for k in fa) / scale


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
@pytest.mark.parametrize("packing", [True, False])
def test_fast_step_has_the_reference_loss_and_gradients(tiny_model, chat_data, monkeypatch, method, packing):
    # A small chunk so the head runs in several checkpointed chunks even on the tiny batch.
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 128 * 49152)
    spec, model, splits = prepared(tiny_model, chat_data, method, packing=packing)
    batch = BatchPlan(splits["train"], 4, 96, packing, 0).batch(0, 0)
    fast_arrays = to_device(batch, spec.max_seq_length)
    assert fast_arrays[4] is not None, "the chat batch has prompt positions: the head must be gathered"
    assert fast_arrays[0].shape[1] in (32, 64, 96)  # a length bucket (96 / 4 rounded up to 32)
    plain = (mx.array(batch.inputs), mx.array(batch.targets), mx.array(batch.loss_mask))
    plain_segments = mx.array(batch.segments) if batch.segments is not None else None

    fast = nn.value_and_grad(model, losses.cross_entropy)
    (loss, ntoks), grads = fast(model, *fast_arrays)
    as_reference(model)
    ref = nn.value_and_grad(model, reference_loss)
    (ref_loss, ref_ntoks), ref_grads = ref(model, *plain, plain_segments)
    assert float(ntoks) == float(ref_ntoks) > 0
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))
    assert max_rel_diff(grads, ref_grads) <= 1e-5


def test_length_buckets_bound_the_compiled_shapes(tiny_model, chat_data):
    spec, model, splits = prepared(tiny_model, chat_data, "lora", packing=False)
    plan = BatchPlan(splits["train"], 4, 96, False, 0)
    shapes = {
        (a[0].shape, None if a[4] is None else a[4].shape)
        for a in (to_device(plan.batch(0, i), 96) for i in range(plan.batches_per_epoch()))
    }
    lengths = {s[0][1] for s in shapes}
    assert lengths <= {32, 64, 96}
    assert len(shapes) <= 12


def peak_of_one_step(spec, model, splits, tmp_path) -> int:
    from services.trainer.engine.callbacks import TrainingCallback
    from services.trainer.engine.checkpoint import Progress
    from services.trainer.engine.metrics import MetricsLog

    optimizer = build_optimizer(spec)
    optimizer.init(model.trainable_parameters())
    metrics = MetricsLog(tmp_path / f"metrics-{spec.grad_checkpoint}.jsonl")
    loop = Loop(spec, model, optimizer, splits["train"], splits["valid"], tmp_path, Progress(),
                TrainingCallback(), metrics)  # fmt: skip
    loop._train_step()  # compile and allocate
    mx.eval(model.parameters())
    mx.clear_cache()
    mx.reset_peak_memory()
    loop._train_step()
    metrics.close()
    return mx.get_peak_memory()


def test_grad_checkpoint_saves_what_the_memory_model_predicts(default_model, chat_data, tmp_path):
    """Peak memory of a step on the default model with and without gradient checkpointing (same process,
    same weights): the saving is real and within 25% of the memory model's predicted saving."""
    peaks, predicted = {}, {}
    for checkpointing in (False, True):
        spec = RunSpec.from_dict(
            dict(model=str(default_model), data=str(chat_data), method="lora", batch_size=2,
                 max_seq_length=256, packing=True, iters=4, warmup_steps=0, eval_every=0,
                 grad_checkpoint=checkpointing)
        )  # fmt: skip
        p = load_base(spec)
        splits = load_dataset(spec.data_path, p.tokenizer, spec.max_seq_length, spec.mask_prompt)
        apply_method(p, spec)
        peaks[checkpointing] = peak_of_one_step(spec, p.model, splits, tmp_path)
        predicted[checkpointing] = predict_for_model(spec, p.config, p.quantized).activations_bytes
        del p
    measured = peaks[False] - peaks[True]
    expected = predicted[False] - predicted[True]
    print(f"peak without/with checkpointing {peaks[False] / 2**20:.0f}/{peaks[True] / 2**20:.0f} MiB; "
          f"saving {measured / 2**20:.0f} MiB measured, {expected / 2**20:.0f} MiB predicted")  # fmt: skip
    assert measured > 0.1 * peaks[False]
    assert abs(measured - expected) <= 0.25 * expected


def test_a_loops_loss_is_its_validation_loss_too(tiny_model, chat_data, tmp_path):
    """Loop(loss=...) changes validation as well as the step (a new objective is judged, and early-stopped,
    by itself): a doubled cross-entropy reports twice the default loss over the same valid batches."""
    from services.trainer.engine.callbacks import TrainingCallback
    from services.trainer.engine.checkpoint import Progress
    from services.trainer.engine.evaluation import loss_over
    from services.trainer.engine.metrics import MetricsLog

    spec, model, splits = prepared(tiny_model, chat_data, "lora", val_batches=2)

    def doubled(model, *arrays):
        loss, ntoks = losses.cross_entropy(model, *arrays)
        return 2 * loss, ntoks

    optimizer = build_optimizer(spec)
    optimizer.init(model.trainable_parameters())
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    loop = Loop(spec, model, optimizer, splits["train"], splits["valid"], tmp_path, Progress(),
                TrainingCallback(), metrics, loss=doubled)  # fmt: skip
    plain = loss_over(model, loop.valid_plan, spec.val_batches).loss
    assert loop.evaluate().valid_loss == pytest.approx(2 * plain, rel=1e-5)
    metrics.close()
