"""Image folders decoded a batch at a time on the training device (cnnzoo.data.device_decode).

On the CPU the device path runs libjpeg in the main process, so it can be held against the worker path
pixel for pixel (rounding apart); the nvJPEG tests need a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.data import CorruptImageWarning, DataError, EncodedImages, collate_encoded, load_data
from cnnzoo.data.batches import LoaderBatches
from cnnzoo.data.device_decode import DeviceDecoder, check_decode_option, nvjpeg_available
from cnnzoo.train import Dist

from . import data_fixtures as fx
from .cli_runs import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like image (smooth gradients): JPEG rounding stays small, so decoders agree closely."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.integers(0, 256, (1, 3, 4, 4)).astype(np.float32))
    image = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0]
    return image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture
def mixed_folder(tmp_path):
    """JPEGs of several sizes, a PNG, a gray JPEG, an EXIF-turned JPEG; val: JPEGs and a PNG."""
    for i, (h, w) in enumerate([(40, 56), (64, 48), (33, 33), (80, 60), (50, 70), (45, 45)]):
        fx.write_jpeg(tmp_path / f"train/c{i % 2}/{i}.jpg", smooth(h, w, i))
        fx.write_jpeg(tmp_path / f"val/c{i % 2}/{i}.jpg", smooth(w, h, 10 + i))
    fx.write_png(tmp_path / "train/c0/p.png", smooth(36, 44, 20))
    fx.write_png(tmp_path / "val/c1/p.png", smooth(44, 36, 21))
    fx.write_jpeg(tmp_path / "train/c1/gray.jpg", smooth(40, 40, 22)[:, :, :1])
    (tmp_path / "train/c1/turned.jpg").write_bytes(fx.with_exif_orientation(fx.jpeg_bytes(smooth(30, 60, 23)), 6))
    return tmp_path


def _batches(
    spec: str, decode: str, train: bool, *, workers: int = 0, batch_size: int = 4, channels: int = 3, seed: int = 0
):
    splits = load_data(spec, image_size=24, channels=channels)
    split = splits.train if train else splits.test
    mean, std = (0.0,) * channels, (1 / 255,) * channels  # normalised values stay 0..255 pixels
    lb = LoaderBatches(
        split, batch_size, torch.device("cpu"), mean, std, Dist(), train=train, workers=workers, decode=decode
    )
    assert lb.decode == decode
    xs, ys = zip(*lb.epoch(seed, 0))
    return torch.cat(xs), torch.cat(ys), lb


@pytest.mark.parametrize("train", [False, True])
def test_device_path_gives_the_worker_paths_pixels(mixed_folder, train):
    """Same files, same crops (the same random draws in the same order), same pixels up to rounding."""
    spec = f"folder:{mixed_folder}"
    x_workers, y_workers, _ = _batches(spec, "workers", train)
    x_device, y_device, _ = _batches(spec, "device", train)
    assert x_device.shape == x_workers.shape == (len(y_workers), 3, 24, 24) and x_device.dtype == torch.float32
    assert torch.equal(y_device, y_workers)
    assert (x_device - x_workers).abs().max() <= 1.01  # the worker path rounds to uint8, the device path does not


def test_device_path_with_worker_processes_and_gray(mixed_folder):
    x1, y1, _ = _batches(f"folder:{mixed_folder}", "device", False, channels=1)
    x2, y2, _ = _batches(f"folder:{mixed_folder}", "device", False, channels=1, workers=2)
    assert x1.shape[1] == 1 and torch.equal(y1, y2) and torch.equal(x1, x2)


def test_encoded_images_leave_jpegs_encoded_and_decode_the_rest(mixed_folder):
    splits = load_data(f"folder:{mixed_folder}", image_size=24)
    items = {Path(p).name: EncodedImages(splits.train)[i] for i, (p, _) in enumerate(splits.train.samples)}
    payload, encoded, label, path = items["0.jpg"]
    assert encoded and payload.dtype == torch.uint8 and payload.dim() == 1
    assert payload.numpy().tobytes() == Path(path).read_bytes()
    png, encoded, _, _ = items["p.png"]
    assert not encoded and png.shape == (3, 36, 44)  # PNG: decoded in the worker
    turned, encoded, _, _ = items["turned.jpg"]
    assert not encoded and turned.shape == (
        3,
        60,
        30,
    )  # EXIF orientation 6: nvJPEG would ignore it; turned upright here
    batch = collate_encoded([items["0.jpg"], None, items["p.png"], items["1.jpg"]])
    assert batch.skipped == 1 and batch.order == [("jpeg", 0), ("image", 0), ("jpeg", 1)]
    assert batch.buffer.dim() == 1 and [t.numpy().tobytes() for t in batch.jpegs()] == [
        items[n][0].numpy().tobytes() for n in ("0.jpg", "1.jpg")
    ]


def test_a_bad_jpeg_costs_only_itself(mixed_folder):
    good = fx.jpeg_bytes(smooth(40, 40, 30))
    scan = good.index(b"\xff\xda")  # start of scan: the header is whole, the image data is cut short
    (mixed_folder / "train/c0/bad.jpg").write_bytes(good[: (scan + len(good)) // 2])
    (mixed_folder / "train/c0/empty.jpg").write_bytes(b"")
    splits = load_data(f"folder:{mixed_folder}", image_size=24)
    dataset = EncodedImages(splits.train)
    with pytest.warns(CorruptImageWarning, match=r"empty\.jpg"):
        samples = [dataset[i] for i in range(len(dataset))]
    batch = collate_encoded(samples)
    decoder = DeviceDecoder(splits.train, "cpu")
    with pytest.warns(CorruptImageWarning, match=r"bad\.jpg"):
        x, y = decoder(batch)
    assert decoder.skipped == 1 and batch.skipped == 1
    assert len(x) == len(y) == len(samples) - 2  # everything but the two bad files
    strict = load_data(f"folder:{mixed_folder}", image_size=24, strict=True)
    with pytest.raises(DataError, match=r"bad\.jpg: cannot decode image"):
        DeviceDecoder(strict.train, "cpu")(batch)


def test_decode_option():
    assert check_decode_option("auto", torch.device("cpu")) == "workers"
    assert check_decode_option("device", torch.device("cpu")) == "device"
    with pytest.raises(DataError, match="decode must be auto, workers or device; got 'gpu'"):
        check_decode_option("gpu", torch.device("cpu"))


def test_train_cli_with_device_decoding(mixed_folder, tmp_path):
    out = tmp_path / "run"
    cli("train", "lenet5", "--data", f"folder:{mixed_folder}", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--decode", "device", "--out", out, "--no-progress")  # fmt: skip
    assert json.loads((out / "config.json").read_text())["decode"] == "device"
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_count"] == 7 and np.isfinite(last["train_loss"])


@pytest.mark.skipif(not nvjpeg_available(), reason="needs a CUDA GPU and a torchvision with nvJPEG")
def test_nvjpeg_path_agrees_with_the_cpu(mixed_folder):
    splits = load_data(f"folder:{mixed_folder}", image_size=24)
    samples = [EncodedImages(splits.test)[i] for i in range(len(splits.test))]
    batch = collate_encoded(samples)
    gpu, y = DeviceDecoder(splits.test, "cuda")(batch)
    cpu, _ = DeviceDecoder(splits.test, "cpu")(batch)
    assert gpu.device.type == "cuda" and y.device.type == "cuda"
    diff = (gpu.cpu() - cpu).abs()
    assert diff.mean() < 2 and diff.max() < 24  # nvJPEG's IDCT and colour conversion are not libjpeg's
    assert check_decode_option("auto", torch.device("cuda")) == "workers"  # measured faster with many cores
