"""cnnzoo's own weights file: a safetensors state dict with the model's name and arguments in its metadata.

safetensors holds arrays only, so no code can hide in it. The metadata (JSON strings) carries what
:func:`cnnzoo.load_model` needs to rebuild the model alone (``model_args``: ``name``, ``num_classes``,
``in_chans`` and the family's options), plus whatever the writer adds (training info, where converted
weights came from). A run folder (``cnnzoo.checkpoint``) points at its best and last such file with
``best.json`` / ``last.json``; :func:`resolve_checkpoint` follows those pointers, so everything that
reads weights takes a run folder too.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import WeightsError
from ..fileio import atomic_write
from .state_dict import load_state_dict_checked, unwrap


def save_weights(
    path: str | os.PathLike, model: nn.Module, model_args: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s state dict to a safetensors file, with what :func:`load_model` needs in its metadata.

    ``model_args`` is what ``create_model`` needs: ``{"name": ..., "num_classes": ..., "in_chans": ..., **options}``.
    """
    model = unwrap(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "cnnzoo",
        "model_args": json.dumps(model_args),
        **{k: json.dumps(v) for k, v in (extra or {}).items()},
    }

    def write(tmp: str) -> None:
        # atomic_write gave the temporary file the umask's permissions (0644 under umask 022); safetensors
        # writes a new file of its own in its place, 0600: give it those permissions back.
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, mode)

    atomic_write(path, write)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata stored with a cnnzoo safetensors file; a file of another kind is named as what it is."""
    try:
        with safe_open(str(_regular_file(path)), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError):
        raise not_a_checkpoint(path) from None
    if raw.get("format") != "cnnzoo" or "model_args" not in raw:
        raise WeightsError(
            f"{path}: a safetensors file without cnnzoo metadata; build the model with create_model(name) and load the weights with load_weights(model, path)"
        )
    try:
        meta = {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}
    except ValueError as e:
        raise WeightsError(f"{path}: a damaged cnnzoo checkpoint: its metadata is not JSON ({e})") from None
    args = meta["model_args"]
    if not isinstance(args, dict) or not isinstance(args.get("name"), str):
        raise WeightsError(f"{path}: a damaged cnnzoo checkpoint: its model_args name no model ({str(args)[:80]})")
    return meta


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a safetensors state dict into ``model``, listing every mismatch by name."""
    try:
        state = load_file(str(_regular_file(path)))
    except (SafetensorError, OSError):
        raise not_a_checkpoint(path) from None
    load_state_dict_checked(unwrap(model), state, source=f"checkpoint {path}")
    return model


# --- files of the wrong kind ---------------------------------------------------------------------

_CONVERT_FIRST = (
    "eval, predict and visualize read cnnzoo checkpoints, which carry the model's name and classes. Convert it "
    "first: cnnzoo convert {path} OUT.safetensors --model MODEL (cnnzoo.weights.detect_format(path) names its format)"
)
_ADVICE = {
    "weights": _CONVERT_FIRST,
    "torchscript": "It holds code, and cnnzoo runs no code from files. Where you trust it, save its weights: "
    "torch.save(torch.jit.load(path).state_dict(), 'w.pth'), then cnnzoo convert w.pth OUT.safetensors --model MODEL",
    "other": "Give a cnnzoo checkpoint (a .safetensors file written by cnnzoo train or cnnzoo convert) or a run folder",
}


def not_a_checkpoint(path: str | os.PathLike) -> WeightsError:
    """The error for a file that is not a readable cnnzoo checkpoint: what it is, and what to do with it."""
    kind, what = sniff_file(path)
    advice = _ADVICE[kind].format(path=path)
    return WeightsError(f"{path}: {what}, not a cnnzoo checkpoint. {advice}")


def _regular_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a regular file; else a :class:`WeightsError` saying what it is (a FIFO is never opened)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is None or not stat.S_ISREG(mode):
        raise WeightsError(f"{path}: {sniff_file(path)[1]}; give a weights file")
    return Path(path)


def sniff_file(path: str | os.PathLike) -> tuple[str, str]:
    """(kind, description) of a file, told from what it is and its first bytes, for messages about a file of the
    wrong kind. ``kind``: ``weights`` (a format cnnzoo converts), ``torchscript``, or ``other``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "other", f"a symbolic link to {os.readlink(path)!r}, which does not exist"
        return "other", "no such file"
    except OSError as e:
        return "other", "a symbolic link that loops" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        kinds = {stat.S_ISDIR: "a folder without best.json or last.json (not a cnnzoo run folder)",
                 stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
                 stat.S_ISSOCK: "a socket"}  # fmt: skip
        return "other", next((text for test, text in kinds.items() if test(st.st_mode)), "not a regular file")
    if st.st_size == 0:
        return "other", "an empty file (0 bytes)"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return "other", f"unreadable ({e.strerror})"
    return _sniff_head(Path(path), head, st.st_size)


def _sniff_head(path: Path, head: bytes, size: int) -> tuple[str, str]:
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "weights", "a Keras HDF5 file (.h5 / .weights.h5)"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if len(head) >= 9 and head[8:9] == b"{":
        claimed = int.from_bytes(head[:8], "little")
        if claimed > size - 8:
            return "other", f"a truncated safetensors file (its header claims {claimed:,} bytes, {size - 8:,} follow)"
        return "other", "a damaged safetensors file"
    if head[:1] == b"\x80":
        return "weights", "a Python pickle (torch.save of PyTorch before 1.6, or another object)"
    images = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"BM": "a BMP image"}
    for magic, what in images.items():
        if head.startswith(magic):
            return "other", what
    if path.suffix.lower() == ".onnx":
        return "other", "an ONNX model (an export: cnnzoo predict runs it with onnxruntime)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "other", f"a text file (it starts {text[:32]!r})"
    return "other", f"an unrecognised file (it starts with {head[:8]!r})"


def _sniff_zip(path: Path) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        return "other", f"a damaged zip archive ({e})"
    if any("/code/" in n for n in names):
        return "torchscript", "a TorchScript archive (torch.jit.save)"
    if any(n.endswith("data.pkl") for n in names):
        return "weights", "a PyTorch file (torch.save: a state dict or a training checkpoint)"
    if "model.weights.h5" in names:
        return "weights", "a Keras 3 archive (.keras)"
    return "other", "a zip archive, neither PyTorch's nor Keras'"


def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """A weights file from a run folder (its ``best`` or ``last`` checkpoint) or a file path."""
    path = Path(path)
    if path.is_dir():
        pointer = path / f"{which}.json"
        if not pointer.exists():
            pointer = path / "last.json"
        if not pointer.exists():
            raise WeightsError(f"{path}: a folder without {which}.json or last.json; is it a cnnzoo run folder?")
        try:
            weights = json.loads(pointer.read_text())["weights"]
        except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: not JSON, or not UTF-8
            what = f"{type(e).__name__}: {e}"
            raise WeightsError(
                f"{pointer}: a damaged run-folder pointer ({what}); it should name the weights file"
            ) from None
        if not isinstance(weights, str):
            raise WeightsError(f"{pointer}: a damaged run-folder pointer: 'weights' is {weights!r}, not a file name")
        return path / weights
    if not path.exists():
        what = sniff_file(path)[1]
        raise WeightsError(f"{path}: {'no such file or run folder' if what == 'no such file' else what}")
    return path
