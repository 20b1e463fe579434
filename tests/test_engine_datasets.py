"""Data loading: the three formats, prompt masking, packing, and errors that name file and line."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load as mlx_load

from services.common.datasets.samples import BatchPlan, load_dataset, load_split, pack_rows
from services.trainer.engine.errors import DatasetError
from services.trainer.engine.methods import loss_fn


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return mlx_load(str(tiny_model))


def write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "lines, problem, line_no",
    [
        (['{"text": "ok"}', "{not json"], "invalid JSON", 2),
        ([{"prompt": "a", "completion": "b"}, {"prompt": "c"}], "missing key 'completion'", 2),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "last message must be the assistant", 1),
        ([{"foo": 1}], "no known format", 1),
        (["[1, 2]"], "expected a JSON object", 1),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, tiny, lines, problem, line_no):
    path = write(tmp_path / "train.jsonl", lines)
    with pytest.raises(DatasetError) as err:
        load_split(path, tiny[1], 128)
    assert err.value.line == line_no
    assert problem in str(err.value)
    assert f"train.jsonl:{line_no}" in str(err.value)


def test_empty_and_missing_files(tmp_path, tiny):
    with pytest.raises(DatasetError, match="empty"):
        load_split(write(tmp_path / "train.jsonl", []), tiny[1], 128)
    with pytest.raises(DatasetError, match="valid.jsonl.*not found"):
        write(tmp_path / "train.jsonl", [{"text": "hello"}])
        load_dataset(tmp_path, tiny[1], 128)


def test_long_samples_are_truncated_and_counted(tmp_path, tiny):
    path = write(tmp_path / "train.jsonl", [{"text": "word " * 400}, {"text": "short"}])
    split = load_split(path, tiny[1], 64)
    assert split.truncated == 1
    assert max(len(s.tokens) for s in split.samples) == 65


def test_prompt_is_masked_for_completion_and_chat(tmp_path, tiny):
    tokenizer = tiny[1]
    comp = load_split(write(tmp_path / "c.jsonl", [{"prompt": "Say hi", "completion": "hi"}]), tokenizer, 128)
    sample = comp.samples[0]
    learned = tokenizer.decode(list(sample.tokens[sample.prompt_len :]))
    assert learned.startswith("hi") and "Say hi" not in learned
    text = load_split(write(tmp_path / "t.jsonl", [{"text": "plain text"}]), tokenizer, 128)
    assert text.samples[0].prompt_len == 0


def test_packing_keeps_samples_apart(chat_data, tiny):
    split = load_split(chat_data / "train.jsonl", tiny[1], 128)
    plan = BatchPlan(split, batch_size=2, max_seq_length=128, packing=True, seed=0)
    seen = []
    for index in range(plan.batches_per_epoch()):
        batch = plan.batch(0, index)
        # Padded to the longest row rounded up to 32 (at most max_seq_length), never cutting a sample.
        longest = int((batch.segments > 0).sum(axis=1).max())
        assert batch.inputs.shape == (2, min(128, 32 * -(-longest // 32)))
        for row in range(2):
            seg, mask = batch.segments[row], batch.loss_mask[row]
            # no loss where the next token belongs to another sample, nor on padding
            boundary = np.nonzero(seg[1:] != seg[:-1])[0]
            assert not mask[boundary].any()
            assert not mask[seg == 0].any()
            seen.extend(int(s) for s in np.unique(seg[seg > 0]))
    # Every row holds at least one sample and packing beats one-sample-per-row.
    rows = pack_rows(split.samples, np.arange(len(split.samples)), 129)
    assert sorted(i for r in rows for i in r) == list(range(len(split.samples)))
    assert len(rows) < len(split.samples)


def test_plan_is_deterministic_per_seed_and_epoch(chat_data, tiny):
    split = load_split(chat_data / "train.jsonl", tiny[1], 128)
    a = BatchPlan(split, 2, 128, True, seed=1)
    b = BatchPlan(split, 2, 128, True, seed=1)
    assert np.array_equal(a.batch(3, 1).inputs, b.batch(3, 1).inputs)
    assert not np.array_equal(a.batch(0, 0).inputs, a.batch(1, 0).inputs)


def test_packed_loss_equals_separate_losses(chat_data, tiny):
    """The block-diagonal mask makes a packed row compute exactly what separate rows would."""
    model, tokenizer = tiny
    split = load_split(chat_data / "train.jsonl", tokenizer, 256)
    packed = BatchPlan(split, 1, 256, packing=True, seed=0)
    batch = packed.batch(0, 0, shuffle=False)
    members = np.unique(batch.segments[batch.segments > 0])
    assert len(members) >= 2, "the test needs a row with two samples"
    loss, ntoks = loss_fn(
        model, *(mx.array(x) for x in (batch.inputs, batch.targets, batch.loss_mask, batch.segments))
    )
    total = 0.0
    for k in members:
        keep = batch.segments[0] == k
        ids = batch.inputs[0][keep][None]
        tgt = batch.targets[0][keep][None]
        msk = batch.loss_mask[0][keep][None]
        part, n = loss_fn(model, mx.array(ids), mx.array(tgt), mx.array(msk), None)
        total += part.item() * n.item()
    assert total / ntoks.item() == pytest.approx(loss.item(), rel=1e-5)


def _learned_text(tokenizer, batch, row=0):
    """The target tokens the loss mask selects in one row, decoded."""
    picked = batch.targets[row][batch.loss_mask[row] > 0]
    return tokenizer.decode(picked.tolist())


@pytest.mark.parametrize("mask", ["assistant", "last_assistant", "none"])
def test_every_assistant_turn_of_a_two_turn_chat_carries_the_loss(tmp_path, tiny, mask):
    tokenizer = tiny[1]
    record = {
        "messages": [
            {"role": "user", "content": "First question?"},
            {"role": "assistant", "content": "Answer one."},
            {"role": "user", "content": "Second question?"},
            {"role": "assistant", "content": "Answer two."},
        ]
    }
    other = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    split = load_split(write(tmp_path / "train.jsonl", [record, other]), tokenizer, 128, mask)
    spans = split.samples[0].loss_spans
    assert len(spans) == {"assistant": 2, "last_assistant": 1, "none": 1}[mask]
    # Packed with the other sample into one row: the mask and segments still keep them apart.
    plan = BatchPlan(split, batch_size=1, max_seq_length=128, packing=True, seed=0)
    batch = plan.batch(0, 0, shuffle=False)
    assert set(batch.segments[0][batch.segments[0] > 0].tolist()) == {1, 2}
    learned = _learned_text(tokenizer, batch)
    assert ("Answer two." in learned) and ("Hello." in learned)
    assert ("Answer one." in learned) == (mask != "last_assistant")
    assert ("question?" in learned) == (mask == "none")
    # No target crosses from one packed sample into the next.
    seg = batch.segments[0]
    crossing = (seg[1:] != seg[:-1]) & (batch.loss_mask[0][:-1] > 0)
    assert not crossing.any()


def test_spec_mask_prompt_accepts_the_old_booleans():
    from services.common.spec import RunSpec, SpecError

    assert RunSpec.from_dict({"mask_prompt": True}).mask_prompt == "assistant"
    assert RunSpec.from_dict({"mask_prompt": "false"}).mask_prompt == "none"
    assert RunSpec().mask_prompt == "assistant"
    with pytest.raises(SpecError, match="mask_prompt"):
        RunSpec.from_dict({"mask_prompt": "prompts"})
