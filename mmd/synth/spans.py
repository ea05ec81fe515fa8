"""Finding entities in a caption by rules: numbers, dates, places and names (`find_spans`).

No NER model is available offline, so spans are found by rules, tuned for precision: a missed
entity only means fewer candidate edits, while a wrong one (a verb taken for a name, a digit
inside a URL) produces a broken caption that teaches a detector the wrong thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Sequence

SPAN_KINDS = ("number", "date", "place", "name")


@dataclass(frozen=True)
class Span:
    """One entity found in a text: `text == source[start:end]`."""

    kind: str  # one of SPAN_KINDS
    text: str  # the exact substring
    start: int
    end: int


# --- regions no span may touch -------------------------------------------------------------

_PROTECTED_RE = re.compile(
    r"(?:https?://|www\.)[^\s<>\"']+"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail before @handle, or the handle would eat its tail
    r"|[@#]\w+"
    # bare short links (t.co/x9Y2, bit.ly/...): their path is as digit-laden as a full URL
    r"|(?<![\w@])(?:[A-Za-z0-9-]+\.)+(?:com|org|net|gov|edu|info|news|co|io|ly|me|tv|uk|de|fr)(?:/\S*)?(?!\w)"
)

# --- dates ----------------------------------------------------------------------------------

_MONTHS_FULL = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
_MONTHS_ABBR = ("Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _alt(words: Sequence[str]) -> str:
    # Longest first: the regex takes the first alternative that matches, not the longest.
    return "|".join(sorted(words, key=lambda w: (-len(w), w)))


_SP = r"[ \t\u00a0]+"  # dates do not run across line breaks
# An abbreviation may take its full stop; a full name never does (that stop ends the sentence).
_MON = rf"(?:(?:{_alt(_MONTHS_FULL)})(?!\w)|(?:{_alt(_MONTHS_ABBR)})(?:\.|(?!\w)))"
# "May" and abbreviations alone are too ambiguous (the verb, "Jan" the first name): only full names.
_MON_ALONE = rf"(?:{_alt([m for m in _MONTHS_FULL if m != 'May'])})(?!\w)"
_DAY = r"(?:3[01]|[12][0-9]|0?[1-9])(?:st|nd|rd|th)?(?![0-9])"
_YEAR = r"[12][0-9]{3}(?![0-9])"
_WDAY = rf"(?:{_alt(_WEEKDAYS)})(?!\w)"
_D2 = r"(?:3[01]|[12][0-9]|0?[1-9])"
_DATE_RE = re.compile(
    r"(?<![\w@#$€£¥₹/])(?<![0-9][.,:/-])(?:"
    rf"(?:{_WDAY},?{_SP})?{_DAY}(?:{_SP}of)?{_SP}{_MON}(?:,?{_SP}{_YEAR})?"  # (Monday) 3(rd) (of) March (2020)
    rf"|(?:{_WDAY},?{_SP})?{_MON}{_SP}{_DAY}(?:,?{_SP}{_YEAR})?"  # (Monday,) March 3(, 2020)
    rf"|{_MON},?{_SP}{_YEAR}"  # March 2020
    r"|(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"  # ISO 2020-03-01
    rf"|{_D2}/{_D2}/(?:[0-9]{{4}}|[0-9]{{2}})"  # 3/1/2020, 3/1/20
    rf"|{_D2}([.-]){_D2}\1[0-9]{{4}}"  # 03.01.2020, 3-1-2020: four-digit year only, "1.5.2" is a version
    rf"|{_WDAY}"
    rf"|{_MON_ALONE}"
    r"|(?:19|20)[0-9]{2}s?"  # bare year (or decade): a date, not a count
    r")(?![\w/%])(?![.,:-][0-9])"
)
_YEAR_ONLY_RE = re.compile(r"(?:19|20)[0-9]{2}s?")
_NUMERIC_DATE_RE = re.compile(r"[0-9]+[-/.][0-9]+[-/.][0-9]+")

# --- numbers --------------------------------------------------------------------------------

_CURRENCY = r"(?:US\$|A\$|C\$|R\$|[$€£¥₹])"
_NUM = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)"
_SCALE = r"(?:[ \u00a0](?:thousand|million|billion|trillion)(?!\w)|(?:bn|mn|tn|[kmbKMB])(?!\w))"
_PERCENT = r"(?:%|[ \u00a0](?:percent|per cent)(?!\w))"
_NUMBER_RE = re.compile(
    r"(?<![\w@#/])(?<![0-9][.,:/-])(?<![A-Za-z]-)"
    rf"(?:{_CURRENCY}[ \u00a0]?{_NUM}{_SCALE}?|{_NUM}(?:{_PERCENT}|{_SCALE})?)"
    r"(?![\w/])(?![.,:-][0-9A-Za-z])"  # not "45-year-old", "10:30", "3.5.1"
)

# --- places ---------------------------------------------------------------------------------

_MIN_PLACE_LEN = 4
# pycountry names that are far more often something else in captions: compass words,
# common nouns, first names and surnames (Batman is a Turkish province, Bono a Ghanaian region).
_PLACE_BLOCKLIST = frozenset({
    "Central", "Centre", "Center", "North", "South", "East", "West", "Eastern", "Western", "Northern", "Southern",
    "Nord", "Norte", "Ouest", "Leste", "Sud-Est", "Coast", "Gulf", "Lakes", "Rivers", "Plateau", "Pool", "Unity",
    "Cascade", "Grad", "Pest", "Male", "Mary", "Nelson", "Isabel", "Miranda", "Sofia", "Rivera", "Herrera",
    "Hidalgo", "Fontana", "Batman", "Delta", "Para", "Mono", "Meta", "Mara", "Saga", "Kara", "Lara", "Muta", "Isla",
    "Valle", "Colonia", "Paola", "Sila", "Mila", "Tabor", "Bloke", "Bono", "Alba", "Zeta", "Moka", "Nara", "Saba",
    "Ruse", "Kochi", "Eger", "Lima", "Marsa", "Upper", "Lower", "Capital", "Mosta",
})
# Short forms pycountry lacks (it has "Russian Federation", "Türkiye", "Palestine, State of").
_PLACE_ALIASES = ("Russia", "Turkey", "Palestine", "Britain", "Great Britain", "Vatican City", "Ivory Coast",
                  "Burma", "Macedonia", "Swaziland", "Cape Verde", "East Timor", "Czech Republic")
# A place followed by one of these is still a place, and a longer one ("New York City").
_GEO_SUFFIXES = frozenset({"City", "State", "Province", "County", "Region", "District", "Territory",
                           "Island", "Islands"})


@cache
def _place_index() -> dict[str, tuple[str, ...]]:
    """Place names keyed by their first two characters, each bucket longest first.

    Built once, lazily: pycountry parses its JSON on first use, which no caller of
    `find_spans` on a text without capitals should pay for.
    """
    import pycountry

    names: set[str] = set(_PLACE_ALIASES)
    for country in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            value = getattr(country, attr, None)
            if value:
                names.add(value.removeprefix("the "))
    # Top-level subdivisions only (US states, Indian states, German Länder, Japanese prefectures):
    # the lower levels are thousands of boroughs and municipalities named like people or verbs.
    for sub in pycountry.subdivisions:
        if sub.parent_code is None:
            names.add(sub.name)
    buckets: dict[str, list[str]] = {}
    for name in names:
        # "Korea, Republic of" and "Bicol (Region V)" are catalogue forms no caption uses.
        if len(name) < _MIN_PLACE_LEN or not name[0].isupper() or any(c in name for c in ",()/"):
            continue
        if name in _PLACE_BLOCKLIST:
            continue
        buckets.setdefault(name[:2], []).append(name)
    return {key: tuple(sorted(group, key=lambda n: (-len(n), n))) for key, group in buckets.items()}


# --- names ----------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_STOPWORDS = frozenset({
    # pronouns, determiners, conjunctions, prepositions: capitalised only because they open a sentence
    "The", "This", "That", "These", "Those", "A", "An", "I", "We", "He", "She", "It", "They", "You", "Me", "Us",
    "Him", "Them", "My", "Our", "Your", "His", "Her", "Its", "Their", "Mine", "Ours", "Yours", "Theirs",
    "And", "But", "Or", "Nor", "So", "Yet", "If", "Then", "Than", "Because", "Although", "Though", "As",
    "In", "On", "At", "For", "From", "With", "Without", "By", "To", "Of", "Into", "Over", "Under", "About",
    "After", "Before", "During", "Since", "Until", "While", "When", "Where", "Why", "What", "Who", "Whom",
    "Whose", "Which", "How", "Here", "There", "Now", "Today", "Yesterday", "Tomorrow", "Tonight",
    "Is", "Are", "Was", "Were", "Be", "Been", "Do", "Does", "Did", "Has", "Have", "Had", "Can", "Could", "Will",
    "Would", "Shall", "Should", "Might", "Must", "Not", "No", "Yes", "All", "Some", "Many", "Most", "Every",
    "Each", "Any", "Both", "Few", "More", "Less", "Just", "Only", "Also", "Even", "Still", "Very", "Too", "Again",
    # tweet, meme and headline furniture
    "Breaking", "BREAKING", "RT", "Update", "Updated", "Exclusive", "Live", "Watch", "Look", "Photo", "Photos",
    "Video", "Videos", "Image", "Images", "Picture", "Pictures", "Viral", "Fact", "Check", "Fake", "False", "True",
    "Hoax", "Claim", "Claims", "Report", "Reports", "Says", "Said", "Please", "Thanks", "Thank", "Happy", "Good",
    "Great", "Wow", "Oh", "Omg", "Lol", "According", "Read", "Share", "See", "Stop", "Help", "Pray", "Visit",
    "Support", "Stand", "Save", "Welcome", "Let", "Let's", "Via", "Source", "Credit", "Credits", "Edit", "Note",
})
# Titles precede names but are not part of them: "President Joko Widodo" names "Joko Widodo".
_TITLES = frozenset({
    "Mr", "Mrs", "Ms", "Miss", "Dr", "Prof", "Sir", "Dame", "Lord", "Lady", "St", "Gen", "Col", "Lt", "Capt",
    "Sgt", "Sen", "Rep", "Gov", "Pres", "President", "Vice", "Prime", "Minister", "Secretary", "Governor",
    "Senator", "Congressman", "Congresswoman", "Mayor", "Chancellor", "Premier", "Chairman", "Chairwoman",
    "Chief", "Judge", "Justice", "General", "Colonel", "Captain", "Commander", "Officer", "Sheriff", "King",
    "Queen", "Prince", "Princess", "Pope", "Cardinal", "Bishop", "Rev", "Reverend", "Father", "Sister", "Imam",
    "Rabbi", "Sheikh", "Ambassador", "Spokesman", "Spokeswoman", "Spokesperson", "Professor", "Doctor", "Coach",
    "CEO", "MP", "PM", "Speaker", "Leader", "Candidate", "Actor", "Actress", "Singer", "Star",
})
# Function words are lowercase inside an ordinary sentence; capitalised there, they mark a
# Title Case Headline, whose every word looks like a name.
_FUNCTION_WORDS = frozenset({
    "The", "A", "An", "And", "Or", "But", "As", "In", "On", "At", "Of", "For", "To", "With", "By", "From", "Into",
    "Over", "After", "Is", "Are", "Was", "Were", "Be", "Has", "Have", "Its", "Their", "His", "Her", "Amid",
})
_CONNECTORS = frozenset({"of", "de", "van", "von", "der", "den", "da", "di", "del", "du", "la", "le", "bin", "ibn"})
_MONTH_WORDS = frozenset(_MONTHS_FULL + _MONTHS_ABBR + _WEEKDAYS)
_MAX_NAME_WORDS = 4
_SENTENCE_END = frozenset(".!?…:;|•\n")
_OPENERS = "\"'“‘«([{ \t\u00a0"
_QUOTES = frozenset("\"“«(")

_NAME, _INITIAL, _CONNECTOR, _TAIL, _BREAK = range(5)


@dataclass(frozen=True)
class _Tok:
    start: int
    end: int
    text: str
    cls: int


def _classify(word: str, text: str, start: int, end: int) -> tuple[int, int]:
    """The class of one word token and its end (an initial takes its full stop)."""
    # Glued to digits or an underscore ("Area51", "x_Trump"): part of some identifier.
    if (start > 0 and (text[start - 1].isdigit() or text[start - 1] == "_")) or (
        end < len(text) and (text[end].isdigit() or text[end] == "_")
    ):
        return _BREAK, end
    if word in _CONNECTORS:
        return _CONNECTOR, end
    if len(word) == 1:
        if word.isupper() and end < len(text) and text[end] == ".":
            return _INITIAL, end + 1
        return _BREAK, end
    if word.startswith(("al-", "el-")) and word[3:4].isupper():
        return _TAIL, end  # "Bashar al-Assad": part of a name, never its start
    if not word[0].isupper() or word.isupper():  # lowercase, or SHOUTING (tweets and memes are not all names)
        return _BREAK, end
    base = word.removesuffix("'s").removesuffix("’s")
    if base in _STOPWORDS or base in _TITLES or word in _STOPWORDS:
        return _BREAK, end
    return _NAME, end


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _WORD_RE.finditer(text):
        cls, end = _classify(m.group(), text, m.start(), m.end())
        out.append(_Tok(m.start(), end, text[m.start():end], cls))
    return out


def _at_sentence_start(text: str, pos: int, blocked: bytearray) -> bool:
    """True when nothing but openers stands between `pos` and a sentence boundary."""
    i = pos - 1
    while i >= 0 and text[i] in _OPENERS:
        i -= 1
    if i < 0 or text[i] in _SENTENCE_END:
        if i >= 0 and text[i] == ".":
            # "Mr. Smith" and "W. Bush": a title or an initial ends in a full stop, not the sentence.
            word = re.search(r"(\w+)$", text[max(0, i - 12):i])
            if word and (word.group(1) in _TITLES or (len(word.group(1)) == 1 and word.group(1).isupper())):
                return False
        return True
    # A caption that opens with "@user" or "#tag" starts its sentence after it.
    return blocked[i] == 1


def _headline_segments(text: str, toks: list[_Tok]) -> tuple[list[int], set[int]]:
    """Each token's sentence number, and the sentences written in Title Case."""
    segment_of: list[int] = []
    headlines: set[int] = set()
    segment, first = 0, True
    prev_end = 0
    for tok in toks:
        gap = text[prev_end:tok.start]
        if any(c in _SENTENCE_END for c in gap):
            segment, first = segment + 1, True
        elif any(c in _QUOTES for c in gap):
            first = True  # a quoted sentence opens with a capital too: said "The vote was rigged"
        segment_of.append(segment)
        if not first and tok.text in _FUNCTION_WORDS:
            headlines.add(segment)
        first, prev_end = False, tok.end
    return segment_of, headlines


def _name_spans(text: str, toks: list[_Tok], occupied: bytearray, protected: bytearray) -> list[Span]:
    spans: list[Span] = []
    segment_of, headlines = _headline_segments(text, toks)
    n = len(toks)
    i = 0
    while i < n:
        tok = toks[i]
        if tok.cls not in (_NAME, _INITIAL) or occupied.find(1, tok.start, tok.end) != -1 or segment_of[i] in headlines:
            i += 1
            continue
        run = [tok]
        j = i + 1
        while j < n:
            nxt = toks[j]
            if text[run[-1].end:nxt.start] != " " or occupied.find(1, nxt.start, nxt.end) != -1:
                break
            if run[-1].text.endswith(("'s", "’s")):
                break  # "Biden's Administration": the possessive closes the name
            if nxt.cls in (_NAME, _INITIAL, _TAIL):
                run.append(nxt)
            elif nxt.cls == _CONNECTOR and run[-1].cls != _CONNECTOR:
                run.append(nxt)
            else:
                break
            j += 1
        i = j
        # A name ends in a name word: drop a dangling "of" or a sentence's closing "B.".
        while run and run[-1].cls in (_CONNECTOR, _INITIAL):
            run.pop()
        if not run:
            continue
        words = sum(t.cls in (_NAME, _TAIL) for t in run)
        if words == 0 or words > _MAX_NAME_WORDS:
            continue  # longer capitalised runs are Title Case Headlines, not names
        if len(run) == 1:
            if run[0].text in _MONTH_WORDS:
                continue  # a lone "May" or "Jan" is as likely the month as the name
            if _at_sentence_start(text, run[0].start, protected):
                continue  # every sentence opens with a capital
        start, end = run[0].start, run[-1].end
        last = text[run[-1].start:end]
        for suffix in ("'s", "’s"):
            if last.endswith(suffix):
                end -= len(suffix)
        spans.append(Span("name", text[start:end], start, end))
    return spans


# --- finding spans --------------------------------------------------------------------------


def _mark(mask: bytearray, start: int, end: int) -> None:
    mask[start:end] = b"\x01" * (end - start)


def _free(mask: bytearray, start: int, end: int) -> bool:
    return mask.find(1, start, end) == -1


def _place_candidates(text: str, toks_by_start: dict[int, _Tok], toks_by_end: dict[int, _Tok],
                      blocked: bytearray) -> list[tuple[int, int]]:
    index = _place_index()
    found: list[tuple[int, int]] = []
    starts: set[int] = set()
    pos_limit = 0
    for tok in toks_by_start.values():
        p = tok.start
        if p < pos_limit or not text[p].isupper() or not _free(blocked, p, p + 1):
            continue
        if p > 0 and (text[p - 1] in "@#_" or text[p - 1].isalnum()):
            continue
        for name in index.get(text[p:p + 2], ()):
            end = p + len(name)
            glued = end < len(text) and (text[end].isalnum() or text[end] == "_")  # "Texas" in "Texasville"
            if text.startswith(name, p) and not glued and _free(blocked, p, end):
                found.append((p, end))
                starts.add(p)
                pos_limit = end
                break

    def name_like(tok: _Tok | None) -> bool:
        return tok is not None and tok.cls == _NAME and tok.text not in _MONTH_WORDS and tok.start not in starts

    out: list[tuple[int, int]] = []
    for start, end in found:
        nxt = toks_by_start.get(end + 1) if text[end:end + 1] == " " else None
        if nxt is not None and nxt.text in _GEO_SUFFIXES:
            out.append((start, nxt.end))
            continue
        prev = toks_by_end.get(start - 1) if start > 0 and text[start - 1] == " " else None
        before_connector = None
        if prev is not None and prev.cls == _CONNECTOR and prev.start > 0 and text[prev.start - 1] == " ":
            before_connector = toks_by_end.get(prev.start - 1)
        # "Michael Jordan", "Washington Post", "Bank of England": the place is part of a longer name.
        if name_like(nxt) or name_like(prev) or name_like(before_connector):
            continue
        out.append((start, end))
    return out


def find_spans(text: str) -> list[Span]:
    """Non-overlapping spans, sorted by start; dates and places win over numbers and names where they overlap.

    URLs, e-mail addresses, @handles and #hashtags are never part of a span.
    """
    if not text:
        return []
    protected = bytearray(len(text))
    for m in _PROTECTED_RE.finditer(text):
        _mark(protected, m.start(), m.end())

    # Kinds claim text in this order and a later one only gets what is left: the day and year of
    # "3 March 2020" are not numbers, "New York" is not a name.
    occupied = bytearray(protected)
    spans: list[Span] = []

    def take(kind: str, start: int, end: int) -> None:
        if start < end and _free(occupied, start, end):
            spans.append(Span(kind, text[start:end], start, end))
            _mark(occupied, start, end)

    for m in _DATE_RE.finditer(text):
        take("date", m.start(), m.end())

    toks = _tokens(text)
    by_start = {t.start: t for t in toks}
    by_end = {t.end: t for t in toks}
    for start, end in _place_candidates(text, by_start, by_end, occupied):
        take("place", start, end)

    for m in _NUMBER_RE.finditer(text):
        take("number", m.start(), m.end())

    for span in _name_spans(text, toks, occupied, protected):
        take(span.kind, span.start, span.end)

    spans.sort(key=lambda s: s.start)
    return spans
