"""Synthesize: new synthetic image-text items from the real ones, with provenance, into the pool.

Three generators, each drawing its partners from the real items indexed in Qdrant so
that what it makes is hard rather than random:

- out_of_context: a real caption with a *different* real image that is semantically
  close (found image -> image, or text -> image with a shared-space encoder such as
  CLIP, caption -> caption otherwise), from another event or image group: label 1, the
  NewsCLIPpings recipe. With `pristine`, a truthful caption also gets another truthful
  image of its own event: label 0, so the pool is not one class.
- caption_edit: one name, number, date or place of the caption swapped for one from a
  related caption (`mmd.synth.edits`): label 1, the image is kept, the caption now lies
  about it.
- meme_recompose: one meme's text rendered onto a related meme's picture or onto a
  neutral template (`mmd.synth.render`). Labels by explicit rules: harmful text stays
  harmful on any picture; harmless text on a template or on a harmless picture is
  harmless; harmless text on a harmful picture is ambiguous (the harm may live in the
  picture) and is not generated.

Deterministic for a seed: every parent has its own random stream, seeded by
(seed, generator, parent id), and retrieval is exact. Incremental: a parent is tried
once per generator (`attempts.parquet`), so a run only works on real items that are new
since the last; the pool keeps its history. Bounded: at most `max_new_per_run` items a
run; parents left over wait for the next run and are counted as deferred.

Items of `holdout_splits` never parent anything, so synthetic data cannot leak the
evaluation split. Every synthetic item keeps its parent's `group` for the same reason.

Writes under `<data>/synthetic/`: pool.parquet (items + provenance), vectors.parquet
(their mixed vectors), images/ (rendered memes), attempts.parquet; the pool is synced
into the synthetic Qdrant collection; `reports/synthesize.json`.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from mmd.config import Settings
from mmd.embed import paths as embed_paths, read_vectors, write_vectors
from mmd.items import ITEM_SCHEMA, Item, make_item_id, now_iso, read_table, sha256_hex, write_table
from mmd.util import write_json

GENERATORS = ("out_of_context", "caption_edit", "meme_recompose")
SOURCE = "synthetic"

SYNTH_SCHEMA = ITEM_SCHEMA.append(pa.field("generator", pa.string())) \
    .append(pa.field("parent_ids", pa.list_(pa.string()))) \
    .append(pa.field("seed", pa.int64()))
ATTEMPT_SCHEMA = pa.schema([("generator", pa.string()), ("parent_id", pa.string()), ("produced", pa.int32()),
                            ("reason", pa.string()), ("attempted_at", pa.string())])
# what the synthetic collection carries beside the vector: filters and provenance
PAYLOAD_FIELDS = ("kind", "source", "label", "split", "group", "generator", "content_hash", "image_path", "text")


def paths(settings: Settings) -> dict[str, Path]:
    d = settings.data_dir / "synthetic"
    return {
        "pool": d / "pool.parquet",
        "vectors": d / "vectors.parquet",
        "attempts": d / "attempts.parquet",
        "images": d / "images",
        "report": settings.reports_dir / "synthesize.json",
    }


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
class SynthesizeReport:
    encoder: str
    pool_before: int
    pool_after: int
    new: int
    indexed: int
    seconds: float
    generators: dict[str, GeneratorReport]

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "pool_before": self.pool_before, "pool_after": self.pool_after,
                "new": self.new, "indexed": self.indexed, "seconds": self.seconds,
                "reconciled": self.pool_after == self.pool_before + self.new,
                "generators": {k: v.to_dict() for k, v in self.generators.items()}}


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
        table = read_table(embed_paths(settings)["input"], ITEM_SCHEMA)
        vectors_table, _, self.encoder_identity = read_vectors(embed_paths(settings)["vectors"])
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
        cache = EmbeddingCache.for_encoder(embed_paths(self.settings)["cache"], self.encoder)
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


# --------------------------------------------------------------------------- generators
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
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(blob)
                tmp.replace(target)
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


# --------------------------------------------------------------------------- the stage
def read_pool(settings: Settings) -> pa.Table:
    return read_table(paths(settings)["pool"], SYNTH_SCHEMA)


def _eligible(real: _Real, generator: str, cfg) -> list[str]:
    needs_image = generator in ("out_of_context", "meme_recompose")
    return sorted(
        i for i, r in real.rows.items()
        if r["kind"] in cfg.kinds and (r["text"] or "").strip() and (r["image_path"] or not needs_image)
    )


def run_synthesize(settings: Settings, show_progress: bool = False) -> SynthesizeReport:
    """Generate what is new, append it to the pool with its vectors, and sync the synthetic collection."""
    from mmd.encoders import build_encoder, mix
    from mmd.index import open_index

    cfg = settings.params.synthesize
    p = paths(settings)
    started = time.perf_counter()
    encoder = build_encoder(settings.params.embed, settings.root)
    pool = read_pool(settings)
    attempts = read_table(p["attempts"], ATTEMPT_SCHEMA)
    tried = {(g, i) for g, i in zip(attempts.column("generator").to_pylist(), attempts.column("parent_id").to_pylist())}
    existing = set(pool.column("id").to_pylist())
    reports = {g: GeneratorReport() for g in GENERATORS}
    budget = cfg.max_new_per_run
    new_candidates: list[Candidate] = []
    new_attempts: list[dict] = []

    store = open_index(settings)
    try:
        real = _Real(settings, store, encoder, set(cfg.holdout_splits))
        if real.encoder_identity and real.encoder_identity != encoder.identity:
            raise ValueError(f"the embeddings were made by {real.encoder_identity}, but embed is configured for "
                             f"{encoder.identity}: run `mmd embed` and `mmd index --rebuild` first")
        for g in GENERATORS:
            gcfg = getattr(cfg, g)
            rep = reports[g]
            eligible = [i for i in _eligible(real, g, gcfg) if (g, i) not in tried]
            rep.parents = len(eligible)
            if not gcfg.enabled or gcfg.per_parent == 0:
                rep.skipped = "disabled"
                continue
            if encoder.keyed_by_id and g != "out_of_context":
                rep.skipped = (f"the {settings.params.embed.backend} encoder looks vectors up by item id and cannot "
                               "encode new text or pictures; only out_of_context reuses existing vectors")
                continue
            # a parent makes at most per_parent (+1 pristine) items: take as many parents as the budget allows
            per = gcfg.per_parent + (1 if g == "out_of_context" and gcfg.pristine else 0)
            take = eligible[: max(0, budget // per)]
            rep.deferred = len(eligible) - len(take)
            if not take:
                continue
            real.vectors(take)
            if g == "meme_recompose":
                made = list(meme_recompose(real, take, gcfg, cfg.seed, rep, p["images"]))
            elif g == "caption_edit":
                made = list(caption_edit(real, take, gcfg, cfg.seed, rep))
            else:
                made = list(out_of_context(real, take, gcfg, cfg.seed, rep))
            produced = Counter(c.parents[0] for c in made if c.item.id not in existing)
            for c in made:
                if c.item.id in existing:
                    continue
                existing.add(c.item.id)
                new_candidates.append(c)
                rep.labels[c.item.label] += 1
            rep.attempted = len(take)
            rep.produced = sum(produced.values())
            budget -= rep.produced
            now = now_iso()
            new_attempts += [{"generator": g, "parent_id": i, "produced": produced.get(i, 0),
                              "reason": rep.why.get(i, ""), "attempted_at": now} for i in take]

        # vectors: parts reused from the real parents, new parts encoded above
        if new_candidates:
            real.vectors([x for c in new_candidates for x in (c.text_vec, c.image_vec) if isinstance(x, str)])
        texts, images, has = [], [], []
        for c in new_candidates:
            texts.append(real.text_vec(c.text_vec) if isinstance(c.text_vec, str) else c.text_vec)
            img = real.image_vec(c.image_vec) if isinstance(c.image_vec, str) else c.image_vec
            has.append(img is not None)
            images.append(img if img is not None else np.zeros(encoder.image_dim, np.float32))
        new_table = pa.Table.from_pylist(
            [{**c.item.to_row(), "generator": c.generator, "parent_ids": c.parents, "seed": cfg.seed}
             for c in new_candidates], schema=SYNTH_SCHEMA)
        pool_after = pa.concat_tables([pool, new_table]) if len(new_table) else pool
        old_vec = _read_pool_vectors(p["vectors"], encoder.identity)
        if new_candidates:
            mixed = mix(np.stack(texts), np.stack(images), np.array(has), settings.params.embed.text_weight)
            all_ids = old_vec[0] + [c.item.id for c in new_candidates]
            all_hashes = old_vec[1] + [c.item.content_hash for c in new_candidates]
            all_has = np.concatenate([old_vec[2], np.array(has)])
            all_mixed = np.concatenate([old_vec[3], mixed]) if len(old_vec[3]) else mixed
            write_table(pool_after, p["pool"])
            write_vectors(p["vectors"], all_ids, all_hashes, all_has, all_mixed, encoder.identity)
        if new_attempts:
            write_table(pa.concat_tables([attempts, pa.Table.from_pylist(new_attempts, schema=ATTEMPT_SCHEMA)]),
                        p["attempts"])
        indexed = sync_synthetic(settings, store)
    finally:
        store.close()

    report = SynthesizeReport(encoder.identity, len(pool), len(pool_after), len(new_candidates), indexed,
                              round(time.perf_counter() - started, 3), reports)
    write_json(p["report"], {"synthesized_at": now_iso(), **report.to_dict()})
    return report


def _read_pool_vectors(path: Path, encoder: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    if not path.exists():
        return [], [], np.zeros(0, bool), np.zeros((0, 0), np.float32)
    table, mixed, made_by = read_vectors(path)
    if made_by != encoder:
        raise ValueError(f"the synthetic pool's vectors were made by {made_by}, but embed is configured for {encoder}: "
                         f"move {path.parent} aside to start a new pool for the new encoder")
    return (table.column("id").to_pylist(), table.column("content_hash").to_pylist(),
            table.column("has_image").to_numpy(zero_copy_only=False), mixed)


def sync_synthetic(settings: Settings, store) -> int:
    """Make the synthetic collection mirror the pool files (Qdrant is an index, never the copy); returns upserts."""
    p = paths(settings)
    if not p["vectors"].exists():
        return 0
    table, mixed, encoder = read_vectors(p["vectors"])
    name = settings.params.index.synthetic_collection
    store.ensure_collection(name, int(mixed.shape[1]), encoder)
    indexed = store.hashes(name)
    ids = table.column("id").to_pylist()
    hashes = table.column("content_hash").to_pylist()
    todo = [n for n, (i, h) in enumerate(zip(ids, hashes)) if indexed.get(i) != h]
    if todo:
        pool = read_pool(settings).select(["id", *[f for f in PAYLOAD_FIELDS if f != "generator"], "generator",
                                           "parent_ids"])
        rows = {r["id"]: r for r in pool.to_pylist()}
        payloads = [{k: rows[ids[n]].get(k) for k in PAYLOAD_FIELDS} | {"text": (rows[ids[n]]["text"] or "")[:500],
                    "parent_ids": rows[ids[n]]["parent_ids"]} for n in todo]
        store.upsert(name, [ids[n] for n in todo], mixed[np.array(todo)], payloads,
                     settings.params.index.batch_size)
    gone = sorted(set(indexed) - set(ids))
    if gone:
        store.delete(name, gone)
    return len(todo)


def pool_rows(settings: Settings, ids: list[str]) -> list[dict[str, Any]]:
    """The pool's rows for these synthetic ids, in that order."""
    by_id = {r["id"]: r for r in read_pool(settings).to_pylist()}
    return [by_id[i] for i in ids]
