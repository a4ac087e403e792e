"""Published weights carried through: create_model(pretrained=...), predict, eval, train, convert, export, the
``cnnzoo weights`` commands, URL weights and offline mode.

No network: the weight files are real torchvision-style ResNet-18 state dicts (random weights, He-scaled so
that the outputs depend on the input) served by tests/loopback.py on 127.0.0.1. The table's own
``resnet18.IMAGENET1K_V1`` entry is pointed at that server (its categories, preprocessing and metrics stay
torchvision's); ``resnet18.tabby`` is registered like it, with a classifier that always answers class 281,
which torchvision names "tabby". Every cache (cnnzoo's, torch.hub's, Keras') is a per-test folder.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torchvision.io import ImageReadMode, decode_image
from torchvision.models import ResNet18_Weights, ResNet50_Weights

import cnnzoo
from cnnzoo import hub
from cnnzoo import pretrained as P
from cnnzoo.checkpoint import read_metadata, resolve_checkpoint
from cnnzoo.cli import main

from .data_fixtures import write_jpeg, write_png
from .loopback import LoopbackServer
from .test_weights import randomize

TABBY = 281  # torchvision's ImageNet index of "tabby"
CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
PLAIN_PATH, TABBY_PATH = "/resnet18-f37072fd.pth", "/resnet18-tabby.pth"


def state_dict_file(seed: int, favour: int | None = None) -> tuple[bytes, torch.nn.Module]:
    """A torchvision ResNet-18 saved as torchvision saves it; ``favour``: a classifier that always picks that class."""
    torch.manual_seed(seed)
    tv = randomize(torchvision.models.resnet18(), seed)
    if favour is not None:
        with torch.no_grad():
            tv.fc.weight.mul_(0.01)
            tv.fc.bias.zero_()
            tv.fc.bias[favour] = 20.0
    buffer = io.BytesIO()
    torch.save(tv.state_dict(), buffer)
    return buffer.getvalue(), tv.eval()


@pytest.fixture(scope="module")
def files():
    return {"plain": state_dict_file(0), "tabby": state_dict_file(1, favour=TABBY)}


@pytest.fixture(scope="module")
def server(files):
    with LoopbackServer() as running:
        running.add(PLAIN_PATH, files["plain"][0])
        running.add(TABBY_PATH, files["tabby"][0])
        yield running


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def published(tmp_path, monkeypatch, server, files):
    """Private caches; resnet18.IMAGENET1K_V1 served from the loopback server; resnet18.tabby registered."""
    for var, sub in (("CNNZOO_HOME", "cnnzoo"), ("TORCH_HOME", "torch"), ("KERAS_HOME", "keras")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("CNNZOO_OFFLINE", raising=False)
    hub._VERIFIED.clear()
    table = P._builtin()["resnet18"]
    entry = table["IMAGENET1K_V1"]
    served = dataclasses.replace(entry, url=server.url(PLAIN_PATH), digest=f"sha256:{sha256(files['plain'][0])}")
    monkeypatch.setitem(table, "IMAGENET1K_V1", served)
    P.register_pretrained(
        "resnet18", "tabby", url=server.url(TABBY_PATH), sha256=sha256(files["tabby"][0]), like=served
    )
    yield served
    for tag in list(P._USER.get("resnet18", {})):
        P.unregister_pretrained("resnet18", tag)


def noise_image(path: Path, seed: int, size: tuple[int, int] = (300, 400), jpeg: bool = False) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return write_jpeg(path, pixels) if jpeg else write_png(path, pixels)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: str = "") -> None:
    assert set(a) == set(b)
    for key in a:
        if not (skip and key.startswith(skip)):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# --------------------------------------------------------------------------------------------------
# create_model(pretrained=...)
# --------------------------------------------------------------------------------------------------


def test_pretrained_equals_loading_the_same_file_by_path(server, published):
    model = cnnzoo.create_model("resnet18", pretrained=True)
    by_name = cnnzoo.create_model("resnet18.IMAGENET1K_V1", pretrained=True)
    assert model.pretrained is published and by_name.pretrained is published
    path = published.cache_path
    assert path.is_file() and len(server.served(PLAIN_PATH)) == 1  # the second model found the cached file
    by_path = cnnzoo.create_model("resnet18")
    cnnzoo.load_pretrained(by_path, path)
    same_state(model.state_dict(), by_path.state_dict())
    same_state(by_name.state_dict(), by_path.state_dict())
    assert model.pretrained.categories[TABBY] == "tabby"
    assert model.load_report.notes[0].startswith("pretrained weights resnet18.IMAGENET1K_V1 (torchvision, sha256 ")
    assert cnnzoo.create_model("resnet18").pretrained is None


def test_another_num_classes_replaces_the_head_and_says_so(files):
    model = cnnzoo.create_model("resnet18", num_classes=7, pretrained=True)
    tv = files["plain"][1]
    assert tuple(model.fc.weight.shape) == (7, 512)
    torch.testing.assert_close(model.layer4[1].conv2.weight, tv.layer4[1].conv2.weight, rtol=0, atol=0)
    assert any("fc.weight, fc.bias keep their fresh initialisation for 7 classes (the file's head has 1000)" in n
               for n in model.load_report.notes)  # fmt: skip
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize("in_chans", [1, 6])
def test_another_in_chans_adapts_the_first_conv_as_timm(files, in_chans):
    """One channel: a gray image gives what the RGB model gives on it repeated (R = G = B); six: two copies of an
    RGB image give what the RGB model gives on it (the kernel repeated and scaled by 3/6)."""
    tv = files["plain"][1]
    model = cnnzoo.create_model("resnet18", in_chans=in_chans, pretrained=True).eval()
    want = tv.conv1.weight.sum(1, keepdim=True) if in_chans == 1 else tv.conv1.weight.repeat(1, 2, 1, 1) / 2
    torch.testing.assert_close(model.conv1.weight, want)
    assert any(f"adapted conv1.weight from 3 to {in_chans} input channels" in n for n in model.load_report.notes)
    x = torch.randn(2, 1 if in_chans == 1 else 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = tv(x.expand(-1, 3, -1, -1) if in_chans == 1 else x)
        got = model(x if in_chans == 1 else x.repeat(1, 2, 1, 1))
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_weights_without_a_classifier_keep_a_fresh_head(server, files):
    """As torchvision's VGG16 IMAGENET1K_FEATURES: a classifier of NaN, published for the features only."""
    data, tv = files["plain"]
    state = torch.load(io.BytesIO(data), weights_only=True)
    state["fc.weight"].fill_(float("nan"))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    url = server.add("/resnet18-features.pth", buffer.getvalue())
    P.register_pretrained(
        "resnet18", "features", url=url, sha256=sha256(buffer.getvalue()), has_classifier=False, num_classes=None
    )
    model = cnnzoo.create_model("resnet18", pretrained="features")
    assert torch.isfinite(model.fc.weight).all() and model.fc.out_features == 1000
    torch.testing.assert_close(model.layer1[0].conv1.weight, tv.layer1[0].conv1.weight, rtol=0, atol=0)
    assert any(n.startswith("backbone only: ignored the file's 2 classifier tensors") for n in model.load_report.notes)
    with pytest.raises(cnnzoo.WeightsError, match="NaN or infinite values .*backbone_only=True"):
        cnnzoo.load_pretrained(cnnzoo.create_model("resnet18"), P.get_pretrained("resnet18.features").cache_path)
    assert P.get_pretrained("vgg16.IMAGENET1K_FEATURES").has_classifier is False  # what makes pretrained= do this


def test_bad_pretrained_arguments_are_one_line_errors():
    for call, message in [
        (lambda: cnnzoo.create_model("resnet18", pretrained="IMAGENET1K_V9"), "tagged 'IMAGENET1K_V9'"),
        (lambda: cnnzoo.create_model("resnet18.IMAGENET1K_V1", pretrained="tabby"), "give one"),
        (lambda: cnnzoo.create_model("resnet18", pretrained="resnet50.IMAGENET1K_V1"), "not of resnet18"),
        (lambda: cnnzoo.create_model("resnet18", pretrained=True, weights="x.pth"), "not both"),
        (lambda: cnnzoo.create_model("lenet5", pretrained=True), "no published pretrained weights"),
    ]:
        with pytest.raises((cnnzoo.CnnzooError, ValueError), match=message) as failure:
            call()
        assert "\n" not in str(failure.value)


# --------------------------------------------------------------------------------------------------
# predict: class names
# --------------------------------------------------------------------------------------------------


def test_predict_pretrained_prints_imagenet_class_names(tmp_path, capsys):
    image = noise_image(tmp_path / "cat.png", seed=0)
    for argv in (["resnet18.tabby", "--pretrained"], ["resnet18", "--pretrained"]):
        code, out, err = run(["predict", *argv, image, "--topk", "2", "--json"], capsys)
        assert code == 0, err
        (result,) = json.loads(out)
        if argv[0] == "resnet18.tabby":
            assert result["top"][0][0] == "tabby" and result["top"][0][1] > 0.99
        assert all(name in CATEGORIES for name, _ in result["top"])
    code, out, _ = run(["predict", "resnet18.tabby", "--pretrained", image], capsys)
    assert code == 0 and "tabby" in out.splitlines()[1]
    code, _, err = run(["predict", "resnet18.tabby", image], capsys)
    assert code == 2 and "add --pretrained" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["predict", "resnet18", image], capsys)
    assert code == 2 and "is a model name, not a checkpoint: add --pretrained" in err


# --------------------------------------------------------------------------------------------------
# eval: the entry's own transform, both validation layouts
# --------------------------------------------------------------------------------------------------


def reference_top1(tv: torch.nn.Module, images: list[Path], transforms) -> list[int]:
    """What torchvision's own pipeline predicts: its decoder and its weights' transforms preset."""
    batch = torch.stack([transforms(decode_image(str(p), mode=ImageReadMode.RGB)) for p in images])
    with torch.no_grad():
        return tv(batch).argmax(1).tolist()


def smooth_image(path: Path, seed: int, size: tuple[int, int], jpeg: bool) -> Path:
    """A smooth random colour field (bicubic from 6x8 random pixels): what a network's features tell apart."""
    low = torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (1, 3, 6, 8))).float()
    field = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
    pixels = field[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return write_jpeg(path, pixels) if jpeg else write_png(path, pixels)


def centred_weights(server, published, files, images: list[Path], name: str) -> tuple[list[int], list[int]]:
    """resnet18.crop232 (evaluated as torchvision evaluates resnet50 V2: resize 232, crop 224, bilinear) and
    resnet18.centred (V1: resize 256): the plain file with the classifier's bias centring these images' features,
    so that each image gets its own class. Returns what torchvision's own pipeline predicts with each transform."""
    v1, v2 = ResNet18_Weights.IMAGENET1K_V1.transforms(), ResNet50_Weights.IMAGENET1K_V2.transforms()
    tv = copy.deepcopy(files["plain"][1])
    with torch.no_grad():
        batch = torch.stack([v2(decode_image(str(p), mode=ImageReadMode.RGB)) for p in images])
        features = torch.nn.Sequential(*list(tv.children())[:-1])(batch).flatten(1)
        tv.fc.bias.copy_(-(tv.fc.weight @ features.mean(0)))
    buffer = io.BytesIO()
    torch.save(tv.state_dict(), buffer)
    url = server.add(f"/resnet18-{name}.pth", buffer.getvalue())
    pre = P.get_pretrained("resnet50.IMAGENET1K_V2").preprocessing
    assert (pre.resize, pre.crop, pre.interpolation) == (232, 224, "bilinear")
    digest = sha256(buffer.getvalue())
    P.register_pretrained("resnet18", "crop232", url=url, sha256=digest, like=published, preprocessing=pre)
    P.register_pretrained("resnet18", "centred", url=url, sha256=digest, like=published)
    want, other = reference_top1(tv, images, v2), reference_top1(tv, images, v1)
    assert want != other  # the test can tell which transform ran
    assert all(CATEGORIES.count(CATEGORIES[c]) == 1 for c in want)  # ImageNet names "crane" twice: avoid those
    return want, other


def eval_images(folder: Path, jpeg: bool) -> list[Path]:
    shapes = [(300, 400), (480, 360), (256, 256), (333, 500)]
    suffix = "JPEG" if jpeg else "png"
    return [smooth_image(folder / f"img{i}.{suffix}", 10 + i, shape, jpeg) for i, shape in enumerate(shapes)]


def test_eval_pretrained_uses_the_entrys_transform_on_a_class_folder(tmp_path, server, files, published, capsys):
    images = eval_images(tmp_path / "raw", jpeg=False)
    want, _ = centred_weights(server, published, files, images, "centred-png")
    root = tmp_path / "imagenet"
    for image, label in zip(images, want, strict=True):
        target = root / "val" / CATEGORIES[label] / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        image.rename(target)
    data = f"folder:{root}"
    code, out, err = run(
        ["eval", "resnet18.crop232", "--pretrained", "--data", data, "--json", "--workers", "0"], capsys
    )
    assert code == 0, err
    result = json.loads(out)
    assert (result["count"], result["top1"], result["checkpoint"]) == (4, 1.0, "resnet18.crop232")
    assert result["published"] == {"top1": 69.758, "top5": 89.078}  # the entry's, as torchvision publishes them
    code, out, _ = run(["eval", "resnet18.centred", "--pretrained", "--data", data, "--json", "--workers", "0"], capsys)
    assert code == 0 and json.loads(out)["top1"] < 1.0  # V1's resize 256 sees other crops
    code, out, _ = run(["eval", "resnet18.crop232", "--pretrained", "--data", data, "--workers", "0"], capsys)
    assert "top-1 100.00%" in out and "published: top1 69.76%" in out


def write_solution_csv(path: Path, present: dict[str, int], n_classes: int = 1000) -> None:
    """LOC_val_solution.csv as ImageNet ships it: every class once at least (images not present included)."""
    rows = [(image_id, f"n{label:08d} 10 20 200 220 n{label:08d} 5 5 50 60") for image_id, label in present.items()]
    used = set(present.values())
    rows += [(f"ILSVRC2012_val_{10_000 + k:08d}", f"n{k:08d} 1 2 3 4") for k in range(n_classes) if k not in used]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        writer.writerows(rows)


def test_eval_pretrained_on_the_flat_ilsvrc_validation_layout(tmp_path, server, files, published, capsys):
    """Kaggle's download: ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_*.JPEG, LOC_val_solution.csv 4 folders up. The
    synsets sorted are the class order (here made-up ids n00000000 ... n00000999 standing for the real ones)."""
    root = tmp_path / "kaggle"
    val = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    images = eval_images(tmp_path / "raw", jpeg=True)
    want, _ = centred_weights(server, published, files, images, "centred-jpeg")
    present = {}
    for i, (image, label) in enumerate(zip(images, want, strict=True), start=1):
        image_id = f"ILSVRC2012_val_{i:08d}"
        val.mkdir(parents=True, exist_ok=True)
        image.rename(val / f"{image_id}.JPEG")
        present[image_id] = label
    write_solution_csv(root / "LOC_val_solution.csv", present)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(
            ["eval", "resnet18.crop232", "--pretrained", "--data", f"folder:{val}", "--json", "--workers", "0"], capsys
        )
    assert code == 0, err
    assert (json.loads(out)["count"], json.loads(out)["top1"]) == (4, 1.0)
    assert any("4 of the 1000 images LOC_val_solution.csv lists are here" in str(w.message) for w in caught)

    write_solution_csv(root / "LOC_val_solution.csv", present, n_classes=0)  # only the 4 images' synsets
    code, _, err = run(["eval", "resnet18", "--pretrained", "--data", f"folder:{val}", "--workers", "0"], capsys)
    assert code == 2 and "has 4 classes" in err and "the weights 1000" in err


# --------------------------------------------------------------------------------------------------
# train: fine-tuning
# --------------------------------------------------------------------------------------------------


def test_train_pretrained_fine_tunes_with_a_new_head_and_the_weights_normalisation(tmp_path, files, published, capsys):
    root = tmp_path / "pets"
    for split, n in (("train", 2), ("val", 1)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                noise_image(root / split / name / f"{i}.png", seed=100 + 10 * c + i, size=(260, 240))
    out = tmp_path / "run"
    argv = ["train", "resnet18", "--pretrained", "--data", f"folder:{root}", "--epochs", 1, "--batch-size", 2,
            "--lr", 0, "--warmup", 0, "--workers", 0, "--device", "cpu", "--no-progress", "--out", out]  # fmt: skip
    code, log, err = run(argv, capsys)
    assert code == 0, err
    assert "pretrained weights resnet18.IMAGENET1K_V1" in log
    assert "fc.weight, fc.bias keep their fresh initialisation for 2 classes (the file's head has 1000)" in log
    weights = resolve_checkpoint(out)
    info = read_metadata(weights)["info"]
    pre = published.preprocessing
    assert (tuple(info["mean"]), tuple(info["std"]), info["image_size"]) == (pre.mean, pre.std, pre.crop)
    assert info["pretrained"] == "resnet18.IMAGENET1K_V1" and info["eval_crop"]["resize"] == pre.resize
    saved = load_file(str(weights))
    tv = files["plain"][1]
    assert tuple(saved["fc.weight"].shape) == (2, 512)
    torch.testing.assert_close(saved["conv1.weight"], tv.conv1.weight.detach(), rtol=0, atol=0)  # lr 0: as loaded
    config = json.loads((out / "config.json").read_text())
    assert config["pretrained"] is True


def test_train_with_a_tag_in_the_model_name(tmp_path, capsys):
    code, _, err = run(["train", "resnet18.tabby", "--data", "synthetic:8:3x32x32:2"], capsys)
    assert code == 2 and "add --pretrained" in err


# --------------------------------------------------------------------------------------------------
# cnnzoo weights list / download, offline mode
# --------------------------------------------------------------------------------------------------


def test_weights_list_and_download(published, capsys):
    code, out, _ = run(["weights", "list", "resnet18"], capsys)
    row = next(line for line in out.splitlines() if "resnet18.IMAGENET1K_V1 (default)" in line)
    assert (
        code == 0 and "torchvision" in row and "69.76%" in row and "44.7 MiB" in row and row.rstrip("│ ").endswith("no")
    )
    assert "resnet18.tabby" in out
    code, out, _ = run(["weights", "download", "resnet18", "resnet18.tabby"], capsys)
    assert code == 0
    assert f"resnet18.IMAGENET1K_V1: {published.cache_path} (44.7 MiB, sha256 " in out
    assert published.cache_path.is_file() and P.get_pretrained("resnet18.tabby").cache_path.is_file()
    code, out, _ = run(["weights", "list", "resnet18", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["resnet18.IMAGENET1K_V1"]["cached"] is True and rows["resnet18.IMAGENET1K_V1"]["default"] is True
    code, out, _ = run(["weights", "list", "resnet18"], capsys)
    assert "yes" in next(line for line in out.splitlines() if "IMAGENET1K_V1" in line)
    code, _, err = run(["weights", "download", "resnet18.IMAGENET1K_V3"], capsys)
    assert code == 2 and "Did you mean" in err and len(err.strip().splitlines()) == 1


def test_offline_from_the_command_line(tmp_path, server, published, monkeypatch, capsys):
    image = noise_image(tmp_path / "x.png", seed=5)
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    before = len(server.requests)
    code, _, err = run(["predict", "resnet18", "--pretrained", image], capsys)
    assert code == 2 and published.url in err and f"put it at {published.cache_path} " in err
    code, _, err = run(["weights", "download", "resnet18"], capsys)
    assert code == 2 and "CNNZOO_OFFLINE is set" in err
    assert len(server.requests) == before  # nothing went over the wire
    monkeypatch.delenv("CNNZOO_OFFLINE")
    assert run(["weights", "download", "resnet18"], capsys)[0] == 0
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    before = len(server.requests)
    code, out, err = run(["predict", "resnet18", "--pretrained", image, "--topk", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[1].split("  ")[-1].strip() in CATEGORIES and len(server.requests) == before


# --------------------------------------------------------------------------------------------------
# URL weights, convert and export keep what the weights imply
# --------------------------------------------------------------------------------------------------


def test_url_weights_need_a_digest(tmp_path, server, files, capsys):
    url = server.url(PLAIN_PATH)
    out = tmp_path / "r18.safetensors"
    code, _, err = run(["convert", url, out, "--model", "resnet18"], capsys)
    assert code == 2 and "give exactly one digest" in err and "--sha256" in err and len(err.strip().splitlines()) == 1
    assert "f37072fd" in err  # the hash prefix torchvision writes in its file names, offered as a hint
    code, _, err = run(["export", "resnet18", "--weights", url, "--out", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "give exactly one digest" in err and not (tmp_path / "x.onnx").exists()
    code, _, err = run(["convert", url, out, "--model", "resnet18", "--sha256", "0" * 12], capsys)
    assert code == 2 and "expected sha256 000000000000" in err and not out.exists()
    code, stdout, err = run(
        ["convert", url, out, "--model", "resnet18", "--sha256", sha256(files["plain"][0])[:12]], capsys
    )
    assert code == 0, err
    meta = read_metadata(out)
    assert meta["converted_from"]["sha256"] == sha256(files["plain"][0])
    model = cnnzoo.load_model(out)
    same_state(
        model.state_dict(),
        cnnzoo.create_model("resnet18", weights=str(hub.weights_dir() / PLAIN_PATH[1:])).state_dict(),
    )


def test_convert_keeps_categories_and_preprocessing(tmp_path, files, published, capsys):
    # a published file (found by its digest): the entry's categories and preprocessing
    path = P.fetch_pretrained("resnet18.tabby")
    code, stdout, err = run(["convert", path, tmp_path / "tabby.safetensors", "--model", "resnet18"], capsys)
    assert code == 0, err
    meta = read_metadata(tmp_path / "tabby.safetensors")
    assert meta["pretrained"] == "resnet18.tabby" and meta["classes"] == CATEGORIES
    assert (meta["preprocessing"]["resize"], meta["preprocessing"]["crop"]) == (256, 224)
    assert "class names of resnet18.tabby: 1000 (tench, goldfish, great white shark, ...)" in stdout
    image = noise_image(tmp_path / "cat.png", seed=1)
    code, out, _ = run(["predict", tmp_path / "tabby.safetensors", image, "--topk", "1"], capsys)
    assert code == 0 and out.splitlines()[1].endswith("tabby")
    # a torchvision file in no table, with a 1000-class head: ImageNet's names, torchvision's usual crop
    other = tmp_path / "resnet18-mine.pth"
    other.write_bytes(state_dict_file(2)[0])
    assert run(["convert", other, tmp_path / "mine.safetensors", "--model", "resnet18"], capsys)[0] == 0
    meta = read_metadata(tmp_path / "mine.safetensors")
    assert meta["classes"] == CATEGORIES and "pretrained" not in meta and meta["preprocessing"]["resize"] == 256
    # --like names the entry; a new head has no names
    assert (
        run(
            [
                "convert",
                other,
                tmp_path / "like.safetensors",
                "--model",
                "resnet18",
                "--like",
                "resnet18.IMAGENET1K_V1",
            ],
            capsys,
        )[0]
        == 0
    )
    assert read_metadata(tmp_path / "like.safetensors")["pretrained"] == "resnet18.IMAGENET1K_V1"
    argv = ["convert", other, tmp_path / "ten.safetensors", "--model", "resnet18", "--num-classes", 10, "--reset-head"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "classes" not in read_metadata(tmp_path / "ten.safetensors")
    assert "no class names known (--like MODEL.TAG names them)" in stdout


def test_export_keeps_categories_in_the_onnx_metadata(tmp_path, capsys):
    from cnnzoo.export import OnnxModel

    out = tmp_path / "tabby.onnx"
    code, stdout, err = run(["export", "resnet18.tabby", "--pretrained", "--out", out, "--image-size", 64], capsys)
    assert code == 0, err
    assert "pretrained weights resnet18.tabby" in stdout
    onnx_model = OnnxModel(out)
    assert onnx_model.classes == CATEGORIES and onnx_model.metadata["pretrained"] == "resnet18.tabby"
    assert (onnx_model.image_size, onnx_model.metadata["resize"], onnx_model.metadata["crop"]) == (64, 256, 224)
    code, out_text, err = run(["predict", out, noise_image(tmp_path / "c.png", seed=2), "--topk", "1"], capsys)
    assert code == 0 and out_text.splitlines()[1].endswith("tabby"), err


def test_visualize_takes_pretrained_weights(tmp_path, files, capsys):
    image = noise_image(tmp_path / "x.png", seed=3, size=(224, 224))
    code, out, err = run(
        ["visualize", "resnet18.tabby", "--pretrained", "--image", image, "--out", tmp_path / "pics"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "pics" / "filters.png").is_file() and "stages:" in out
    code, _, err = run(["visualize", "resnet18.tabby", "--image", image, "--out", tmp_path / "other"], capsys)
    assert code == 2 and "add --pretrained" in err
    # what visualize was shown: the file's filters, as a model loaded from the file by path shows them
    from matplotlib.image import imread

    by_path = cnnzoo.create_model("resnet18")
    cnnzoo.load_pretrained(by_path, P.get_pretrained("resnet18.tabby").cache_path)
    cnnzoo.visualize(by_path, image, tmp_path / "by_path")
    cnnzoo.visualize(cnnzoo.create_model("resnet18"), image, tmp_path / "random")
    shown = imread(tmp_path / "pics" / "filters.png")
    np.testing.assert_array_equal(shown, imread(tmp_path / "by_path" / "filters.png"))
    assert not np.array_equal(shown, imread(tmp_path / "random" / "filters.png"))
