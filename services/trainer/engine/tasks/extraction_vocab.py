"""Word lists and surface forms for the extraction task: names, cities, numbers and dates in words.

Everything is ASCII and made of common words so that lengths in tokens stay predictable; names and
cities never overlap, so a value can only come from the slot it was written for.
"""

from __future__ import annotations

import datetime as dt

FEMALE_FIRST = (
    "Maria Anna Sofia Elena Laura Nadia Grace Chloe Emma Olivia Hannah Priya Aisha Yuki Mei Ingrid "
    "Clara Julia Rosa Fatima Leila Nora Zoe Ruth Irene Alice Vera Lucia Amara Keiko"
).split()
MALE_FIRST = (
    "James Tom Daniel Omar Lucas Ivan Kenji Raj Marco Felix Hugo Samuel Diego Ahmed Peter Leo Victor "
    "Oscar Noah Ethan Karl Luis Andre Tariq Pavel Liam Mateo Arjun Ben Yusuf"
).split()
LAST = (
    "Lopez Berg Okafor Tanaka Novak Silva Kowalski Nguyen Schmidt Rossi Haddad Patel Kim Larsen Moreau "
    "Jensen Costa Fischer Ibrahim Chen Dubois Petrov Santos Walsh Murphy Sato Romero Nakamura Horvat "
    "Ferreira Mensah Kaur Yilmaz Bauer Russo Ortiz Abbott Grant Owusu Brandt"
).split()
CITIES = (
    "Lyon",
    "Oslo",
    "Denver",
    "Porto",
    "Boston",
    "Madrid",
    "Dublin",
    "Seattle",
    "Austin",
    "Vienna",
    "Prague",
    "Lisbon",
    "Osaka",
    "Nairobi",
    "Toronto",
    "Chicago",
    "Munich",
    "Leeds",
    "Perth",
    "Cairo",
    "Lagos",
    "Seoul",
    "Milan",
    "Zurich",
    "Hamburg",
    "Krakow",
    "Atlanta",
    "Bristol",
    "Glasgow",
    "Helsinki",
    "New York",
    "San Diego",
    "Cape Town",
    "Hong Kong",
    "Tel Aviv",
    "Buenos Aires",
)
FEMALE_TITLES = ("Dr.", "Ms.", "Mrs.")
MALE_TITLES = ("Dr.", "Mr.")
FEMALE_RELATIVES = ("sister", "mother", "aunt", "wife")
MALE_RELATIVES = ("brother", "father", "uncle", "husband")

MONTHS = ("January February March April May June July August September October November December").split()

_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_UNITS = "_ first second third fourth fifth sixth seventh eighth ninth".split()
_ORDINAL_TEENS = (
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()


def number_in_words(n: int) -> str:
    """0..99 as English words: 32 -> 'thirty-two'."""
    if not 0 <= n < 100:
        raise ValueError(f"number_in_words covers 0..99, got {n}")
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return _TEENS[n - 10]
    tens, units = divmod(n, 10)
    return _TENS[tens] + ("-" + _UNITS[units] if units else "")


def ordinal_suffix(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ordinal_in_words(n: int) -> str:
    """1..31 as an English ordinal: 21 -> 'twenty-first'."""
    if not 1 <= n <= 31:
        raise ValueError(f"ordinal_in_words covers 1..31, got {n}")
    if n < 10:
        return _ORDINAL_UNITS[n]
    if n < 20:
        return _ORDINAL_TEENS[n - 10]
    tens, units = divmod(n, 10)
    if units == 0:
        return {20: "twentieth", 30: "thirtieth"}[n]
    return f"{_TENS[tens]}-{_ORDINAL_UNITS[units]}"


# Unambiguous surface forms only: no 3/4/2021, which reads as March or April depending on the reader.
DATE_FORMS: dict[str, float] = {
    "month_day_year": 3.0,  # March 3, 2021
    "month_ordinal_year": 2.0,  # March 3rd, 2021
    "day_month_year": 2.0,  # 3 March 2021
    "the_ordinal_of_month": 1.5,  # the 3rd of March 2021
    "iso": 1.0,  # 2021-03-03
    "abbrev_month_day_year": 1.0,  # Mar 3, 2021
    "day_abbrev_month_year": 1.0,  # 3 Mar 2021
    "ordinal_words": 1.0,  # the third of March, 2021
}


def render_date(date: dt.date, form: str) -> str:
    month, abbrev = MONTHS[date.month - 1], MONTHS[date.month - 1][:3]
    day, year = date.day, date.year
    match form:
        case "month_day_year":
            return f"{month} {day}, {year}"
        case "month_ordinal_year":
            return f"{month} {ordinal_suffix(day)}, {year}"
        case "day_month_year":
            return f"{day} {month} {year}"
        case "the_ordinal_of_month":
            return f"the {ordinal_suffix(day)} of {month} {year}"
        case "iso":
            return date.isoformat()
        case "abbrev_month_day_year":
            return f"{abbrev} {day}, {year}"
        case "day_abbrev_month_year":
            return f"{day} {abbrev} {year}"
        case "ordinal_words":
            return f"the {ordinal_in_words(day)} of {month}, {year}"
    raise ValueError(f"unknown date form {form!r}")
