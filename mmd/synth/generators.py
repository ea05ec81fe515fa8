"""The three generators, each drawing its partners from the real items indexed in Qdrant so that what
it makes is hard rather than random (see `mmd.synth.generate` for what each makes and why).

Deterministic for a seed: every parent has its own random stream, seeded by (seed, generator,
parent id), and retrieval is exact.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from mmd.config import Settings
from mmd.formats.vectors import read_vectors
from mmd.items import ITEM_SCHEMA, Item, make_item_id, read_table, sha256_hex
from mmd.util import atomic_write_bytes

GENERATORS = ("out_of_context", "caption_edit", "meme_recompose")


SOURCE = "synthetic"


@dataclass
class GeneratorReport:
    parents: int = 0  # eligible parents never tried before
    attempted: int = 0
    produced: int = 0
    deferred: int = 0  # eligible but over this run's budget
    why: dict[str, str] = field(default_factory=dict)  # parent tried, nothing made: why
    labels: Counter = field(default_factory=Counter)
    skipped: str | None = None  # the generator could not run at all: why

    def to_dict(self) -> dict:
        return {"parents": self.parents, "attempted": self.attempted, "produced": self.produced,
                "deferred": self.deferred, "no_output": dict(Counter(self.why.values())),
                "labels": {str(k): v for k, v in sorted(self.labels.items())}, "skipped": self.skipped}


@dataclass
class Candidate:
    """One synthetic item before its vector exists.

    `text_vec` / `image_vec` hold a freshly encoded vector, or the id of the real item whose
    text / image vector is reused (an out-of-context pair encodes nothing new).
    """

    item: Item
    generator: str
    parents: list[str]
    text_vec: np.ndarray | str  # a vector, or the id of the real item whose text vector it reuses
    image_vec: np.ndarray | str | None
    rendered: Image.Image | None = None


def parent_rng(seed: int, generator: str, parent_id: str) -> random.Random:
    """The parent's own random stream: results do not depend on order, batch or budget."""
    return random.Random(f"{seed}\x1f{generator}\x1f{parent_id}")


class _Real:
    """The real items a run draws on: rows, their text and image vectors, and the store to retrieve from."""

    def __init__(self, settings: Settings, store, encoder, holdout: set[str]):
        self.settings = settings
        self.store = store
        self.encoder = encoder
        table = read_table(settings.layout.items, ITEM_SCHEMA)
        vectors_table, _, self.encoder_identity = read_vectors(settings.layout.vectors)
        embedded = set(vectors_table.column("id").to_pylist())
        # held-out items are neither parents nor partners: their text and pictures never reach training
        self.rows = {r["id"]: r for r in table.to_pylist() if r["id"] in embedded and (r["split"] or "") not in holdout}
        self.not_held_out = {"split": {"not": sorted(holdout)}} if holdout else {}
        self._vec: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}

    def vectors(self, ids: list[str]) -> None:
        """Text and image vectors of these real items (from the embedding cache: nothing is re-encoded)."""
        from mmd.encoders import EmbeddingCache, embed_items

        todo = [i for i in dict.fromkeys(ids) if i not in self._vec]
        if not todo:
            return
        cfg = self.settings.params.embed
        cache = EmbeddingCache.for_encoder(self.settings.layout.embed_cache, self.encoder)
        result = embed_items([self.rows[i] for i in todo], self.encoder, cache, self.settings.data_dir,
                             cfg.batch_size, cfg.num_workers, False)
        cache.flush()
        for n, i in enumerate(result.ids):
            self._vec[i] = (result.text[n], result.image[n], bool(result.has_image[n]))

    def text_vec(self, item_id: str) -> np.ndarray:
        return self._vec[item_id][0]

    def image_vec(self, item_id: str) -> np.ndarray | None:
        t, i, has = self._vec[item_id]
        return i if has else None

    def neighbours(self, ids: list[str], mode: str, k: int, filters: Callable[[dict], dict]) -> dict[str, list]:
        """Exact nearest real items of each parent, by `mode`: image (image -> image), text (text -> image
        with a shared-space encoder, else caption -> caption), caption (caption -> caption) or whole."""
        from mmd.encoders import mix

        self.vectors(ids)
        out: dict[str, list] = {}
        w = self.settings.params.embed.text_weight
        collection = self.settings.params.index.items_collection
        for start in range(0, len(ids), 256):
            batch = ids[start : start + 256]
            queries = []
            for i in batch:
                t, img, has = self._vec[i]
                zt, zi = np.zeros_like(t), np.zeros_like(img)
                if mode == "image":
                    q = mix(zt[None], img[None], np.array([True]), 0.0)
                elif mode == "text" and self.encoder.shared_space:
                    q = mix(zt[None], t[None], np.array([True]), 0.0)  # the caption looks among images
                elif mode in ("text", "caption"):  # caption -> caption
                    q = mix(t[None], zi[None], np.array([False]), 1.0)
                else:
                    q = mix(t[None], img[None], np.array([has]), w)
                queries.append(q[0])
            # a search call takes one filter: group the parents that share one
            by_filter: dict[str, list[int]] = {}
            for n, i in enumerate(batch):
                by_filter.setdefault(json.dumps(filters(self.rows[i]) | self.not_held_out, sort_keys=True), []).append(n)
            for key, members in by_filter.items():
                hits = self.store.search_batch(collection, np.stack([queries[n] for n in members]), k=k,
                                               filter=json.loads(key), exclude_ids=[[batch[n]] for n in members],
                                               exact=True)
                for n, h in zip(members, hits):
                    out[batch[n]] = [x for x in h if x.id in self.rows]
        return out


def _synthetic_item(parent: dict, generator: str, parents: list[str], seed: int, recipe: dict, text: str,
                    image_path: str | None, image_sha: str | None, size: tuple[int, int] | None, label: int) -> Item:
    key = f"{generator}\x1f{seed}\x1f{json.dumps(recipe, sort_keys=True, ensure_ascii=False)}"
    return Item(
        id=make_item_id(SOURCE, key, text, image_sha), source=SOURCE, source_family=SOURCE, kind=parent["kind"],
        text=text, native_id=None, image_path=image_path, image_sha256=image_sha,
        image_width=size[0] if size else None, image_height=size[1] if size else None, label=label,
        label_original=f"{generator}:{recipe.get('rule', 'constructed')}", language=parent.get("language"),
        split=SOURCE, group=parent.get("group"),
        extra=json.dumps({"recipe": recipe}, sort_keys=True, ensure_ascii=False),
    ).finalise()


def _image_size(row: dict) -> tuple[int, int] | None:
    return (row["image_width"], row["image_height"]) if row.get("image_width") else None


def out_of_context(real: _Real, parents: list[str], cfg, seed: int, report: GeneratorReport) -> Iterator[Candidate]:
    rows = real.rows
    # partners come from other events (or other pictures, where there are no events)
    def others(r: dict) -> dict:
        return {"kind": r["kind"], "group": {"not": r["group"]}} if r["group"] else {"kind": r["kind"]}

    found = {mode: real.neighbours(parents, mode, cfg.neighbours * 3, others) for mode in cfg.retrieval}
    # pristine pairs: a truthful caption's nearest truthful pictures from its own event
    truthful = [i for i in parents if rows[i]["label"] == 0 and rows[i]["group"] is not None] if cfg.pristine else []
    same_event = real.neighbours(truthful, "whole", cfg.neighbours,
                                 lambda r: {"kind": r["kind"], "label": 0, "group": r["group"]})
    for pid in parents:
        p = rows[pid]
        rng = parent_rng(seed, "out_of_context", pid)
        made = 0
        used: set[str] = set()
        for _ in range(cfg.per_parent):
            mode = rng.choice(list(cfg.retrieval))
            pool = [h for h in found[mode].get(pid, [])
                    if rows[h.id]["image_path"] and rows[h.id]["image_sha256"] != p["image_sha256"]
                    and (p["group"] is None or rows[h.id]["group"] != p["group"]) and h.id not in used][: cfg.neighbours]
            if not pool:
                continue
            rank = rng.randrange(len(pool))
            donor = rows[pool[rank].id]
            used.add(donor["id"])
            recipe = {"rule": "swapped_image", "parent": pid, "donor": donor["id"], "retrieval": mode,
                      "rank": rank + 1, "similarity": round(pool[rank].score, 4)}
            item = _synthetic_item(p, "out_of_context", [pid, donor["id"]], seed, recipe, p["text"],
                                   donor["image_path"], donor["image_sha256"], _image_size(donor), 1)
            made += 1
            yield Candidate(item, "out_of_context", [pid, donor["id"]], pid, donor["id"])
        if pid in same_event:
            pool = [h for h in same_event[pid] if rows[h.id]["image_path"] and rows[h.id]["image_sha256"] != p["image_sha256"]]
            if pool:
                rank = rng.randrange(len(pool))
                donor = rows[pool[rank].id]
                recipe = {"rule": "same_event_image", "parent": pid, "donor": donor["id"], "rank": rank + 1,
                          "similarity": round(pool[rank].score, 4)}
                item = _synthetic_item(p, "out_of_context", [pid, donor["id"]], seed, recipe, p["text"],
                                       donor["image_path"], donor["image_sha256"], _image_size(donor), 0)
                made += 1
                yield Candidate(item, "out_of_context", [pid, donor["id"]], pid, donor["id"])
        if not made:
            report.why[pid] = "no_other_image_nearby"


def caption_edit(real: _Real, parents: list[str], cfg, seed: int, report: GeneratorReport) -> Iterator[Candidate]:
    from mmd.synth.edits import swap_edit

    rows = real.rows
    found = real.neighbours(parents, "caption", cfg.neighbours, lambda r: {"kind": r["kind"]})
    encode: list[tuple[int, str]] = []
    out: list[Candidate] = []
    for pid in parents:
        p = rows[pid]
        rng = parent_rng(seed, "caption_edit", pid)
        donors = [h.id for h in found.get(pid, [])]
        rng.shuffle(donors)
        made = 0
        seen_texts: set[str] = set()
        for did in donors:
            if made >= cfg.per_parent:
                break
            edit = swap_edit(p["text"], rows[did]["text"], rng, cfg.spans)
            if edit is None or edit.text in seen_texts:
                continue
            seen_texts.add(edit.text)
            recipe = {"rule": f"swapped_{edit.kind}", "parent": pid, "donor": did, "old": edit.old, "new": edit.new,
                      "at": edit.start}
            item = _synthetic_item(p, "caption_edit", [pid, did], seed, recipe, edit.text, p["image_path"],
                                   p["image_sha256"], _image_size(p), 1)
            encode.append((len(out), edit.text))
            out.append(Candidate(item, "caption_edit", [pid, did], np.empty(0), pid if p["image_path"] else None))
            made += 1
        if not made:
            report.why[pid] = "nothing_to_swap"
    if encode:
        vecs = real.encoder.encode_texts([t for _, t in encode])
        for (n, _), v in zip(encode, vecs):
            out[n].text_vec = v
    yield from out


def meme_recompose(real: _Real, parents: list[str], cfg, seed: int, report: GeneratorReport,
                   image_dir: Path) -> Iterator[Candidate]:
    from mmd.encoders.base import load_rgb
    from mmd.synth.render import png_bytes, render_meme_text

    rows = real.rows
    data_dir = real.settings.data_dir
    found = real.neighbours(parents, "whole", cfg.neighbours * 3, lambda r: {"kind": r["kind"]})
    out: list[Candidate] = []
    for pid in parents:
        p = rows[pid]
        rng = parent_rng(seed, "meme_recompose", pid)
        if p["label"] is None:
            report.why[pid] = "unlabeled_parent"
            continue
        donors = [h.id for h in found.get(pid, []) if rows[h.id]["image_path"]
                  and rows[h.id]["image_sha256"] != p["image_sha256"]][: cfg.neighbours]
        made = 0
        for _ in range(cfg.per_parent):
            onto_template = rng.random() < cfg.template_share
            donor = None
            if not onto_template:
                # harmless text on a harmful picture is ambiguous: such donors are never drawn
                allowed = [d for d in donors if p["label"] == 1 or rows[d]["label"] == 0]
                if not allowed:
                    continue
                donor = rows[allowed[rng.randrange(len(allowed))]]
                donors.remove(donor["id"])
            seed_img = rng.randrange(2**31)
            try:
                picture = None if donor is None else load_rgb(data_dir / donor["image_path"])
            except OSError:
                report.why[pid] = "donor_image_unreadable"
                continue
            rendered = render_meme_text(p["text"], picture, cfg.image_size, seed_img)
            blob = png_bytes(rendered)
            sha = sha256_hex(blob)
            rel = f"{image_dir.relative_to(data_dir).as_posix()}/{sha[:2]}/{sha}.png"
            target = data_dir / rel
            if not target.exists():
                atomic_write_bytes(target, blob)
            label = p["label"]
            rule = "template_keeps_text_label" if donor is None else (
                "harmful_text" if p["label"] == 1 else "harmless_text_on_harmless_picture")
            recipe = {"rule": rule, "parent": pid, "donor": donor["id"] if donor else None, "template_seed": seed_img
                      if donor is None else None, "image_sha256": sha}
            parents_ = [pid] + ([donor["id"]] if donor else [])
            item = _synthetic_item(p, "meme_recompose", parents_, seed, recipe, p["text"], rel, sha, rendered.size,
                                   label)
            out.append(Candidate(item, "meme_recompose", parents_, pid, None, rendered))
            made += 1
        if not made:
            report.why.setdefault(pid, "no_allowed_picture")
    pictures = [c for c in out if c.rendered is not None]
    for start in range(0, len(pictures), 32):
        batch = pictures[start : start + 32]
        vecs = real.encoder.encode_images([c.rendered for c in batch])
        for c, v in zip(batch, vecs):
            c.image_vec = v
            c.rendered = None
    yield from out
