"""The one way an artefact reaches the disk: :func:`safe_output` checks the place, :func:`atomic_write` writes.

Every file cnnzoo writes (weights, training state, pointers, plots, exports) goes through
:func:`atomic_write`: the content goes to a temporary file in the target's folder, is flushed and
fsynced, then renamed over the target (a rename within one file system is atomic on POSIX), and the
folder is fsynced so that the rename itself survives a power cut. The file gets the permissions the
umask gives (``0o666 & ~umask``, 0644 under the usual 022), whatever the writer did to the temporary file.

Every output a user names (``--out``, a destination) is first checked by :func:`safe_output`, before any
work is done, so a refused command leaves nothing behind. It refuses:

* a folder where a file is wanted, and a file where a folder is wanted;
* anything that is not a regular file (a character device such as ``/dev/null``, a FIFO, a socket),
  even with ``force``;
* an existing file unless ``force``; with ``force``, a file of another kind still (an ONNX export never
  replaces a safetensors checkpoint or a JPEG): what a file holds is told from its first bytes, by
  :func:`file_kind`;
* a place that cannot be written: under a file (``/etc/passwd/x``), in a folder without write permission
  (``os.access``: root may write anywhere, so for root only a read-only file system is refused), or a
  symbolic link loop.

Symbolic links are followed on purpose: the output is written to the link's target, checked by the rules
above (a link to ``/dev/null`` is refused like ``/dev/null``), and the link stays a link.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from .errors import OutputError

__all__ = ["OUTPUT_KINDS", "atomic_write", "atomic_write_text", "file_kind", "safe_output"]

# What a caller of safe_output may say it writes -> the kind file_kind must find in a file it may replace.
# None: any regular file (the caller cannot say). Text formats (JSON, CSV, SVG, DOT, HTML, Markdown) are one kind.
OUTPUT_KINDS: dict[str, str | None] = {
    "file": None,
    "onnx": "onnx",
    "torchscript": "torchscript",
    "safetensors": "safetensors",
    "png": "png",
    "jpeg": "jpeg",
    "pdf": "pdf",
    **dict.fromkeys(("text", "json", "csv", "svg", "dot", "html", "md", "txt"), "text"),
}

_KIND_WORDS = {
    "empty": "nothing (an empty file)",
    "safetensors": "a safetensors file (weights)",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "pdf": "a PDF document",
    "hdf5": "an HDF5 file (Keras weights)",
    "torchscript": "a TorchScript archive",
    "torch": "a torch.save file (weights or training state)",
    "keras": "a Keras .keras archive",
    "zip": "a zip archive",
    "pickle": "a pickle (weights or training state)",
    "onnx": "an ONNX model",
    "text": "text",
    "data": "binary data of an unknown kind",
}

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"%PDF", "pdf"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"PK\x03\x04", "zip"),
    (b"\x80\x02", "pickle"),
]
# Protobuf field tags that follow ir_version (field 1) at the start of an ONNX ModelProto.
_ONNX_SECOND_FIELDS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


# --- checking an output before any work -----------------------------------------------------------------


def safe_output(path: str | os.PathLike, *, force: bool = False, kind: str = "file") -> Path:
    """Check that ``path`` may receive an output of ``kind``; return the path to write (a link's target).

    ``kind`` is ``"folder"`` (an output folder: it may exist, or will be created) or what the file holds:
    one of :data:`OUTPUT_KINDS` (``"onnx"``, ``"png"``, ``"json"`` ...; ``"file"`` when the caller cannot
    say). Raises :class:`~cnnzoo.errors.OutputError` with the reason and what to do; creates nothing.
    """
    if kind != "folder" and kind not in OUTPUT_KINDS:
        raise ValueError(f"safe_output: kind {kind!r} is not one of folder, {', '.join(OUTPUT_KINDS)}")
    given = Path(path)
    target = _follow_link(given)
    if kind == "folder":
        _check_folder(given, target)
    elif os.path.lexists(target):
        _check_replaceable(given, target, kind, force)
    else:
        _check_creatable(given, target)
    return target


def _follow_link(path: Path) -> Path:
    """The path itself, or for a symbolic link the file it points to (which need not exist yet)."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # a dangling link: its target is created
        return Path(os.path.realpath(path))
    except OSError as e:  # ELOOP
        raise OutputError(
            f"{path}: a symbolic link that cannot be followed ({e.strerror}); remove it or choose another path"
        ) from None


def _check_folder(given: Path, target: Path) -> None:
    if target.is_dir():
        if not os.access(target, os.W_OK | os.X_OK):
            raise OutputError(f"{given}: the folder is not writable (permission denied); choose another place")
        return
    if os.path.lexists(target):
        raise OutputError(f"{given} is {_describe(target)}, not a folder; name a folder (it is created if missing)")
    _check_creatable(given, target)


def _check_replaceable(given: Path, target: Path, kind: str, force: bool) -> None:
    mode = os.stat(target).st_mode
    if stat.S_ISDIR(mode):
        raise OutputError(
            f"{given} is a folder; name a file inside it, e.g. {given / ('out.' + kind if kind != 'file' else 'out')}"
        )
    if not stat.S_ISREG(mode):
        raise OutputError(
            f"{given} is {_special_kind(mode)}, not a regular file: cnnzoo writes regular files only; "
            "choose another path"
        )
    if not force:
        raise OutputError(
            f"{given} already exists ({_describe(target)}); pass --force (force=True) to replace it, "
            "or choose another path"
        )
    found, wanted = file_kind(target), OUTPUT_KINDS[kind]
    if wanted is not None and found not in (wanted, "empty"):
        raise OutputError(
            f"{given} holds {_KIND_WORDS[found]}, not {_KIND_WORDS[wanted]}: cnnzoo never replaces a file of another "
            "kind, even with --force; remove it yourself or choose another path"
        )
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{given}: its folder {target.parent} is not writable (permission denied); choose another place"
        )


def _check_creatable(given: Path, target: Path) -> None:
    """``target`` does not exist: its nearest existing ancestor must be a folder this process may write in."""
    ancestor = Path(os.path.abspath(target)).parent
    while not os.path.exists(ancestor):
        if os.path.lexists(ancestor):  # a dangling link or a loop in the way
            raise OutputError(f"{given} cannot be created: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        what = "a file" if ancestor.is_file() else _describe(ancestor)
        raise OutputError(f"{given} cannot be created: {ancestor} is {what}, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{given} cannot be created: the folder {ancestor} is not writable (permission denied)")


def _special_kind(mode: int) -> str:
    for test, words in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return words
    return "a special file"


def _describe(path: Path) -> str:
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        return "a folder"
    if not stat.S_ISREG(mode):
        return _special_kind(mode)
    return _KIND_WORDS[file_kind(path)]


def file_kind(path: str | os.PathLike) -> str:
    """What a regular file holds, from its first bytes (and a zip's member names): one of ``empty``,
    ``safetensors``, ``png``, ``jpeg``, ``gif``, ``webp``, ``pdf``, ``hdf5``, ``torchscript``, ``torch``,
    ``keras``, ``zip``, ``pickle``, ``onnx``, ``text`` or ``data`` (binary, unknown)."""
    with open(path, "rb") as f:
        head = f.read(8192)
    size = os.path.getsize(path)
    if not head:
        return "empty"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return _zip_kind(path) if kind == "zip" else kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) > 8 and 2 <= int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    if len(head) > 2 and head[0] == 0x08 and 1 <= head[1] < 0x80 and head[2] in _ONNX_SECOND_FIELDS:
        return "onnx"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as e:
            if e.start >= len(head) - 3:  # a character cut by the 8 KB window
                return "text"
    return "data"


def _zip_kind(path: str | os.PathLike) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "data"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras"
    return "zip"


# --- writing ------------------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file to ``path`` atomically; on failure remove the temp file.

    A symbolic link is written through (its target is replaced, the link kept); a folder or a non-regular
    file at ``path`` is refused with :class:`~cnnzoo.errors.OutputError`, never replaced."""
    path = _follow_link(Path(path))
    if os.path.lexists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise OutputError(f"{path} is {_describe(path)}, not a regular file: cnnzoo does not replace it")
    _make_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # After the writer: some (safetensors) replace the file they are given, with 0600.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _check_creatable(path, path)  # names the file in the way
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` durable; a folder that cannot be synced is left as it is."""
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
