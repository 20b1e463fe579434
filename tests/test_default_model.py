"""The converted default model (SmolLM2-135M-Instruct from its GGUF) is right, and fine-tuning it works.

These use the real 135M model, so they are few and short.
"""

import mlx.core as mx
import pytest
from mlx_lm import generate
from mlx_lm.utils import load as mlx_load

from services.common.paths import default_data
from services.common.spec import RunSpec
from services.trainer.engine import api
from services.trainer.engine.metrics import read_metrics

PROMPT = (
    "The Eiffel Tower was built for the 1889 World's Fair in Paris. At 330 metres it was the tallest "
    "structure in the world until 1930, and it is now one of the most visited monuments anywhere."
)
# Measured fraction of positions where the float32 and the 4-bit variant pick the same next token.
ARGMAX_AGREEMENT_FLOOR = 0.95


def ask(path, question):
    model, tokenizer = mlx_load(str(path))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True
    )
    return generate(model, tokenizer, prompt, max_tokens=24)


@pytest.mark.parametrize("variant", ["default_model", "default_model_4bit"])
def test_greedy_answer_mentions_paris(variant, request):
    answer = ask(request.getfixturevalue(variant), "What is the capital of France?")
    assert "Paris" in answer, answer


def test_float_and_4bit_variants_agree_on_next_tokens(default_model, default_model_4bit):
    full, tokenizer = mlx_load(str(default_model))
    quant, _ = mlx_load(str(default_model_4bit))
    tokens = mx.array([tokenizer.encode(PROMPT)])
    same = (full(tokens).argmax(-1) == quant(tokens).argmax(-1)).astype(mx.float32).mean().item()
    print(f"argmax agreement float32 vs 4-bit: {same:.3f} over {tokens.shape[1]} positions")
    assert same >= ARGMAX_AGREEMENT_FLOOR


def test_tokenizer_matches_the_gguf_conventions(default_model):
    _, tokenizer = mlx_load(str(default_model))
    ids = tokenizer.encode("In 2024 there were 365 days")
    pieces = [tokenizer.decode([i]) for i in ids]
    assert ["2", "0", "2", "4"] == [p.strip() for p in pieces if p.strip().isdigit()][
        :4
    ]  # digits split one by one
    assert ids[0] != tokenizer.bos_token_id  # no BOS added
    assert tokenizer.decode(ids) == "In 2024 there were 365 days"


def test_lora_on_the_default_model_lowers_valid_loss(default_model, tmp_path):
    spec = RunSpec.from_dict(
        dict(
            model=str(default_model),
            data=str(default_data()),
            iters=30,
            batch_size=2,
            max_seq_length=256,
            eval_every=30,
            val_batches=2,
            save_every=0,
            test_samples=0,
            warmup_steps=3,
            learning_rate=5e-4,
        )
    )
    result = api.train(spec, tmp_path / "run")
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 30
    assert evals[-1]["valid_loss"] < evals[0]["valid_loss"] * 0.8, evals
    assert result.status == "succeeded"
