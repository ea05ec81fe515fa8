"""A small, clearly labelled synthetic corpus for the inbox, so the main job runs offline.

Everything here is made up by templates and marked `[DEMO]`: rendered meme images with
their text, ClaimReview JSON-LD (a list, an `@graph`, an HTML page), and posts in the
MediaEval TSV form. A few records are broken on purpose (a bad JSON line, a truncated
image, a label outside the known set) so that the quarantine has something to show.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmd.config import DemoConfig

TOPICS = ["vaccine", "election", "flood", "wildfire", "lockdown", "5G tower", "bank", "border", "moon landing", "heatwave"]
PLACES = ["Springfield", "Riverton", "Lakeside", "Hillview", "Northport", "Eastvale", "Westbrook", "Ashford"]
HARMFUL = [
    "{topic} people are the virus, keep them out of {place}",
    "they want you to believe the {topic} story, wake up sheeple",
    "if you trust the {topic} news you deserve what is coming",
    "{place} folks are too dumb to survive the {topic}",
]
BENIGN = [
    "me waiting for the {topic} update in {place}",
    "when the {topic} meeting could have been an email",
    "{place} weekend plans vs the {topic} reality",
    "nobody: absolutely nobody: me talking about the {topic} again",
]
FALSE_CLAIMS = [
    "Photo shows the {topic} in {place} last week",
    "The {topic} in {place} was staged by actors",
    "Officials in {place} banned talking about the {topic}",
    "The {topic} caused 10,000 deaths in {place} overnight",
]
TRUE_CLAIMS = [
    "{place} opened a shelter during the {topic}",
    "The {topic} report for {place} was published on Monday",
    "{place} council discussed the {topic} budget",
]
FALSE_RATINGS = ["False", "FALSE", "Mostly false", "Pants on Fire", "Misleading", "False Context", "Fake"]
TRUE_RATINGS = ["True", "Correct", "Mostly True", "Half true", "Accurate"]
UNKNOWN_RATINGS = ["Needs more context?", "Will it happen?"]


@dataclass(frozen=True)
class DemoCorpus:
    root: Path
    memes: int
    claims: int
    posts: int
    broken: int


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _shapes(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    bg = tuple(rng.randrange(40, 216) for _ in range(3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(2, 6)):
        x0, y0 = rng.randrange(0, size[0] - 40), rng.randrange(30, size[1] - 70)
        x1, y1 = x0 + rng.randrange(20, 120), y0 + rng.randrange(20, 90)
        color = tuple(rng.randrange(0, 256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    return img, draw


def render_shapes(rng: random.Random, size: tuple[int, int] = (256, 256)) -> bytes:
    """A picture with no words in it: a coloured background and a few shapes."""
    img, _ = _shapes(rng, size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def render_meme(text: str, rng: random.Random, size: tuple[int, int] = (256, 256)) -> bytes:
    """A meme-like picture: a coloured background, a few shapes, the caption in white on black."""
    img, draw = _shapes(rng, size)
    font = _font(14)
    words, lines, line = text.upper().split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 30:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    draw.rectangle([0, size[1] - 18 * len(lines) - 8, size[0], size[1]], fill=(0, 0, 0))
    for n, ln in enumerate(lines):
        draw.text((6, size[1] - 18 * (len(lines) - n) - 4), ln, fill=(255, 255, 255), font=font)
    draw.text((6, 4), "[DEMO]", fill=(255, 255, 255), font=_font(12))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _fill(template: str, rng: random.Random) -> str:
    return template.format(topic=rng.choice(TOPICS), place=rng.choice(PLACES))


def write_memes(folder: Path, n: int, rng: random.Random, tag: str = "") -> int:
    """`train.jsonl` + `val.jsonl` + `test.jsonl` + `images/`, in the generic meme form; returns broken records."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": [], "test": []}
    for i in range(n):
        harmful = rng.random() < 0.4
        text = "[DEMO] " + _fill(rng.choice(HARMFUL if harmful else BENIGN), rng)
        name = f"demo{tag}_meme_{i:04d}.jpg"
        (images / name).write_bytes(render_meme(text, rng))
        record = {"id": f"demo{tag}_meme_{i:04d}", "image": name, "text": text, "label": "1" if harmful else "0"}
        splits["val" if i % 5 == 4 else "test" if i % 5 == 3 else "train"].append(json.dumps(record))
    # broken on purpose: a truncated image, a label outside the set, a line that is not JSON
    (images / "demo_broken.jpg").write_bytes(render_meme("[DEMO] truncated", rng)[:300])
    (images / "demo_no_words.jpg").write_bytes(render_shapes(random.Random(0)))
    splits["train"] += [
        json.dumps({"id": "demo_meme_broken_image", "image": "demo_broken.jpg", "text": "[DEMO] truncated image", "label": "0"}),
        json.dumps({"id": "demo_meme_bad_label", "image": "demo_meme_0000.jpg", "text": "[DEMO] odd label", "label": "maybe"}),
        # passes ingest, fails validation (text length): blank text, and a picture with no words for OCR to read
        json.dumps({"id": "demo_meme_empty_text", "image": "demo_no_words.jpg", "text": "  ", "label": "0"}),
        '{"id": "demo_meme_bad_json", "text": "[DEMO] unterminated',
    ]
    for split, lines in splits.items():
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 4


def _claimreview(i: int, rng: random.Random, tag: str = "") -> dict:
    roll = rng.random()
    if i % 13 == 12:  # wording no ratings table knows: stays unlabeled, and is counted
        claim, rating = _fill(rng.choice(FALSE_CLAIMS), rng), rng.choice(UNKNOWN_RATINGS)
    elif roll < 0.55:
        claim, rating = _fill(rng.choice(FALSE_CLAIMS), rng), rng.choice(FALSE_RATINGS)
    else:
        claim, rating = _fill(rng.choice(TRUE_CLAIMS), rng), rng.choice(TRUE_RATINGS)
    day = 1 + i % 28
    return {
        "@context": "https://schema.org",
        "@type": "ClaimReview",
        "datePublished": f"2026-10-{day:02d}",
        "url": f"https://factcheck.demo.invalid/2026/10/claim{tag}-{i:04d}",
        "author": {"@type": "Organization", "name": "Demo Fact Desk"},
        "claimReviewed": f"[DEMO] {claim}",
        "inLanguage": "en",
        "reviewRating": {"@type": "Rating", "alternateName": rating},
        "itemReviewed": {"@type": "Claim", "author": {"@type": "Person", "name": "Demo Poster"}, "datePublished": f"2026-09-{day:02d}"},
    }


def write_claims(folder: Path, n: int, rng: random.Random, tag: str = "") -> int:
    folder.mkdir(parents=True, exist_ok=True)
    reviews = [_claimreview(i, rng, tag) for i in range(n)]
    third = max(1, n // 3)
    (folder / "claims_list.jsonld").write_text(json.dumps(reviews[:third], indent=1), encoding="utf-8")
    graph = {"@context": "https://schema.org", "@graph": reviews[third : 2 * third]}
    (folder / "claims_graph.json").write_text(json.dumps(graph, indent=1), encoding="utf-8")
    scripts = "\n".join(f'<script type="application/ld+json">{json.dumps(r)}</script>' for r in reviews[2 * third :])
    page = f"<!doctype html><html><head><title>[DEMO] fact checks</title>{scripts}</head><body><p>Demo page</p></body></html>"
    (folder / "claims_page.html").write_text(page, encoding="utf-8")
    # broken on purpose: a ClaimReview without its rating
    bad = dict(_claimreview(n, rng, tag))
    bad.pop("reviewRating")
    (folder / "claims_missing_rating.json").write_text(json.dumps(bad), encoding="utf-8")
    return 1


def write_posts(folder: Path, n: int, rng: random.Random, first_id: int = 900000) -> int:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    events = ["riverflood", "cityfire", "stormsurge", "bridgecollapse"]
    for ev in events:
        for kind in ("fake", "real"):
            (images / f"{ev}_{kind}_1.jpg").write_bytes(render_meme(f"[DEMO] {ev} {kind}", rng, (240, 180)))
    rows = ["post_id\tpost_text\tuser_id\timage_id(s)\tusername\ttimestamp\tlabel"]
    for i in range(n):
        ev, fake = rng.choice(events), rng.random() < 0.6
        kind = "fake" if fake else "real"
        image = f"{ev}_{kind}_1" if i % 4 else f"{ev}_{kind}_9"  # every 4th names an image that is absent
        text = f"[DEMO] {'Unbelievable' if fake else 'Update'}: {ev} near {rng.choice(PLACES)} #{ev}"
        rows.append(f"{first_id + i}\t{text}\t{1000 + i}\t{image}\tdemo_user_{i % 7}\tMon Oct {1 + i % 28:02d} 12:00:00 +0000 2026\t{kind}")
    rows.append("999999\t[DEMO] a row with too few columns\tfake")  # broken on purpose
    (folder / "posts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 1


def generate(inbox: Path, cfg: DemoConfig, batch: int = 0) -> DemoCorpus:
    """Fill `inbox/demo/` deterministically for a seed; an existing demo folder is rewritten.
    `batch` N > 0 writes a later batch of new items (new ids, the same mix) to `inbox/demo-batchN/`."""
    rng = random.Random(cfg.seed + 1000 * batch)
    root = inbox / ("demo" if batch == 0 else f"demo-batch{batch}")
    tag = "" if batch == 0 else f"b{batch}"
    broken = write_memes(root / "memes", cfg.memes, rng, tag)
    broken += write_claims(root / "claims", cfg.claims, rng, tag)
    broken += write_posts(root / "posts", cfg.posts, rng, 900000 + 10000 * batch)
    (root / "README.md").write_text(
        "Synthetic demo data written by `mmd demo`. Every record is made up and marked [DEMO].\n", encoding="utf-8"
    )
    return DemoCorpus(root, cfg.memes, cfg.claims, cfg.posts, broken)


def write_demo_inbox(settings, fresh: bool = False, batch: int = 0) -> "DemoCorpus | None":
    """The demo corpus in the params' first inbox source (kept when it is there, unless `fresh`); the
    corpus written, or None when it was there already. ConfigError when the params have no enabled inbox."""
    from mmd.config import ConfigError

    inboxes = [s for s in settings.params.ingest.sources if s.type == "inbox" and s.enabled]
    if not inboxes:
        raise ConfigError(f"{settings.params_file}: the demo needs an enabled source of type inbox in the params")
    inbox = settings.path(inboxes[0].path)
    folder = inbox / ("demo" if batch == 0 else f"demo-batch{batch}")
    if fresh or not folder.exists():
        return generate(inbox, settings.params.demo, batch=batch)
    return None
