"""The facts a text states, read with the catalogue's own vocabulary, and an answer scored fact by fact.

A shopper does not check an answer's wording; they check its facts: is it 36 pieces or 120, beech wood or
cardboard, ages 4 and up or 8-11? ``extract_facts`` reads the attribute values a text states, one extractor per
attribute type, from the words the generator writes (helpers.synthetic): counts of things (pieces, pages, tracks,
layers, charts …), ages, clothing sizes, lengths and dimensions, materials, formats, years, people, brands,
colours, care, ratings, genres, series numbers, batteries, warranties and shipping times. Every value comes out in
the canonical form the record stores it in (helpers.synthetic.Fact), so an answer's facts and its product's record
compare as sets.

``score_facts`` then says, for one answer, which stated values are right, which contradict the record (the record
holds another value of the same attribute), which are invented (the record holds no such value: every
contradiction, and specifics of attributes the record does not have), and which belong to a retrieved neighbour
rather than to the product. A number the answer states outside every typed fact counts as invented when neither
the title nor the record's description holds it.

What the extractor cannot see, it does not score: a material outside the vocabulary ("made of jade"), a name it
does not know unless written "by First Last", a number spelled out ("three foxes"). tests/test_facts.py checks it
on every generated description (it must find exactly the record's facts) and on hand-labelled answers.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from helpers import synthetic
from helpers.synthetic import Fact, fact_form

# Things counted with a number in front: "36 pieces", "3 layer tutu", "34 short parables". Singular → plural.
COUNTED_NOUNS = {
    "piece": "pieces", "page": "pages", "track": "tracks", "minute": "minutes", "layer": "layers",
    "deleted scene": "deleted scenes", "chart": "charts", "drawing": "drawings", "chapter": "chapters",
    "weekly session": "weekly sessions", "aphorism": "aphorisms", "parable": "parables", "psalm": "psalms",
    "contemporary": "contemporaries", "copy": "copies",
}
FORMATS = ("board book", "hardcover", "mass market paperback", "paperback", "library binding", "audio cd",
           "vinyl lp", "dvd", "blu-ray")
RATINGS = ("pg-13", "pg", "g", "r", "nr")
SIZES = ("toddler 2t", "toddler 3t", "toddler 4t", "toddler 8", "toddler 9", "toddler 10", "child 4-6", "child 8-10",
         "child 12-14", "youth 1", "youth 2", "youth 3", "womens 6", "womens 7", "womens 8", "womens 9", "mens 8",
         "mens 9", "mens 10", "mens 11", "xs", "s", "m", "l", "xl")
# Every attribute an answer can be scored on (the generator writes no other).
ATTRIBUTES = ("pieces", "pages", "age", "size", "length", "dimensions", "material", "format", "year", "person",
              "brand", "color", "care", "rating", "genre", "series", "set size", "batteries", "warranty",
              "shipping", "booklet", *sorted(set(COUNTED_NOUNS.values()) - {"pieces", "pages"}))

_NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"
_UNTYPED_NUMBER = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\.\d+)?(?!\w)")


def _words(phrases: Iterable[str]) -> str:
    """An alternation of whole phrases, longest first, so that "egyptian cotton" wins over "cotton"."""
    return "|".join(re.escape(phrase) for phrase in sorted(set(phrases), key=lambda phrase: (-len(phrase), phrase)))


def _number(text: str) -> str:
    return text.replace(",", "")


def _first_group(match: re.Match) -> str:
    return match.group(1)


def _age(match: re.Match) -> str:
    """"ages 2-8" → "2-8", "ages 4 and up" → "4+", "ages 6 months-2 years" → "6 months-2 years"."""
    groups = {key: value for key, value in match.groupdict().items() if value}
    if "months" in groups:
        return f"{groups['months']} months-{groups['high']} years"
    low = groups.get("low") or groups.get("low3")
    high = groups.get("high2") or groups.get("high3")
    return f"{low}-{high}" if high else f"{low}+"


@dataclass(frozen=True)
class Extractor:
    """One attribute type: a pattern over fact_form text, and how a match becomes its attribute and value."""

    attribute: str
    pattern: re.Pattern
    value: Callable[[re.Match], str] = _first_group
    # For counted things the attribute is the noun matched ("pages", "layers" …), not a fixed name.
    attribute_of: Callable[[re.Match], str] | None = None

    def fact(self, match: re.Match) -> tuple[str, str]:
        return (self.attribute_of(match) if self.attribute_of else self.attribute), self.value(match)


@cache
def extractors() -> tuple[Extractor, ...]:
    """The extractors, in the order they read a text: each consumes what it matched, so that "a 16-page booklet"
    is a booklet and not 16 pages, "9 x 13 inch" is a box and not a 13-inch length, and "size Child 8-10" a size."""
    people = [*synthetic.DEMO_PEOPLE, *synthetic.ARTISTS, *synthetic.DIRECTORS,
              *(f"{first} {last}" for first in synthetic.FIRST_NAMES for last in synthetic.LAST_NAMES)]
    brands = [*synthetic.TOY_BRANDS, *synthetic.HOME_BRANDS]
    word = r"[a-z][a-z'-]*,?"
    return (
        Extractor("person", re.compile(rf"(?<!\w)({_words(fact_form(name) for name in people)})(?!\w)")),
        Extractor("brand", re.compile(rf"(?<!\w)({_words(fact_form(name) for name in brands)})(?!\w)")),
        Extractor("booklet", re.compile(r"(?<!\w)(\d+)[ -]page booklet")),
        Extractor("warranty", re.compile(r"(?<!\w)(\d+)[ -]year warranty")),
        Extractor("shipping", re.compile(r"ships in (\d+) business days?")),
        Extractor("batteries", re.compile(r"(?<!\w)(?:(\d+) aa batteries|no batteries)"),
                  value=lambda match: f"{match.group(1)} aa" if match.group(1) else "none"),
        Extractor("set size", re.compile(r"\bset of (\d+)")),
        Extractor("series", re.compile(r"\b((?:book|volume) \d+)(?!\w)")),
        Extractor("size", re.compile(rf"\bsize ({_words(SIZES)})(?![\w-])")),
        Extractor("dimensions", re.compile(r"(?<![\w.])(\d+) ?x ?(\d+)(?!\w)(?: ?(?:inch(?:es)?|in\b|\"))?"),
                  value=lambda match: f"{match.group(1)} x {match.group(2)}"),
        Extractor("age", re.compile(
            r"\b(?:ages?|aged|for children) (?P<months>\d+) months? ?(?:-|to) ?(?P<high>\d+) years?"
            r"|\b(?:ages?|aged) (?P<low>\d+) ?(?:(?:-|to) ?(?P<high2>\d+)|\+| and up| and older| and over)"
            r"|(?<![\w.-])(?P<low3>\d+) ?(?:-|to) ?(?P<high3>\d+) years?(?: old)?(?!\w)"), value=_age),
        Extractor("length", re.compile(r"(?<![\w.])(\d+)(?: ?(?:inch(?:es)?|\")| ?-inch)(?!\w)")),
        Extractor("count", re.compile(rf"(?<![\w.,])({_NUMBER})[ -](?:{word} ){{0,2}}?"
                                      rf"({_words([*COUNTED_NOUNS, *COUNTED_NOUNS.values()])})(?!\w)"),
                  value=lambda match: _number(match.group(1)),
                  attribute_of=lambda match: COUNTED_NOUNS.get(match.group(2), match.group(2))),
        Extractor("rating", re.compile(rf"\brated ({_words(RATINGS)})(?![\w-])")),
        Extractor("genre", re.compile(rf"\b({_words(synthetic.GENRES)}) album")),
        Extractor("format", re.compile(rf"(?<!\w)({_words(FORMATS)})s?(?!\w)")),
        Extractor("material", re.compile(rf"(?<!\w)({_words(synthetic.materials_vocabulary())})(?!\w)")),
        Extractor("color", re.compile(rf"(?<!\w)({_words(fact_form(color) for color in synthetic.COLORS)})(?!\w)")),
        Extractor("care", re.compile(rf"(?<!\w)({_words(synthetic.CARE_INSTRUCTIONS)})(?!\w)")),
        Extractor("year", re.compile(r"(?<![\w.])(?<!\d,)(1[89]\d\d|20[0-2]\d)(?!\w)(?!,\d)")),
    )


# A name outside the vocabulary still counts when the answer writes it "by First Last" (an invented author).
_GENERIC_PERSON = re.compile(r"\bby ((?:[A-Z][\w'’-]+ ){1,2}[A-Z][\w'’-]+)")


@dataclass(frozen=True)
class Reading:
    """What one text states: its typed facts, and the numbers it states outside them."""

    facts: frozenset[tuple[str, str]]
    untyped_numbers: frozenset[str]


def read_text(text: str) -> Reading:
    """Every typed fact a text states, as (attribute, canonical value) pairs, and its other numbers."""
    found = set()
    for match in _GENERIC_PERSON.finditer(" ".join(text.split())):
        found.add(("person", fact_form(match.group(1))))
    normalised = fact_form(text)
    for extractor in extractors():
        found.update(extractor.fact(match) for match in extractor.pattern.finditer(normalised))
        # What an extractor read is blanked out, so that no later one reads it again.
        normalised = extractor.pattern.sub(lambda match: " " * len(match.group(0)), normalised)
    numbers = frozenset(_number(number) for number in _UNTYPED_NUMBER.findall(normalised))
    return Reading(frozenset(found), numbers)


def extract_facts(text: str) -> set[tuple[str, str]]:
    """The typed facts a text states: {(attribute, canonical value)}."""
    return set(read_text(text).facts)


def numbers_in(text: str) -> set[str]:
    """Every number of a text, thousands separators dropped ("200,000" is 200000)."""
    return {_number(number) for number in _UNTYPED_NUMBER.findall(fact_form(text))}


# --- One answer, scored against its product's record ---------------------------------------------------------------


@dataclass(frozen=True)
class FactScore:
    """One answer's facts against its product's record (and, for the neighbour rate, its retrieved neighbours')."""

    stated: frozenset[tuple[str, str]]
    right: frozenset[tuple[str, str]]
    contradicting: frozenset[tuple[str, str]]
    invented: frozenset[tuple[str, str]]  # typed values the record does not hold (contradictions included)
    invented_numbers: frozenset[str]  # numbers outside every typed fact, in neither the title nor the description
    from_neighbours: frozenset[tuple[str, str]]
    title_facts: int
    title_facts_stated: int
    catalogue_facts: int
    catalogue_facts_stated: int

    @property
    def fact_precision(self) -> float:
        return len(self.right) / len(self.stated) if self.stated else math.nan

    @property
    def title_fact_recall(self) -> float:
        return self.title_facts_stated / self.title_facts if self.title_facts else math.nan

    @property
    def catalogue_fact_recall(self) -> float:
        return self.catalogue_facts_stated / self.catalogue_facts if self.catalogue_facts else math.nan

    @property
    def contradicts(self) -> bool:
        return bool(self.contradicting)

    @property
    def invents(self) -> bool:
        return bool(self.invented or self.invented_numbers)

    @property
    def takes_from_neighbours(self) -> bool:
        return bool(self.from_neighbours)


def score_facts(answer: str, record: Sequence[Fact], title: str = "", description: str = "",
                neighbours: Iterable[Sequence[Fact]] = ()) -> FactScore:
    """``answer``'s facts against ``record`` (the product's facts, title facts included).

    ``title`` and ``description`` are the product's texts: a number the answer states outside any typed fact is
    invented only when neither holds it. ``neighbours`` are the records of the products retrieval returned beside
    it (the product's own record excluded): a value from one of them that the product's record does not hold is a
    neighbour's fact.
    """
    reading = read_text(answer)
    own = {fact.key for fact in record}
    own_values: dict[str, set[str]] = {}
    for attribute, value in own:
        own_values.setdefault(attribute, set()).add(value)
    right = reading.facts & own
    invented = reading.facts - own
    contradicting = {(attribute, value) for attribute, value in invented if attribute in own_values}
    neighbour_facts = {fact.key for facts in neighbours for fact in facts} - own
    known_numbers = numbers_in(title) | numbers_in(description)
    title_facts = {fact.key for fact in record if fact.in_title}
    catalogue_facts = own - title_facts
    return FactScore(
        stated=frozenset(reading.facts), right=frozenset(right), contradicting=frozenset(contradicting),
        invented=frozenset(invented), invented_numbers=frozenset(reading.untyped_numbers - known_numbers),
        from_neighbours=frozenset(reading.facts & neighbour_facts),
        title_facts=len(title_facts), title_facts_stated=len(title_facts & reading.facts),
        catalogue_facts=len(catalogue_facts), catalogue_facts_stated=len(catalogue_facts & reading.facts),
    )


def describe(score: FactScore) -> str:
    """One line a student can read: the facts an answer got right, contradicted, invented or took from a neighbour."""
    def listed(pairs) -> str:
        return ", ".join(f"{attribute} {value}" for attribute, value in sorted(pairs))

    parts = []
    if score.right:
        parts.append(f"right: {listed(score.right)}")
    if score.contradicting:
        parts.append(f"contradicts: {listed(score.contradicting)}")
    other = score.invented - score.contradicting
    if other or score.invented_numbers:
        parts.append("invents: " + ", ".join(filter(None, [listed(other), ", ".join(sorted(score.invented_numbers))])))
    if score.from_neighbours:
        parts.append(f"from a neighbour: {listed(score.from_neighbours)}")
    return "; ".join(parts) or "states no checkable fact"
