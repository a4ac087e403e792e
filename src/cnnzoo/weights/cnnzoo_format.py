"""cnnzoo's own weights file: a safetensors state dict with the model's name and arguments in its metadata.

safetensors holds arrays only, so no code can hide in it. The metadata (JSON strings) carries what
:func:`cnnzoo.load_model` needs to rebuild the model alone (``model_args``: ``name``, ``num_classes``,
``in_chans`` and the family's options), plus whatever the writer adds (training info, where converted
weights came from). A run folder (``cnnzoo.checkpoint``) points at its best and last such file with
``best.json`` / ``last.json``; :func:`resolve_checkpoint` follows those pointers, so everything that
reads weights takes a run folder too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import WeightsError
from ..fileio import atomic_write
from .state_dict import load_state_dict_checked, unwrap


def save_weights(path: str | os.PathLike, model: nn.Module, model_args: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s state dict to a safetensors file, with what :func:`load_model` needs in its metadata.

    ``model_args`` is what ``create_model`` needs: ``{"name": ..., "num_classes": ..., "in_chans": ..., **options}``.
    """
    model = unwrap(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "cnnzoo", "model_args": json.dumps(model_args), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata stored with a cnnzoo safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if raw.get("format") != "cnnzoo" or "model_args" not in raw:
        raise WeightsError(f"{path}: a safetensors file without cnnzoo metadata; build the model with create_model(name) and load the weights with load_weights(model, path)")
    return {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a safetensors state dict into ``model``, listing every mismatch by name."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    load_state_dict_checked(unwrap(model), state, source=f"checkpoint {path}")
    return model


def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """A weights file from a run folder (its ``best`` or ``last`` checkpoint) or a file path."""
    path = Path(path)
    if path.is_dir():
        pointer = path / f"{which}.json"
        if not pointer.exists():
            pointer = path / "last.json"
        if not pointer.exists():
            raise WeightsError(f"{path}: a folder without {which}.json or last.json; is it a cnnzoo run folder?")
        return path / json.loads(pointer.read_text())["weights"]
    if not path.exists():
        raise WeightsError(f"{path}: no such file or run folder")
    return path
