"""Any open_clip architecture, from a pretrained tag in the local cache or a checkpoint file.

Weights are never fetched implicitly: unless the environment says HF_HUB_OFFLINE=0, a
tag is first looked up in the local Hugging Face cache, and a miss fails at once with
EncoderUnavailable saying how to provide the weights (rather than a minute of retries
against a network that is not there).

`pretrained: null` with no checkpoint builds the architecture with seeded random
weights. That is for tests (a tiny registered config), never for real vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from mmd.config import OpenClipConfig
from mmd.encoders.base import Encoder, EncoderUnavailable, select_device, set_threads, split_normalisation

RANDOM_INIT_SEED = 0


def downloads_allowed() -> bool:
    """Only an explicit HF_HUB_OFFLINE=0 (or false/no/off) lets open_clip reach the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off")


@contextmanager
def hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for one call, also for a huggingface_hub already imported (it reads
    the variable once, at import)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    try:
        from huggingface_hub import constants
    except ImportError:
        pass
    saved_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


def _how_to_provide(model: str, hf_repo: str | None) -> str:
    fetch = (
        f"on a connected machine run `hf download {hf_repo}` (or `huggingface-cli download {hf_repo}`) "
        f"and copy the Hugging Face cache ({_hf_cache_dir()}) here, or point HF_HOME at a copy"
        if hf_repo
        else f"pre-populate the Hugging Face cache ({_hf_cache_dir()}) with the weights"
    )
    return (
        "To provide them: (1) put the path of a local open_clip checkpoint (.safetensors / .pt) for "
        f"{model} in `embed.open_clip.checkpoint`; (2) {fetch}; (3) or use `embed.backend: offline` "
        "(MiniLM + EfficientNet-Lite0, weights shipped in installed packages). "
        "Set HF_HUB_OFFLINE=0 to let open_clip download on a machine with network access."
    )


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def _check_tag_cached(model: str, tag: str) -> None:
    """Raise EncoderUnavailable unless the tag's weights are in the local HF cache (no network)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(model)
        raise EncoderUnavailable(
            f"open_clip has no pretrained tag {tag!r} for model {model!r}"
            + (f"; known tags: {', '.join(known)}" if known else f"; is {model!r} an open_clip model?")
        )
    if cfg.get("file"):
        if Path(cfg["file"]).is_file():
            return
        raise EncoderUnavailable(f"open_clip weights file {cfg['file']} is missing. {_how_to_provide(model, None)}")
    hf = cfg.get("hf_hub", "")
    repo, filename = os.path.split(hf)
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip looks for a .safetensors twin first (open_clip.pretrained._get_safe_alternatives)
    if filename == "open_clip_pytorch_model.bin":
        candidates = ["open_clip_model.safetensors", filename]
    elif filename.endswith((".bin", ".pth")):
        candidates = [filename[:-4] + ".safetensors", filename]
    else:
        candidates = [filename]
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        hf_hub_download = None
    if hf_hub_download is not None and repo:
        for name in candidates:
            try:
                hf_hub_download(repo_id=repo, filename=name, local_files_only=True)
                return
            except Exception:  # LocalEntryNotFoundError and friends: not cached
                continue
    raise EncoderUnavailable(
        f"open_clip weights for {model} / {tag} are not on this machine (looked for "
        f"{' or '.join(candidates)} of {repo or '?'} in the Hugging Face cache {_hf_cache_dir()}) and "
        f"downloads are off. {_how_to_provide(model, repo or None)}"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class OpenClipEncoder(Encoder):
    """An open_clip model; text and image vectors share one space (text_dim == image_dim)."""

    shared_space = True

    def __init__(self, cfg: OpenClipConfig, root: Path | None = None, device: str = "auto", threads: int | None = None):
        try:
            import open_clip
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise EncoderUnavailable(f"open_clip_torch is not installed ({exc})") from exc
        set_threads(threads)
        self.device = select_device(device)
        model_name = cfg.model
        if model_name not in open_clip.list_models():
            raise EncoderUnavailable(
                f"embed.open_clip.model {model_name!r} is not an open_clip architecture "
                f"(open_clip.list_models() has e.g. ViT-B-32, ViT-B-16, RN50)"
            )

        if cfg.checkpoint:
            path = Path(cfg.checkpoint)
            if not path.is_absolute() and root is not None:
                path = (root / path).resolve()
            if not path.is_file():
                raise EncoderUnavailable(
                    f"embed.open_clip.checkpoint {cfg.checkpoint!r}: no such file ({path}). "
                    + _how_to_provide(model_name, None)
                )
            pretrained: str | None = str(path)
            self.identity = f"open_clip:{model_name}:ckpt-sha256-{_file_sha256(path)[:16]}"
        elif cfg.pretrained:
            pretrained = cfg.pretrained
            if not downloads_allowed():
                _check_tag_cached(model_name, pretrained)
            self.identity = f"open_clip:{model_name}:{pretrained}"
        else:
            pretrained = None
            config_hash = hashlib.sha256(
                json.dumps(open_clip.get_model_config(model_name), sort_keys=True).encode()
            ).hexdigest()[:12]
            self.identity = f"open_clip:{model_name}:random-init-seed{RANDOM_INIT_SEED}-cfg{config_hash}"

        offline = hub_offline() if not downloads_allowed() else nullcontext()
        try:
            with offline, torch.random.fork_rng(devices=[]):
                # seeded so that random-init (test) encoders are identical from run to run
                torch.manual_seed(RANDOM_INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, device=self.device
                )
                self.tokenizer = open_clip.get_tokenizer(model_name)
        except EncoderUnavailable:
            raise
        except Exception as exc:
            raise EncoderUnavailable(
                f"could not build open_clip {model_name} with weights {pretrained!r}: {type(exc).__name__}: {exc}. "
                + _how_to_provide(model_name, None)
            ) from exc
        self.model = model.eval()
        self._transform, mean, std = split_normalisation(preprocess)
        shape = (1, -1, 1, 1)
        self._mean = None if mean is None else torch.tensor(mean, device=self.device).view(shape)
        self._std = None if std is None else torch.tensor(std, device=self.device).view(shape)
        self.text_dim = int(self.encode_texts([""]).shape[1])
        self.image_dim = int(getattr(self.model.visual, "output_dim", self.text_dim))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.text_dim), np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.image_dim), np.float32)
        with torch.inference_mode():
            x = _normalise_pixels(batch.to(self.device, non_blocking=True), self._mean, self._std)
            return self.model.encode_image(x, normalize=True).float().cpu().numpy()

    def trainable_backbones(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        import copy

        text = copy.deepcopy(self.model)
        text.visual = torch.nn.Identity()  # encode_text never reads it; the image tower owns the copy
        return (_ClipTextTower(text, self.tokenizer).train(),
                _ClipImageTower(copy.deepcopy(self.model.visual), self._mean, self._std).train())


def _normalise_pixels(x: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
        if mean is not None:
            x = (x - mean.to(x.device)) / std.to(x.device)
    return x


class _ClipTextTower(torch.nn.Module):
    """Strings -> CLIP text embeddings, L2-normalised (with gradients)."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(list(texts)).to(device), normalize=True)


class _ClipImageTower(torch.nn.Module):
    """Transformed image batches -> CLIP image embeddings, L2-normalised (with gradients)."""

    def __init__(self, visual: torch.nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.visual = visual
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.visual(_normalise_pixels(x, self.mean, self.std)), dim=-1)
