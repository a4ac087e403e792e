"""Fetching pinned weight files: one verified copy per machine, downloaded at most once.

:func:`fetch_file` turns a URL and the digest it is pinned to into a local file whose bytes match
that digest, or raises. The rules, each for a reason:

- **Pinned, or not at all.** A URL is used only with a SHA-256 (full, or a prefix of 8+ hex digits as
  torchvision writes in its file names) or the MD5 Keras publishes. Only ``http://`` and ``https://``
  are fetched, redirects included; nothing downloaded is ever executed (the loaders read arrays only).
- **Caches.** Files live in ``$CNNZOO_HOME/weights/`` (default ``~/.cache/cnnzoo``). A file already in
  torch's hub cache (``$TORCH_HOME/hub/checkpoints``, as ``torch.hub.get_dir()`` finds it) or in
  Keras' (``$KERAS_HOME/models``, default ``~/.keras``) is used where it lies once its digest checks,
  so nothing is downloaded twice across libraries. A file whose digest does not match is never
  returned: ours is deleted and fetched again, theirs is left alone and skipped.
- **Hashed while it streams.** The body goes to ``<name>.partial`` beside its final name while it is
  hashed: this thread reads and writes each chunk while a worker hashes the one before (socket reads,
  file writes and hashlib all release the GIL), so there is no second pass over the bytes. The file is
  renamed into place only after the digest matches; a mismatch deletes it and says expected vs got.
- **Durable without waiting for the disk.** The rename is atomic (a reader sees no file or the whole
  verified one) and the caller goes on at once; a background thread then fsyncs the file and only
  after that writes its "verified" stamp. So a file that a power cut left short or empty has no stamp
  and is hashed, found wrong and fetched again, and nobody waits for the disk to take 500 MB first.
  The interpreter waits for the thread at exit; :func:`settle` waits for it sooner.
- **Resumable.** A dropped connection keeps ``<name>.partial``; the next attempt (a retry with
  back-off, or the next call) asks for the rest with an HTTP ``Range`` request. A server that answers
  200 instead of 206 sends the whole file again, and the partial file restarts from zero.
- **Once per machine.** Processes asking for the same file (torchrun ranks, parallel jobs) serialise
  on ``fcntl.flock`` of ``<name>.lock``: one downloads, the others wait and then verify the same file.
- **Offline.** ``CNNZOO_OFFLINE=1`` never opens a connection: a cached file is returned, a missing one
  is an error naming the URL and the exact path to put the file at.

This module needs only the standard library and rich (the progress bar), so that fetching works
(and is tested) without importing torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import http.client
import itertools
import json
import logging
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DigestMismatchError, DownloadError, OfflineError, WeightsError
from .fileio import atomic_write_text, fsync_folder

log = logging.getLogger(__name__)

USER_AGENT = "cnnzoo-hub/1"
CHUNK_BYTES = 1 << 20  # large reads keep per-chunk overhead (thread hand-off, progress update) negligible,
# and a chunk still sits in the CPU's cache when the hashing thread reads it (2 and 4 MiB chunks ran at
# times 3-4x slower, measured)
CHUNKS_IN_FLIGHT = 16  # buffers read ahead of the hashing (16 MiB): slack for the scheduler, which on 2
# cores runs the server, the reader and the hasher by turns (4 -> 16 measured 860 -> 960 MB/s)
DEFAULT_TIMEOUT_S = 30.0  # per socket operation, not for the whole file
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0  # doubled after each failed attempt
ALGORITHMS = ("sha256", "md5")
# torch.hub's rule for the hash in a file name (torch.hub.HASH_REGEX): "resnet50-0676ba61.pth" -> 0676ba61.
_TORCH_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,254}")
_OWN_SUFFIXES = (".partial", ".lock")


# DownloadError, DigestMismatchError and OfflineError live in errors.py (the floor every room may import);
# they stay importable from here, where they are raised.


# --------------------------------------------------------------------------------------------------
# Digests and URLs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """What a file is pinned to: a SHA-256 (full or a prefix of 8+ hex digits) or a full MD5."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str, algorithm: str | None = None) -> Digest:
        """Read ``"sha256:<hex>"``, ``"md5:<hex>"``, or bare hex of the given ``algorithm``.

        Bare hex without an algorithm follows Keras' ``file_hash`` rule for full digests (64 digits:
        SHA-256, 32: MD5); a shorter SHA-256 prefix must say ``sha256:`` because 32 digits are ambiguous.
        """
        if not isinstance(text, str):
            raise WeightsError(f"digest {text!r}: expected a string such as 'sha256:0676ba61' or 'md5:<32 hex digits>'")
        given = text.strip().lower()
        named, sep, rest = given.partition(":")
        if sep:
            if named not in ALGORITHMS or (algorithm is not None and named != algorithm):
                raise WeightsError(f"digest {text!r}: expected {algorithm or 'sha256 or md5'}, e.g. 'sha256:<hex>'")
            algorithm, given = named, rest
        elif algorithm is None:
            algorithm = {64: "sha256", 32: "md5"}.get(len(given))
            if algorithm is None:
                raise WeightsError(
                    f"digest {text!r}: a bare digest must be a full SHA-256 (64 hex digits) or MD5 (32); write a "
                    "SHA-256 prefix as 'sha256:<8 or more hex digits>'"
                )
        if algorithm not in ALGORITHMS:
            raise WeightsError(f"digest algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        allowed = "{8,64}" if algorithm == "sha256" else "{32}"
        if not re.fullmatch(f"[0-9a-f]{allowed}", given):
            what = "8 to 64 hex digits (a SHA-256 or a prefix of one)" if algorithm == "sha256" else "32 hex digits"
            raise WeightsError(f"{algorithm} {text!r}: expected {what}")
        return cls(algorithm, given)

    def matches(self, full_hexdigest: str) -> bool:
        return full_hexdigest.startswith(self.hexdigest) and len(full_hexdigest) >= len(self.hexdigest)

    def new_hasher(self) -> Any:
        return new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    def shown(self) -> str:
        """For messages: a prefix is marked as one."""
        full = 64 if self.algorithm == "sha256" else 32
        return f"{self.algorithm} {self.hexdigest}{'...' if len(self.hexdigest) < full else ''}"


def new_hasher(algorithm: str) -> Any:
    if algorithm == "md5":  # an integrity check, not security: allowed on FIPS systems this way
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


def as_digest(digest: Digest | str) -> Digest:
    return digest if isinstance(digest, Digest) else Digest.parse(digest)


def file_name_from_url(url: str) -> str:
    """The cache file name of a URL (its last path segment), after checking the URL is one cnnzoo fetches."""
    check_url(url)
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return check_file_name(name, f"{url}: the file name {name!r} taken from the URL's path")


def is_url(text: object) -> bool:
    """Whether ``text`` is written as a URL (``scheme://...``), not a path; :func:`check_url` says if it is usable."""
    return isinstance(text, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; a one-line :class:`WeightsError` otherwise."""
    if not isinstance(url, str):
        raise WeightsError(f"URL {url!r}: expected a string such as 'https://host/path/file.pth'")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError as e:
        raise WeightsError(f"URL {url!r}: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise WeightsError(f"URL {url!r}: only http:// and https:// URLs are fetched (got {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise WeightsError(f"URL {url!r}: no host name")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise WeightsError(f"URL {url!r}: contains white space or control characters; percent-encode them")
    return url


def check_file_name(name: str, what: str = "file name") -> str:
    """A name safe to create in the cache folder: no path separators, no leading dot, not one of our own."""
    if not _SAFE_FILE_NAME.fullmatch(name or "") or name.endswith(_OWN_SUFFIXES):
        raise WeightsError(
            f"{what} is not usable as a cache file name: use letters, digits and . _ + = - only, not starting with "
            "a dot, not ending in .partial or .lock; give file_name= to choose one"
        )
    return name


def hash_prefix_in_file_name(name: str) -> str | None:
    """The SHA-256 prefix torchvision writes in its file names, as torch.hub reads it; None if under 8 digits."""
    found = _TORCH_HASH_IN_NAME.search(name)
    return found.group(1) if found and len(found.group(1)) >= 8 else None


# --------------------------------------------------------------------------------------------------
# Where files are
# --------------------------------------------------------------------------------------------------


def _xdg_cache() -> str:
    return os.getenv("XDG_CACHE_HOME", "~/.cache")


def cache_root() -> Path:
    """``$CNNZOO_HOME``, else ``$XDG_CACHE_HOME/cnnzoo`` (default ``~/.cache/cnnzoo``)."""
    return Path(os.getenv("CNNZOO_HOME") or os.path.join(_xdg_cache(), "cnnzoo")).expanduser()


def weights_dir() -> Path:
    return cache_root() / "weights"


def torch_hub_checkpoints_dir() -> Path:
    """Where torch.hub keeps downloaded weights: ``torch.hub.get_dir()/checkpoints``.

    torch is not imported for this; if it already is, its ``get_dir()`` is asked (it knows about
    ``torch.hub.set_dir``), otherwise its rule is followed: ``$TORCH_HOME`` (default
    ``$XDG_CACHE_HOME/torch``) ``/hub``.
    """
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir()) / "checkpoints"
    torch_home = os.getenv("TORCH_HOME") or os.path.join(_xdg_cache(), "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def keras_models_dir() -> Path:
    """Where ``keras.utils.get_file(cache_subdir="models")`` keeps files: ``$KERAS_HOME/models``.

    Keras' rule: ``$KERAS_HOME``, else ``~/.keras``, else ``/tmp/.keras`` when home is not writable.
    """
    home = os.getenv("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home).expanduser() / "models"


def cache_path(url: str, file_name: str | None = None) -> Path:
    """Where cnnzoo keeps (or, offline, expects) the file of ``url``."""
    check_url(url)
    return weights_dir() / (check_file_name(file_name) if file_name else file_name_from_url(url))


def is_offline() -> bool:
    return os.getenv("CNNZOO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------
# Verifying files already on disk
# --------------------------------------------------------------------------------------------------

# Full digests of files verified, keyed by what changes when a file does (path, size, inode, mtime,
# ctime): listing the table twice or loading the same weights again does not hash 500 MB again. Kept in
# this process and in ``$CNNZOO_HOME/verified.json``, so that a warm cache is warm for the next process
# too (as pip and huggingface_hub trust their caches); any write to a file, even one that restores its
# mtime, changes its ctime, and a file whose key has changed is hashed again.
_VERIFIED: dict[tuple, str] = {}
STAMPS_FILE = "verified.json"
_STAMPS_KEPT = 256  # entries kept in the file: the newest, enough for every published weight file


def _stat_key(path: Path, algorithm: str) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, algorithm)


def _stamps_path() -> Path:
    return cache_root() / STAMPS_FILE


def _read_stamps() -> dict[str, list]:
    """The digests remembered on disk, as ``{key text: [key..., digest]}``; an unreadable file is none."""
    try:
        stamps = json.loads(_stamps_path().read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _stamp_text(key: tuple) -> str:
    return json.dumps(list(key))


def _persist(key: tuple, full: str) -> None:
    """Add one verified digest to the file (atomically; a failure to write only costs a hash later)."""
    stamps = _read_stamps()
    stamps.pop(_stamp_text(key), None)
    stamps[_stamp_text(key)] = full
    kept = dict(list(stamps.items())[-_STAMPS_KEPT:])
    with contextlib.suppress(OSError, WeightsError):
        atomic_write_text(_stamps_path(), json.dumps(kept, indent=0))


def _remembered(key: tuple) -> str | None:
    if key in _VERIFIED:
        return _VERIFIED[key]
    full = _read_stamps().get(_stamp_text(key))
    if isinstance(full, str) and re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", full):
        _VERIFIED[key] = full
        return full
    return None


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The full hex digest of a file (remembered while the file does not change)."""
    path = Path(path)
    key = _stat_key(path, algorithm)
    if key is not None and (known := _remembered(key)) is not None:
        return known
    hasher = new_hasher(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            hasher.update(block)
    got = hasher.hexdigest()
    _remember(path, algorithm, got)
    return got


def _remember(path: Path, algorithm: str, full: str) -> None:
    """Remember ``full`` for this process, and on disk once the file's bytes are (see :func:`_stamp_when_on_disk`)."""
    key = _stat_key(path, algorithm)
    if key is not None:
        _VERIFIED[key] = full
        if _in_a_cache(Path(key[0])):  # a user's own files are hashed each time, and leave no trace
            _stamp_when_on_disk(key, full)


def _stamp_when_on_disk(key: tuple, full: str) -> None:
    """fsync the file, then persist its stamp: a stamp on disk vouches only for bytes on disk.

    Nothing is stamped when the file has changed or gone meanwhile (the key no longer matches) or cannot
    be synced: a later call hashes it again, which costs time and never loads a wrong file.
    """
    path = Path(key[0])
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        return
    fsync_folder(path.parent)  # the rename that published it
    with _STAMPS_LOCK:  # two threads adding stamps at once would each drop the other's
        if _stat_key(path, key[-1]) == key:
            _persist(key, full)


_STAMPS_LOCK = threading.Lock()
_SETTLING: list[threading.Thread] = []  # background stamps of files downloaded by this process


def settle() -> None:
    """Wait until every file this process downloaded is on disk and stamped (the interpreter does at exit)."""
    while _SETTLING:
        _SETTLING.pop(0).join()


def _in_a_cache(path: Path) -> bool:
    folders = (weights_dir(), torch_hub_checkpoints_dir(), keras_models_dir())
    return any(path.parent == folder.expanduser().resolve() for folder in folders)


def verify_file(path: Path, digest: Digest) -> bool:
    """True when ``path`` is a file whose content has ``digest``."""
    return path.is_file() and digest.matches(file_digest(path, digest.algorithm))


def candidate_paths(url: str, file_name: str | None = None) -> list[Path]:
    """Where a copy may already be: cnnzoo's cache, then torch.hub's and Keras' (same file name)."""
    own = cache_path(url, file_name)
    return [own, torch_hub_checkpoints_dir() / own.name, keras_models_dir() / own.name]


def find_cached(url: str, digest: Digest | str, *, file_name: str | None = None) -> Path | None:
    """The first cached copy whose digest checks, or None. Never touches the network."""
    digest = as_digest(digest)
    for path in candidate_paths(url, file_name):
        if verify_file(path, digest):
            return path
    return None


# --------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------


def download_url(
    url: str,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    file_name: str | None = None,
    progress: bool | None = None,
    **options: Any,
) -> Path:
    """The verified local copy of ``url``, pinned by ``sha256`` (full or 8+ digit prefix) or ``md5``.

    What ``--weights https://...`` calls. A URL without a digest is refused: a file from the network
    is used only when it is the one the user meant. ``options`` go to :func:`fetch_file`.
    """
    check_url(url)
    if (sha256 is None) == (md5 is None):
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        hint = hash_prefix_in_file_name(name)
        also = (
            f" (its file name carries {hint}, torchvision's SHA-256 prefix: sha256='{hint}' if you trust it)"
            if hint
            else ""
        )
        raise WeightsError(
            f"{url}: give exactly one digest to pin it, sha256= (--sha256: 8 or more hex digits of the file's SHA-256) "
            f"or md5=; a URL is downloaded only with a pinned digest{also}"
        )
    digest = Digest.parse(sha256, "sha256") if sha256 is not None else Digest.parse(md5, "md5")
    return fetch_file(url, digest, file_name=file_name, progress=progress, **options)


def fetch_file(
    url: str,
    digest: Digest | str,
    *,
    file_name: str | None = None,
    progress: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF_S,
) -> Path:
    """The verified local file of ``url``: a cached copy, or one downloaded now (see the module docstring).

    ``progress``: a rich progress bar on stderr; None shows it when stderr is a terminal.
    """
    digest = as_digest(digest)
    target = cache_path(url, file_name)
    found = find_cached(url, digest, file_name=file_name)
    if found is not None:
        if found != target:
            log.info("using %s (already in another library's cache, %s verified)", found, digest.shown())
        return found
    if is_offline():
        raise OfflineError(_offline_message(url, digest, target))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_file():  # checked before the transfer, not after 500 MB
        raise DownloadError(
            f"{target} is in the way of the download of {url}: it is not a regular file, and cnnzoo does not "
            "replace it. Move it away, or set CNNZOO_HOME to another folder."
        )
    with _exclusive(target):
        if verify_file(target, digest):  # another process downloaded it while this one waited
            return target
        _discard_if_wrong(target, digest)
        download = _Download(url, digest, target, progress, timeout=timeout, retries=retries, backoff=backoff)
        download.run()
    return target


def _offline_message(url: str, digest: Digest, target: Path) -> str:
    bad = ""
    if target.is_file():
        got = file_digest(target, digest.algorithm)
        bad = f" The file now at {target} has {digest.algorithm} {got}, not the pinned one: replace it."
    return (
        f"CNNZOO_OFFLINE is set and {target.name} is not in the cache. Download {url} elsewhere and put it at "
        f"{target} ({digest.shown()}), or unset CNNZOO_OFFLINE.{bad}"
    )


def _discard_if_wrong(target: Path, digest: Digest) -> None:
    if target.is_file():
        got = file_digest(target, digest.algorithm)
        log.warning(
            "%s has %s %s, expected %s: deleted, downloading it again", target, digest.algorithm, got, digest.shown()
        )
        target.unlink()


@contextlib.contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """Hold ``<name>.lock`` exclusively: one process per machine downloads a given file at a time."""
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a") as lock:  # "a": create if missing, never truncate another holder's file
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process downloading %s", target)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _Transient(Exception):
    """An attempt failed in a way another attempt may fix (the partial file is kept)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; a pinned weights file comes over http(s) only."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise DownloadError(f"{req.full_url}: redirected to {newurl}, which is not http(s); refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)  # proxies from the environment still apply


class _PartialFile:
    """``<name>.partial`` and the running digest of its bytes, kept across attempts of one download."""

    def __init__(self, path: Path, algorithm: str):
        self.path = path
        self.algorithm = algorithm
        self.hasher = new_hasher(algorithm)
        self.size = 0
        if path.is_file():  # a previous call was interrupted: its bytes are hashed once, then resumed
            with open(path, "rb") as f:
                while block := f.read(CHUNK_BYTES):
                    self.hasher.update(block)
                    self.size += len(block)
        self.file = open(path, "ab")  # noqa: SIM115 (open across attempts; closed by close() / delete())

    def hash(self, view: memoryview) -> None:
        self.hasher.update(view)

    def append(self, view: memoryview) -> None:
        self.file.write(view)

    def reserve(self, length: int) -> None:
        """Allocate disk blocks for the ``length`` bytes still to come, the file's size unchanged.

        A disk without room says so before the transfer, not near its end; and ext4 then appends without
        reserving blocks page by page (1 MiB writes measured 0.26 -> 0.19 ms per MB, the largest cost of
        the download after the digest). Where the file system declines, the writes allocate as they go.
        """
        try:
            _allocate_keeping_size(self.file.fileno(), self.size, length)
        except OSError as e:
            free = os.statvfs(self.path.parent)
            raise DownloadError(
                f"could not download to {self.path}: {e.strerror} for the {length / 1e6:.1f} MB still to come "
                f"({free.f_bavail * free.f_frsize / 1e6:.1f} MB free there). Free some space, or set CNNZOO_HOME "
                "to a disk with room."
            ) from None

    def restart(self) -> None:
        self.file.truncate(0)
        self.hasher = new_hasher(self.algorithm)
        self.size = 0

    def close(self) -> None:
        self.file.close()

    def delete(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class _Download:
    """One download of ``url`` into ``target`` (the caller holds the lock): attempts, retries, verification."""

    def __init__(
        self,
        url: str,
        digest: Digest,
        target: Path,
        progress: bool | None,
        *,
        timeout: float,
        retries: int,
        backoff: float,
    ):
        self.url, self.digest, self.target = url, digest, target
        self.partial_path = target.with_name(target.name + ".partial")
        self.timeout, self.retries, self.backoff = timeout, max(0, int(retries)), backoff
        self.bar = _ProgressBar(target.name, progress)

    def run(self) -> None:
        """Download, verify, publish; a resumed partial that fails verification gets one fresh try."""
        with self.bar:
            for fresh in (False, True):
                resumed = self.partial_path.is_file() and self.partial_path.stat().st_size > 0
                sink = _PartialFile(self.partial_path, self.digest.algorithm)
                try:
                    self._transfer(sink)
                    got = sink.hasher.hexdigest()
                    sink.close()
                except BaseException:
                    sink.close()  # kept for the next call to resume
                    raise
                if self.digest.matches(got):
                    self._publish(got)
                    return
                sink.delete()
                if not resumed or fresh:
                    raise DigestMismatchError(
                        f"{self.url}: the downloaded file has {self.digest.algorithm} {got}, expected "
                        f"{self.digest.shown()}; deleted it, nothing was cached at {self.target}. The server's file is "
                        "not the pinned one (changed upstream, corrupt, or rewritten by a proxy)."
                    )
                log.warning("%s: the resumed download does not verify; downloading it again from the start", self.url)

    def _publish(self, full_digest: str) -> None:
        """Rename the verified bytes into place (atomic), then make them durable without waiting."""
        os.replace(self.partial_path, self.target)
        key = _stat_key(self.target, self.digest.algorithm)
        if key is None:  # removed already by someone else: nothing to remember
            return
        _VERIFIED[key] = full_digest
        # Not a daemon: the interpreter waits for it at exit, so a finished process leaves its stamp.
        stamping = threading.Thread(target=_stamp_when_on_disk, args=(key, full_digest), name="cnnzoo-fsync")
        stamping.start()
        _SETTLING[:] = [*(thread for thread in _SETTLING if thread.is_alive()), stamping]

    def _transfer(self, sink: _PartialFile) -> None:
        """Attempts with back-off until the whole body is in ``sink``; a clear error after the last."""
        for attempt in itertools.count():
            try:
                self._attempt(sink)
                return
            except urllib.error.HTTPError as e:
                if not (e.code >= 500 or e.code in (408, 429)) or attempt >= self.retries:
                    raise DownloadError(self._failure(f"HTTP {e.code} {e.reason}", attempt + 1, sink)) from None
                reason = f"HTTP {e.code}"
            except (_Transient, urllib.error.URLError, http.client.HTTPException, OSError) as e:
                if isinstance(e, DownloadError):
                    raise
                if attempt >= self.retries:
                    raise DownloadError(self._failure(_reason(e), attempt + 1, sink)) from None
                reason = _reason(e)
            delay = self.backoff * 2**attempt
            log.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)", self.url, reason, delay, attempt + 2, self.retries + 1
            )
            time.sleep(delay)

    def _failure(self, reason: str, attempts: int, sink: _PartialFile) -> str:
        kept = f" {sink.size} bytes are kept in {sink.path} and the next call resumes from there." if sink.size else ""
        return (
            f"could not download {self.url} to {self.target} ({attempts} attempt{'s' * (attempts > 1)}): "
            f"{reason}.{kept} Behind a proxy set HTTPS_PROXY; without a network, download the file elsewhere and "
            f"put it at {self.target}."
        )

    def _attempt(self, sink: _PartialFile) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if sink.size:
            headers["Range"] = f"bytes={sink.size}-"
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = _OPENER.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and sink.size:  # the partial file is not a prefix of what the server has
                sink.restart()
                raise _Transient("the server refused to resume (HTTP 416); starting again from zero") from None
            raise
        with response:
            if sink.size and not _resumes_at(response, sink.size):
                sink.restart()  # 200 (Range ignored) or a 206 starting elsewhere: the body is the whole file
                if response.status != 200:
                    raise _Transient(
                        f"the server resumed at the wrong offset ({response.headers.get('Content-Range')})"
                    )
            length = _content_length(response)
            if length:
                sink.reserve(length)
            self.bar.start(None if length is None else sink.size + length, sink.size)
            received = _stream(response, length, sink, self.bar)
        if length is not None and received < length:
            raise _Transient(f"the connection closed after {received} of {length} bytes")


_FALLOC_FL_KEEP_SIZE = 1  # <linux/falloc.h>: allocate blocks beyond the end of the file, size unchanged


@functools.cache
def _libc_fallocate() -> Any:
    """Linux' fallocate(2) from the C library (the standard library has only posix_fallocate, which grows
    the file and so would hide how much of it has arrived); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


def _allocate_keeping_size(fd: int, offset: int, length: int) -> None:
    """Reserve ``length`` bytes of disk from ``offset``; raises OSError only when the disk has no room
    (a file system without fallocate, or one that refuses it, costs nothing but the speed-up)."""
    fallocate = _libc_fallocate()
    if fallocate is None or length <= 0 or fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    if (code := ctypes.get_errno()) in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(code, os.strerror(code))


def _resumes_at(response: Any, offset: int) -> bool:
    """True when the response is a 206 whose Content-Range starts at ``offset``."""
    if response.status != 206:
        return False
    found = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", response.headers.get("Content-Range", ""))
    return found is not None and int(found.group(1)) == offset


def _content_length(response: Any) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return (
            f"{type(error.reason).__name__ if isinstance(error.reason, BaseException) else 'URL error'}: {error.reason}"
        )
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _stream(response: Any, length: int | None, sink: _PartialFile, bar: _ProgressBar) -> int:
    """Copy the body (``length`` bytes when the server said) into ``sink``; returns the bytes received.

    This thread reads a chunk from the socket and appends it to the file while a worker hashes the
    chunks before it: socket reads, file writes and hashlib release the GIL, so the digest costs next
    to no wall time where a second core is free. A chunk counts (``sink.size``) once it is written; by
    the time this returns or raises, every written chunk is hashed too, so size, digest and file agree
    for a resumed attempt.
    """
    received = 0
    with _HashingThread(sink) as hashing:
        while length is None or received < length:  # no read (and no buffer) spent to meet the end
            buffer = hashing.free_buffer()
            n = response.readinto(buffer)
            if not n:
                break
            chunk = buffer[:n]
            hashing.submit(chunk, buffer)  # hashed while this thread writes it and reads the next
            try:
                sink.append(chunk)
            except OSError as e:  # a full or failing disk is final: another attempt would fail the same way
                raise DownloadError(f"could not write {sink.path}: {e}") from e
            sink.size += n
            received += n
            bar.advance(n)
    return received


class _HashingThread:
    """A worker that feeds chunks to ``sink.hasher`` in the order they were read, and owns their buffers.

    A buffer goes back to the reader only once its chunk is hashed, so at most
    :data:`CHUNKS_IN_FLIGHT` chunks (16 MiB) wait. ``queue.SimpleQueue`` hands them over: one lock each
    way per chunk, far less than a future's. Buffers are made as the reader first needs them and kept
    for this process's next download (:data:`_SPARE_BUFFERS`).
    """

    def __init__(self, sink: _PartialFile):
        self.hasher = sink.hasher
        self.free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self.owned: list[memoryview] = []
        self.chunks: queue.SimpleQueue[tuple[memoryview, memoryview] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._hash_in_order, name="cnnzoo-hash", daemon=True)

    def __enter__(self) -> _HashingThread:
        self.thread.start()
        return self

    def free_buffer(self) -> memoryview:
        """A hashed buffer, or a new one while fewer than :data:`CHUNKS_IN_FLIGHT` exist."""
        if len(self.owned) == CHUNKS_IN_FLIGHT:
            return self.free.get()
        try:
            return self.free.get_nowait()
        except queue.Empty:
            self.owned.append(_spare_buffer())
            return self.owned[-1]

    def submit(self, chunk: memoryview, buffer: memoryview) -> None:
        self.chunks.put((chunk, buffer))

    def _hash_in_order(self) -> None:
        while (job := self.chunks.get()) is not None:
            chunk, buffer = job
            if self.error is None:
                try:
                    self.hasher.update(chunk)
                except BaseException as e:  # kept for the reader; buffers still come back, so it never hangs
                    self.error = e
            self.free.put(buffer)

    def __exit__(self, *exc: object) -> None:
        """Every chunk submitted is hashed before this returns, also after a failed read."""
        self.chunks.put(None)
        self.thread.join()
        for buffer in self.owned:
            if _SPARE_BUFFERS.qsize() < CHUNKS_IN_FLIGHT:
                _SPARE_BUFFERS.put(buffer)
        if self.error is not None and exc[0] is None:
            raise self.error


# Chunk buffers between downloads: fresh memory costs a page fault per 4 KiB when first touched (3 ms
# per 4 MiB here, measured), and a small file uses only the buffers it needs.
_SPARE_BUFFERS: queue.SimpleQueue[memoryview] = queue.SimpleQueue()


def _spare_buffer() -> memoryview:
    while True:
        try:
            buffer = _SPARE_BUFFERS.get_nowait()
        except queue.Empty:
            return memoryview(bytearray(CHUNK_BYTES))
        if len(buffer) == CHUNK_BYTES:  # else CHUNK_BYTES changed (a test): dropped
            return buffer


class _ProgressBar:
    """A rich download bar (size, rate, ETA) on stderr; silent when stderr is not a terminal unless asked."""

    def __init__(self, label: str, enabled: bool | None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.progress.start()
        return self

    def start(self, total: int | None, completed: int) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=total, completed=completed)
        else:
            self.progress.reset(self.task, total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
