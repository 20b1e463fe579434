"""Writes extraction samples: people who join a company, told in varied prose with distractors and gaps.

What makes it more than template filling (the issue's probe with plain name/age/city templates reached 100%
exact match after 60 LoRA steps): ages written in words, dates in eight surface forms to normalise to ISO,
titles to strip, fields left out (null), one to three records per input (sometimes sharing one date stated
once), and other people, cities, dates and numbers that are not records.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field
from typing import Any

from services.common.datasets.extraction_schema import SYSTEM_PROMPT, canonical_json
from services.trainer.engine.tasks import extraction_vocab as vocab

# How often each difficulty appears. Tuned so that every feature is common enough to learn from a
# thousand samples and the hard combinations (three records with distractors) stay a minority.
# Drawn before the length budget, which turns most three-record draws away: what comes out is about 55%
# one record, 36% two and 9% three.
RECORD_COUNT_WEIGHTS = {1: 0.31, 2: 0.31, 3: 0.38}
DISTRACTOR_COUNT_WEIGHTS = {0: 0.45, 1: 0.40, 2: 0.15}
# Per optional field (age, city, date) and record, by the number of records: long lists say less about
# each person, which is also what lets three records fit the length budget.
P_FIELD_PRESENT = {1: 0.85, 2: 0.8, 3: 0.55}
P_AGE_IN_WORDS = 0.35
P_TITLE = 0.1
P_LIST_LAYOUT = 0.3  # of samples with several records
P_LIST_SHARED_DATE = 0.75  # of list layouts; the rest state no date at all
P_INTRO = 0.15
AGE_RANGE = (19, 64)
RETIREMENT_AGE_RANGE = (58, 70)
DATE_RANGE = (dt.date(2018, 1, 1), dt.date(2025, 12, 31))

# Training runs at max sequence length 256 on a CPU: whole chat samples (template tokens included) stay
# under about 220 real tokens. Compared against `estimated_tokens`, which runs some 14 tokens high.
MAX_SAMPLE_TOKENS = 228

# Feature names, reported per split in dataset.json and checked by the tests.
MULTI_RECORD = "multi_record"
THREE_RECORDS = "three_records"
WORD_NUMBER = "word_number"
NULL_FIELD = "null_field"
DISTRACTOR = "distractor"
TITLE = "title"
LIST_LAYOUT = "list_layout"
SHARED_DATE = "shared_date"
FEATURES = (MULTI_RECORD, THREE_RECORDS, WORD_NUMBER, NULL_FIELD, DISTRACTOR, TITLE, LIST_LAYOUT, SHARED_DATE)

# One sentence per record. `[...]` is an optional segment, kept only when every slot in it has a value.
# Each optional field (age, city, date) sits alone in exactly one segment, so a field that is present is
# always written and one that is absent leaves a grammatical sentence.
RECORD_TEMPLATES = (
    "{name}[, {age},] joined[ in {city}][ on {date}].",
    "{name}[ ({age})] started[ on {date}][ in {city}].",
    "[On {date}, ]{name}[, aged {age},] joined the team[ in {city}].",
    "Please welcome {name}[, {age}][, based in {city}][, who starts on {date}].",
    "[{age}-year-old ]{name} signed on[ in {city}][ on {date}].",
    "New hire: {name}[, {age}][, {city}][, from {date}].",
    "{name}[, who is {age},] will start[ on {date}][ at our {city} office].",
    "{name}[, {age} years old,] was hired[ for {city}][ on {date}].",
    "Our[ {city}] office hired {name}[ ({age})][ on {date}].",
    "[{date}: ]{name}[, {age},] came on board[ in {city}].",
    "{name}[, age {age},] begins work[ in {city}][ on {date}].",
    "[Starting {date}, ]{name}[ ({age})] joins us[ in {city}].",
    "{name} is joining[ the {city} team][ on {date}][ at {age}].",
    "We hired {name}[, {age},][ to work in {city}][; {pron} starts on {date}].",
    "[In {city}, ]{name}[ ({age})] is a new colleague[ from {date}].",
    "{name}[, {age},] accepted our offer[ in {city}][ and starts on {date}].",
    "{name} has been hired[ in {city}][, effective {date}][; {pron} is {age}].",
    "[As of {date}, ]{name}[, {age},] is part of the[ {city}] team.",
    "{name}[, {age},] takes up a post[ in {city}][ on {date}].",
    "Joining[ on {date}]: {name}[, {age}][, {city}].",
    "{name}[ ({age})] moves into a new job[ in {city}][ from {date}].",
    "{name}[, {age},] is our new[ {city}] hire[ as of {date}].",
    "{name}[, a {age}-year-old,] signed the contract[ for our {city} site][ on {date}].",
    "[From {date}, ]{name}[, {age},] will work[ in {city}] with us.",
    "{name} starts[ at {age}][ in {city}][ on {date}].",
    "{name}[, {age},] was taken on[ in {city}][ on {date}].",
)

# Several records in one sentence, all starting on the date the header states once (or on none).
LIST_HEADERS_WITH_DATE = (
    "New starters on {date}: ",
    "Joining us on {date}: ",
    "Starting {date}: ",
    "{date}, new hires: ",
)
LIST_HEADERS_WITHOUT_DATE = ("New starters: ", "Joining us this month: ", "New hires: ")
LIST_ITEMS = (
    "{name}[ ({age})][ in {city}]",
    "{name}[, {age}][, based in {city}]",
    "{name}[, age {age}][, {city}]",
)

# Distractors: people, cities, dates and numbers that belong to no record. The first group talks about
# the record just before it ({Pron} is that person); the second stands alone.
ATTACHED_DISTRACTORS = (
    "{Poss} {relative} {other_first} lives in {other_city}.",
    "{Pron} was referred by {other} of {other_city}.",
    "{Pron} has {years} years of experience.",
    "{Poss} interview was on {other_date}.",
    "{Pron} moved here from {other_city}.",
    "{Poss} manager will be {other} in {other_city}.",
    "{Pron} replaces {other}, who retired at {retired_at}.",
    "{Pron} studied in {other_city} until {other_year}.",
)
STANDALONE_DISTRACTORS = (
    "{other}, {other_age}, turned down our offer.",
    "{other} left the {other_city} office on {other_date}.",
    "{other} ({other_age}) stays on leave in {other_city}.",
)
HEADER_DISTRACTORS = ("Posted by {other}: ", "From {other} in {other_city}: ", "{other} writes: ")
INTROS = ("HR update: ", "This week: ", "Team news: ")

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Record:
    """One person who joins: what the assistant must answer (None where the text does not say)."""

    name: str
    age: int | None
    city: str | None
    date: dt.date | None

    def as_answer(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "age": self.age,
            "city": self.city,
            "date": self.date.isoformat() if self.date else None,
        }


@dataclass(frozen=True)
class ExtractionSample:
    """One input with its answer, and the difficulty features it carries (for reports and tests)."""

    text: str  # the user message
    records: tuple[Record, ...]
    features: frozenset[str]

    @property
    def answer(self) -> str:
        return canonical_json([record.as_answer() for record in self.records])

    def to_chat(self) -> dict[str, list[dict[str, str]]]:
        """The sample as one line of mlx_lm's chat format."""
        return {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self.text},
                {"role": "assistant", "content": self.answer},
            ]
        }


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    female: bool

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


def generate_sample(rng: random.Random) -> ExtractionSample:
    """One sample within the length budget; longer draws are redrawn, which mostly thins out three-record
    samples that also carry every field and two distractors."""
    while True:
        sample = _draw_sample(rng)
        if estimated_tokens(sample) <= MAX_SAMPLE_TOKENS:
            return sample


def estimated_tokens(sample: ExtractionSample) -> int:
    """Tokens of the whole chat sample under a ByteLevel BPE that splits digits (SmolLM2's), erring high.

    A least-squares fit on generated samples against SmolLM2-135M-Instruct's tokenizer (digits cost more
    than a token each because punctuation comes with them; JSON runs denser than prose), plus a margin
    that covers the largest residuals seen.
    """
    text_digits = sum(ch.isdigit() for ch in sample.text)
    answer = sample.answer
    answer_digits = sum(ch.isdigit() for ch in answer)
    text_tokens = 1.3 * text_digits + 0.28 * (len(sample.text) - text_digits)
    answer_tokens = 1.3 * answer_digits + 0.38 * (len(answer) - answer_digits)
    system_tokens = len(SYSTEM_PROMPT) / 3.2
    chat_template = 5 * 3  # "<|im_start|>role\n" and "<|im_end|>\n" around each of the three messages
    return round(text_tokens + answer_tokens + system_tokens) + chat_template + 12


def fill(template: str, slots: dict[str, str | None]) -> str:
    """Render a template: drop optional segments with a missing slot, fill the rest, capitalise."""

    def keep(match: re.Match[str]) -> str:
        segment = match.group(1)
        return segment if all(slots.get(s) is not None for s in _SLOT.findall(segment)) else ""

    def value(match: re.Match[str]) -> str:
        text = slots.get(match.group(1))
        if text is None:  # a slot outside any [...] is required; "None" in a sample would be a silent bug
            raise ValueError(f"template {template!r} needs a value for {match.group(1)!r}")
        return text

    text = _SLOT.sub(value, _SEGMENT.sub(keep, template))
    return text[0].upper() + text[1:]


def _draw_sample(rng: random.Random) -> ExtractionSample:
    n_records = _weighted(rng, RECORD_COUNT_WEIGHTS)
    people = _distinct_people(rng, n_records + max(DISTRACTOR_COUNT_WEIGHTS))
    record_people, others = people[:n_records], people[n_records:]
    features: set[str] = set()
    use_list = n_records > 1 and rng.random() < P_LIST_LAYOUT
    shared_date = _random_date(rng) if use_list and rng.random() < P_LIST_SHARED_DATE else None
    records = [
        _draw_record(rng, person, P_FIELD_PRESENT[n_records], use_list, shared_date)
        for person in record_people
    ]
    slots = [
        _record_slots(rng, record, person, features)
        for record, person in zip(records, record_people, strict=True)
    ]
    if use_list:
        features.add(LIST_LAYOUT)
        sentences = [[_list_sentence(rng, rng.choice(LIST_ITEMS), slots, shared_date, features)]]
    else:
        templates = rng.sample(RECORD_TEMPLATES, n_records)  # no two records phrased alike
        sentences = [[fill(template, s)] for template, s in zip(templates, slots, strict=True)]

    # A header goes only before a sentence without a colon of its own ("Posted by X: New hire: Y" reads badly).
    header_allowed = ":" not in sentences[0][0]
    header = rng.choice(INTROS) if header_allowed and rng.random() < P_INTRO else ""
    placed = _add_distractors(rng, records, record_people, others, sentences, header_allowed and not header)
    if placed.header:
        header = placed.header
    if placed.sentences or placed.header or any(len(group) > 1 for group in sentences):
        features.add(DISTRACTOR)
    text = header + " ".join([*(s for group in sentences for s in group), *placed.sentences])

    if n_records > 1:
        features.add(MULTI_RECORD)
    if n_records > 2:
        features.add(THREE_RECORDS)
    if any(None in (r.age, r.city, r.date) for r in records):
        features.add(NULL_FIELD)
    return ExtractionSample(text=text, records=tuple(records), features=frozenset(features))


@dataclass
class _Placed:
    header: str = ""
    sentences: list[str] = field(default_factory=list)


def _add_distractors(
    rng: random.Random,
    records: list[Record],
    record_people: list[_Person],
    others: list[_Person],
    sentences: list[list[str]],
    header_allowed: bool,
) -> _Placed:
    """Append attached distractors to `sentences` in place; return the header and standalone ones."""
    placed = _Placed()
    # Record cities stay out of the distractors, so "moved here from X" never names where a record works.
    free_cities = [c for c in vocab.CITIES if c not in {r.city for r in records}]
    attached = rng.sample(ATTACHED_DISTRACTORS, len(ATTACHED_DISTRACTORS))  # no phrasing twice per sample
    standalone = rng.sample(STANDALONE_DISTRACTORS, len(STANDALONE_DISTRACTORS))
    for other in others[: _weighted(rng, DISTRACTOR_COUNT_WEIGHTS)]:
        kind = rng.random()
        if kind < 0.15 and header_allowed and not placed.header:
            placed.header = fill(rng.choice(HEADER_DISTRACTORS), _other_slots(rng, other, free_cities, None))
        elif kind < 0.4 or (len(sentences) == 1 and len(records) > 1):  # a list has no sentence per person
            placed.sentences.append(fill(standalone.pop(), _other_slots(rng, other, free_cities, None)))
        else:
            target = rng.randrange(len(records))
            context = _other_slots(rng, other, free_cities, records[target])
            context |= _pronoun_slots(rng, record_people[target], other)
            sentences[target].append(fill(attached.pop(), context))
    return placed


def _draw_record(
    rng: random.Random, person: _Person, p_present: float, use_list: bool, shared_date: dt.date | None
) -> Record:
    def maybe(value: Any) -> Any:
        return value if rng.random() < p_present else None

    age = maybe(rng.randint(*AGE_RANGE))
    city = maybe(rng.choice(vocab.CITIES))
    date = shared_date if use_list else maybe(_random_date(rng))
    return Record(name=person.full, age=age, city=city, date=date)


def _record_slots(
    rng: random.Random, record: Record, person: _Person, features: set[str]
) -> dict[str, str | None]:
    name = person.full
    if rng.random() < P_TITLE:
        titles = vocab.FEMALE_TITLES if person.female else vocab.MALE_TITLES
        name = f"{rng.choice(titles)} {name}"
        features.add(TITLE)
    age = None
    if record.age is not None:
        if rng.random() < P_AGE_IN_WORDS:
            age = vocab.number_in_words(record.age)
            features.add(WORD_NUMBER)
        else:
            age = str(record.age)
    return {
        "name": name,
        "age": age,
        "city": record.city,
        "date": _render_date(rng, record.date) if record.date else None,
        "pron": "she" if person.female else "he",
    }


def _list_sentence(
    rng: random.Random,
    item: str,
    slots: list[dict[str, str | None]],
    shared_date: dt.date | None,
    features: set[str],
) -> str:
    items = [fill(item, s) for s in slots]
    joined = "; ".join(items[:-1]) + "; and " + items[-1]
    if shared_date is None:
        return rng.choice(LIST_HEADERS_WITHOUT_DATE) + joined + "."
    features.add(SHARED_DATE)
    header = fill(rng.choice(LIST_HEADERS_WITH_DATE), {"date": _render_date(rng, shared_date)})
    return header + joined + "."


def _other_slots(
    rng: random.Random, other: _Person, free_cities: list[str], about: Record | None
) -> dict[str, str | None]:
    """Slots for a distractor; `about` is the record it talks about, whose facts keep it plausible
    (an interview shortly before the start date, no more years of experience than years of adulthood)."""
    in_words = rng.random() < P_AGE_IN_WORDS
    age = rng.randint(*AGE_RANGE)
    retired_at = rng.randint(*RETIREMENT_AGE_RANGE)
    years = rng.randint(2, max(2, min(25, (about.age or 30) - 18) if about else 25))
    if about and about.date:
        other_date = about.date - dt.timedelta(days=rng.randint(7, 90))
    else:
        other_date = _random_date(rng)

    def number(n: int) -> str:
        return vocab.number_in_words(n) if in_words else str(n)

    return {
        "other": other.full,
        "other_first": other.first,
        "other_age": number(age),
        "retired_at": number(retired_at),
        "years": number(years),
        "other_city": rng.choice(free_cities),
        "other_date": _render_date(rng, other_date),
        "other_year": str(rng.randint(2005, 2017)),
    }


def _pronoun_slots(rng: random.Random, person: _Person, other: _Person) -> dict[str, str | None]:
    # The relative's word agrees with the other person's name ("her brother Tom").
    relatives = vocab.FEMALE_RELATIVES if other.female else vocab.MALE_RELATIVES
    return {
        "Pron": "She" if person.female else "He",
        "Poss": "Her" if person.female else "His",
        "relative": rng.choice(relatives),
    }


def _distinct_people(rng: random.Random, n: int) -> list[_Person]:
    # Distinct first names too, so "her sister Maria" never shares a name with a record.
    people: list[_Person] = []
    while len(people) < n:
        female = rng.random() < 0.5
        first = rng.choice(vocab.FEMALE_FIRST if female else vocab.MALE_FIRST)
        last = rng.choice(vocab.LAST)
        if all(first != p.first and last != p.last for p in people):
            people.append(_Person(first, last, female))
    return people


def _random_date(rng: random.Random) -> dt.date:
    start, end = DATE_RANGE
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def _render_date(rng: random.Random, date: dt.date) -> str:
    return vocab.render_date(date, _weighted(rng, vocab.DATE_FORMS))


def _weighted(rng: random.Random, weights: dict[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]
