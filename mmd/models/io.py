"""A saved detector's folder: weights as safetensors, everything else as JSON (no pickle).

`save_weights` writes a module's state atomically; `read_model_config` reads config.json and
checks that the folder holds the expected model, trained on the encoder at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmd.models.data import ModelMismatch
from mmd.util import atomic_path


def save_weights(path: Path, module, metadata: dict[str, str]) -> Path:
    """The module's state dict as safetensors (tmp file + rename: a crash never leaves half a file)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def read_model_config(folder: Path, model: str, required: tuple[str, ...] = ("model.safetensors",),
                      encoder=None) -> dict:
    """config.json of a saved `model`; a missing folder or file, another model, or features from
    another encoder (when `encoder` is given) are clear errors."""
    folder = Path(folder)
    if not all((folder / name).exists() for name in ("config.json", *required)):
        raise FileNotFoundError(f"no {model.upper()} model in {folder}: run `mmd train --model {model}` first")
    meta = json.loads((folder / "config.json").read_text())
    if meta.get("model") != model:
        raise ModelMismatch(f"{folder} holds a {meta.get('model')!r} model, not {model!r}")
    if encoder is not None and encoder.identity != meta.get("encoder"):
        raise ModelMismatch(f"the model was trained on {meta.get('encoder')} features, but embed is configured for "
                            f"{encoder.identity}: retrain, or set embed back")
    return meta
