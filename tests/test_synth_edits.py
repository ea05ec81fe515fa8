"""Rule-based span finding and entity swaps for synthetic caption manipulation."""

from __future__ import annotations

import random
import time

import pycountry
import pytest

from mmd.synth.edits import SPAN_KINDS, Edit, Span, find_spans, swap_edit


def spans_of(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in find_spans(text)]


def assert_well_formed(text: str, spans: list[Span]) -> None:
    previous_end = 0
    for span in spans:
        assert span.kind in SPAN_KINDS
        assert text[span.start:span.end] == span.text
        assert span.start >= previous_end, "spans overlap or are out of order"
        previous_end = span.end


CAPTIONS = [
    "Floods in Indonesia on 3 March 2020 killed 45 people, says Joko Widodo",
    "RT @CNN99: #Sandy2012 hits New York http://t.co/x9Y2 now",
    "Hurricane Sandy hit New Jersey and North Carolina in October 2012; Governor Chris Christie toured the coast.",
    "Joe Biden met Emmanuel Macron in France in 2018, paying $5 for 10% of 2,500 shares",
    "Photo taken 3/4/21 at 10:30 by George W. Bush in the Bank of England, a 45-year-old said.",
    "BREAKING: HUGE CROWDS IN TEXAS as President Joe Biden visits on Monday, March 3, 2020",
]


def test_pycountry_holds_the_places_the_tests_rely_on():
    assert pycountry.countries.get(name="Indonesia") is not None
    assert pycountry.subdivisions.get(code="US-NY").name == "New York"
    assert pycountry.subdivisions.get(code="US-NY").parent_code is None
    # Jakarta is only a lower-level "Jakarta Raya", so the bare city is not a place here.
    assert not any(s.name == "Jakarta" for s in pycountry.subdivisions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CAPTIONS[0],
            [("place", "Indonesia"), ("date", "3 March 2020"), ("number", "45"), ("name", "Joko Widodo")],
        ),
        (
            CAPTIONS[2],
            [
                ("name", "Hurricane Sandy"),  # two words, so a name even at the start of the sentence
                ("place", "New Jersey"),
                ("place", "North Carolina"),
                ("date", "October 2012"),
                ("name", "Chris Christie"),  # the title stays out of the name
            ],
        ),
        (
            CAPTIONS[3],
            [
                ("name", "Joe Biden"),
                ("name", "Emmanuel Macron"),
                ("place", "France"),
                ("date", "2018"),
                ("number", "$5"),
                ("number", "10%"),
                ("number", "2,500"),
            ],
        ),
        (
            # an initial joins the name, a connector joins "Bank of England", "10:30" and "45-year-old" are no numbers
            CAPTIONS[4],
            [("date", "3/4/21"), ("name", "George W. Bush"), ("name", "Bank of England")],
        ),
        (
            CAPTIONS[5],
            [("name", "Joe Biden"), ("date", "Monday, March 3, 2020")],
        ),
    ],
)
def test_find_spans_on_captions(text, expected):
    spans = find_spans(text)
    assert [(s.kind, s.text) for s in spans] == expected
    assert_well_formed(text, spans)


def test_offsets_point_into_the_text():
    text = CAPTIONS[0]
    assert find_spans(text)[1] == Span("date", "3 March 2020", 23, 35)
    for caption in CAPTIONS:
        assert_well_formed(caption, find_spans(caption))


def test_handles_hashtags_and_urls_are_never_spanned():
    text = CAPTIONS[1]
    spans = find_spans(text)
    assert [(s.kind, s.text) for s in spans] == [("place", "New York")]
    assert spans[0].start == text.index("New York")
    for blocked in ("@user99 and #2020 and #Texas via https://example.org/2020/05/Texas?id=45",
                    "mail jane.doe2020@example.com or see www.site.com/45 and bit.ly/Joe99",
                    "covid19 and G7 and Area51 and x_2020"):
        assert find_spans(blocked) == [], blocked


def test_dates():
    assert spans_of("It happened in 2019.") == [("date", "2019")]  # a bare year is a date, not a number
    assert spans_of("Back in the 1990s") == [("date", "1990s")]
    assert spans_of("Rates may rise, he said") == []  # "may" the verb
    assert spans_of("Talks may resume on May 3 or in May 2021") == [("date", "May 3"), ("date", "May 2021")]
    assert spans_of("We met on Sept. 12 and on 3rd of March, 2020") == [
        ("date", "Sept. 12"), ("date", "3rd of March, 2020")]
    assert spans_of("Filed 2020-03-01, updated 03.04.2021 and 3/4/2021") == [
        ("date", "2020-03-01"), ("date", "03.04.2021"), ("date", "3/4/2021")]
    assert spans_of("Protests grew in March and on Friday") == [("date", "March"), ("date", "Friday")]
    # the sentence's full stop is not part of the month
    assert spans_of("Taken on 3 March.") == [("date", "3 March")]


def test_numbers():
    text = "It cost $2 billion, €3.5m or 1,000,000 rupees; 45% agreed and 2 million of 7.5 voted"
    assert spans_of(text) == [
        ("number", "$2 billion"), ("number", "€3.5m"), ("number", "1,000,000"), ("number", "45%"),
        ("number", "2 million"), ("number", "7.5")]
    assert spans_of("A 45-year-old left at 10:30 with version 1.2.3") == []
    assert spans_of("2020% growth") == [("number", "2020%")]  # a percentage is no year


def test_names_are_precise():
    assert spans_of("FAKE NEWS!!! OBAMA IS IN KENYA") == []  # shouting is not a name, places are case-sensitive
    assert spans_of("LOOK AT THIS Donald Trump photo") == [("name", "Donald Trump")]
    assert spans_of("Obama visits Kenya") == [("place", "Kenya")]  # one capitalised word opening a sentence
    assert spans_of("Then Obama visited them") == [("name", "Obama")]  # "Then" opens the sentence, not Obama
    assert spans_of("Crowds cheered Obama.") == [("name", "Obama")]
    assert spans_of("The Washington Post says Michael Jordan met Theresa May") == [
        ("name", "Washington Post"), ("name", "Michael Jordan"), ("name", "Theresa May")]
    assert spans_of("Bashar al-Assad met O'Brien and Jean-Pierre in Syria") == [
        ("name", "Bashar al-Assad"), ("name", "O'Brien"), ("name", "Jean-Pierre"), ("place", "Syria")]
    assert spans_of("Crowds greeted Biden's convoy") == [("name", "Biden")]
    assert spans_of("Mr. Smith spoke") == [("name", "Smith")]
    assert spans_of("Crowds Gather As Police Fire Tear Gas In City") == []  # a headline in Title Case
    assert spans_of('Crowds heard Joe Biden say "The vote was rigged"') == [("name", "Joe Biden")]


def test_places():
    assert spans_of("Fans in Russia, South Korea and the United States of America") == [
        ("place", "Russia"), ("place", "South Korea"), ("place", "United States of America")]
    assert spans_of("Smoke over New York City") == [("place", "New York City")]
    assert spans_of("Texas Governor Greg Abbott") == [("place", "Texas"), ("name", "Greg Abbott")]
    assert spans_of("Floods in Jakarta") == [("name", "Jakarta")]  # no city list: a capitalised word


A = "Joe Biden met Emmanuel Macron in France in 2018, paying $5 for 10% of 2,500 shares"
B = "Emmanuel Macron visited Germany on 14 July 2019 with 300 police officers, says Angela Merkel"


def assert_only_span_changed(text: str, edit: Edit) -> None:
    end = edit.start + len(edit.old)
    assert text[edit.start:end] == edit.old
    assert edit.text[:edit.start] == text[:edit.start]
    assert edit.text[edit.start:edit.start + len(edit.new)] == edit.new
    assert edit.text[edit.start + len(edit.new):] == text[end:]
    assert edit.text == text[:edit.start] + edit.new + text[end:]


def test_swap_edit_exact_output():
    edit = swap_edit(A, B, random.Random(0))
    assert edit == Edit(
        text="Joe Biden met Emmanuel Macron in Germany in 2018, paying $5 for 10% of 2,500 shares",
        kind="place", old="France", new="Germany", start=33)


def test_swap_edit_is_deterministic_and_varies_with_the_seed():
    first = [swap_edit(A, B, random.Random(seed)) for seed in range(10)]
    again = [swap_edit(A, B, random.Random(seed)) for seed in range(10)]
    assert first == again
    assert len({e.kind for e in first}) > 1
    assert len({(e.start, e.new) for e in first}) > 2
    for edit in first:
        assert edit is not None and edit.text != A
        assert_only_span_changed(A, edit)
        donor_values = {s.text for s in find_spans(B) if s.kind == edit.kind} | {"2019"}
        assert edit.new in donor_values and edit.new in B
        # never a value the caption already states: no "Emmanuel Macron met Emmanuel Macron"
        assert edit.new not in {s.text for s in find_spans(A)}


def test_swap_edit_respects_kinds():
    for seed in range(10):
        edit = swap_edit(A, B, random.Random(seed), kinds=("number",))
        assert edit is not None and edit.kind == "number"
        assert edit.new == "300"
        assert_only_span_changed(A, edit)
    assert swap_edit(A, B, random.Random(0), kinds="place") == swap_edit(A, B, random.Random(0), kinds=("place",))
    with pytest.raises(ValueError, match="unknown span kinds"):
        swap_edit(A, B, random.Random(0), kinds=("person",))


def test_swap_edit_prefers_a_value_of_the_same_shape():
    # the donor's calendar date also offers its year, so a year is swapped for a year
    edit = swap_edit("Protests in Paris in 2018", "Marches on 14 July 2019", random.Random(0), kinds=("date",))
    assert (edit.old, edit.new, edit.text) == ("2018", "2019", "Protests in Paris in 2019")
    edit = swap_edit("Tickets cost $5 for 300 fans", "It paid $12 to 45 people", random.Random(1), kinds=("number",))
    assert {(edit.old, edit.new)} <= {("$5", "$12"), ("300", "45")}


def test_swap_edit_returns_none_when_nothing_can_be_swapped():
    rng = random.Random(0)
    assert swap_edit("", B, rng) is None
    assert swap_edit(A, "", rng) is None
    assert swap_edit("no entities here at all", B, rng) is None
    assert swap_edit(A, "nothing to give", rng) is None
    assert swap_edit(A, B, rng, kinds=()) is None
    assert swap_edit("Visit France", "Visit Germany", rng, kinds=("number",)) is None
    # the same value said another way is not a different claim
    assert swap_edit("It cost 1,000,000 euros", "It cost 1 million euros", rng) is None
    assert swap_edit("Seen on 3 March 2020", "Seen on Tuesday, March 3, 2020", rng) is None
    assert swap_edit("Seen in 2020", "Seen on 3 March 2020", rng) is None  # only less precise, not false
    assert swap_edit("Lights in France", "lights in FRANCE and France", rng) is None


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "😀🔥💯", "مرحبا بالعالم ٢٠٢٠", "שלום עולם", "\u200f\u202e\x00\ufeff",
        "🇮🇩 Indonesia 😀 2020 🇺🇸 Texas", "A", "1", "$", "@", "#", "http://", "May", "3 March",
    ],
)
def test_odd_input_does_not_raise(text):
    spans = find_spans(text)
    assert_well_formed(text, spans)
    for seed in range(3):
        edit = swap_edit(text, B, random.Random(seed))
        if edit is not None:
            assert_only_span_changed(text, edit)
        swap_edit(B, text, random.Random(seed))


def test_arabic_and_emoji_around_entities():
    text = "مرحبا 2020 😀 Texas"
    assert spans_of(text) == [("date", "2020"), ("place", "Texas")]
    edit = swap_edit(text, "Floods in Indonesia", random.Random(0))
    assert edit.text == "مرحبا 2020 😀 Indonesia"


def test_long_text_finishes_fast():
    unit = CAPTIONS[0] + ". @u1 #t2 http://x.co/3 😀 مرحبا "
    text = (unit * (100_000 // len(unit) + 1))[:100_000]
    started = time.perf_counter()
    spans = find_spans(text)
    edit = swap_edit(text, B, random.Random(0))
    assert time.perf_counter() - started < 5.0
    assert len(spans) > 3000
    assert edit is not None
    assert_only_span_changed(text, edit)
