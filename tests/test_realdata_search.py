"""On real HarMeme memes, with the real offline encoders: a meme's own text finds that meme."""

from __future__ import annotations

import json

import pytest

from mmd.embed import run_embed
from mmd.index import run_index
from mmd.ingest import run_ingest
from mmd.search import search_items
from mmd.validate import run_validate

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
N = 60


def test_a_memes_own_text_finds_it_among_the_top_hits(shared, make_settings, tmp_path):
    subset = tmp_path / "harmeme_val.jsonl"  # the first N val memes, read in place
    lines = (shared / "harmeme" / "val.jsonl").read_text().splitlines()[:N]
    subset.write_text("\n".join(lines) + "\n")
    settings = make_settings(
        sources=[{"name": "harmeme", "type": "memes", "preset": "harmeme", "files": [str(subset)],
                  "images_dir": str(shared / "harmeme" / "images")}],
        embed={"backend": "offline", "batch_size": 32},
        ingest={"allowed_roots": [str(shared)]},  # the images are read in place, outside the project
    )
    run_ingest(settings, show_progress=False)
    run_validate(settings)
    assert run_embed(settings, show_progress=False).embedded == N
    run_index(settings)

    records = [json.loads(l) for l in lines]
    found_at = []
    for rec in records[:20]:
        hits = search_items(settings, rec["text"], None, k=5, filters={"kind": "meme"})
        ids = [h.payload.get("text", "")[:60] for h in hits]
        found_at.append(ids.index(rec["text"][:60]) if rec["text"][:60] in ids else None)
    # a text query has no image part, so other memes' pictures cannot outrank the caption
    # itself unless two memes share it
    assert sum(f is not None for f in found_at) >= 19, found_at
    assert sum(f == 0 for f in found_at) >= 16, found_at
