"""Export: a trained run fused, written as GGUF with an Ollama Modelfile; the GGUF read back (mx.load) into
a model that generates greedily the same tokens as the fused MLX model on a fixed prompt."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
from mlx_lm.generate import generate
from mlx_lm.utils import load

from services.common.spec import RunSpec
from services.trainer.engine.api import train
from services.trainer.engine.export import export_run
from services.trainer.engine.models.convert_gguf import hf_weights

PROMPT = "Ana is 31 and lives in Oslo. Give JSON."


def _greedy(model_dir) -> str:
    model, tokenizer = load(str(model_dir))
    messages = [{"role": "user", "content": PROMPT}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return generate(model, tokenizer, list(prompt), max_tokens=16)


def test_gguf_export_generates_like_the_fused_model(tiny_model, chat_data, tmp_path):
    spec = RunSpec.from_dict(
        {"model": str(tiny_model), "data": str(chat_data), "iters": 3, "warmup_steps": 0, "batch_size": 2}
        | {"max_seq_length": 64, "test_samples": 0, "val_batches": 1, "save_every": 0, "learning_rate": 1e-2}
    )
    run_dir = tmp_path / "run"
    train(spec, run_dir)
    exported = export_run(run_dir)
    assert exported.gguf == run_dir / "export" / "model.gguf"

    config = json.loads((exported.fused_dir / "config.json").read_text())
    tensors, metadata = mx.load(str(exported.gguf), return_metadata=True)
    assert str(metadata["general.architecture"]) == "llama"
    assert len(tensors) == len(mx.load(str(exported.fused_dir / "model.safetensors")))
    # The GGUF's tensors, un-permuted back to mlx_lm's names, as a model dir beside the fused one's tokenizer.
    restored = tmp_path / "from-gguf"
    shutil.copytree(exported.fused_dir, restored, ignore=shutil.ignore_patterns("*.safetensors*"))
    mx.save_safetensors(str(restored / "model.safetensors"), hf_weights(tensors, config))

    fused_answer = _greedy(exported.fused_dir)
    assert fused_answer  # a random-init tiny model says something; what matters is that both say the same
    assert _greedy(restored) == fused_answer

    modelfile = exported.modelfile.read_text()
    assert modelfile.startswith("FROM ./model.gguf")
    assert "<|im_start|>assistant" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
