"""Load the weights users already hold into zoo models, without ever running code from a file.

Files are told apart by their first bytes, not by their names:

======================  =====================================================  ===================================
format                  what                                                   read with
======================  =====================================================  ===================================
``cnnzoo``              cnnzoo checkpoints (safetensors, model name inside)    safetensors
``safetensors``         any other safetensors state dict (timm's hub files)   safetensors
``torch``               ``torch.save(state_dict)``: torchvision's ``.pth``,    ``torch.load(weights_only=True)``
                        timm and DDP training checkpoints
``keras-h5``            Keras ``.h5`` (``model.save``, keras.applications)     h5py
``keras-weights-h5``    Keras 3 ``model.save_weights('m.weights.h5')``         h5py
``keras``               Keras 3 ``.keras`` archive                             zipfile + h5py
======================  =====================================================  ===================================

State dicts are matched by key: cnnzoo's own names, or torchvision's, renamed by the model's
``ModelInfo.torchvision_key`` (timm's ResNets use torchvision's names). Keras files are placed layer
by layer by :mod:`cnnzoo.weights.keras`. Whatever the source, one strict load follows, and every
missing key, unexpected key and shape mismatch is listed by name.

Why nothing runs: safetensors and HDF5 hold arrays only. A pickle (``.pth``) is read by
``torch.load(weights_only=True)``, whose unpickler builds tensors and plain containers and refuses
any other global before calling it; ``argparse.Namespace`` is allowed besides, because timm's
training checkpoints store their arguments in one (a bag of attributes, nothing is called).
TorchScript archives hold code and are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError
from ..registry import get_model_info, list_models
from .cnnzoo_format import read_metadata, resolve_checkpoint
from .keras import (
    HDF5_MAGIC,
    convert_bn_momentum,
    is_keras_archive,
    keras_file_kind,
    keras_state_dict,
    read_keras_file,
    zoo_keras_name_map,
)
from .state_dict import load_state_dict_checked, unwrap

log = logging.getLogger(__name__)

FORMATS = {
    "cnnzoo": "cnnzoo checkpoint",
    "safetensors": "safetensors state dict",
    "torch": "PyTorch state dict",
    "keras-h5": "Keras HDF5 weights (.h5)",
    "keras-weights-h5": "Keras 3 weights (.weights.h5)",
    "keras": "Keras 3 archive (.keras)",
}
# Where training checkpoints keep the model's state dict (timm, Lightning-style and hand-written loops).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
# Auxiliary classifiers of GoogLeNet (aux1, aux2) and Inception v3 (AuxLogits): torchvision's files
# carry them, a model built without them (aux_logits=False) ignores them, as torchvision does.
AUX_HEADS = ("aux1", "aux2", "AuxLogits")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` read and what it had to adapt."""

    path: str
    format: str
    names: str  # how the keys were matched
    sha256: str | None = None  # the file's digest, when it was checked
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path}: {FORMATS[self.format]}, {self.names}" + (f", sha256 {self.sha256[:16]}... verified" if self.sha256 else "")]
        return "\n".join(lines + [f"  {note}" for note in self.notes])


# --------------------------------------------------------------------------------------------------
# Files: checksum and format
# --------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> str:
    """Check a file against a SHA-256 (all 64 hex digits, or a prefix of 8 or more as in torchvision's file names)."""
    want = expected.lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{8,64}", want):
        raise WeightsError(f"--sha256 {expected!r}: expected 8 to 64 hexadecimal digits (a SHA-256 or a prefix of one)")
    got = file_sha256(path)
    if not got.startswith(want):
        raise WeightsError(
            f"{path}: SHA-256 is {got}, expected {want}{'...' if len(want) < 64 else ''}: not the file you meant, or a "
            "corrupt copy; nothing was loaded"
        )
    return got


def detect_format(path: str | Path) -> str:
    """The format of a weights file (a key of :data:`FORMATS`), from its content."""
    path = _require_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(HDF5_MAGIC):
        return keras_file_kind(path)
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "cnnzoo" if _safetensors_metadata(path).get("format") == "cnnzoo" else "safetensors"
    if head[:1] == b"\x80":  # a pickle stream: torch.save's format before PyTorch 1.6 (old torchvision files)
        return "torch"
    hint = " An ONNX model is an export, not a weights source." if path.suffix == ".onnx" else ""
    raise WeightsError(
        f"{path}: not a weights file cnnzoo reads (it starts with {head[:8]!r}). Expected safetensors, a PyTorch "
        f".pth / .pt state dict, or a Keras .h5 / .weights.h5 / .keras file.{hint}"
    )


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    return path


def _zip_format(path: Path) -> str:
    if is_keras_archive(path):
        return "keras"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise WeightsError(f"{path}: a damaged zip archive ({e})") from None
    if any("/code/" in n for n in names):
        raise WeightsError(
            f"{path}: a TorchScript archive (torch.jit.save). It holds code, and cnnzoo runs no code from files. "
            "Load it where you trust it and save its weights: torch.save(torch.jit.load(path).state_dict(), 'weights.pth')"
        )
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    raise WeightsError(f"{path}: a zip archive, but neither PyTorch's (no data.pkl) nor Keras' (no model.weights.h5)")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: a damaged safetensors file ({e})") from None


# --------------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------------


def torch_load_safely(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, a refused pickle turned into a clear :class:`WeightsError`."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"the Python object {found.group(1)}" if found else "Python objects that are not tensors"
        raise WeightsError(
            f"{path}: refused. This pickle asks for {what}, and cnnzoo reads only tensors and plain containers "
            "(torch.load with weights_only=True); nothing in the file was run. If it is a whole pickled model "
            "(torch.save(model)), save model.state_dict() instead where you trust the file."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def read_state_dict(path: str | Path, fmt: str | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a safetensors or PyTorch file, unwrapped from a training checkpoint, and notes on what was done."""
    from safetensors.torch import load_file

    path = Path(path)
    fmt = fmt or detect_format(path)
    notes: list[str] = []
    if fmt in ("cnnzoo", "safetensors"):
        state = load_file(str(path))
    elif fmt == "torch":
        state = _find_state_dict(torch_load_safely(path), path, notes)
    else:
        raise WeightsError(f"{path}: a {FORMATS[fmt]} file holds no PyTorch state dict")
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel, torch.compile
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            notes.append(f"stripped the {prefix!r} prefix from every key")
    return state, notes


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _find_state_dict(obj: Any, path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                others = [k for k in obj if k != key and _is_state_dict(obj[k])]
                notes.append(f"took the weights under {key!r}" + (f" (the file also has {', '.join(map(repr, others))})" if others else ""))
                return dict(obj[key])
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise WeightsError(
            f"{path}: no state dict in this file: a dict with keys {keys}. Expected a dict of tensors "
            f"(model.state_dict()) or a checkpoint with one under {' / '.join(map(repr, STATE_DICT_KEYS))}."
        )
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors, model.state_dict())")


def _model_info(model: nn.Module):
    info = getattr(model, "info", None)
    name = getattr(model, "model_name", None)
    return info if info is not None else (get_model_info(name) if name in list_models() else None)


def _match_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The file's keys as they are, or renamed from torchvision's: whichever fits more of the model."""
    own = set(model.state_dict())
    info = _model_info(model)
    rename = info.torchvision_key if info is not None else None
    if rename is not None:
        renamed = {rename(k): v for k, v in state.items()}
        if len(own & set(renamed)) > len(own & set(state)):
            return renamed, "keys renamed from torchvision's"
    return state, "keys as stored"


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_pretrained(model: nn.Module, path: str | Path, *, sha256: str | None = None, reset_head: bool = False) -> LoadReport:
    """Load any accepted weights file (see the module docstring) into ``model``, strictly.

    ``path`` may also be a cnnzoo run folder (its best checkpoint). ``sha256`` checks the file before
    anything in it is read. ``reset_head=True`` lets a model built with another ``num_classes`` keep
    its own, freshly initialised classifier and load everything else; without it a different head is
    an error that says so.
    """
    model = unwrap(model)  # DDP / torch.compile wrappers: load into the model inside
    path = _require_file(resolve_checkpoint(path) if Path(path).is_dir() else path)
    name = getattr(model, "model_name", type(model).__name__)
    digest = verify_sha256(path, sha256) if sha256 else None
    fmt = detect_format(path)
    source = f"{FORMATS[fmt]} {path}"
    if fmt.startswith("keras"):
        layers = read_keras_file(path)
        name_map, flatten_from = zoo_keras_name_map(model, layers, str(path))
        state = keras_state_dict(model, layers, name_map, flatten_from=flatten_from, source=str(path))
        notes: list[str] = []
        names = f"{len(layers)} Keras layers placed on {name}"
    else:
        if fmt == "cnnzoo":
            _check_cnnzoo_model(path, name)
        state, notes = read_state_dict(path, fmt)
        state, names = _match_keys(model, state)
    notes += _fit(model, state, reset_head=reset_head, source=str(path))
    load_state_dict_checked(model, state, source=source)
    if fmt.startswith("keras"):
        convert_bn_momentum(model, layers, name_map)
    report = LoadReport(str(path), fmt, names, digest, notes)
    for note in notes:
        log.info("%s: %s", path, note)
    return report


def _check_cnnzoo_model(path: Path, name: str) -> None:
    args = read_metadata(path)["model_args"]
    if args.get("name") != name:
        raise WeightsError(
            f"{path}: a cnnzoo checkpoint of {args.get('name')}, not of {name}. Build {args.get('name')}, or let "
            "cnnzoo.load_model(path) rebuild the model from the checkpoint's own arguments."
        )


def _fit(model: nn.Module, state: dict[str, torch.Tensor], *, reset_head: bool, source: str) -> list[str]:
    """Adapt ``state`` (in place) where the model asks for it: auxiliary heads it lacks, a new head."""
    notes = []
    name = getattr(model, "model_name", type(model).__name__)
    own = model.state_dict()
    aux = sorted({k.split(".")[0] for k in state if k not in own and k.split(".")[0] in AUX_HEADS})
    if aux:
        for key in [k for k in state if k.split(".")[0] in aux]:
            del state[key]
        notes.append(f"ignored the file's auxiliary classifier{'s' if len(aux) > 1 else ''} {', '.join(aux)}: {name} was built without (aux_logits=False)")

    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    head = [k for k in mismatched if _is_head(model, k, own[k], state[k])]
    if not head:
        if reset_head:
            notes.append("reset_head: the file's classifier already has as many classes as the model; loaded it")
        return notes
    ours, theirs = own[head[0]].shape[0], state[head[0]].shape[0]
    if not reset_head:
        if len(head) == len(mismatched):  # otherwise the strict load lists every mismatch
            raise WeightsError(
                f"{source}: the classifier of {name} has {ours} outputs, the file's has {theirs} ({', '.join(head)}). "
                f"Build the model with num_classes={theirs} to use the file's classifier, or ask for a new {ours}-class "
                "head with reset_head=True (--reset-head): everything else loads, the head keeps its fresh initialisation."
            )
        return notes
    for key in head:
        state[key] = own[key]
    notes.append(f"reset the head: {', '.join(head)} keep their fresh initialisation for {ours} classes (the file's head has {theirs})")
    return notes


def _is_head(model: nn.Module, key: str, mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """A classifier entry that differs from the file's in the number of classes only."""
    path, _, attr = key.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return False
    return isinstance(module, nn.Linear) and attr in ("weight", "bias") and mine.shape[1:] == theirs.shape[1:]
