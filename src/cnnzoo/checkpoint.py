"""Checkpoints that are safe to load and survive a crash at any moment.

* Model weights go to ``.safetensors`` (no code can hide in it), with the model's name and
  constructor arguments in its metadata, so :func:`load_model` rebuilds the model alone.
* Optimizer, scheduler, AMP scaler, RNG and loop counters go to a ``.state.pt`` file holding only
  tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it and no
  pickle from the file is ever executed.
* Every file is written atomically: to a temporary file in the same folder, flushed, fsynced, then
  renamed over the target (a rename within one file system is atomic on POSIX). A run folder keeps
  numbered checkpoint pairs plus two tiny pointer files, ``last.json`` and ``best.json``, rewritten
  atomically only after both files of the pair are on disk. So a crash (SIGKILL, power cut, disk
  full) leaves the pointers naming a complete, older pair.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open
from torch import nn

from .errors import WeightsError

CKPT_DIR = "checkpoints"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file to ``path`` atomically; on failure remove the temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should get the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers, so saved keys carry no ``module.`` / ``_orig_mod.`` prefix."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


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
    from .compat.torchvision import load_state_dict_checked

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


def load_model(path: str | os.PathLike, which: str = "best", **overrides: Any) -> nn.Module:
    """Rebuild a zoo model from a cnnzoo checkpoint file or run folder, weights loaded, in eval mode."""
    from .registry import create_model

    weights = resolve_checkpoint(path, which)
    args = dict(read_metadata(weights)["model_args"])
    args.update(overrides)
    model = create_model(args.pop("name"), **args)
    return load_weights(model, weights).eval()


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write optimizer/scheduler/scaler/RNG/counters; readable with ``torch.load(weights_only=True)``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError names the forbidden global; nothing in the file ran
        raise WeightsError(f"{path}: refused or unreadable training state ({type(e).__name__}: {e})") from None


class RunCheckpoints:
    """The checkpoints of one run folder: numbered pairs plus ``last.json`` / ``best.json`` pointers."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / CKPT_DIR

    def pointer(self, which: str) -> dict[str, Any] | None:
        p = self.run_dir / f"{which}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def save(self, tag: str, model: nn.Module, model_args: dict[str, Any], state: dict[str, Any], *, best: bool, info: dict[str, Any]) -> None:
        """Write the pair ``tag`` then move ``last`` (and ``best``) to it; delete pairs nothing points at."""
        weights, trainer = f"{CKPT_DIR}/{tag}.safetensors", f"{CKPT_DIR}/{tag}.state.pt"
        save_weights(self.run_dir / weights, model, model_args, extra={"info": info})
        save_training_state(self.run_dir / trainer, state)
        record = json.dumps({"weights": weights, "state": trainer, **info}, indent=2)
        atomic_write_text(self.run_dir / "last.json", record)
        if best:
            atomic_write_text(self.run_dir / "best.json", record)
        self._prune()

    def _prune(self) -> None:
        keep = set()
        for which in ("last", "best"):
            p = self.pointer(which)
            if p:
                keep.update(Path(p[k]).name for k in ("weights", "state"))
        for f in self.folder.glob("*"):  # also temp files a killed run left behind; only rank 0 writes here
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def load_last(self) -> tuple[Path, dict[str, Any]]:
        """(weights path, training state) of the last complete checkpoint."""
        p = self.pointer("last")
        if p is None:
            raise WeightsError(f"{self.run_dir}: nothing to resume, no last.json (the run saved no checkpoint yet)")
        return self.run_dir / p["weights"], load_training_state(self.run_dir / p["state"])
