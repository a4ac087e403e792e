"""The one image reader (cnnzoo.data.images): pixels as PIL decodes them, EXIF turns, 16-bit scaling,
truncation as an error, the pixel limit from the header, files that are not images, and the reader
inside DataLoader workers and the device path.

References are independent of the reader: PIL's own decoding and ``ImageOps.exif_transpose``, the
arrays the files were written from, and PNGs assembled here byte by byte.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import DataLoader

from cnnzoo.data import CorruptImageWarning, DataError, EncodedImages, ImageFolderData, collate_skip_none
from cnnzoo.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    check_png,
    decode_image_bytes,
    probe_image,
    read_image,
    upright,
)

from . import hostile as H

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning"),
]


def pil_pixels(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert(mode))


def as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()


# --- pixels ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in H.image_seeds() if not n.endswith(".jpg")))
def test_lossless_formats_decode_to_pils_pixels(name, tmp_path):
    data = H.image_seeds()[name]
    (tmp_path / name).write_bytes(data)
    rgb, gray = read_image(tmp_path / name, channels=3), read_image(tmp_path / name, channels=1)
    assert rgb.dtype == gray.dtype == torch.uint8 and rgb.shape[0] == 3 and gray.shape[0] == 1
    if (
        name == "gray16.png"
    ):  # written as gray * 257: the high byte is the 8-bit gray value (PIL's convert clips instead)
        want = np.asarray(Image.open(io.BytesIO(H.image_seeds()["gray.png"])))
        assert np.array_equal(as_hwc(gray), want) and np.array_equal(as_hwc(rgb), np.repeat(want[..., None], 3, axis=2))
        return
    assert np.array_equal(as_hwc(rgb), pil_pixels(data, "RGB"))
    assert np.array_equal(as_hwc(gray), pil_pixels(data, "L"))


@pytest.mark.parametrize("name", ["baseline.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg"])
def test_jpegs_decode_as_pil_decodes_them(name):
    """torchvision's libjpeg-turbo for gray and colour JPEGs, PIL for CMYK: the same pixels as PIL's to rounding."""
    data = H.image_seeds()[name]
    for channels, mode in ((3, "RGB"), (1, "L")):
        ours = as_hwc(decode_image_bytes(data, name, channels=channels)).astype(int)
        assert ours.shape == pil_pixels(data, mode).shape
        assert np.abs(ours - pil_pixels(data, mode).astype(int)).max() <= 2


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_as_pil_does(orientation):
    wide = np.zeros((16, 40, 3), dtype=np.uint8)
    wide[:8, :10] = (250, 20, 20)  # one corner marked: every flip and turn moves it somewhere else
    jpeg = H.exif_orientation_jpeg(H._pil_bytes(Image.fromarray(wide), "JPEG", quality=95), orientation)
    assert probe_image(jpeg).orientation == orientation
    ours = as_hwc(decode_image_bytes(jpeg)).astype(int)
    want = pil_pixels(jpeg, "RGB").astype(int)
    assert ours.shape == want.shape == ((40, 16, 3) if orientation >= 5 else (16, 40, 3))
    assert np.abs(ours - want).max() <= 2
    # the same turns on a tensor, against PIL's transposes of a non-JPEG image
    pil = Image.fromarray(wide)
    turned = np.asarray(ImageOps.exif_transpose(_with_orientation(pil, orientation)))
    assert np.array_equal(as_hwc(upright(torch.from_numpy(wide).permute(2, 0, 1), orientation)), turned)


def _with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buffer.getvalue()))


def adam7_png(image: np.ndarray) -> bytes:
    """An interlaced (Adam7) RGB PNG assembled here: each pass's sub-image, rows behind filter byte 0."""
    h, w, _ = image.shape
    rows = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        sub = image[y0::dy, x0::dx]
        if sub.size:
            rows += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + H.png_chunk(b"IHDR", header)
        + H.png_chunk(b"IDAT", zlib.compress(rows))
        + H.png_chunk(b"IEND", b"")
    )


def test_interlaced_png_whole_and_short():
    image = np.random.default_rng(3).integers(0, 256, (13, 11, 3), dtype=np.uint8)
    png = adam7_png(image)
    assert np.array_equal(as_hwc(decode_image_bytes(png)), image)  # every pass's size counted right
    idat = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[idat : idat + 4])[0]
    rows = zlib.decompress(png[idat + 8 : idat + 8 + length])
    short = png[:idat] + H.png_chunk(b"IDAT", zlib.compress(rows[:-12])) + H.png_chunk(b"IEND", b"")
    with pytest.raises(
        ImageReadError, match=rf"a truncated PNG: its image data holds {len(rows) - 12:,} of the {len(rows):,} bytes"
    ):
        decode_image_bytes(short, "short.png")


# --- truncation and damage -----------------------------------------------------------------------------


def test_short_png_is_an_error_not_a_crash(tmp_path):
    """The file of the issue: a 100x100 header, 10 rows of data. torchvision's decode_png takes the process down
    (shown in a child process); the reader says what is wrong, naming the file."""
    path = tmp_path / "short.png"
    path.write_bytes(H.short_png())
    with pytest.raises(
        ImageReadError, match=r"short\.png: a truncated PNG: its image data holds 3,010 of the 30,100 bytes a 100x100"
    ):
        read_image(path)
    code = f"import torch, torchvision.io as io; io.decode_png(io.read_file({str(path)!r}))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode < 0, "torchvision's decode_png no longer aborts on this file: the reader could use it again"
    # PIL alone fills the missing rows with black and reports nothing: why the reader checks the data first
    with Image.open(path) as im:
        assert np.asarray(im.convert("RGB"))[10:].max() == 0


def test_png_chunks_are_checked_as_libpng_checks_them():
    png = H.image_seeds()["rgb.png"]
    with pytest.raises(ImageReadError, match=r"x\.png: a damaged PNG: its 'IHDR' chunk fails its CRC check"):
        decode_image_bytes(H.bitflip(png, 20 / len(png)), "x.png")
    idat = png.index(b"IDAT")
    bad_data = (
        png[: idat + 4] + bytes([png[idat + 4] ^ 0xFF]) + png[idat + 5 :]
    )  # the zlib header, CRC patched to match
    length = struct.unpack(">I", png[idat - 4 : idat])[0]
    bad_data = (
        bad_data[: idat - 4]
        + H.png_chunk(b"IDAT", bad_data[idat + 4 : idat + 4 + length])
        + bad_data[idat + 8 + length :]
    )
    with pytest.raises(ImageReadError, match=r"a damaged PNG: its image data does not inflate \(zlib"):
        check_png(bad_data, "x.png")
    # A damaged ancillary chunk: PIL refuses it (libpng would only warn), so the reader names it.
    text = struct.pack(">I", 5) + b"tEXta=bcd" + b"\x00\x00\x00\x00"
    with pytest.raises(ImageReadError, match=r"x\.png: a damaged PNG: its 'tEXt' chunk fails its CRC check"):
        decode_image_bytes(png[:33] + text + png[33:], "x.png")
    good_text = H.png_chunk(b"tEXt", b"a=bcd")
    assert torch.equal(decode_image_bytes(png[:33] + good_text + png[33:]), decode_image_bytes(png))


def test_truncated_files_of_every_format_are_refused():
    for name, data in H.image_seeds().items():
        for cut in (len(data) // 3, len(data) * 2 // 3):
            try:
                decode_image_bytes(data[:cut], name)
            except ImageReadError as e:
                assert str(e).startswith(f"{name}: ")
            else:
                pytest.fail(f"{name} cut to {cut} of {len(data)} bytes decoded without an error")


def test_reader_ignores_pils_truncation_switch(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone's code in the same process turned it on
    gif = H.image_seeds()["palette.gif"]
    with pytest.raises(ImageReadError, match="a damaged GIF"):
        decode_image_bytes(gif[: len(gif) * 2 // 3], "cut.gif")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and it is left as it was


# --- the pixel limit -------------------------------------------------------------------------------------


def test_pixel_limit_has_pils_default_and_comes_from_the_header(tmp_path):
    from cnnzoo.train import TrainConfig

    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's own default
    assert TrainConfig(model="lenet5").max_image_pixels == DEFAULT_MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(H.bomb_png())  # 1.2 MB on disk, 1.2 GB of pixels
    start = time.perf_counter()
    with pytest.raises(
        ImageReadError, match=r"bomb\.png: 20000x20000 = 400,000,000 pixels, over the limit of 89,478,485"
    ):
        read_image(path)
    assert time.perf_counter() - start < 2  # refused by its header: nothing inflated
    image = Image.fromarray(np.full((300, 300, 3), 7, dtype=np.uint8))
    data = H._pil_bytes(image, "PNG")
    assert decode_image_bytes(data, max_pixels=90_000).shape == (3, 300, 300)
    with pytest.raises(ImageReadError, match=r"300x300 = 90,000 pixels, over the limit of 89,999"):
        decode_image_bytes(data, "x.png", max_pixels=89_999)
    with pytest.raises(ImageReadError, match=r"60000x60000 = 3,600,000,000 pixels"):
        probe_image(H.huge_jpeg(), "huge.jpg")


def test_pixel_limit_is_the_callers_not_pils(monkeypatch):
    """PIL's own bomb check (a module global) neither refuses what the caller allowed nor is left changed."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = H._pil_bytes(Image.new("RGB", (300, 300), (1, 2, 3)), "PNG")
    assert decode_image_bytes(data, max_pixels=None).shape == (3, 300, 300)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_a_file_far_larger_than_its_header_is_refused_before_it_is_read(tmp_path):
    png = H.image_seeds()["rgb.png"]
    padding = H.png_chunk(b"zzZz", bytes(17 << 20))  # a 17 MiB ancillary chunk behind a 12x17 header
    (tmp_path / "padded.png").write_bytes(png[:33] + padding + png[33:])
    with pytest.raises(ImageReadError, match=r"padded\.png: 17,826,\d{3} bytes, more than any 17x12 image needs"):
        read_image(tmp_path / "padded.png")


# --- files that are not images ------------------------------------------------------------------------


def test_files_that_are_not_images_are_named_for_what_they_are(tmp_path):
    corpus = H.image_corpus(tmp_path / "corpus")
    expected = {
        "fifo.jpg": r"a FIFO \(named pipe\), not a regular file",
        "loop_a.jpg": "a symbolic link that loops",
        "dangling.png": "a symbolic link to 'missing.png', which does not exist",
        "zero.png": "a character device, not a regular file",
        "folder.png": "a folder, not a regular file",
        "empty.jpg": r"an empty file \(0 bytes\)",
        "weights.jpg": r"not an image cnnzoo reads \(a safetensors file\)",
        "notes.png": r"not an image cnnzoo reads \(it starts with b'these ar'\)",
    }
    for name, reason in expected.items():
        with pytest.raises(ImageReadError, match=rf"{re.escape(str(corpus[name]))}: {reason}"):
            read_image(corpus[name])
    # the format is told from the bytes: a PNG named .jpg is a PNG
    (tmp_path / "png.jpg").write_bytes(H.image_seeds()["rgb.png"])
    assert torch.equal(read_image(tmp_path / "png.jpg"), decode_image_bytes(H.image_seeds()["rgb.png"]))


def test_threads_read_alike():
    """PIL's globals change under a lock while a header is parsed: threads reading at once get what one thread gets."""
    seeds = H.image_seeds()
    want = {name: decode_image_bytes(data, name) for name, data in seeds.items()}
    got, errors = {}, []

    def work(k: int) -> None:
        try:
            for name, data in seeds.items():
                got[(k, name)] = decode_image_bytes(data, name, max_pixels=None if k % 2 else DEFAULT_MAX_PIXELS)
        except Exception as e:  # reported below; a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(torch.equal(image, want[name]) for (_, name), image in got.items())
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


# --- in the data pipeline -------------------------------------------------------------------------------


@pytest.fixture
def folder_with_bad_files(tmp_path):
    """Three good PNGs and the hostile ones of the corpus a folder scan picks up, all labelled 0."""
    corpus = H.image_corpus(tmp_path / "corpus")
    good = [tmp_path / f"good{i}.png" for i in range(3)]
    for i, path in enumerate(good):
        path.write_bytes(H._pil_bytes(Image.new("RGB", (20 + i, 24), (i, 50, 100)), "PNG"))
    bad = [p for name, p in sorted(corpus.items()) if name != "folder.png"]
    return good, bad


def test_folder_skips_and_counts_in_workers(folder_with_bad_files):
    good, bad = folder_with_bad_files
    samples = [(str(p), 0) for p in good + bad]
    data = ImageFolderData(samples, ["x"], train=False, image_size=16)
    batches = list(DataLoader(data, batch_size=4, num_workers=2, collate_fn=collate_skip_none))  # no worker dies
    assert sum(b.skipped for b in batches) == len(bad) and sum(len(b.labels) for b in batches) == len(good)
    with pytest.warns(CorruptImageWarning, match=r"skipping unreadable image .*short_rows\.png: a truncated PNG"):
        assert data[[p for p, _ in samples].index(str(bad[-1].parent / "short_rows.png"))] is None
    strict = ImageFolderData(samples, ["x"], train=False, image_size=16, strict=True)
    with pytest.raises(DataError, match=r"bomb\.png: cannot decode image: 20000x20000"):
        strict[[p for p, _ in samples].index(str(bad[-1].parent / "bomb.png"))]


def test_device_path_reads_headers_in_the_worker(folder_with_bad_files):
    good, bad = folder_with_bad_files
    cmyk = good[0].parent / "cmyk.jpg"
    cmyk.write_bytes(H.image_seeds()["cmyk.jpg"])
    jpeg = good[0].parent / "plain.jpg"
    jpeg.write_bytes(H.image_seeds()["baseline.jpg"])
    corpus = bad[0].parent
    refused = [corpus / n for n in ("bomb.png", "huge.jpg", "weights.jpg", "fifo.jpg", "empty.jpg", "bad_header.jpg")]
    data = ImageFolderData(
        [(str(p), 0) for p in (jpeg, cmyk, corpus / "cut.jpg", *refused)], ["x"], train=False, image_size=16
    )
    encoded = EncodedImages(data)
    assert encoded[0][1] is True and encoded[1][1] is False  # a CMYK JPEG is converted in the worker, not by nvJPEG
    assert encoded[2][1] is True  # a sound header, cut data: only a decoder can tell (the batch decoder's retry does)
    for i, path in enumerate(refused, start=3):  # bombs and non-images never reach the batch decoder
        with pytest.warns(CorruptImageWarning, match=re.escape(path.name)):
            assert encoded[i] is None


def test_unreadable_open_does_not_block_on_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match="a FIFO"):
        read_image(tmp_path / "pipe.png")
    assert time.perf_counter() - start < 1
