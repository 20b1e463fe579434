"""Datasets from where they live: parquet, arrow, json, csv and save_to_disk dirs through Hugging Face
`datasets`, column mapping, Alpaca and ShareGPT rows as chat, mlx-lm's tools format, and errors that name
the file, the row and the problem; the gateway's catalog lists and previews them."""

from __future__ import annotations

import json
import shutil

import datasets
import pytest
from transformers import AutoTokenizer

from services.common.datasets.layouts import Columns
from services.common.datasets.samples import encode, load_dataset
from services.common.spec import RunSpec
from services.gateway import catalog
from services.trainer.engine.errors import DatasetError

ALPACA = [
    {
        "instruction": "Give the city as JSON.",
        "input": f"{n} lives in {c}.",
        "output": json.dumps({"city": c}),
    }
    for n, c in [("Ana", "Oslo"), ("Bob", "Lima"), ("Chen", "Pune"), ("Dara", "Kyiv")] * 3
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(str(tiny_model))


def _as_chat(row: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"},
            {"role": "assistant", "content": row["output"]},
        ]
    }


def test_alpaca_parquet_and_arrow_train_like_the_same_chat_jsonl(tokenizer, tmp_path):
    table = datasets.Dataset.from_list(ALPACA)
    table.to_parquet(str(tmp_path / "train.parquet"))
    arrow = datasets.Dataset.from_list(ALPACA[:4])
    arrow.save_to_disk(str(tmp_path / "saved"))
    shutil.copy(next((tmp_path / "saved").glob("*.arrow")), tmp_path / "validation.arrow")
    splits = load_dataset(tmp_path, tokenizer, 128)
    assert set(splits) == {"train", "valid"} and splits["train"].format == "chat"
    expected = [encode(_as_chat(row), "chat", tokenizer) for row in ALPACA]
    assert [(list(s.tokens), s.prompt_len) for s in splits["train"].samples] == expected
    assert len(splits["valid"].samples) == 4


def test_sharegpt_json_and_saved_dataset_dict(tokenizer, tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": f"Say {w}"}, {"from": "gpt", "value": w}]}
        for w in ("yes", "no", "maybe")
    ]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    (tmp_path / "valid.json").write_text(json.dumps(rows[:1]))
    splits = load_dataset(tmp_path, tokenizer, 64)
    assert splits["train"].records[1]["messages"] == [
        {"role": "user", "content": "Say no"},
        {"role": "assistant", "content": "no"},
    ]
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "validation": datasets.Dataset.from_list(rows[:2])}
    ).save_to_disk(str(saved))
    from_disk = load_dataset(saved, tokenizer, 64)
    assert len(from_disk["valid"].samples) == 2
    assert [s.tokens for s in from_disk["train"].samples] == [s.tokens for s in splits["train"].samples]


def test_csv_column_mapping_with_a_system_column(tokenizer, tmp_path):
    lines = ["question,answer,persona"] + [f"What is {i}+{i}?,{2 * i},You are terse." for i in range(6)]
    for split in ("train", "valid"):
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    spec = RunSpec.from_dict(
        {"prompt_field": "question", "completion_field": "answer", "system_field": "persona"}
    )
    splits = load_dataset(tmp_path, tokenizer, 64, columns=Columns.of(spec))
    first = splits["train"].records[0]["messages"]
    assert first == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 0+0?"},
        {"role": "assistant", "content": "0"},
    ]
    text = tokenizer.decode(list(splits["train"].samples[0].tokens))
    assert (
        "You are terse." in text and "helpful AI assistant" not in text
    )  # our system turn replaced the default

    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path, tokenizer, 64, columns=Columns(prompt="prompt_text", completion="answer"))
    assert caught.value.path.endswith("train.csv") and caught.value.line == 2  # line 1 is the header
    assert "no column 'prompt_text' (named by prompt_field)" in caught.value.problem


def test_a_bad_parquet_row_is_named_by_file_and_row(tokenizer, tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}] * 3
    rows.append({"conversations": [{"from": "narrator", "value": "x"}, {"from": "gpt", "value": "y"}]})
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(rows[:1]).to_parquet(str(tmp_path / "valid.parquet"))
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path, tokenizer, 64)
    assert str(caught.value).startswith(f"{tmp_path / 'train.parquet'}:4: conversations[0].from 'narrator'")


def test_tools_reach_the_chat_template(tiny_model, tmp_path):
    # The tiny model's (SmolLM2's) template ignores tools; give a copy of its tokenizer one that renders them.
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model / name).exists():
            shutil.copy(tiny_model / name, tok_dir / name)
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% if tools %}<|im_start|>tools\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% if m.tool_calls %}call {{ m.tool_calls | tojson }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "tools": [tool],
    }
    for split in ("train", "valid"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{split}.jsonl").write_text(json.dumps(record) + "\n")
    split = load_dataset(tmp_path / "data", tokenizer, 256)["train"]
    sample = split.samples[0]
    text = tokenizer.decode(list(sample.tokens))
    assert text.startswith("<|im_start|>tools") and "get_weather" in text and "call [" in text
    learned = [tokenizer.decode(list(sample.tokens[a:b])).strip() for a, b in sample.loss_spans]
    assert learned[0].startswith("call [") and "get_weather" in learned[0]  # the tool call is learned too
    assert learned[-1].removesuffix("<|im_end|>").strip() == "Sunny."


def test_hub_names_take_the_real_path_and_say_why_they_failed(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # this machine cannot reach the hub; the code path is the same
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError) as caught:
        load_dataset("hf:peftlab-test/no-such-dataset", tokenizer, 64)
    assert caught.value.path == "hf:peftlab-test/no-such-dataset"
    assert "cannot load from the Hugging Face hub" in caught.value.problem


def test_the_catalog_lists_validates_and_previews_a_parquet_dataset(tiny_model, tmp_path):
    data = tmp_path / "alpaca"
    data.mkdir()
    datasets.Dataset.from_list(ALPACA).to_parquet(str(data / "train.parquet"))
    datasets.Dataset.from_list(ALPACA[:3]).to_parquet(str(data / "valid.parquet"))
    (listed,) = catalog.list_datasets(tmp_path)
    assert listed.name == "alpaca" and listed.format == "chat"
    assert {(s.split, s.rows) for s in listed.splits} == {("train", 12), ("valid", 3)}
    assert catalog.validate_dataset(data) == (True, [])
    rows, total = catalog.preview_dataset(data, "valid", 2, tiny_model)
    assert total == 3 and len(rows) == 2 and rows[0].format == "chat"
    assert json.loads(rows[0].json) == _as_chat(ALPACA[0])
