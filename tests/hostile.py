"""Hostile files for the readers: small valid seeds of every format cnnzoo reads, byte mutations of them,
and the readers to feed them to, with one verdict for what a reader did.

Shared by tests/test_hostile_files.py, tests/test_fuzz_readers.py and benchmarks/fuzz_readers.py. Every
file is generated here, from fixed seeds: nothing is downloaded.

A reader's verdict on a file (:func:`run_reader`) is ``ok`` (it read it), ``refused`` (a
:class:`cnnzoo.errors.CnnzooError` whose message names the file) or ``bad`` (anything else: another
exception, or a message that does not name the file). A crash (a signal) or a hang cannot be judged
in the process that suffers it: benchmarks/fuzz_readers.py runs cases in child processes for that.
"""

from __future__ import annotations

import functools
import io
import json
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# --- seeds: small valid files ------------------------------------------------------------------------


def _pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth (photo-like) RGB image: it compresses as photographs do, unlike noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, 3, 3), dtype=np.float32) * 255)
    image = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0]
    return image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def exif_orientation_jpeg(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 Exif segment holding one tag, Orientation (0x0112), right after the SOI marker."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, type SHORT, count 1, value
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry
    payload = b"Exif\x00\x00" + tiff + struct.pack(">I", 0)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + jpeg[2:]


@functools.cache
def image_seeds() -> dict[str, bytes]:
    """One small valid file of each kind of image the reader takes, named ``kind.ext``."""
    rgb = Image.fromarray(_photo(12, 17, 0))
    gray = rgb.convert("L")
    seeds = {
        "rgb.png": _pil_bytes(rgb, "PNG"),
        "gray.png": _pil_bytes(gray, "PNG"),
        "palette.png": _pil_bytes(rgb.quantize(16), "PNG"),
        "rgba.png": _pil_bytes(rgb.convert("RGBA"), "PNG"),
        "gray16.png": _pil_bytes(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "PNG"),
        "baseline.jpg": _pil_bytes(rgb, "JPEG", quality=90),
        "progressive.jpg": _pil_bytes(rgb, "JPEG", quality=80, progressive=True),
        "gray.jpg": _pil_bytes(gray, "JPEG"),
        "cmyk.jpg": _pil_bytes(rgb.convert("CMYK"), "JPEG"),
        "lossy.webp": _pil_bytes(rgb, "WEBP", quality=80),
        "lossless.webp": _pil_bytes(rgb, "WEBP", lossless=True),
        "palette.gif": _pil_bytes(rgb.quantize(16), "GIF"),
        "rgb.bmp": _pil_bytes(rgb, "BMP"),
    }
    seeds["turned.jpg"] = exif_orientation_jpeg(seeds["baseline.jpg"], 6)
    return seeds


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    """lenet5's state dict with deterministic values: small (61,706 parameters), a real zoo model's keys."""
    from cnnzoo import create_model

    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in create_model("lenet5").state_dict().items()}


def _h5_bytes(write: Callable) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write(f)
    return buffer.getvalue()


def _legacy_h5(f) -> None:
    """Keras' legacy layout: ``layer_names`` and each layer's ``weight_names`` as attributes."""
    f.attrs["layer_names"] = [b"dense"]
    group = f.create_group("dense")
    group.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
    group.create_dataset("dense/kernel:0", data=np.arange(12, dtype=np.float32).reshape(4, 3))
    group.create_dataset("dense/bias:0", data=np.zeros(3, dtype=np.float32))


def _keras3_h5(f) -> None:
    """Keras 3's ``save_weights`` layout: ``layers/<layer>/vars/0..n``."""
    variables = f.create_group("layers/dense/vars")
    variables.attrs["name"] = "dense"
    variables.create_dataset("0", data=np.arange(12, dtype=np.float32).reshape(4, 3))
    variables.create_dataset("1", data=np.zeros(3, dtype=np.float32))


@functools.cache
def weight_seeds() -> dict[str, bytes]:
    """One small valid file of each weights format cnnzoo reads, named ``kind.ext``."""
    from safetensors.torch import save as safetensors_bytes

    state = _tiny_state_dict()
    args = json.dumps({"name": "lenet5", "num_classes": 10, "in_chans": 1})
    info = json.dumps({"classes": [str(i) for i in range(10)], "image_size": 28, "mean": [0.5], "std": [0.5]})
    seeds = {
        "cnnzoo.safetensors": safetensors_bytes(state, metadata={"format": "cnnzoo", "model_args": args, "info": info}),
        "plain.safetensors": safetensors_bytes({k: state[k] for k in list(state)[:2]}),
        "legacy.h5": _h5_bytes(_legacy_h5),
        "keras3.weights.h5": _h5_bytes(_keras3_h5),
    }
    for name, zipped in (("zip.pth", True), ("legacy.pth", False)):
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=zipped)
        seeds[name] = buffer.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        z.writestr("model.weights.h5", seeds["keras3.weights.h5"])
    seeds["archive.keras"] = archive.getvalue()
    return seeds


# --- mutations -----------------------------------------------------------------------------------------

MUTATIONS = ("flip", "set", "truncate", "delete", "insert", "duplicate", "header")


def mutate(data: bytes, rng: random.Random, steps: int | None = None) -> bytes:
    """``data`` with 1 to 8 random byte-level changes: bit flips, bytes set to edge values, truncation,
    deletions, insertions, a copied run, or a change within the first 64 bytes (where headers are).

    A third of the changes land in the first 2 KiB and a third in the last 2 KiB, where formats keep
    their structure (headers; a zip's central directory is at its end), not in the bulk of the pixels
    or tensors, where a change is only a different value."""
    out = bytearray(data)
    for _ in range(steps if steps is not None else rng.randint(1, 8)):
        out = apply_mutation(out, rng.choice(MUTATIONS), _position(rng, len(out)), rng.random(), rng.randrange(256))
    return bytes(out)


def _position(rng: random.Random, n: int) -> float:
    """A relative position in a file of ``n`` bytes: anywhere, in its first 2 KiB, or in its last 2 KiB."""
    edge = min(1.0, 2048 / n) if n else 1.0
    return rng.choice((rng.random(), rng.random() * edge, 1 - rng.random() * edge))


def apply_mutation(out: bytearray, op: str, where: float, extent: float, value: int) -> bytearray:
    """One mutation at the relative position ``where`` (0..1), of relative size ``extent``, with byte ``value``."""
    n = len(out)
    i = min(int(where * n), n - 1) if n else 0
    if op == "flip" and n:
        out[i] ^= 1 << (value % 8)
    elif op == "set" and n:
        out[i] = (0x00, 0xFF, 0x7F, 0x80, value)[value % 5]
    elif op == "truncate":
        del out[int(where * n) :]
    elif op == "delete" and n:
        del out[i : i + 1 + int(extent * 64)]
    elif op == "insert":
        out[i:i] = bytes((value + k * 37) % 256 for k in range(1 + int(extent * 32)))
    elif op == "duplicate" and n:
        j = min(int(extent * n), n - 1)
        out[i:i] = out[j : j + 1 + int(extent * 256)]
    elif op == "header" and n:
        k = min(int(where * 64), n - 1)
        out[k] = value
    return out


# --- readers -------------------------------------------------------------------------------------------


def read_as_image(path: Path) -> object:
    """What ``predict`` and folder training do with an image file: the one image reader, both channel counts."""
    from cnnzoo.data.images import read_image

    return read_image(path, channels=3), read_image(path, channels=1)


def read_as_weights(path: Path) -> object:
    """What ``--weights``, ``convert`` and ``cnnzoo.load_pretrained`` do: tell the format, read, load into lenet5."""
    from cnnzoo import create_model
    from cnnzoo.weights import load_pretrained

    return load_pretrained(create_model("lenet5"), path)


def read_as_checkpoint(path: Path) -> object:
    """What ``eval``, ``predict`` and ``visualize`` do with a checkpoint: its metadata, then the model it rebuilds."""
    from cnnzoo.factory import load_model
    from cnnzoo.weights import read_metadata

    read_metadata(path)
    return load_model(path)


READERS: dict[str, Callable[[Path], object]] = {
    "image": read_as_image,
    "weights": read_as_weights,
    "checkpoint": read_as_checkpoint,
}


def seeds_for(reader: str) -> dict[str, bytes]:
    """The seed files a reader is fuzzed with: images for the image reader, every weights format for the others."""
    return image_seeds() if reader == "image" else weight_seeds()


def run_reader(reader: str, path: Path) -> tuple[str, str]:
    """(verdict, detail): ``ok``, ``refused`` (a CnnzooError naming the file) or ``bad`` (anything else)."""
    from cnnzoo.errors import CnnzooError

    try:
        READERS[reader](path)
    except CnnzooError as e:
        message = str(e)
        if str(path) not in message and path.name not in message:
            return "bad", f"{type(e).__name__} without the file's name: {message[:300]}"
        if "\n" in message.strip():
            return "bad", f"{type(e).__name__} of several lines: {message[:300]}"
        return "refused", message[:300]
    except Exception as e:  # the verdict: anything but a CnnzooError is a reader's bug
        return "bad", f"{type(e).__name__}: {str(e)[:300]}"
    return "ok", ""


# --- the corpus: one file of each hostile kind ----------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def short_png(width: int = 100, height: int = 100, rows: int = 10) -> bytes:
    """A PNG whose header promises ``width`` x ``height`` RGB pixels and whose (valid, CRC-checked) image data
    holds only ``rows`` rows: libpng says "Not enough image data", and torchvision's decode_png then segfaults."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"".join(b"\x00" + bytes(k % 256 for k in range(3 * width)) for _ in range(rows)))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def bomb_png(side: int = 20000) -> bytes:
    """A valid black ``side`` x ``side`` RGB PNG of about 1 MB that decodes to 3 * side**2 bytes (1.2 GB for 20000).

    Built without deflating the gigabyte: after a full flush, deflate encodes each further run of 50 zero
    rows to the same bytes, so the stream is one such block repeated; its Adler-32 is that of zeros:
    a = 1, b = length mod 65521."""
    row = 1 + 3 * side
    rows_per_block = 50
    assert side % rows_per_block == 0
    chunk = bytes(row * rows_per_block)
    deflate = zlib.compressobj(9)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    total = row * side
    stream = first + again * (side // rows_per_block - 1) + b"\x03\x00" + struct.pack(">I", ((total % 65521) << 16) | 1)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")


def huge_jpeg(width: int = 60000, height: int = 60000) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height`` pixels."""
    data = bytearray(image_seeds()["baseline.jpg"])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bitflip(data: bytes, at: float, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[int(at * (len(out) - 1))] ^= 1 << bit
    return bytes(out)


def image_corpus(folder: Path) -> dict[str, Path]:
    """Hostile image files (and things named like images) in ``folder``, by name. Every one must be refused."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    seeds, weights = image_seeds(), weight_seeds()
    png, jpg = seeds["rgb.png"], seeds["baseline.jpg"]
    scan = jpg.index(b"\xff\xda")
    files = {
        "short_rows.png": short_png(),
        "cut.png": png[: len(png) // 2],
        "bad_crc.png": bitflip(png, 20 / len(png)),  # inside IHDR
        "bad_data.png": bitflip(png, (len(png) - 30) / len(png), 3),  # inside IDAT
        "cut.jpg": jpg[: (scan + len(jpg)) // 2],
        "bad_header.jpg": jpg[:2] + b"\xff\xc0\x00\x02" + jpg[2:],  # a frame header of length 2
        "bomb.png": bomb_png(),
        "huge.jpg": huge_jpeg(),
        "empty.jpg": b"",
        "weights.jpg": weights["plain.safetensors"],  # a safetensors file named like an image
        "notes.png": b"these are my notes, not a picture\n",
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    os.mkfifo(folder / "fifo.jpg")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("missing.png", folder / "dangling.png")
    os.symlink("/dev/zero", folder / "zero.png")
    (folder / "folder.png").mkdir()
    for name in ("fifo.jpg", "loop_a.jpg", "dangling.png", "zero.png", "folder.png"):
        paths[name] = folder / name
    return paths


def weights_corpus(folder: Path) -> dict[str, Path]:
    """Hostile weights files (and things named like them) in ``folder``, by name. None is a cnnzoo checkpoint."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    w = weight_seeds()
    ckpt, h5, zipped, pickled = w["cnnzoo.safetensors"], w["legacy.h5"], w["zip.pth"], w["legacy.pth"]
    files = {
        "cut.safetensors": ckpt[:4096],
        "bad_header.safetensors": ckpt[:8] + b"[" + ckpt[9:],  # a header that is not a JSON object
        "huge_header.safetensors": (1 << 62).to_bytes(8, "little") + ckpt[8:],
        "cut.h5": h5[: len(h5) // 2],
        "bad.h5": bitflip(h5, 0.05, 2),
        "cut.pth": zipped[: len(zipped) // 2],
        "bad_zip.pth": _damaged_central_directory(zipped),
        "cut_pickle.pth": pickled[:1000],
        "empty.safetensors": b"",
        "image.safetensors": image_seeds()["rgb.png"],  # a PNG named like weights
        "notes.pth": b"these are notes, not weights\n",
        "torchscript.pt": _torchscript_bytes(),
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    os.mkfifo(folder / "fifo.safetensors")
    os.symlink("loop_b.pth", folder / "loop_a.pth")
    os.symlink("loop_a.pth", folder / "loop_b.pth")
    for name in ("fifo.safetensors", "loop_a.pth"):
        paths[name] = folder / name
    return paths


def _damaged_central_directory(zipped: bytes) -> bytes:
    """A zip whose last central-directory entry has lost its signature: no reader can list the archive."""
    at = zipped.rindex(b"PK\x01\x02")
    return zipped[:at] + b"PK\x01\x03" + zipped[at + 4 :]


@functools.cache
def _torchscript_bytes() -> bytes:
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; the archive format is what users still hold
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return buffer.getvalue()
