"""The one image reader: every image file cnnzoo reads (training folders, ``eval``, ``predict``) comes through here.

An image file is untrusted input, so the reader promises three things, for any bytes at all:

* **It never takes the process down.** libpng, as torchvision's ``decode_png`` / ``decode_image`` drive
  it, aborts the process (SIGSEGV) on a PNG whose image data is shorter than its header promises, and a
  DataLoader worker dying that way names no file. So PNG, WebP, GIF and BMP are decoded by PIL, which
  reports bad data as an exception, with ``ImageFile.LOAD_TRUNCATED_IMAGES`` kept off. JPEGs keep
  torchvision's ``decode_jpeg`` (libjpeg-turbo behind ``setjmp``: bad data is a RuntimeError; 20,000
  mutated JPEGs decoded in a child process without one crash, see ``benchmarks/fuzz_readers.py``),
  because it decodes a 375x500 photo in about 55% of PIL's time; but only after PIL has parsed the
  JPEG's header, and never for the CMYK JPEGs it does not convert. A torchvision without it: PIL.
* **It refuses decompression bombs from the header, before decoding.** ``max_pixels`` has the
  semantics of PIL's ``Image.MAX_IMAGE_PIXELS``: a limit on width x height (default the same
  89,478,485, a 0.25 GiB RGB image), ``None`` for none. A 20000x20000 PNG of 40 kB, which would decode
  to 1.2 GB, is refused by its first 33 bytes. A file far larger than its header's pixels could need
  (8 bytes a pixel plus 16 MiB of metadata) is refused before it is read whole.
* **Truncation is an error, and every message names the file.** PIL fills a PNG whose zlib stream
  ends early with black rows and says nothing; :func:`check_png` reads the chunks (CRC-checked where
  they are critical) and inflates the image data first, so a PNG short of its header's rows is
  reported as truncated. Every failure is an :class:`ImageReadError` (a :class:`DataError`) whose
  message starts with the path: what the file is (a FIFO, a symlink loop, empty, a safetensors file
  named ``.jpg``) or what is wrong in it. Training skips and counts such files unless ``strict``.

The format is told from the bytes, never from the name: a PNG named ``.jpg`` is read as a PNG. Images
come out upright (EXIF orientation applied, by the same tensor flips for every decoder), as uint8
``(C, H, W)`` with 1 (luminance) or 3 (RGB, alpha dropped) channels; 16-bit images are scaled to 8 bits.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from ..options import DEFAULT_MAX_PIXELS  # PIL's own MAX_IMAGE_PIXELS default: 89,478,485
from .base import DataError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageHeader",
    "ImageReadError",
    "check_png",
    "decode_image_bytes",
    "probe_image",
    "read_image",
    "read_image_bytes",
    "sniff_format",
    "upright",
]

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_BYTES_PER_PIXEL_BOUND = 8  # 16-bit RGBA uncompressed: no encoded image of W x H pixels needs more
_METADATA_SLACK = 16 << 20  # EXIF, ICC profiles, text chunks
_ORIENTATION_TAG = 0x0112  # EXIF: 1 is upright; 2-8 ask for a flip and/or a quarter turn
_PIL_SETTINGS = threading.Lock()  # PIL's guards are module globals: changed only under this lock


class ImageReadError(DataError):
    """An image file that cannot be read; ``str()`` is ``"PATH: reason"``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: PIL's format name and mode (``RGB``, ``L``, ``CMYK``), size, EXIF orientation."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int = 1


# --- files -------------------------------------------------------------------------------------------


def read_image(
    path: str | os.PathLike, *, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """The image file at ``path`` as uint8 ``(channels, H, W)``, upright; :class:`ImageReadError` if it cannot be."""
    return decode_image_bytes(read_image_bytes(path, max_pixels), path, channels=channels, max_pixels=max_pixels)


def read_image_bytes(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes of an image file, after checking that it is a regular file and not empty.

    Opened without blocking, so a FIFO is refused instead of waiting forever for a writer. A file
    over 16 MiB has its header checked against ``max_pixels`` before it is read whole, and is refused
    if it is larger than any image of its header's size could be.
    """
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ImageReadError(path, "an empty file (0 bytes), not an image")
        if size > _METADATA_SLACK:
            header = probe_image(f, path, max_pixels)
            if size > header.width * header.height * _BYTES_PER_PIXEL_BOUND + _METADATA_SLACK:
                raise ImageReadError(
                    path,
                    f"{size:,} bytes, more than any {header.width}x{header.height} image needs; not a genuine image",
                )
            f.seek(0)
        return f.read()


def _open_regular(path: str | os.PathLike) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        dangling = os.path.islink(path)
        reason = f"a symbolic link to {os.readlink(path)!r}, which does not exist" if dangling else "no such file"
        raise ImageReadError(path, reason) from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as e:
        reason = (
            "a symbolic link that loops (it points, through links, back to itself)"
            if e.errno == errno.ELOOP
            else f"cannot open ({e.strerror})"
        )
        raise ImageReadError(path, reason) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ImageReadError(path, f"{_file_kind(mode)}, not a regular file; give an image file")
    return fd


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "a special file")


# --- the header ----------------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The image format the first bytes announce (a :data:`FORMATS` name), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def probe_image(
    source: bytes | BinaryIO, path: str | os.PathLike = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageHeader:
    """Parse the header of an encoded image (bytes, or a file open for reading) and check it against
    ``max_pixels``; no pixel is decoded (of a file, only the header is read)."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with _open_pil(stream, path) as (fmt, im):
        return _checked_header(im, fmt, path, max_pixels)


@contextmanager
def _open_pil(stream: BinaryIO, path: str | os.PathLike) -> Iterator[tuple[str, Image.Image]]:
    """PIL's lazy image (header parsed, no pixels) and its format.

    PIL's own bomb check is off while it parses (``MAX_IMAGE_PIXELS = None``): the limit is
    ``max_pixels``, checked right after, and PIL's would otherwise refuse, or warn about, sizes the
    caller allowed. PIL's globals are set back afterwards, under a lock, so two threads of this
    reader do not interleave (a header parse takes about 0.1 ms).
    """
    start = stream.tell()
    fmt = sniff_format(stream.read(16))
    stream.seek(start)
    if fmt is None:
        raise ImageReadError(path, _not_an_image(stream.read(16)))
    try:
        with _PIL_SETTINGS:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(stream, formats=[fmt])
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception as e:  # PIL's parsers raise what they meet (SyntaxError, struct.error ...): all mean "damaged"
        raise ImageReadError(path, f"a damaged {fmt} header ({_describe(e)})") from None
    with im:
        yield fmt, im


def _checked_header(im: Image.Image, fmt: str, path: str | os.PathLike, max_pixels: int | None) -> ImageHeader:
    width, height = im.size
    check_pixels(width, height, path, max_pixels, fmt)
    return ImageHeader(fmt, im.mode, width, height, _orientation(im))


def check_pixels(width: int, height: int, path: str | os.PathLike, max_pixels: int | None, fmt: str = "image") -> None:
    """Refuse a header's size: no pixels at all, or more than ``max_pixels`` (None: no limit)."""
    if width < 1 or height < 1:
        raise ImageReadError(path, f"a {fmt} of {width}x{height} pixels: nothing to decode")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            path,
            f"{width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} (a guard against "
            "decompression bombs); if the image is genuine, raise the limit (--max-image-pixels N, max_pixels=N)",
        )


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # damaged EXIF: the pixels may still be fine; show them as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _not_an_image(head: bytes) -> str:
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:
        what = "a safetensors file"
    elif head.startswith(b"\x89HDF\r\n\x1a\n"):
        what = "an HDF5 file (Keras weights?)"
    elif head.startswith(b"PK\x03\x04"):
        what = "a zip archive (PyTorch or Keras weights?)"
    elif head[:1] == b"\x80":
        what = "a Python pickle (PyTorch weights?)"
    elif head.startswith(b"%PDF"):
        what = "a PDF document"
    else:
        what = f"it starts with {head[:8]!r}"
    return f"not an image cnnzoo reads ({what}); expected JPEG, PNG, WebP, GIF or BMP"


def _describe(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):  # its message names only a BytesIO object
        return "PIL cannot parse it"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- decoding ----------------------------------------------------------------------------------------


def decode_image_bytes(
    data: bytes, path: str | os.PathLike = "<bytes>", *, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """An encoded image as uint8 ``(channels, H, W)``, upright; :class:`ImageReadError` (naming ``path``) if not."""
    if channels not in (1, 3):
        raise DataError(f"images decode to 1 (grayscale) or 3 (RGB) channels, not {channels}")
    if not data:
        raise ImageReadError(path, "an empty file (0 bytes), not an image")
    if sniff_format(data[:16]) == "PNG":  # before PIL parses it: the chunk that is wrong is named
        check_png(data, path, max_pixels)
    with _open_pil(io.BytesIO(data), path) as (fmt, im):
        header = _checked_header(im, fmt, path, max_pixels)
        image = None
        if fmt == "JPEG" and header.mode in ("L", "RGB"):  # CMYK: PIL converts it, torchvision does not
            image = _decode_jpeg_torchvision(data, path, channels)
        if image is None:
            image = _decode_pil(im, path, fmt, channels)
    if tuple(image.shape[1:]) != (header.height, header.width):
        raise ImageReadError(
            path,
            f"decoded to {image.shape[2]}x{image.shape[1]} pixels, but its header says {header.width}x{header.height}",
        )
    return upright(image, header.orientation)


def _decode_jpeg_torchvision(data: bytes, path: str | os.PathLike, channels: int) -> torch.Tensor | None:
    """libjpeg-turbo through torchvision (faster than PIL's); None where this torchvision has no JPEG decoder."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except RuntimeError as e:  # torchvision prefixes libjpeg's message with its source location
        reason = str(e).rsplit(", ", 1)[-1].strip() or "RuntimeError"
        raise ImageReadError(path, f"a damaged JPEG ({reason})") from None


def _decode_pil(im: Image.Image, path: str | os.PathLike, fmt: str, channels: int) -> torch.Tensor:
    try:
        with _truncation_is_an_error():
            im.load()
        array = _to_uint8(im, channels)
    except Exception as e:  # PIL reports damaged data as OSError, but its decoders raise other kinds too
        raise ImageReadError(path, f"a damaged {fmt} ({_describe(e)})") from None
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


@contextmanager
def _truncation_is_an_error() -> Iterator[None]:
    """PIL's ``LOAD_TRUNCATED_IMAGES`` off while decoding, should anything in the process have turned it on."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield  # the usual case: nothing to change
        return
    with _PIL_SETTINGS:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _to_uint8(im: Image.Image, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8: luminance or RGB (alpha dropped, as torchvision's decoders drop it)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit gray: PIL's own conversion clips at 255
        gray = (np.asarray(im).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
    want = "L" if channels == 1 else "RGB"
    return np.array(im if im.mode == want else im.convert(want))


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """``image`` (C, H, W) as EXIF ``orientation`` (1-8) asks it to be shown, the flips and quarter turns
    of PIL's ``ImageOps.exif_transpose``: 5-8 swap height and width, then 2-4 and 6-8 flip."""
    if orientation in (5, 6, 7, 8):
        image = image.transpose(-1, -2)
    flips = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}.get(orientation)
    if flips:
        return image.flip(flips)
    return image.contiguous() if orientation == 5 else image


# --- PNG structure -------------------------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)  # x0, y0, dx, dy


def check_png(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Check a PNG's structure the way libpng would, without its way of failing (aborting the process).

    Reads the header chunk (IHDR) and checks its size against ``max_pixels`` first; then walks the
    chunks, checks every chunk's CRC (libpng only warns about a damaged ancillary chunk, but PIL refuses
    it: better to name it), and inflates the image data to check that it holds every row the header
    promises (PIL would fill the missing rows with black and say nothing).
    """
    chunks = _png_chunks(data, path)
    kind, ihdr = next(chunks, (b"", b""))
    if kind != b"IHDR" or len(ihdr) != 13:
        raise ImageReadError(path, "a damaged PNG: it does not start with its IHDR header chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    check_pixels(width, height, path, max_pixels, "PNG")
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise ImageReadError(path, f"a damaged PNG: colour type {colour} with bit depth {depth} does not exist")
    expected = _png_data_size(width, height, depth * _PNG_CHANNELS[colour], interlace == 1)
    got = _inflated_size(b"".join(body for kind, body in chunks if kind == b"IDAT"), expected, path)
    if got < expected:
        raise ImageReadError(
            path,
            f"a truncated PNG: its image data holds {got:,} of the {expected:,} bytes a {width}x{height} image needs",
        )


def _png_chunks(data: bytes, path: str | os.PathLike) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each chunk up to IEND, CRC checked; a missing IEND is tolerated (the data decides)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        name = kind.decode("latin-1")
        if end > len(data):
            raise ImageReadError(path, f"a truncated PNG: its {name!r} chunk runs past the end of the file")
        body = data[pos + 8 : pos + 8 + length]
        if zlib.crc32(kind + body) != int.from_bytes(data[end - 4 : end], "big"):
            raise ImageReadError(path, f"a damaged PNG: its {name!r} chunk fails its CRC check")
        yield kind, body
        if kind == b"IEND":
            return
        pos = end


def _png_data_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of the filtered scanlines (one filter byte per row) a PNG of this size must inflate to."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        cols, rows = math.ceil(max(width - x0, 0) / dx), math.ceil(max(height - y0, 0) / dy)
        if cols and rows:
            total += rows * (1 + math.ceil(cols * bits_per_pixel / 8))
    return total


def _inflated_size(stream: bytes, expected: int, path: str | os.PathLike) -> int:
    """How many bytes the zlib ``stream`` inflates to, counting no further than ``expected`` (bombs stay small)."""
    inflater, got, pending = zlib.decompressobj(), 0, stream
    try:
        while got < expected:
            out = inflater.decompress(pending, min(expected - got, 1 << 20))
            got += len(out)
            pending = inflater.unconsumed_tail
            if not out and not pending:
                break
    except zlib.error as e:
        raise ImageReadError(path, f"a damaged PNG: its image data does not inflate (zlib: {e})") from None
    return got
