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
import logging
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CnnzooError, WeightsError
from ..hub import download_url, file_digest, is_url
from ..registry import get_model_info, list_models
from .adapt import adapt_input_convs
from .cnnzoo_format import read_metadata, resolve_checkpoint, sniff_file
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
        lines = [
            f"{self.path}: {FORMATS[self.format]}, {self.names}"
            + (f", sha256 {self.sha256[:16]}... verified" if self.sha256 else "")
        ]
        return "\n".join(lines + [f"  {note}" for note in self.notes])


# --------------------------------------------------------------------------------------------------
# Files: checksum and format
# --------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 hex digits (remembered while the file does not change: hashed once per process)."""
    return file_digest(path, "sha256")


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
        with damaged_file(path, "HDF5 file"):
            return hdf5_isolated(keras_file_kind, path)
    if head.startswith(b"PK\x03\x04"):
        with damaged_file(path, "zip archive"):
            return _zip_format(path)
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "cnnzoo" if _safetensors_metadata(path).get("format") == "cnnzoo" else "safetensors"
    if head[:1] == b"\x80":  # a pickle stream: torch.save's format before PyTorch 1.6 (old torchvision files)
        return "torch"
    hint = " An ONNX model is an export, not a weights source." if path.suffix == ".onnx" else ""
    raise WeightsError(
        f"{path}: {sniff_file(path)[1]}: not a weights file cnnzoo reads. Expected safetensors, a PyTorch "
        f".pth / .pt state dict, or a Keras .h5 / .weights.h5 / .keras file.{hint}"
    )


@contextmanager
def damaged_file(path: str | Path, what: str) -> Iterator[None]:
    """Whatever goes wrong while a file is parsed is the file's fault: a :class:`WeightsError` naming it.

    The parsers (h5py, zipfile, safetensors, the unpickler) raise whatever their input leads them to --
    KeyError, IndexError, UnicodeDecodeError, OSError, RuntimeError, measured by benchmarks/fuzz_readers.py --
    so this catches every exception but cnnzoo's own, around the reading only, never around the loading.
    """
    try:
        yield
    except CnnzooError:
        raise
    except Exception as e:  # see the docstring: the parsers raise anything
        text = str(e).splitlines()[0] if str(e) else ""
        raise WeightsError(
            f"{path}: a damaged {what} ({type(e).__name__}{': ' + text[:200] if text else ''})"
        ) from None


HDF5_SECONDS = 60  # what a child reading a Keras file may take: a base, plus a second per 20 MB of file


def hdf5_isolated(read: Callable[[Path], Any], path: Path) -> Any:
    """``read(path)`` -- h5py reading a Keras file -- in a child process, under a time limit.

    The HDF5 library parses the file in C, and on a damaged one it can loop forever (benchmarks/fuzz_readers.py
    found a mutated .h5 whose attribute read never returns) or crash, taking its process with it. Here the
    child is the one that hangs (killed at the limit) or dies, and this process reports the file as damaged.
    The child is forked where the platform can (nothing to import again: a few milliseconds), else spawned.
    """
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_and_send, args=(send, read, path), daemon=True)
    limit = HDF5_SECONDS + path.stat().st_size / 20e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+ warns about forking with threads running
        child.start()
    send.close()
    try:
        if not receive.poll(limit):
            raise WeightsError(
                f"{path}: the HDF5 library did not finish reading it in {limit:.0f} s: a damaged HDF5 file"
            )
        try:
            ok, value = receive.recv()
        except EOFError:  # the child died before it could answer
            child.join(5)
            raise WeightsError(
                f"{path}: the HDF5 library crashed reading it (exit status {child.exitcode}): a damaged HDF5 file"
            ) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()
    if ok:
        return value
    ours, kind, message = value
    raise WeightsError(message) if ours else WeightsError(f"{path}: a damaged HDF5 file ({kind}: {message[:200]})")


def _read_and_send(send: Any, read: Callable[[Path], Any], path: Path) -> None:
    """The child's side of :func:`hdf5_isolated`: the result, or what went wrong as plain strings (always picklable)."""
    try:
        answer = (True, read(path))
    except Exception as e:  # sent to the parent, which names the file
        answer = (False, (isinstance(e, CnnzooError), type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
    send.send(answer)
    send.close()


def _require_file(path: str | Path) -> Path:
    """``path`` if it is a regular file that is not empty; else a :class:`WeightsError` saying what it is
    (a FIFO, a folder, a symlink loop ...): nothing here opens what is not a regular file, so nothing blocks."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise WeightsError(f"{path}: {sniff_file(path)[1]}")
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
    except Exception as e:  # a damaged file makes the unpickler raise anything (see damaged_file)
        text = str(e).splitlines()[0][:200] if str(e) else ""
        raise WeightsError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {text})") from None


def read_state_dict(path: str | Path, fmt: str | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a safetensors or PyTorch file, unwrapped from a training checkpoint, and notes on what was done."""
    from safetensors.torch import load_file

    path = Path(path)
    fmt = fmt or detect_format(path)
    notes: list[str] = []
    if fmt in ("cnnzoo", "safetensors"):
        with damaged_file(path, "safetensors file"):
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
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _find_state_dict(obj: Any, path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                others = [k for k in obj if k != key and _is_state_dict(obj[k])]
                notes.append(
                    f"took the weights under {key!r}"
                    + (f" (the file also has {', '.join(map(repr, others))})" if others else "")
                )
                return dict(obj[key])
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise WeightsError(
            f"{path}: no state dict in this file: a dict with keys {keys}. Expected a dict of tensors "
            f"(model.state_dict()) or a checkpoint with one under {' / '.join(map(repr, STATE_DICT_KEYS))}."
        )
    raise WeightsError(
        f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors, model.state_dict())"
    )


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


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    sha256: str | None = None,
    reset_head: bool = False,
    backbone_only: bool = False,
    adapt_input: bool = False,
    assign: bool = False,
) -> LoadReport:
    """Load any accepted weights file (see the module docstring) into ``model``, strictly.

    ``path`` may also be a cnnzoo run folder (its best checkpoint), or an http(s) URL, fetched once
    into the cache (:func:`cnnzoo.hub.download_url`) and used only when ``sha256`` pins it. ``sha256``
    checks the file before anything in it is read. ``reset_head=True`` lets a model built with another
    ``num_classes`` keep its own, freshly initialised classifier and load everything else; without it
    a different head is an error that says so. ``backbone_only=True`` is for files without a usable
    classifier (Keras' ``*_notop`` files lack it, torchvision's VGG16 ``IMAGENET1K_FEATURES`` holds NaN
    there): everything but the model's classifier loads, the classifier keeps its fresh initialisation.
    ``adapt_input=True`` fits the file's 3-channel first convolution to a model built with another
    ``in_chans`` (:mod:`cnnzoo.weights.adapt`). The report's notes say what was adapted. ``assign=True``
    is for a model just built, whose parameters no optimizer holds yet: the file's tensors become the
    model's where they can, instead of being copied (see :func:`load_state_dict_checked`).
    """
    model = unwrap(model)  # DDP / torch.compile wrappers: load into the model inside
    digest = None
    if is_url(path):
        path = download_url(str(path), sha256=sha256)  # refuses a URL without a digest, verifies while streaming
        digest, sha256 = file_digest(path, "sha256"), None  # remembered by the hub: not hashed twice
    path = _require_file(resolve_checkpoint(path) if Path(path).is_dir() else path)
    name = getattr(model, "model_name", type(model).__name__)
    digest = verify_sha256(path, sha256) if sha256 else digest
    fmt = detect_format(path)
    source = f"{FORMATS[fmt]} {path}"
    if fmt.startswith("keras"):
        with damaged_file(path, FORMATS[fmt] + " file"):
            layers = hdf5_isolated(read_keras_file, path)
        name_map, flatten_from = zoo_keras_name_map(model, layers, str(path))
        layers, notes = _skip_dropped_layers(model, layers, name_map)
        state = keras_state_dict(model, layers, name_map, flatten_from=flatten_from, source=str(path))
        names = f"{len(layers)} Keras layers placed on {name}"
    else:
        if fmt == "cnnzoo":
            _check_cnnzoo_model(path, name)
        state, notes = read_state_dict(path, fmt)
        state, names = _match_keys(model, state)
    fitting = dict(reset_head=reset_head, backbone_only=backbone_only, adapt_input=adapt_input)
    notes += _fit(model, state, source=str(path), **fitting)
    load_state_dict_checked(model, state, source=source, assign=assign)
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


def _fit(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    reset_head: bool,
    source: str,
    backbone_only: bool = False,
    adapt_input: bool = False,
) -> list[str]:
    """Adapt ``state`` (in place) where the model asks for it: auxiliary heads it lacks, a file without a
    usable classifier, another number of input channels, a new head."""
    notes = []
    name = getattr(model, "model_name", type(model).__name__)
    own = model.state_dict()
    if backbone_only:
        notes += _keep_fresh_classifier(model, state, own)
    else:
        _check_classifier(model, state, source)
    if adapt_input:
        notes += adapt_input_convs(model, state)
    aux = sorted({k.split(".")[0] for k in state if k not in own and k.split(".")[0] in AUX_HEADS})
    if aux:
        for key in [k for k in state if k.split(".")[0] in aux]:
            del state[key]
        notes.append(
            f"ignored the file's auxiliary classifier{'s' if len(aux) > 1 else ''} {', '.join(aux)}: {name} was built without (aux_logits=False)"
        )
    dropped = [k for k in state if k not in own and _dropped_module(model, k) is not None]
    if dropped:
        modules = _in_network_order(model, {_dropped_module(model, k) for k in dropped})
        for key in dropped:
            del state[key]
        notes.append(f"ignored {len(dropped)} tensors of the file's {_listed(modules)}: {name} is built without them")

    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    head = [k for k in mismatched if _is_head(model, k, own[k], state[k])]
    if not head:
        if reset_head and not dropped:
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
    notes.append(
        f"reset the head: {', '.join(head)} keep their fresh initialisation for {ours} classes (the file's head has {theirs})"
    )
    return notes


def _dropped_module(model: nn.Module, path: str) -> str | None:
    """The module of the full network that ``path`` lies in and ``model`` was built without, if any.

    Models declare those as ``dropped_modules``: a headless network (``num_classes=0``) its classifier,
    a feature extractor (``features_only``) also the stages after its last one.
    """
    return next((m for m in getattr(model, "dropped_modules", ()) if path == m or path.startswith(m + ".")), None)


def _in_network_order(model: nn.Module, modules: set[str | None]) -> list[str]:
    return [m for m in getattr(model, "dropped_modules", ()) if m in modules]


def _listed(names: list[str], most: int = 4) -> str:
    """``a, b, c, ..., z (26 in all)``: the first and the last of a long list."""
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[: most - 1]) + f", ..., {names[-1]} ({len(names)} in all)"


def _skip_dropped_layers(model: nn.Module, layers: list, name_map: dict[str, str]) -> tuple[list, list[str]]:
    """The Keras layers that have a place in ``model``, and a note on those of modules it was built without."""
    skipped = [layer for layer in layers if layer.name in name_map and _dropped_module(model, name_map[layer.name])]
    if not skipped:
        return layers, []
    modules = _in_network_order(model, {_dropped_module(model, name_map[layer.name]) for layer in skipped})
    name = getattr(model, "model_name", type(model).__name__)
    note = (
        f"ignored {len(skipped)} Keras layers of the file ({_listed([layer.name for layer in skipped])}), "
        f"for {_listed(modules)}: {name} is built without them"
    )
    skipped_names = {layer.name for layer in skipped}  # by name: KerasLayer compares arrays, ambiguously
    return [layer for layer in layers if layer.name not in skipped_names], [note]


def _classifier_keys(model: nn.Module, keys) -> list[str]:
    """The keys under the model's classifier (``ZooModel.head_classifier``: ``fc``, VGG's whole ``classifier`` MLP)."""
    prefix = getattr(model, "head_classifier", None)
    if prefix is None:
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(f"{name}: not a zoo model, so which layers form its classifier is unknown; use reset_head")
    return [k for k in keys if k.startswith(prefix + ".")]


def _keep_fresh_classifier(model: nn.Module, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> list[str]:
    """``backbone_only``: the file's classifier tensors (absent, or not trained) give way to the model's own."""
    if getattr(model, "head_classifier", None) is None and getattr(model, "dropped_modules", ()):
        return []  # a feature extractor: built without the classifier, whose keys are ignored below
    theirs = _classifier_keys(model, state)
    for key in theirs:
        del state[key]
    mine = _classifier_keys(model, own)
    state.update({k: own[k] for k in mine})
    if not mine:
        return [f"the file's classifier ({len(theirs)} tensors) is not used: the model has none"] if theirs else []
    what = f"ignored the file's {len(theirs)} classifier tensors" if theirs else "the file has no classifier"
    prefix = model.head_classifier
    return [f"backbone only: {what}; {prefix} keeps its fresh initialisation ({len(mine)} tensors)"]


def _check_classifier(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse, saying why and what to do, a file without a classifier (Keras' *_notop) and one whose classifier
    is NaN, published for its features alone (torchvision's VGG16 IMAGENET1K_FEATURES)."""
    if getattr(model, "head_classifier", None) is None:
        return
    own = model.state_dict(keep_vars=True)
    mine = _classifier_keys(model, own)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if mine and missing and set(missing) <= set(mine):
        raise WeightsError(
            f"{source}: the file has no classifier ({', '.join(mine[:4])}{' ...' if len(mine) > 4 else ''} missing), "
            "like Keras' *_notop files: load it with backbone_only=True for a fresh classifier, as pretrained= does"
        )
    keys = [k for k in _classifier_keys(model, state) if k in own]  # a headless model ignores the file's classifier
    # One sum per tensor is finite unless a value is NaN or infinite (weights never sum past 3e38); exact check after.
    bad = [k for k in keys if state[k].is_floating_point() and not torch.isfinite(state[k].sum())]
    bad = [k for k in bad if not torch.isfinite(state[k]).all()]
    if bad:
        raise WeightsError(
            f"{source}: the classifier in this file holds NaN or infinite values ({', '.join(bad)}): it was published "
            "for its features only. Load it with backbone_only=True (a fresh classifier), as pretrained= does."
        )


def _is_head(model: nn.Module, key: str, mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """A classifier entry that differs from the file's in the number of classes only."""
    path, _, attr = key.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return False
    return isinstance(module, nn.Linear) and attr in ("weight", "bias") and mine.shape[1:] == theirs.shape[1:]
