"""Export a finished run for inference elsewhere: the adapter fused into its base (an mlx_lm model dir), a
GGUF file of it (mlx_lm's writer, Llama-family models) for llama.cpp and Ollama, and an Ollama `Modelfile`
beside it carrying the chat template.

Layout, under `<run_dir>/export/`: `fused/` (config.json, model.safetensors, tokenizer files), `model.gguf`,
`Modelfile`. Ollama: `cd <run_dir>/export && ollama create my-model -f Modelfile`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.common.files import replacing_dir

from .artifacts import fuse
from .errors import ModelError

GGUF_MODEL_TYPES = ("llama", "mistral", "mixtral")  # what mlx_lm's GGUF writer handles
EXPORT_DIR = "export"

# Ollama templates are Go templates, not Jinja: the families we can say exactly, recognised by their markers.
_CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
_LLAMA3 = """<|begin_of_text|>{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
TEMPLATES = {"<|im_start|>": (_CHATML, ["<|im_end|>"]), "<|start_header_id|>": (_LLAMA3, ["<|eot_id|>"])}


@dataclass(frozen=True)
class Exported:
    fused_dir: Path
    gguf: Path
    modelfile: Path


def _default_system(template: str) -> str:
    """The system prompt a template inserts when a conversation has none (SmolLM2's does), so Ollama says it too."""
    marker = "<|im_start|>system\n"
    if "messages[0]['role'] != 'system'" in template and marker in template:
        return template.split(marker, 1)[1].split("<|im_end|>", 1)[0]
    return ""


def modelfile_text(gguf_name: str, chat_template: str) -> str:
    lines = [f"FROM ./{gguf_name}", ""]
    family = next((v for marker, v in TEMPLATES.items() if marker in chat_template), None)
    if family is None:
        # No exact Go translation: Ollama falls back to its own guess; keep the original for a person to port.
        lines += [
            "# The model's chat template (Jinja), for reference; write a TEMPLATE in Go syntax from it:"
        ]
        lines += [f"# {line}" for line in chat_template.splitlines()]
    else:
        template, stops = family
        lines.append(f'TEMPLATE """{template}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in stops]
        system = _default_system(chat_template)
        if system:
            lines.append(f'SYSTEM """{system}"""')
    lines += ["PARAMETER temperature 0", ""]
    return "\n".join(lines)


def _chat_template(model_dir: Path) -> str:
    """Where transformers saved it: chat_template.jinja (transformers >= 4.50) or tokenizer_config.json."""
    if (model_dir / "chat_template.jinja").is_file():
        return (model_dir / "chat_template.jinja").read_text()
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    return str(config.get("chat_template") or "")


def export_run(run_dir: Path, out_dir: Path | None = None) -> Exported:
    """Fuse the run's adapter, write the GGUF and the Modelfile; replaces an earlier export of the run."""
    from mlx.utils import tree_flatten
    from mlx_lm.gguf import convert_to_gguf
    from mlx_lm.utils import load_model

    run_dir = Path(run_dir)
    out = Path(out_dir or run_dir / EXPORT_DIR)
    with replacing_dir(out) as staging:
        fused_dir = fuse(run_dir, staging / "fused", dequantize=True)  # GGUF takes float weights
        config = json.loads((fused_dir / "config.json").read_text())
        if config.get("model_type") not in GGUF_MODEL_TYPES:
            raise ModelError(
                f"GGUF export supports {', '.join(GGUF_MODEL_TYPES)} models; "
                f"this one is {config.get('model_type')!r}"
            )
        model, _ = load_model(fused_dir)
        weights = dict(tree_flatten(model.parameters()))
        convert_to_gguf(fused_dir, weights, config, str(staging / "model.gguf"))
        (staging / "Modelfile").write_text(modelfile_text("model.gguf", _chat_template(fused_dir)))
    return Exported(out / "fused", out / "model.gguf", out / "Modelfile")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dir", type=Path, help="a finished run's dir (adapters.safetensors, adapter_config.json)"
    )
    parser.add_argument("--out", type=Path, help="where to write (default: <run_dir>/export)")
    args = parser.parse_args()
    done = export_run(args.run_dir, args.out)
    print(f"fused model: {done.fused_dir}\nGGUF: {done.gguf}\nOllama Modelfile: {done.modelfile}")


if __name__ == "__main__":
    main()
