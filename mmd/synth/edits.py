"""Caption manipulation: swap one entity of a real caption for one taken from a related caption.

This is the text side of out-of-context misinformation (Zeng et al., EMNLP 2024): the image
stays, the caption now names the wrong person, place, date or number. The donor is the caption
of a *related* item, so the swapped value is plausible rather than random noise. The entities
come from `mmd.synth.spans`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from mmd.synth.spans import (_CURRENCY, _MONTHS_ABBR, _MONTHS_FULL, _NUMERIC_DATE_RE, _WEEKDAYS, _YEAR_ONLY_RE, SPAN_KINDS,
                             Span,
                             find_spans)

__all__ = ["SPAN_KINDS", "Edit", "Span", "find_spans", "swap_edit"]


@dataclass(frozen=True)
class Edit:
    """A caption with one span swapped; `start` indexes the original text."""

    text: str  # the edited caption
    kind: str
    old: str  # the span replaced
    new: str  # what replaced it (taken from the donor)
    start: int  # where in the ORIGINAL text the replaced span started


# --- the edit -------------------------------------------------------------------------------


_SCALES = {"thousand": 1e3, "k": 1e3, "K": 1e3, "million": 1e6, "m": 1e6, "M": 1e6, "mn": 1e6,
           "billion": 1e9, "b": 1e9, "B": 1e9, "bn": 1e9, "trillion": 1e12, "tn": 1e12}
_MONTH_NUMBER = {m: i + 1 for i, m in enumerate(_MONTHS_FULL)} | {
    m: n for m, n in zip(_MONTHS_ABBR, (1, 2, 3, 4, 6, 7, 8, 9, 9, 10, 11, 12))}


def _meaning(kind: str, value: str) -> object:
    """What a span says, so that "1,000,000" and "1 million", or "3 March 2020" and
    "Monday, March 3, 2020", count as the same value and are never "swapped" for each other."""
    folded = " ".join(value.split())
    if kind == "number":
        m = re.match(rf"({_CURRENCY})?[ \u00a0]?([0-9,.]+)[ \u00a0]?([A-Za-z]*)", folded)
        if m:
            try:
                amount = float(m.group(2).replace(",", "")) * _SCALES.get(m.group(3), 1.0)
            except ValueError:
                return folded.casefold()
            return (m.group(1) or "", round(amount, 6), "%" in folded or "cent" in folded)
    if kind == "date":
        words = re.findall(r"[A-Za-z]+", folded)
        months = [_MONTH_NUMBER[w] for w in words if w in _MONTH_NUMBER]
        digits = tuple(int(d) for d in re.findall(r"[0-9]+", folded))
        if months:
            # the weekday adds nothing once the calendar date is there
            return (months[0], digits)
        if digits:
            return (digits, folded.endswith("s"))  # "1990s" is a decade, not the year 1990
    return folded.casefold()


def _restates(kind: str, a: str, b: str) -> bool:
    """True when `a` in place of `b` would not make the caption false."""
    if _meaning(kind, a) == _meaning(kind, b):
        return True
    if kind == "date":
        # "2020" for "3 March 2020" (or back) only blurs the date; it does not move it.
        for year, other in ((a, b), (b, a)):
            if _YEAR_ONLY_RE.fullmatch(year) and not year.endswith("s") and year in other:
                return True
    return False


def _shape(span_kind: str, value: str) -> str:
    """A coarse sub-type, so a year is swapped for a year and a price for a price when the donor has one."""
    if span_kind == "number":
        if re.match(_CURRENCY, value):
            return "currency"
        if value.endswith("%") or value.endswith("cent"):
            return "percent"
        return "plain"
    if span_kind == "date":
        if _YEAR_ONLY_RE.fullmatch(value):
            return "year"
        if _NUMERIC_DATE_RE.fullmatch(value):
            return "numeric"
        if value in _WEEKDAYS:
            return "weekday"
        return "calendar"
    return span_kind


def swap_edit(text: str, donor: str, rng: random.Random, kinds: Sequence[str] = SPAN_KINDS) -> Edit | None:
    """Replace one span of `text` by a span of the same kind from `donor` that says something different.

    Donor values are only those the text states nowhere (by meaning: "1 million" is "1,000,000"),
    so the edit is a false claim rather than a repetition. The kind, the span of `text` and the
    donor's value are drawn with `rng` alone from sorted candidate lists, so the same inputs and
    seed give the same Edit. A donor value of the same shape (a year for a year, a price for a
    price) is preferred when there is one; a donor's "14 July 2019" also offers the year "2019".
    Returns None when `text` and `donor` share no swappable kind among `kinds`. Everything
    outside the replaced span is kept byte for byte.

    Raises ValueError for a kind not in SPAN_KINDS (a caller's mistake, not odd input).
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    unknown = sorted(set(kinds) - set(SPAN_KINDS))
    if unknown:
        raise ValueError(f"unknown span kinds {unknown}; expected some of {SPAN_KINDS}")
    if not text or not donor:
        return None

    text_spans = find_spans(text)
    donor_spans = find_spans(donor)
    # kind -> (spans of the text in text order, sorted donor values to put in one of them)
    options: dict[str, tuple[list[Span], list[str]]] = {}
    for kind in (k for k in SPAN_KINDS if k in kinds):
        values = {s.text for s in donor_spans if s.kind == kind}
        if kind == "date":
            # The year inside "14 July 2019" can stand in for a bare year: "in 2018" -> "in 2019".
            values |= {y for v in values for y in re.findall(r"(?<![0-9])(?:19|20)[0-9]{2}(?![0-9])", v)}
        spans = [s for s in text_spans if s.kind == kind]
        # A value the text already states elsewhere makes nonsense ("Macron met Macron"), not a false claim.
        fresh = sorted(v for v in values if not any(_restates(kind, v, s.text) for s in spans))
        if spans and fresh:
            options[kind] = (spans, fresh)
    if not options:
        return None

    kind = rng.choice(sorted(options))
    spans, values = options[kind]
    span = rng.choice(spans)
    same_shape = [v for v in values if _shape(kind, v) == _shape(kind, span.text)]
    new = rng.choice(same_shape or values)
    return Edit(text=text[:span.start] + new + text[span.end:], kind=kind, old=span.text, new=new, start=span.start)
