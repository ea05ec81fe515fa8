"""A saved RGCL model: its folder, its RKC database in the vector store, and its scores (the predictor).

A saved model is a folder: model.safetensors, config.json, metrics.json, database.parquet (the
training embeddings g with their labels: the RKC database). The database is mirrored into a
collection of the vector store (the index RKC searches), together with every label moderators
added since (`mmd.models.rgcl.labels`): the files are the truth, the collection is rebuilt from
them when it is lost or belongs to another model. Serving imports this module, never the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from mmd.config import Settings, TrainConfig
from mmd.items import now_iso, read_table, write_table
from mmd.models.data import Split, TrainData
from mmd.models.io import read_model_config, save_weights
from mmd.models.rgcl.config import RGCLConfig, saved_config
from mmd.models.rgcl.knn import TIE_MARGIN, rkc_from_hits
from mmd.models.rgcl.model import RGCLHead
from mmd.util import read_parquet, write_json

MODEL_NAME = "rgcl"

LABELS_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("image_path", pa.string()),
                           ("label", pa.int8()), ("added_at", pa.string()), ("by", pa.string())])


@torch.no_grad()
def embed_all(head: nn.Module, inputs: Sequence[torch.Tensor], batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(g, logit) of every row, in eval mode."""
    head.eval()
    gs, logits = [], []
    for start in range(0, len(inputs[0]), batch):
        g, logit = head(*[x[start : start + batch] for x in inputs])
        gs.append(g.float().cpu())
        logits.append(logit.float().cpu())
    if not gs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return torch.cat(gs).numpy(), torch.cat(logits).numpy()


def tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(split.text, device=device), torch.as_tensor(split.image, device=device),
            torch.as_tensor(split.has_image, device=device))


def sigmoid(logit: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64) / temperature))).astype(np.float32)


def write_database(path: Path, ids: Sequence[str], labels: np.ndarray, g: np.ndarray) -> None:
    dim = g.shape[1]
    flat = pa.array(np.asarray(g, np.float32).reshape(-1), type=pa.float32())
    table = pa.Table.from_arrays([pa.array(list(ids), pa.string()), pa.array(np.asarray(labels, np.int8), pa.int8()),
                                  pa.FixedSizeListArray.from_arrays(flat, dim)], names=["id", "label", "g"])
    write_table(table.replace_schema_metadata({"dim": str(dim)}), path)


def read_database(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = read_parquet(path)
    dim = int(table.schema.metadata[b"dim"])
    col = table.column("g").combine_chunks()
    g = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim) if len(col) else np.zeros((0, dim), np.float32)
    return table.column("id").to_pylist(), table.column("label").to_numpy().astype(np.int64), g


def save_model(folder: Path, trained: Any, cfg: RGCLConfig, data: TrainData, train_cfg: TrainConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", trained.head, {"model": MODEL_NAME})
    write_database(folder / "database.parquet", data.train.ids, data.train.labels, trained.train_g)
    write_json(folder / "config.json", {
        "model": MODEL_NAME, "encoder": data.encoder, "text_dim": data.text_dim, "image_dim": data.image_dim,
        "temperature": trained.temperature, "label_names": list(train_cfg.label_names),
        "rgcl": cfg.model_dump(mode="json"), "trained_at": now_iso(), "best_epoch": trained.fit.best_epoch,
        "data": data.summary()})
    write_json(folder / "metrics.json", trained.metrics)
    return folder


@dataclass
class Predictor:
    """A loaded RGCL model: embeddings, head scores, and RKC against its database."""

    head: RGCLHead
    meta: dict
    folder: Path

    @property
    def cfg(self) -> RGCLConfig:
        return saved_config(self.meta["rgcl"])

    def embed(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        return embed_all(self.head, tensors(split, torch.device("cpu")))

    def head_scores(self, split: Split) -> np.ndarray:
        return sigmoid(self.embed(split)[1], float(self.meta["temperature"]))

    def rkc(self, store, split: Split, collection: str | None = None) -> np.ndarray:
        """RKC through the vector store (the database of the trained model plus added labels), in
        `collection` (the configured one by default)."""
        return self.rkc_of(store, self.embed(split)[0], collection)

    def rkc_of(self, store, g: np.ndarray, collection: str | None = None) -> np.ndarray:
        """RKC of embeddings `g` already computed (by `embed`, maybe on another machine)."""
        if not len(g):
            return np.zeros(0, np.float32)
        cfg = self.cfg
        hits = store.search_batch(collection or cfg.collection, g, k=cfg.rkc.k + TIE_MARGIN, exact=True)
        return rkc_from_hits(hits, cfg.rkc.weighting, cfg.rkc.k).astype(np.float32)


def load_model(folder: Path, encoder=None) -> Predictor:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_model_config(folder, MODEL_NAME, encoder=encoder)
    head = RGCLHead(meta["text_dim"], meta["image_dim"], saved_config(meta["rgcl"]))
    head.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return Predictor(head.eval(), meta, folder)


def sync_database(settings: Settings, predictor: Predictor, store, encoder=None, fresh: Sequence[str] = (),
                  collection: str | None = None) -> int:
    """Make the RKC collection (`collection`, the configured one by default) hold the model's database
    plus every added label (the files are the truth): rebuilt when it belongs to another model, else
    only what is missing (and the `fresh` label ids) is written. Returns how many points were written."""
    from mmd.models.data import item_features

    name = collection or predictor.cfg.collection
    ids, labels, g = read_database(predictor.folder / "database.parquet")
    identity = f"rgcl:{predictor.meta['trained_at']}"
    info = store.info(name)
    written = 0
    if info is None or info.get("encoder") != identity:
        store.ensure_collection(name, g.shape[1], identity, rebuild=True)
        present: set[str] = set()
    else:
        present = store.ids(name)
    todo = [n for n, i in enumerate(ids) if i not in present]
    if todo:
        store.upsert(name, [ids[n] for n in todo], g[np.array(todo)],
                     [{"label": int(labels[n]), "source": "train"} for n in todo])
        written += len(todo)
    fresh = set(fresh)
    added = [r for r in read_table(settings.layout.labels, LABELS_SCHEMA).to_pylist()
             if r["id"] not in present or r["id"] in fresh]
    if added:
        g_new, _ = predictor.embed(item_features(settings, added, encoder))
        store.upsert(name, [r["id"] for r in added], g_new,
                     [{"label": int(r["label"]), "source": "label"} for r in added])
        written += len(added)
    return written


def candidate_collection(cfg: RGCLConfig) -> str:
    """The RKC collection a challenger is scored through (the configured one serves the champion)."""
    return f"{cfg.collection}_candidate"


@dataclass
class RGCLScorer:
    """The family's predictor: RKC through the store (or the logistic head, `rgcl.predict_with`)."""

    settings: Settings
    encoder: Any
    model: Predictor
    collection: str | None = None

    @property
    def meta(self) -> dict:
        return self.model.meta

    @property
    def variant(self) -> str:
        return self.model.cfg.predict_with

    def score(self, rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        from mmd.models.data import item_features

        split = item_features(self.settings, rows, self.encoder, data_dir=data_dir)
        return self.finish_scores(self.score_features(split, data_dir)), split.has_image

    def score_features(self, split: Split, data_dir: Path) -> dict[str, np.ndarray]:
        """The model's part, without the store (it may run on a Dask worker): the head's scores, or the
        embeddings g that RKC searches with."""
        if self.variant == "head":
            return {"score": self.model.head_scores(split)}
        return {"g": self.model.embed(split)[0]}

    def finish_scores(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The scores from `score_features`' parts (of all rows, in order): RKC searches the store here."""
        from mmd.store import open_store

        if "score" in parts:
            return parts["score"]
        with open_store(self.settings) as store:
            # a wiped store, or one holding another model's database, comes back from the files
            sync_database(self.settings, self.model, store, self.encoder, collection=self.collection)
            return self.model.rkc_of(store, parts["g"], collection=self.collection)


def load_predictor(settings: Settings, folder: Path, challenger: bool = False) -> RGCLScorer:
    """A challenger's RKC searches its own collection (`<collection>_candidate`): the configured one
    serves the champion."""
    from mmd.encoders import build_encoder

    encoder = build_encoder(settings.params.embed, settings.root)
    model = load_model(folder, encoder)
    return RGCLScorer(settings, encoder, model, candidate_collection(model.cfg) if challenger else None)
