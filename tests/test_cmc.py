"""CMC: the NCE distillation loss and its memory bank, BLOCK, training, saving and loading, on tiny CPU models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmd.config import TrainConfig
from mmd.evaluate.metrics import auroc, classification_metrics, expected_calibration_error, fit_temperature
from mmd.models.cmc.config import VARIANTS, BlockConfig, CMCConfig
from mmd.models.cmc.loss import ContrastMemory, CrossModalDistillation, nce_loss
from mmd.models.cmc.model import Block, chunk_sizes
from mmd.models.cmc.fit import item_weights, train_variant
from mmd.models.cmc.predictor import Inputs, load_model, predict_logits, save_model
from mmd.models.data import Split, TrainData, assign_roles, row_matches


# --------------------------------------------------------------------------- the NCE loss
def test_nce_loss_matches_a_hand_computed_case():
    # one anchor, k = 2 negatives, N = 4 items: the noise prior k/N = 0.5
    scores = torch.tensor([[0.5, 0.1, 0.2]])
    expected = -(math.log(0.5 / (0.5 + 0.5)) + math.log(0.5 / (0.1 + 0.5)) + math.log(0.5 / (0.2 + 0.5)))
    assert nce_loss(scores, n_data=4).item() == pytest.approx(expected, rel=1e-5)
    # the mean over the batch
    two = torch.tensor([[0.5, 0.1, 0.2], [0.5, 0.1, 0.2]])
    assert nce_loss(two, n_data=4).item() == pytest.approx(expected, rel=1e-5)


def test_memory_scores_are_exp_cosine_over_temperature_normalised_by_z():
    mem = ContrastMemory(feat_dim=2, n_data=3, k=2, temperature=0.5, momentum=0.5)
    mem.memory_image.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    mem.memory_text.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]))
    text = torch.tensor([[1.0, 0.0]])
    image = torch.tensor([[0.6, 0.8]])
    contrast = torch.tensor([[0, 1, 2]])
    out_text, out_image = mem(text, image, torch.tensor([0]), contrast)
    # text anchor against the image bank rows 0, 1, 2: cosines 1, 0, -1
    raw_t = np.exp(np.array([1.0, 0.0, -1.0]) / 0.5)
    z_t = raw_t.mean() * 3
    np.testing.assert_allclose(out_text.numpy()[0], raw_t / z_t, rtol=1e-5)
    # image anchor against the text bank rows 0, 1, 2: cosines 0.8, 0.6, -0.8
    raw_v = np.exp(np.array([0.8, 0.6, -0.8]) / 0.5)
    np.testing.assert_allclose(out_image.numpy()[0], raw_v / (raw_v.mean() * 3), rtol=1e-5)
    # and the loss from those scores, by hand: P(D=1) = h / (h + k/N)
    noise = 2 / 3
    h = raw_t / z_t
    by_hand = -(np.log(h[0] / (h[0] + noise)) + np.log(noise / (h[1] + noise)) + np.log(noise / (h[2] + noise)))
    assert nce_loss(out_text, 3).item() == pytest.approx(by_hand, rel=1e-5)
    # Z is fixed on the first batch: the same scores come back for the same inputs later
    z_before = mem.z.clone()
    mem(text, image, torch.tensor([1]), torch.tensor([[1, 0, 2]]))
    assert torch.equal(mem.z, z_before)


def test_the_memory_bank_moves_the_batch_rows_by_momentum_and_renormalises():
    torch.manual_seed(0)
    mem = ContrastMemory(feat_dim=4, n_data=5, k=3, temperature=0.07, momentum=0.5)
    before_t, before_v = mem.memory_text.clone(), mem.memory_image.clone()
    text = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    image = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    index = torch.tensor([1, 3])
    mem(text, image, index, mem.sample(index))
    for bank, before, new in ((mem.memory_text, before_t, text), (mem.memory_image, before_v, image)):
        expected = torch.nn.functional.normalize(before[index] * 0.5 + new * 0.5, dim=1)
        torch.testing.assert_close(bank[index], expected)
        untouched = torch.tensor([0, 2, 4])
        torch.testing.assert_close(bank[untouched], before[untouched])  # the others stay
        assert torch.allclose(bank[index].norm(dim=1), torch.ones(2))


def test_negatives_are_uniform_or_from_the_other_class():
    mem = ContrastMemory(feat_dim=4, n_data=10, k=50, temperature=0.07, momentum=0.5)
    assert mem.k == 9  # never more than the bank minus the anchor
    index = torch.tensor([0, 7])
    g = torch.Generator().manual_seed(0)
    c = mem.sample(index, generator=g)
    assert c.shape == (2, 10) and c[:, 0].tolist() == [0, 7]
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    c = mem.sample(index, labels, g)
    assert set(c[0, 1:].tolist()) <= {5, 6, 7, 8, 9} and set(c[1, 1:].tolist()) <= {0, 1, 2, 3, 4}


def test_each_direction_of_the_distillation_trains_its_own_anchor_side():
    torch.manual_seed(0)
    d = CrossModalDistillation(text_dim=6, image_dim=5, feat_dim=4, n_data=8, k=4, temperature=0.07, momentum=0.5)
    text = torch.randn(3, 6, requires_grad=True)
    image = torch.randn(3, 5, requires_grad=True)
    index = torch.tensor([0, 1, 2])
    out = d(text, image, index, d.memory.sample(index))
    out["v_to_t"].backward(retain_graph=True)
    # L_{V->T} contrasts text anchors with the (fixed) image bank: only the text side learns from it
    assert text.grad.abs().sum() > 0 and image.grad is None
    out["t_to_v"].backward()
    assert image.grad.abs().sum() > 0
    assert torch.isclose(out["distill"], out["v_to_t"] + out["t_to_v"])


# --------------------------------------------------------------------------- BLOCK
def test_block_shapes_and_gradients_reach_every_parameter():
    cfg = BlockConfig(mm_dim=40, chunks=6, rank=3, dropout_input=0.1)
    sizes = chunk_sizes(40, 6)
    assert sum(sizes) == 40 and min(sizes) > 0 and len(sizes) == 6
    block = Block((7, 5), 2, cfg)
    x0, x1 = torch.randn(4, 7, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    out = block(x0, x1)
    assert out.shape == (4, 2)
    out.sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x0.grad.abs().sum() > 0 and x1.grad.abs().sum() > 0
    # the paper's setting fits
    assert sum(chunk_sizes(256, 18)) == 256
    assert Block((256, 256), 2, BlockConfig())(torch.randn(3, 256), torch.randn(3, 256)).shape == (3, 2)
    with pytest.raises(ValueError, match="chunks"):
        chunk_sizes(4, 6)


# --------------------------------------------------------------------------- training
def _split(n: int, seed: int, text_dim: int = 12, image_dim: int = 10, signal: float = 2.0) -> Split:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    image = rng.normal(size=(n, image_dim)).astype(np.float32)
    text[:, 0] += signal * (2 * labels - 1)
    image[:, 0] += signal * (2 * labels - 1)
    has = np.ones(n, bool)
    has[::5] = False
    image[~has] = 0
    return Split([f"i{seed}-{k}" for k in range(n)], labels, text, image, has, np.zeros(n, bool))


def _data(train: Split, val: Split, test: Split | None = None) -> TrainData:
    return TrainData(train, val, test, "test-encoder", train.text.shape[1], train.image.shape[1], {})


FAST = dict(hidden=32, batch_size=16, nce={"feat_dim": 16, "k": 8}, block={"mm_dim": 32, "chunks": 4, "rank": 3})


def test_a_run_overfits_a_tiny_set():
    tiny = _split(24, 0, signal=0.0)  # random labels: only memorising fits them
    cfg = CMCConfig.model_validate({**FAST, "epochs": 300, "fusion_epochs": 300, "patience": 300, "dropout": 0.0,
                                    "lr": 3e-3, "weight_decay": 0.0, "calibrate": False,
                                    "block": {"mm_dim": 32, "chunks": 4, "rank": 3, "dropout_input": 0.0}})
    trained = train_variant(_data(tiny, tiny), cfg, TrainConfig(), "cmc")
    assert trained.metrics["val"]["accuracy"] == 1.0
    assert trained.history[-1]["train_loss"] < 0.1 * trained.history[0]["train_loss"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_learns_a_separable_signal(name):
    cfg = CMCConfig.model_validate({**FAST, "epochs": 15, "fusion_epochs": 15})
    data = _data(_split(120, 1), _split(60, 2), _split(60, 3))
    trained = train_variant(data, cfg, TrainConfig(label_names=("real", "fake")), name)
    m = trained.metrics["test"]
    assert m["accuracy"] > 0.75, (name, m)
    assert set(m["per_class"]) == {"real", "fake"} and m["auroc"] > 0.8
    stages = {h["stage"] for h in trained.history}
    assert stages == ({"networks", "fusion"} if VARIANTS[name].head == "fusion" else
                      {"joint"} if VARIANTS[name].head in ("joint", "concat") else {"networks"})
    assert trained.temperature > 0


def test_items_sharing_a_picture_weigh_one_item_together_and_classes_can_weigh_half():
    # a viral picture: ten reposts of one fake picture, against two real pictures and one text-only real post
    labels = np.array([1] * 10 + [0, 0, 0])
    has = np.array([True] * 12 + [False])
    split = Split([f"p{k}" for k in range(13)], labels, np.zeros((13, 2), np.float32), np.zeros((13, 2), np.float32),
                  has, np.zeros(13, bool), [], ["images/aa/viral.jpg"] * 10 + ["images/bb/a.jpg", "images/cc/b.jpg", None])
    assert item_weights(CMCConfig(picture_weight="none"), split) is None
    w = item_weights(CMCConfig(picture_weight="equal"), split)
    assert w.mean() == pytest.approx(1.0)
    # four stories: the viral picture, two real pictures, the text-only post; each weighs 13/4 in all
    assert w[:10].sum() == pytest.approx(13 / 4) and w[10] == w[11] == w[12] == pytest.approx(13 / 4)
    w = item_weights(CMCConfig(picture_weight="equal", class_weight="balanced"), split)
    assert w[:10].sum() == pytest.approx(w[10:].sum()) == pytest.approx(6.5)
    w = item_weights(CMCConfig(class_weight="balanced"), split)
    assert w[labels == 1].sum() == pytest.approx(w[labels == 0].sum())
    # the weights reach the loss: with every picture distinct they change nothing; with shared pictures they do
    cfg = CMCConfig.model_validate({**FAST, "epochs": 4, "calibrate": False})
    train, val = _split(60, 4), _split(30, 5)
    def run(split, weight):
        return [h["val_loss"] for h in train_variant(_data(split, val), cfg.model_copy(update={"picture_weight": weight}),
                                                     TrainConfig(), "text").history]
    distinct = Split(**{**train.__dict__, "image_paths": [f"images/{k}.jpg" for k in range(60)]})
    shared = Split(**{**train.__dict__, "image_paths": [f"images/{k % 6}.jpg" for k in range(60)]})
    assert run(distinct, "equal") == pytest.approx(run(distinct, "none"), rel=1e-5)
    assert run(shared, "equal") != pytest.approx(run(shared, "none"), rel=1e-3)


def test_early_stopping_keeps_the_best_validation_epoch():
    cfg = CMCConfig.model_validate({**FAST, "epochs": 60, "patience": 2, "lr": 1e-2})
    noise_val = _split(60, 5, signal=0.0)  # nothing to learn: validation loss only rises
    trained = train_variant(_data(_split(60, 4), noise_val), cfg, TrainConfig(), "text")
    epochs = [h["epoch"] for h in trained.history]
    assert max(epochs) < 60  # stopped early
    best = min(trained.history, key=lambda h: h["val_loss"])
    assert trained.stopped["networks"] == best["epoch"]
    assert max(epochs) - best["epoch"] == 2


def test_a_saved_model_reloads_to_identical_predictions(tmp_path):
    cfg = CMCConfig.model_validate({**FAST, "epochs": 5, "fusion_epochs": 5})
    data = _data(_split(80, 6), _split(40, 7), _split(40, 8))
    trained = train_variant(data, cfg, TrainConfig(), "cmc")
    folder = save_model(tmp_path / "cmc", trained, cfg, data, TrainConfig())
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "metrics.json"}
    loaded = load_model(folder, device="cpu")
    before = predict_logits(trained.model, Inputs(data.test, torch.device("cpu")))
    after = loaded.logits(data.test)
    np.testing.assert_array_equal(before, after)
    assert loaded.temperature == pytest.approx(trained.temperature)
    p = loaded.predict(data.test)
    assert p.shape == (40,) and ((p >= 0) & (p <= 1)).all()


def test_loading_checks_the_encoder_and_the_folder(tmp_path):
    from mmd.models.data import ModelMismatch

    with pytest.raises(FileNotFoundError, match="mmd train"):
        load_model(tmp_path / "nothing")
    cfg = CMCConfig.model_validate({**FAST, "epochs": 2})
    data = _data(_split(40, 9), _split(20, 10))
    folder = save_model(tmp_path / "m", train_variant(data, cfg, TrainConfig(), "text"), cfg, data, TrainConfig())

    class Other:
        identity = "another-encoder"

    with pytest.raises(ModelMismatch, match="another-encoder"):
        load_model(folder, Other())


# --------------------------------------------------------------------------- fine-tuning the towers
def test_fine_tuning_trains_the_encoder_towers_and_reloads(tmp_path, tiny_open_clip):
    from PIL import Image

    from mmd.config import OpenClipConfig
    from mmd.encoders.open_clip import OpenClipEncoder
    from mmd.models.cmc.predictor import raw_inputs

    encoder = OpenClipEncoder(OpenClipConfig(model=tiny_open_clip, pretrained=None))
    rng = np.random.default_rng(0)
    texts, paths, labels = [], [], []
    for k in range(12):
        label = k % 2
        colour = (200, 30, 30) if label else (30, 30, 200)
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"{k}.png")
        texts.append(("alarming hoax " if label else "calm report ") + str(rng.integers(100)))
        paths.append(f"{k}.png")
        labels.append(label)
    n = len(labels)
    split = Split([str(k) for k in range(n)], np.array(labels), np.zeros((n, encoder.text_dim), np.float32),
                  np.zeros((n, encoder.image_dim), np.float32), np.ones(n, bool), np.zeros(n, bool), texts, paths)
    data = TrainData(split, split, None, encoder.identity, encoder.text_dim, encoder.image_dim, {})
    cfg = CMCConfig.model_validate({**FAST, "epochs": 3, "fusion_epochs": 2, "finetune": {"enabled": True}})
    backbones = encoder.trainable_backbones()
    start = [p.detach().clone() for p in backbones[1].parameters()]
    raw = raw_inputs(encoder, tmp_path)
    trained = train_variant(data, cfg, TrainConfig(), "cmc", backbones=backbones, raw=raw)
    moved = [not torch.equal(a, b.detach()) for a, b in zip(start, backbones[1].parameters())]
    assert any(moved)  # the image tower itself was trained
    # the encoder's own model is untouched (its features still match a fresh encoder's)
    fresh = OpenClipEncoder(OpenClipConfig(model=tiny_open_clip, pretrained=None))
    np.testing.assert_allclose(encoder.encode_texts(["x"]), fresh.encode_texts(["x"]), atol=1e-6)
    folder = save_model(tmp_path / "ft", trained, cfg, data, TrainConfig(), finetuned=True)
    loaded = load_model(folder, fresh, device="cpu")
    np.testing.assert_allclose(loaded.logits(split, raw), predict_logits(trained.model, Inputs(split, torch.device("cpu"), raw)),
                               atol=1e-5)


def test_a_precomputed_encoder_cannot_be_fine_tuned():
    from mmd.encoders.base import Encoder, EncoderUnavailable

    class Fixed(Encoder):
        identity, text_dim, image_dim = "fixed", 2, 2

        def encode_texts(self, texts):
            return np.zeros((len(texts), 2), np.float32)

        image_transform = None

        def encode_image_tensors(self, batch):
            return np.zeros((len(batch), 2), np.float32)

    with pytest.raises(EncoderUnavailable, match="frozen features"):
        Fixed().trainable_backbones()


# --------------------------------------------------------------------------- data and metrics
def test_validation_is_carved_by_picture_and_held_out_pictures_never_train():
    rows = []
    for k in range(200):
        rows.append({"id": f"a{k}", "label": k % 2, "split": "train", "image_sha256": f"img{k // 4}", "group": "e1"})
    rows.append({"id": "t0", "label": 1, "split": "test", "image_sha256": "img3", "group": "e2"})
    roles, report = assign_roles(rows, TrainConfig(val_fraction=0.25, val_group_by="image"))
    assert report["val_carved"] and 20 < len(roles["val"]) < 90
    train_imgs = {r["image_sha256"] for r in roles["train"]}
    val_imgs = {r["image_sha256"] for r in roles["val"]}
    assert not train_imgs & val_imgs  # no picture on both sides
    assert "img3" not in train_imgs | val_imgs  # the test picture's training copies were dropped
    assert report["dropped_image_shared_with_heldout"] == 4
    assert [r["id"] for r in roles["test"]] == ["t0"]


def test_items_without_a_split_hold_out_a_fixed_share_by_picture():
    rows = [{"id": f"a{k}", "label": k % 2, "split": None, "image_sha256": f"img{k // 2}"} for k in range(400)]
    rows += [{"id": f"s{k}", "label": k % 2, "split": "train", "image_sha256": f"own{k}"} for k in range(50)]
    roles, _ = assign_roles(rows, TrainConfig(holdout_fraction=0.2))
    held = {r["id"] for r in roles["test"]}
    assert 0.12 < len(held) / 400 < 0.28 and not any(i.startswith("s") for i in held)  # a named split is kept
    assert not {r["image_sha256"] for r in roles["test"]} & {r["image_sha256"] for r in roles["train"] + roles["val"]}
    # the same items whatever else changes (seed, val carve): a champion and a challenger share it
    again, _ = assign_roles(rows[::-1], TrainConfig(holdout_fraction=0.2, seed=7, val_fraction=0.3))
    assert {r["id"] for r in again["test"]} == held
    assert not assign_roles(rows, TrainConfig(holdout_fraction=0.0))[0]["test"]
    # a source whose items all say "train" (MediaEval's development set) gives a holdout only when asked
    carved, _ = assign_roles(rows, TrainConfig(holdout_fraction=0.2, holdout_from=("train",)))
    from_train = {r["id"] for r in carved["test"]} - held
    assert {r["id"] for r in carved["test"]} >= held and from_train and all(i.startswith("s") for i in from_train)


def test_row_filters_speak_the_store_language():
    row = {"source": "mediaeval", "kind": "post", "split": "train"}
    assert row_matches(row, {}) and row_matches(row, {"source": "mediaeval"})
    assert row_matches(row, {"kind": ["post", "meme"]}) and not row_matches(row, {"kind": "meme"})
    assert row_matches(row, {"split": {"not": ["test"]}}) and not row_matches(row, {"split": {"not": "train"}})


def test_metrics_match_a_hand_count_and_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.7])
    m = classification_metrics(y, p, ("real", "fake"))
    # predicted 1: items 0, 1, 4, 7 -> tp 3, fp 1, fn 1
    assert m["per_class"]["fake"]["precision"] == 0.75 and m["per_class"]["fake"]["recall"] == 0.75
    assert m["accuracy"] == 0.75
    assert m["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p)) == auroc(y, p)
    assert classification_metrics([1, 1], [0.2, 0.9])["auroc"] is None
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_a_separated_validation_split_does_not_make_the_scores_zero_or_one():
    """A small val split the model separates: hard targets would push T to its bound and the scores to 0/1."""
    from mmd.models.cmc.predictor import probabilities

    y = np.array([0] * 6 + [1] * 6)
    margin = np.linspace(0.5, 3.0, 6)
    logits = np.stack([np.zeros(12), np.concatenate([-margin, margin])], axis=1)
    t = fit_temperature(logits, y)
    assert 0.1 < t < 20.0
    p = probabilities(logits, t)
    assert ((p > 0.01) & (p < 0.99)).all() and ((p >= 0.5) == (y == 1)).all()
    # confident, not certain: the fit aims at 7/8 for a class of six
    assert 0.75 < p[y == 1].mean() < 0.95 and 0.05 < p[y == 0].mean() < 0.25


def test_temperature_scaling_calibrates_overconfident_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    true_logit = rng.normal(size=2000) + (2 * y - 1) * 0.5  # a weak signal
    y = (rng.random(2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros(2000), true_logit * 5], axis=1)  # five times too confident
    t = fit_temperature(logits, y)
    assert 3.5 < t < 7.0
    from mmd.models.cmc.predictor import probabilities

    before = expected_calibration_error(y, probabilities(logits, 1.0))
    after = expected_calibration_error(y, probabilities(logits, t))
    assert after < before / 2
