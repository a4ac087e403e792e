"""cnnzoo cam / diagram / report on the command line, and the seed's whole-division rule in cnnzoo shape.

Each command's output is checked against the library computed independently here: the CAM against
``cnnzoo.cam.cam`` on an image prepared with torchvision's own transforms, the diagram's repeat marks
against torchvision's ResNet-50 stages, the shape fixes against ``shapes.conv_output`` recomputed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from cnnzoo import create_model
from cnnzoo.cam import cam, default_layer
from cnnzoo.checkpoint import save_weights
from cnnzoo.cli import main
from cnnzoo.errors import ShapeError
from cnnzoo.shapes import conv_output

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _photo(path, size=(48, 40), seed=0, gray=False):
    """A small test picture; ``gray`` saves it as one channel, so that no RGB-to-gray rounding enters the comparison."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    a = np.stack([x * 5, y * 6, (x + y) * 3], -1) + rng.integers(0, 40, (size[1], size[0], 3))
    a = np.clip(a, 0, 255).astype(np.uint8)
    Image.fromarray(a[..., 1] if gray else a).save(path)
    return path


@pytest.fixture(scope="module")
def resnet20_weights(tmp_path_factory):
    """A resnet20 with seeded random weights, saved as a plain state dict (.pth, torchvision's format)."""
    torch.manual_seed(1)
    model = create_model("resnet20").eval()
    path = tmp_path_factory.mktemp("weights") / "resnet20.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _as_the_model_sees_it(path, model) -> torch.Tensor:
    """The eval transform written out with torchvision: short side to size/0.875, centre crop, normalise."""
    info = model.info
    size = info.input_size[1]
    image = decode_image(str(path), mode=ImageReadMode.RGB)
    crop = v2.CenterCrop(size)(v2.Resize(int(size / 0.875), antialias=True)(image))
    return v2.functional.normalize(crop.float() / 255, list(info.mean), list(info.std))[None]


# --- cam ---------------------------------------------------------------------------------------------------------


def test_cam_writes_the_map_the_library_computes(capsys, tmp_path, resnet20_weights):
    model, weights = resnet20_weights
    image = _photo(tmp_path / "photo.png")
    code, out, err = run(capsys, "cam", "resnet20", image, "--weights", weights, "--out", tmp_path / "out", "--json",
                         "--topk", "3", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    (record,) = json.loads(out)
    x = _as_the_model_sees_it(image, model)
    (expected,) = cam(model, x, topk=3)
    heatmap = np.load(record["heatmap"])
    assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
    np.testing.assert_allclose(heatmap, expected.heatmap, atol=1e-5)
    assert record["layer"] == default_layer(model) == expected.layer
    assert (record["peak"]["y"], record["peak"]["x"]) == np.unravel_index(heatmap.argmax(), heatmap.shape)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    top = probs.topk(3)
    assert [c["class"] for c in record["topk"]] == top.indices.tolist()
    assert [c["prob"] for c in record["topk"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert record["target"]["class"] == top.indices[0].item()
    with Image.open(record["overlay"]) as png:
        assert png.format == "PNG" and png.width > 400


def test_cam_class_option_methods_and_text_output(capsys, tmp_path, resnet20_weights):
    model, weights = resnet20_weights
    image = _photo(tmp_path / "photo.png", seed=3)
    x = _as_the_model_sees_it(image, model)
    for method in ("gradcam++", "layercam", "scorecam"):
        code, out, err = run(capsys, "cam", "resnet20", image, "--weights", weights, "--out", tmp_path / method,
                             "--method", method, "--class", "3", "--json")  # fmt: skip
        assert code == 0, err
        (record,) = json.loads(out)
        (expected,) = cam(model, x, method=method, target=3)
        assert record["method"] == method and record["target"]["class"] == 3
        np.testing.assert_allclose(np.load(record["heatmap"]), expected.heatmap, atol=1e-5)
    code, out, _ = run(capsys, "cam", "resnet20", image, "--weights", weights, "--out", tmp_path / "text")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"{image}: top-5 ") and " gradcam at layer3 for " in lines[0]
    assert lines[1] == f"  wrote {tmp_path / 'text' / 'photo_gradcam.png'}, {tmp_path / 'text' / 'photo_gradcam.npy'}"


def test_cam_on_a_checkpoint_with_class_names(capsys, tmp_path):
    """A checkpoint as cnnzoo train writes it: the class names, size and normalisation come from it."""
    torch.manual_seed(2)
    model = create_model("lenet5").eval()
    ckpt = tmp_path / "digits.safetensors"
    info = dict(classes=DIGITS, image_size=28, mean=[0.1307], std=[0.3081], data="mnist5k")
    save_weights(ckpt, model, dict(name="lenet5", num_classes=10, in_chans=1), extra={"info": info})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    images = [_photo(a / "x.png", (28, 28), seed=4, gray=True), _photo(b / "x.png", (30, 28), seed=5, gray=True)]
    code, out, err = run(capsys, "cam", ckpt, *images, "--out", tmp_path / "out", "--class", "seven", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["target"]["name"] for r in records] == ["seven", "seven"]
    assert all(c["name"] == DIGITS[c["class"]] for r in records for c in r["topk"])
    assert [r["overlay"].rsplit("/", 1)[-1] for r in records] == ["x_gradcam.png", "x-2_gradcam.png"]  # no overwrite
    x = v2.CenterCrop(28)(v2.Resize(32, antialias=True)(decode_image(str(images[0]), mode=ImageReadMode.GRAY)))
    x = ((x.float() / 255 - 0.1307) / 0.3081)[None]
    (expected,) = cam(model, x, target=7)
    np.testing.assert_allclose(np.load(records[0]["heatmap"]), expected.heatmap, atol=1e-5)
    code, _, err = run(capsys, "cam", ckpt, images[0], "--out", tmp_path / "out2", "--class", "sevn")
    assert code == 2 and err.strip().endswith("is not one of the model's 10 class names. Did you mean 'seven'?")
    # the same outputs again: refused before any work, replaced with --force
    before = (tmp_path / "out" / "x_gradcam.npy").read_bytes()
    code, _, err = run(capsys, "cam", ckpt, images[0], "--out", tmp_path / "out", "--class", "3")
    assert code == 2 and "x_gradcam.png already exists" in err and "--force" in err
    assert (tmp_path / "out" / "x_gradcam.npy").read_bytes() == before
    code, _, err = run(capsys, "cam", ckpt, images[0], "--out", tmp_path / "out", "--class", "3", "--force")
    assert code == 0 and (tmp_path / "out" / "x_gradcam.npy").read_bytes() != before


def test_cam_list_layers(capsys):
    code, out, _ = run(capsys, "cam", "--list-layers", "resnet50")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("resnet50 on a 3x224x224 input: the layers a map can be taken at")
    defaults = [line for line in lines[1:] if line.startswith("*")]
    assert len(defaults) == 1 and defaults[0].split() == ["*", "layer4", "2048x7x7"]
    assert any(line.split() == ["conv1", "64x112x112"] for line in lines)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["nope.png", "--out", "OUT"], "image 'nope.png': no such file"),
        (["--out", "OUT"], "give one or more images"),
        (["IMAGE"], "--out DIR"),
        (["IMAGE", "--out", "IMAGE"], "is a PNG image, not a folder"),
        (
            ["IMAGE", "--out", "OUT", "--layer", "layer3.2.conv"],
            "has no module of that name. Did you mean layer3.2.conv2, layer3.2.conv1",
        ),
        (["IMAGE", "--out", "OUT", "--class", "10"], "class 10 is not one of the model's classes 0..9"),
        (["IMAGE", "--out", "OUT", "--class", "cat"], "carry no class names; give a class index"),
        (["IMAGE", "--list-layers"], "--list-layers takes only the model"),
    ],
)
def test_cam_bad_input_is_one_line_and_exit_2(capsys, tmp_path, extra, message):
    image = str(_photo(tmp_path / "photo.png"))
    argv = [{"IMAGE": image, "OUT": str(tmp_path / "out")}.get(a, a) for a in extra]
    code, _, err = run(capsys, "cam", "resnet20", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run(capsys, "cam", "resnet5", image, "--out", tmp_path / "out")
    assert code == 2 and "unknown model 'resnet5'" in err


# --- diagram -----------------------------------------------------------------------------------------------------


def test_diagram_svg_collapses_resnet50s_stages_as_torchvision_builds_them(capsys, tmp_path):
    code, out, _ = run(capsys, "diagram", "resnet50", "--out", tmp_path / "r.svg")
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'r.svg'}: resnet50 on 3x224x224, ")
    svg = (tmp_path / "r.svg").read_text(encoding="utf-8")
    root = ET.fromstring(svg)
    with torch.device("meta"):
        reference = torchvision.models.resnet50()
    counts = [len(getattr(reference, f"layer{i}")) for i in range(1, 5)]
    assert counts == [3, 4, 6, 3]
    frames = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "frame"]
    repeats = sorted(int(g.get("data-repeat")) for g in frames if g.get("data-repeat") != "1")
    assert repeats == sorted(counts)
    assert "2048x7x7" in svg and "Conv2d 7x7/2 p3" in svg
    code, _, _ = run(capsys, "diagram", "resnet50", "--out", tmp_path / "r160.svg", "--input", "3x160x160")
    assert code == 0 and "2048x5x5" in (tmp_path / "r160.svg").read_text(encoding="utf-8")
    code, out, _ = run(capsys, "diagram", "resnet50", "--out", tmp_path / "d1.svg", "--depth", "1")
    boxes = int(re.search(r", (\d+) boxes,", out).group(1))
    # the model's children as boxes: input, conv1 (+ bn1 + relu folded in), maxpool, layer1-4, avgpool, flatten, fc
    assert code == 0 and boxes == 10


def test_diagram_png_and_a_checkpoint(capsys, tmp_path):
    model = create_model("lenet5", num_classes=3)
    ckpt = tmp_path / "three.safetensors"
    save_weights(ckpt, model, dict(name="lenet5", num_classes=3, in_chans=1), extra={"info": dict(image_size=32)})
    code, out, err = run(capsys, "diagram", ckpt, "--out", tmp_path / "l.png")
    assert code == 0, err
    width, height = map(int, re.search(r"(\d+)x(\d+)$", out.strip()).groups())
    with Image.open(tmp_path / "l.png") as png:
        assert png.format == "PNG" and png.size == (width, height)
    code, _, _ = run(capsys, "diagram", ckpt, "--out", tmp_path / "l.svg")
    svg = (tmp_path / "l.svg").read_text(encoding="utf-8")
    assert code == 0 and "1x32x32" in svg and "Linear 84→3" in svg  # the checkpoint's size and classes
    code, _, err = run(capsys, "diagram", "lenet5", "--out", tmp_path / "l.svg")
    assert code == 2 and "already exists" in err and (tmp_path / "l.svg").read_text(encoding="utf-8") == svg
    code, _, _ = run(capsys, "diagram", "lenet5", "--out", tmp_path / "l.svg", "--force")
    assert code == 0 and "Linear 84→10" in (tmp_path / "l.svg").read_text(encoding="utf-8")


def test_diagram_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, "diagram", "resnet50", "--out", tmp_path / "r.pdf")
    assert code == 2 and "give a name ending in one of them" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "diagram", "inception_v3", "--out", tmp_path / "i.svg", "--input", "3x32x32")
    assert code == 2 and "75x75" in err
    code, _, err = run(capsys, "diagram", tmp_path / "none.safetensors", "--out", tmp_path / "x.svg")
    assert code == 2 and len(err.strip().splitlines()) == 1


# --- report ------------------------------------------------------------------------------------------------------


def test_report_command(capsys, tmp_path, resnet20_weights):
    _, weights = resnet20_weights
    images = [_photo(tmp_path / "a.png", seed=6), _photo(tmp_path / "b.png", seed=7)]
    out = tmp_path / "r.html"
    code, printed, err = run(capsys, "report", "resnet20", "--weights", weights, "--image", *images, "--out", out)
    assert code == 0, err
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \([\d.]+ MB\): resnet20, \d+ layers, 2 images\n", printed)
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<article class='image'") == 2
    assert f"weights {weights}" in page
    code, _, err = run(capsys, "report", "resnet20", "--out", tmp_path / "r.txt")
    assert code == 2 and "give a name ending in .html" in err


# --- shape: the seed's rule --------------------------------------------------------------------------------------


def _check_fix(fix: str, size: int, kernel: int, stride: int, padding: int = 0) -> None:
    """Each fix printed, recomputed: it makes the division whole and gives the size it says (a new padding keeps
    the stride, a new stride keeps the padding)."""
    pad = re.fullmatch(r"padding (?:\(before, after\) = \((\d+), (\d+)\)|(\d+)) gives OH = (\d+)", fix)
    if pad:
        before, after, both, oh = pad.groups()
        out = conv_output(size, kernel, stride, (int(before), int(after)) if before else int(both), strict=True)
    else:
        s, oh = re.fullmatch(r"stride (\d+) gives OH = (\d+)", fix).groups()
        out = conv_output(size, kernel, int(s), padding, strict=True)
    assert out.exact and out.size == int(oh), fix


def test_shape_prints_the_nearest_fixes_and_strict_exits_1(capsys):
    argv = ["shape", "--size", "32", "--kernel", "3", "--stride", "3", "--padding", "0"]
    code, out, err = run(capsys, *argv)
    lines = out.splitlines()
    at = lines.index("Nearest fixes (the division must come out whole):")
    fixes = [line.strip() for line in lines[at + 1 :]]
    assert (
        code == 0 and not err and fixes == ["padding (before, after) = (0, 1) gives OH = 11", "stride 1 gives OH = 30"]
    )
    for fix in fixes:
        _check_fix(fix, 32, 3, 3)
    with pytest.raises(ShapeError) as e:  # the library's strict error proposes exactly these
        conv_output(32, 3, 3, 0, strict=True)
    assert str(e.value).endswith("Nearest fixes: " + "; ".join(fixes) + ".")
    code, strict_out, err = run(capsys, *argv, "--strict")
    assert code == 1 and strict_out == out
    assert err == "cnnzoo shape: error: --strict: OH = (32 + 2*0 - 3)/3 + 1 = 10.667 is not whole\n"
    code, out, _ = run(capsys, *argv, "--format", "json", "--strict")
    assert code == 1 and json.loads(out)["fixes"] == fixes and json.loads(out)["exact"] is False


def test_shape_strict_on_a_whole_division_and_the_resnet_stem(capsys):
    code, out, err = run(capsys, "shape", "--size", "7", "--kernel", "3", "--stride", "2", "--strict")
    assert code == 0 and not err and "Nearest fixes" not in out
    code, out, _ = run(capsys, "shape", "--size", "7", "--kernel", "3", "--stride", "2", "--format", "json")
    assert code == 0 and json.loads(out)["fixes"] == []
    code, out, _ = run(capsys, "shape", "--size", "224", "--kernel", "7", "--stride", "2", "--padding", "3")
    fixes = [
        line.strip()
        for line in out.splitlines()[out.splitlines().index("Nearest fixes (the division must come out whole):") + 1 :]
    ]
    assert code == 0 and len(fixes) == 3
    for fix in fixes:
        _check_fix(fix, 224, 7, 2, padding=3)
