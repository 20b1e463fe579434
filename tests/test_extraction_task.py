"""The default dataset: determinism, schema, disjoint splits, difficulty, length, and the scorer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from services.trainer.engine.tasks import extraction_vocab as vocab
from services.trainer.engine.tasks.extraction import (
    FIELDS,
    SPLITS,
    SYSTEM_PROMPT,
    build_splits,
    canonical_json,
    generate_splits,
    main,
    parse_prediction,
    score,
    write_dataset,
)
from services.trainer.engine.tasks.extraction_generate import (
    ATTACHED_DISTRACTORS,
    HEADER_DISTRACTORS,
    LIST_ITEMS,
    MAX_SAMPLE_TOKENS,
    RECORD_TEMPLATES,
    STANDALONE_DISTRACTORS,
    estimated_tokens,
    fill,
)

SMALL = {"n_train": 150, "n_valid": 30, "n_test": 40}


@pytest.fixture(scope="module")
def splits():
    return build_splits(seed=0)


@pytest.fixture(scope="module")
def train(splits):
    return splits["train"]


def _answer(sample) -> dict:
    return json.loads(sample.to_chat()["messages"][2]["content"])


# --- determinism and splits ---------------------------------------------------------------------------


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path: Path):
    first = write_dataset(tmp_path / "a", seed=3, **SMALL)
    second = write_dataset(tmp_path / "b", seed=3, **SMALL)
    other = write_dataset(tmp_path / "c", seed=4, **SMALL)
    for split in SPLITS:
        assert first[split].read_bytes() == second[split].read_bytes()
        assert first[split].read_bytes() != other[split].read_bytes()
    assert (tmp_path / "a/dataset.json").read_bytes() == (tmp_path / "b/dataset.json").read_bytes()


def test_generate_splits_is_the_chat_form_of_build_splits():
    chats = generate_splits(seed=1, **SMALL)
    samples = build_splits(seed=1, **SMALL)
    assert {split: len(rows) for split, rows in chats.items()} == {"train": 150, "valid": 30, "test": 40}
    assert chats == {split: [s.to_chat() for s in rows] for split, rows in samples.items()}


def test_test_split_does_not_move_when_the_training_set_grows():
    small = generate_splits(seed=0, n_train=10, n_valid=5, n_test=20)
    large = generate_splits(seed=0, n_train=300, n_valid=5, n_test=20)
    assert small["test"] == large["test"]
    assert small["valid"] == large["valid"]


def test_no_input_appears_twice_within_or_across_splits(splits):
    texts = [s.text for rows in splits.values() for s in rows]
    assert len(texts) == len(set(texts)) == 1300


# --- format and schema --------------------------------------------------------------------------------


def test_every_line_is_a_chat_sample_whose_answer_is_canonical_and_valid(splits):
    for rows in splits.values():
        for sample in rows:
            messages = sample.to_chat()["messages"]
            assert [m["role"] for m in messages] == ["system", "user", "assistant"]
            assert messages[0]["content"] == SYSTEM_PROMPT
            answer = json.loads(messages[2]["content"])
            assert list(answer) == ["records"]
            assert canonical_json(answer["records"]) == messages[2]["content"]
            assert 1 <= len(answer["records"]) <= 3
            for record in answer["records"]:
                assert tuple(record) == FIELDS
                assert isinstance(record["name"], str) and len(record["name"].split()) == 2
                assert record["age"] is None or (type(record["age"]) is int and 18 < record["age"] < 65)
                assert record["city"] is None or record["city"] in vocab.CITIES
                if record["date"] is not None:
                    assert dt.date.fromisoformat(record["date"]).isoformat() == record["date"]


def test_every_fact_in_an_answer_is_written_in_the_input(train):
    """The reference must be derivable from the text: no field is dropped by a template by mistake."""
    for sample in train:
        for record in sample.records:
            assert record.name in sample.text
            if record.city:
                assert record.city in sample.text
            if record.age is not None:
                assert re.search(
                    rf"\b({record.age}|{vocab.number_in_words(record.age)})\b", sample.text, re.I
                )
            if record.date:
                assert str(record.date.year) in sample.text


def test_each_optional_field_sits_alone_in_one_optional_segment():
    """So that a present field is always written and an absent one leaves no dangling words."""
    # List items leave the date to the list's header, which states it once for everyone.
    for template, fields in [(t, ("age", "city", "date")) for t in RECORD_TEMPLATES] + [
        (t, ("age", "city")) for t in LIST_ITEMS
    ]:
        outside = re.sub(r"\[[^\]]*\]", "", template)
        assert re.findall(r"\{(\w+)\}", outside) == ["name"], template
        for field in fields:
            segments = [s for s in re.findall(r"\[([^\]]*)\]", template) if "{" + field + "}" in s]
            assert len(segments) == 1, (template, field)
            assert set(re.findall(r"\{(\w+)\}", segments[0])) <= {field, "pron"}, template
    assert len(set(RECORD_TEMPLATES)) == len(RECORD_TEMPLATES) >= 20


def test_templates_render_with_every_combination_of_missing_fields():
    full = {"name": "Ana Silva", "age": "34", "city": "Lyon", "date": "3 March 2021", "pron": "she"}
    for template in RECORD_TEMPLATES:
        for missing in ([], ["age"], ["city"], ["date"], ["age", "city", "date"]):
            text = fill(template, {k: (None if k in missing else v) for k, v in full.items()})
            assert "{" not in text and "[" not in text and "None" not in text
            assert (
                not text[0].islower() and text[-1] == "."
            )  # "34-year-old Ana Silva ..." starts with a digit
            assert "  " not in text and " ," not in text and " ." not in text, text
    with pytest.raises(ValueError):
        fill("{name} joined.", {"name": None})


def test_distractor_templates_fill():
    slots = {
        "other": "Tom Berg",
        "other_first": "Tom",
        "other_age": "40",
        "retired_at": "66",
        "years": "five",
        "other_city": "Oslo",
        "other_date": "May 2, 2020",
        "other_year": "2010",
        "Pron": "She",
        "Poss": "Her",
        "relative": "brother",
    }
    for template in ATTACHED_DISTRACTORS + STANDALONE_DISTRACTORS + HEADER_DISTRACTORS:
        assert "{" not in fill(template, slots)


# --- difficulty ---------------------------------------------------------------------------------------


def test_difficulty_features_are_present_in_sensible_shares(train):
    def share(predicate) -> float:
        return sum(map(predicate, train)) / len(train)

    # Each share is computed from the text and the answer, not from the generator's own feature flags.
    multi = share(lambda s: len(_answer(s)["records"]) >= 2)
    three = share(lambda s: len(_answer(s)["records"]) == 3)
    nulls = share(lambda s: any(None in r.values() for r in _answer(s)["records"]))
    words = share(
        lambda s: any(
            r.age is not None and re.search(rf"\b{vocab.number_in_words(r.age)}\b", s.text, re.I)
            for r in s.records
        )
    )
    distractor = share(lambda s: _mentions_someone_else(s))
    non_iso = share(lambda s: any(r.date and r.date.isoformat() not in s.text for r in s.records))
    assert 0.35 <= multi <= 0.65, multi
    assert 0.05 <= three <= 0.2, three
    assert 0.45 <= nulls <= 0.75, nulls
    assert 0.25 <= words <= 0.5, words
    assert 0.3 <= distractor <= 0.65, distractor
    assert 0.5 <= non_iso <= 0.9, non_iso
    # The generator's flags agree with what the text shows.
    assert multi == share(lambda s: "multi_record" in s.features)
    # A word number in a distractor ("twenty" inside "twenty-three") can fake a match, so only close.
    assert abs(words - share(lambda s: "word_number" in s.features)) < 0.03
    # Not every distractor names a person ("She has five years of experience.").
    assert distractor <= share(lambda s: "distractor" in s.features)


def _mentions_someone_else(sample) -> bool:
    """True when a first name of the vocabulary appears that belongs to no record."""
    record_firsts = {r.name.split()[0] for r in sample.records}
    firsts = set(vocab.FEMALE_FIRST) | set(vocab.MALE_FIRST)
    return any(
        word in firsts and word not in record_firsts for word in re.findall(r"[A-Z][a-z]+", sample.text)
    )


def test_dates_and_numbers_in_words():
    assert [vocab.number_in_words(n) for n in (19, 20, 32, 40, 64)] == [
        "nineteen",
        "twenty",
        "thirty-two",
        "forty",
        "sixty-four",
    ]
    assert [vocab.ordinal_in_words(n) for n in (1, 3, 12, 20, 21, 30, 31)] == [
        "first",
        "third",
        "twelfth",
        "twentieth",
        "twenty-first",
        "thirtieth",
        "thirty-first",
    ]
    assert [vocab.ordinal_suffix(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == (
        "1st 2nd 3rd 4th 11th 12th 13th 21st 22nd 23rd 31st".split()
    )
    date = dt.date(2021, 3, 3)
    rendered = {form: vocab.render_date(date, form) for form in vocab.DATE_FORMS}
    assert rendered == {
        "month_day_year": "March 3, 2021",
        "month_ordinal_year": "March 3rd, 2021",
        "day_month_year": "3 March 2021",
        "the_ordinal_of_month": "the 3rd of March 2021",
        "iso": "2021-03-03",
        "abbrev_month_day_year": "Mar 3, 2021",
        "day_abbrev_month_year": "3 Mar 2021",
        "ordinal_words": "the third of March, 2021",
    }


# --- length -------------------------------------------------------------------------------------------


def test_samples_stay_short(splits):
    for rows in splits.values():
        for sample in rows:
            chars = sum(len(m["content"]) for m in sample.to_chat()["messages"])
            assert chars <= 660  # the chars/3 rule of thumb for 220 tokens
            assert estimated_tokens(sample) <= MAX_SAMPLE_TOKENS


def test_samples_fit_the_real_tokenizer_when_the_default_model_is_converted(train):
    from services.common.paths import default_model

    path = default_model() / "tokenizer.json"
    if not path.exists():  # make test builds it; a bare pytest run says how
        pytest.fail(f"{path} not built: run `make models` (make test does)", pytrace=False)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    for sample in train[:300]:
        chat = "".join(
            f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in sample.to_chat()["messages"]
        )
        n = len(tokenizer.encode(chat, add_special_tokens=False).ids)
        assert n <= 232, (n, sample.text)


# --- writing ------------------------------------------------------------------------------------------


def test_write_dataset_files_and_description(tmp_path: Path):
    paths = write_dataset(tmp_path / "d", seed=7, **SMALL)
    assert paths == {split: tmp_path / "d" / f"{split}.jsonl" for split in SPLITS}
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "dataset.json",
        "test.jsonl",
        "train.jsonl",
        "valid.jsonl",
    ]
    lines = paths["train"].read_text().splitlines()
    assert len(lines) == 150 and all(json.loads(line)["messages"] for line in lines)
    meta = json.loads((tmp_path / "d/dataset.json").read_text())
    assert meta["name"] == "extraction" and meta["seed"] == 7 and isinstance(meta["version"], int)
    assert meta["counts"] == {"train": 150, "valid": 30, "test": 40}
    assert meta["fields"] == list(FIELDS) and meta["schema"]["required"] == ["records"]
    assert meta["scorer"]["name"] == "extraction_exact_match"


def test_cli_prints_a_one_line_summary(tmp_path: Path, capsys):
    main(["--out", str(tmp_path / "cli"), "--seed", "2", "--train", "20", "--valid", "5", "--test", "5"])
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and "train=20 valid=5 test=5" in out and "max=" in out and "mean=" in out
    assert (tmp_path / "cli/train.jsonl").exists()


# --- parsing and scoring ------------------------------------------------------------------------------

REF_ONE = '{"records": [{"name": "Ana Silva", "age": 34, "city": "Lyon", "date": "2021-03-03"}]}'
REF_TWO = (
    '{"records": [{"name": "Ana Silva", "age": 34, "city": "Lyon", "date": "2021-03-03"}, '
    '{"name": "Tom Berg", "age": null, "city": "Oslo", "date": null}]}'
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"records": []}', {"records": []}),
        ('  ```json\n{"records": []}\n```  ', {"records": []}),
        ('Sure! Here it is: {"a": {"b": 1}} and more {"c": 2}', {"a": {"b": 1}}),
        ('{"name": "brace } inside", "x": "\\"{"}', {"name": "brace } inside", "x": '"{'}),
        ('{ not json } then {"ok": true}', {"ok": True}),
        ('{"unclosed": [1, 2 {"inner": 1}', {"inner": 1}),
        ("no json here", None),
        ('{"records": [', None),
        ("", None),
    ],
)
def test_parse_prediction(text, expected):
    assert parse_prediction(text) == expected


def test_score_exact_matches():
    result = score([REF_ONE, "```json\n" + REF_TWO + "\n```"], [REF_ONE, REF_TWO])
    assert result.n == 2
    assert result.exact_match == 1.0 and result.parse_rate == 1.0 and result.record_count_accuracy == 1.0
    assert result.field_accuracy == {name: 1.0 for name in FIELDS}
    assert result.mean_field_accuracy == 1.0


def test_score_one_wrong_field():
    wrong_date = REF_TWO.replace("2021-03-03", "2021-03-30")
    result = score([wrong_date], [REF_TWO])
    assert result.exact_match == 0.0 and result.record_count_accuracy == 1.0
    assert result.field_accuracy == {"name": 1.0, "age": 1.0, "city": 1.0, "date": 0.5}


def test_score_missing_and_extra_records_count_as_wrong():
    missing = score([REF_ONE], [REF_TWO])
    assert missing.exact_match == 0.0 and missing.record_count_accuracy == 0.0
    assert missing.field_accuracy == {name: 0.5 for name in FIELDS}
    extra = score([REF_TWO], [REF_ONE])
    assert extra.exact_match == 0.0 and extra.field_accuracy == {name: 0.5 for name in FIELDS}


def test_score_unparseable_and_malformed_outputs():
    result = score(["I could not find anyone.", '{"people": []}', '{"records": ["Ana"]}'], [REF_ONE] * 3)
    assert result.exact_match == 0.0
    assert result.parse_rate == pytest.approx(2 / 3)
    assert result.record_count_accuracy == pytest.approx(1 / 3)  # one (non-object) record was output
    assert result.field_accuracy == {name: 0.0 for name in FIELDS}


def test_score_is_type_strict_where_python_is_not():
    as_bool = REF_ONE.replace('"age": 34', '"age": true').replace("34", "1")
    ref = REF_ONE.replace("34", "1")
    assert score([as_bool], [ref]).exact_match == 0.0
    assert score([REF_ONE.replace("34", "34.0")], [REF_ONE]).exact_match == 1.0
    assert score([REF_ONE.replace("Lyon", "lyon")], [REF_ONE]).field_accuracy["city"] == 0.0


def test_score_rejects_mismatched_lengths_and_is_frozen():
    with pytest.raises(ValueError):
        score([REF_ONE], [])
    result = score([], [])
    assert result.n == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.exact_match = 1.0  # type: ignore[misc]


def test_references_score_perfectly_against_themselves(splits):
    refs = [s.answer for s in splits["test"]]
    result = score(refs, refs)
    assert result.exact_match == result.parse_rate == result.record_count_accuracy == 1.0
