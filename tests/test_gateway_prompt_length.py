"""The gateway's exact prompt count (catalog.exact_longest_prompt, the submit-time max_seq_length check) is
the engine's: the same rows, loaded with the trainer's own model load and samples.load_dataset, have the
same longest prompt, and the engine fails one token below it and trains at it. The dataset's longest
templated prompt is a row the lower bound ranks below the top EXACT_ROWS (no system turn: the template adds
its own), so the count cannot come from the bound's top rows alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.datasets.samples import load_dataset
from services.common.errors import DatasetError
from services.common.spec import RunSpec
from services.gateway import catalog
from services.trainer.engine.methods import load_base


def _chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def _write(root: Path) -> Path:
    words = lambda n, tag: " ".join(f"{tag}{i}" for i in range(n))  # noqa: E731
    train = [
        _chat(("system", "Be brief."), ("user", words(40 + i % 3, "w")), ("assistant", "ok"))
        for i in range(catalog.EXACT_ROWS + 16)
    ]
    # Fewer words than any row above, but the template's default system turn makes its prompt the longest.
    train.append(_chat(("user", words(39, "w")), ("assistant", "ok")))
    # Two exchanges: under last_assistant the first one is prompt too.
    train.append(_chat(("user", "hi"), ("assistant", words(30, "a")), ("user", "and?"), ("assistant", "ok")))
    valid = [{"prompt": words(20 + i, "p"), "completion": "yes"} for i in range(4)]
    root.mkdir(parents=True)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (root / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in valid))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("prompt-length") / "shapes")


def _engine_longest(model: Path, data: Path, mask: str, max_seq_length: int = 4096):
    """(file name, line, prompt tokens) of the longest prompt as the trainer computes it."""
    prepared = load_base(RunSpec.from_dict({"model": str(model), "data": str(data), "mask_prompt": mask}))
    splits = load_dataset(data, prepared.tokenizer, max_seq_length, mask)
    lines = {name: [n for n, _ in _numbered(data / f"{name}.jsonl")] for name in splits}
    return prepared.tokenizer, max(
        ((f"{name}.jsonl", lines[name][i], s.prompt_len) for name, split in splits.items() for i, s in
         enumerate(split.samples)),
        key=lambda found: found[2],
    )  # fmt: skip


def _numbered(path: Path) -> list[tuple[int, str]]:
    return [(n, t) for n, t in enumerate(path.read_text().splitlines(), start=1) if t.strip()]


@pytest.mark.parametrize("mask", ["assistant", "last_assistant"])
@pytest.mark.parametrize("model_name", ["tiny", pytest.param("default", marks=pytest.mark.slow)])
def test_the_exact_count_is_the_engines(model_name, mask, data, tiny_model, default_model):
    model = {"tiny": tiny_model, "default": default_model}[model_name]
    tokenizer, (file, line, tokens) = _engine_longest(model, data, mask)

    bound = catalog.longest_prompt(data, model, mask)
    exact = catalog.exact_longest_prompt(data, model, mask)

    assert exact == catalog.LongestPrompt(file, line, tokens, exact=True)
    assert bound.tokens < tokens  # the markup the bound leaves out is what this check adds
    if mask == "assistant":  # the longest is the row without a system turn, beyond the bound's top rows
        ranked = catalog._longest_prompt_in(
            *catalog._file_version(data / "train.jsonl"), str(model / "tokenizer.json"), mask, (), 50_000
        )
        top = [c.line for c in ranked.candidates[: catalog.EXACT_ROWS]]
        assert line not in top
    # The engine's own boundary: one token short of the prompt fails, the prompt's length trains.
    with pytest.raises(DatasetError, match="leaving nothing to learn") as caught:
        load_dataset(data, tokenizer, tokens - 1, mask)
    assert caught.value.line == line and Path(str(caught.value.path)).name == file
    load_dataset(data, tokenizer, tokens, mask)
