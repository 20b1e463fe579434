"""Builds the tiny random-init Llama used by fast tests: ~3.4M parameters (mostly the tied embedding), the
default model's tokenizer and chat template, so every code path (chat data, masking, generation) is real."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import llama

from .model_dir import write_model_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def tiny_config(vocab_size: int, source: dict) -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "rope_traditional": False,
        **{k: source[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in source},
    }


def build(tokenizer_from: Path, out: Path, seed: int = 0) -> Path:
    source = json.loads((tokenizer_from / "config.json").read_text())
    config = tiny_config(source["vocab_size"], source)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))

    def add_tokenizer(tmp: Path) -> None:
        for name in TOKENIZER_FILES:
            shutil.copy(tokenizer_from / name, tmp / name)

    return write_model_dir(out, config, weights, add_tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokenizer-from", type=Path, required=True, help="model dir whose tokenizer to reuse"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {build(args.tokenizer_from, args.out, args.seed)}")


if __name__ == "__main__":
    main()
