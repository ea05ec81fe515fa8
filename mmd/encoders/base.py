"""The encoder interface every backend implements, the mixed-modal vector, and image loading.

An encoder turns texts and images into L2-normalised float32 vectors. Its `identity`
string names everything that decides those vectors (backend, model, weights,
preprocessing): the embedding cache and the vector store refuse to mix vectors of two
identities. Image work is split in two so a DataLoader can decode and preprocess in
worker processes while the model computes: `load_image` + `image_transform` (a file ->
a uint8 tensor, in a worker; `preprocess_image` does the same for a decoded PIL image)
and `encode_image_tensors` (a batch -> vectors, in the main process).
"""

from __future__ import annotations

import abc
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

# Tokenizers' own thread pool competes with torch for the same cores and warns (then
# disables itself) whenever a DataLoader forks; torch's threads already use the cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class EncoderUnavailable(RuntimeError):
    """An encoder that cannot be built here (weights missing, bad path); says how to fix it."""


def l2_normalise(x: np.ndarray | torch.Tensor, eps: float = 1e-12):
    """Rows scaled to unit length; an all-zero row stays zero."""
    if isinstance(x, torch.Tensor):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


def mix(text_vecs: np.ndarray, image_vecs: np.ndarray, has_image: np.ndarray, text_weight: float) -> np.ndarray:
    """The mixed-modal vector: L2-normalise(concat(w * text, (1 - w) * image)).

    An item without an image gets zeros for its image part, so its vector is its text
    direction alone. The two spaces are concatenated, not added, so this is valid when
    they differ (MiniLM text + EfficientNet image); dim = text_dim + image_dim.
    """
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must lie in [0, 1], got {text_weight}")
    t = np.asarray(text_vecs, dtype=np.float32)
    i = np.asarray(image_vecs, dtype=np.float32)
    has = np.asarray(has_image, dtype=bool)
    if not (len(t) == len(i) == len(has)):
        raise ValueError(f"mix: {len(t)} text, {len(i)} image vectors and {len(has)} has_image flags")
    image_part = (1.0 - text_weight) * i * has[:, None]
    return l2_normalise(np.concatenate([text_weight * t, image_part], axis=1))


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads for this process: `threads`, or (None) the cores this process may run on
    (its CPU affinity: a container's or a scheduler's share, not the machine's count). Returns the number."""
    n = threads or available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def select_device(device: str) -> torch.device:
    """`auto` means the GPU where there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image file fully into an RGB PIL image (alpha dropped, palette expanded)."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB uint8 (3, H, W) tensor of a PIL image."""
    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def decode_uint8(path: Path) -> torch.Tensor:
    """Decode an image file into an RGB uint8 (3, H, W) tensor.

    JPEG and 8-bit PNG go through torchvision.io (the same libjpeg-turbo / libpng
    pixels as PIL, without the PIL object and its copies: about half the time);
    anything else, or anything torchvision refuses, through PIL, which also gives the
    error message for a corrupt file.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file

    data = read_file(str(path))
    head = bytes(data[:8].tolist())
    if head.startswith(_JPEG) or head.startswith(_PNG):
        try:
            img = decode_image(data, mode=ImageReadMode.RGB)
            if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3:
                return img
        except RuntimeError:
            pass
    return pil_to_uint8(load_rgb(path))


class UInt8ImageTransform:
    """PIL -> resized, cropped uint8 CHW tensor; the float normalisation happens batched on
    the model's device, so workers ship 4x fewer bytes and do less arithmetic.

    A plain class (not a closure) so it pickles into spawned DataLoader workers.
    """

    def __init__(self, geometric: Callable[[Image.Image], Image.Image]):
        self.geometric = geometric

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return pil_to_uint8(self.geometric(img.convert("RGB") if img.mode != "RGB" else img))


def split_normalisation(transform: Callable) -> tuple[Callable, tuple[float, ...] | None, tuple[float, ...] | None]:
    """Split a torchvision eval pipeline `[geometric..., ToTensor, Normalize]` into a uint8
    worker part and the (mean, std) the model applies batched; anything else is kept whole
    (then the worker returns the final float tensor and mean/std are None).
    """
    steps = list(getattr(transform, "transforms", []))
    names = [type(t).__name__ for t in steps]
    for k, name in enumerate(names):
        if name in ("ToTensor", "MaybeToTensor"):
            rest = steps[k + 1 :]
            if len(rest) == 1 and type(rest[0]).__name__ == "Normalize":
                geometric = type(transform)(steps[:k])
                return UInt8ImageTransform(geometric), tuple(rest[0].mean), tuple(rest[0].std)
            break
    return transform, None, None


class EncodedItems(NamedTuple):
    text: np.ndarray  # (N, text_dim) float32, unit rows
    image: np.ndarray  # (N, image_dim) float32, unit rows or zeros where has_image is False
    has_image: np.ndarray  # (N,) bool
    missing_images: list["MissingImage"]


@dataclass(frozen=True)
class MissingImage:
    """An item whose image could not be read at embedding time (it is embedded text-only)."""

    id: str
    image_path: str | None
    reason: str


class Encoder(abc.ABC):
    """Texts and images -> L2-normalised float32 vectors; see the module docstring."""

    identity: str
    text_dim: int
    image_dim: int
    device: torch.device = torch.device("cpu")
    # True for backends that look vectors up by item id instead of computing them
    keyed_by_id: bool = False
    # True when text and image vectors live in one space (CLIP), so text can find images
    shared_space: bool = False
    # what `image_transform` takes: "pil" (an RGB PIL image) or "tensor" (RGB uint8 (3, H, W))
    image_input: str = "pil"

    @abc.abstractmethod
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(N, text_dim) float32, rows L2-normalised."""

    @property
    @abc.abstractmethod
    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        """A picklable callable (PIL image or uint8 tensor, per `image_input`) -> CHW tensor,
        run in DataLoader workers."""

    @abc.abstractmethod
    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """A batch of `preprocess_image` outputs -> (N, image_dim) float32, rows L2-normalised."""

    def preprocess_image(self, img: Image.Image) -> torch.Tensor:
        """A decoded PIL image -> what `encode_image_tensors` takes (one row of its batch)."""
        return self.image_transform(pil_to_uint8(img) if self.image_input == "tensor" else img)

    def load_image(self, path: Path) -> Any:
        """Decode a file into what `image_transform` takes."""
        return decode_uint8(path) if self.image_input == "tensor" else load_rgb(path)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        """(N, image_dim) float32, rows L2-normalised."""
        if not images:
            return np.zeros((0, self.image_dim), np.float32)
        return self.encode_image_tensors(torch.stack([self.preprocess_image(im) for im in images]))

    def trainable_backbones(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """Trainable copies of the text and image towers, for fine-tuning a detector.

        The text module maps a list of strings to (B, text_dim), the image module a batch of
        `image_transform` outputs to (B, image_dim), both L2-normalised like `encode_*`, with
        gradients. The encoder's own models are left untouched."""
        raise EncoderUnavailable(f"the {type(self).__name__} has no towers to fine-tune: use frozen features "
                                 "(cmc.finetune.enabled: false) or an offline / open_clip encoder")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, text_dim={self.text_dim}, image_dim={self.image_dim})"


# --------------------------------------------------------------------------- image batches
def resolve_image_path(data_dir: Path, reference: str) -> Path | str:
    """The file an item's `image_path` names under data_dir, or a reason string if it escapes."""
    root = Path(data_dir).resolve()
    candidate = (root / reference).resolve()
    if candidate != root and root not in candidate.parents:
        return f"image path {reference!r} points outside {root}"
    return candidate


class _ImageFiles(torch.utils.data.Dataset):
    """Index -> (index, uint8 tensor or None, reason or None); never raises on a bad file."""

    def __init__(self, paths: Sequence[Path | str], transform: Callable[[Any], torch.Tensor], as_tensor: bool):
        self.paths = list(paths)
        self.transform = transform
        self.load = decode_uint8 if as_tensor else load_rgb

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        if isinstance(path, str):  # resolve_image_path's refusal
            return index, None, path
        try:
            with one_torch_thread():
                return index, self.transform(self.load(path)), None
        except FileNotFoundError:
            return index, None, f"image file not found: {path}"
        except Exception as exc:  # a truncated or corrupt file: reported, not fatal
            return index, None, f"image could not be decoded ({type(exc).__name__}: {exc})"


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch single-threaded for the block. Decoding and resizing one image is too little work to share
    between threads, and on a busy machine a parallel region waits for whichever of its threads lost its
    core: measured in the main process at a load average of 6-7 on 2 cores, 0.9 ms an image on one thread
    against 13 ms on two (not measured on a quiet machine). A DataLoader worker is single-threaded
    already, so it decodes the same way."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ImageBatch:
    indices: list[int]  # positions in the path list, one per row of `tensors`
    tensors: torch.Tensor | None
    failed: list[tuple[int, str]] = field(default_factory=list)

    def pin_memory(self) -> "ImageBatch":  # called by the DataLoader's pin-memory thread
        if self.tensors is not None:
            self.tensors = self.tensors.pin_memory()
        return self


def _collate(samples) -> ImageBatch:
    ok = [(i, t) for i, t, _ in samples if t is not None]
    failed = [(i, reason) for i, t, reason in samples if t is None]
    tensors = torch.stack([t for _, t in ok]) if ok else None
    return ImageBatch([i for i, _ in ok], tensors, failed)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loader_workers(encoder: Encoder, requested: int) -> int:
    """How many DataLoader workers help rather than hurt.

    On CPU a worker only pays where it has a core of its own. Sharing one with torch's
    intra-op threads, it preempts one of them, and every parallel region of the
    forward then waits for that thread: measured on 2 cores with 2 torch threads, one
    worker made the pipeline ~10% slower than decoding in the main process, though
    decoding is only ~7% of the work. So workers are capped at the cores torch leaves
    free; to overlap decoding on a CPU machine, set `embed.threads` to cores - workers.
    On a GPU the host cores are free and the requested number is used.
    """
    if requested <= 0 or encoder.device.type != "cpu":
        return max(0, requested)
    return max(0, min(requested, available_cores() - torch.get_num_threads()))


def iter_image_batches(
    encoder: Encoder, paths: Sequence[Path | str], batch_size: int, num_workers: int
) -> Iterator[ImageBatch]:
    """Decode + preprocess in `num_workers` DataLoader workers, in order, while the caller computes."""
    if not paths:
        return iter(())
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, encoder.image_transform, encoder.image_input == "tensor"),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        # two batches in flight per worker keep the model fed without hoarding memory
        prefetch_factor=2 if num_workers > 0 else None,
        # workers start from a clean server process, not a fork of this one: a fork inherits the
        # exit hooks of whatever runs here (a Prefect flow's log and event services), which fail in
        # the child and make it exit with 1, and torch then calls the whole load failed
        multiprocessing_context="forkserver" if num_workers > 0 else None,
    )
    return iter(loader)
