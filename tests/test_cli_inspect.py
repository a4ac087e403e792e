"""The inspection commands: cnnzoo summary / shape / visualize, their output and exit codes."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.cli.options import parse_input_size, parse_padding


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# --- summary ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, lines",
    [
        ("vgg16", ["Total params: 138,357,544", "Trainable params: 138,357,544", "Non-trainable params: 0"]),
        (
            "resnet50_keras",
            ["Total params: 25,636,712", "Trainable params: 25,583,592", "Non-trainable params: 53,120"],
        ),
        (
            "inception_v3_keras",
            ["Total params: 23,851,784", "Trainable params: 23,817,352", "Non-trainable params: 34,432"],
        ),
    ],
)
def test_summary_keras_style_prints_the_seeds_totals(capsys, name, lines):
    code, out, _ = run(capsys, "summary", name, "--style", "keras")
    assert code == 0
    assert all(line in out.splitlines() for line in lines)
    assert out.splitlines()[2].split() == (
        ["Layer", "(type)", "Output", "Shape", "Param", "#"]
        + (["Connected", "to"] if name != "vgg16" else [])
        + ["Window", "MACs", "RF", "Jump"]
    )


def test_summary_torch_style_and_options(capsys):
    code, out, _ = run(capsys, "summary", "resnet50", "--input", "3x160x160", "--depth", "1", "--batch-size", "2")
    assert code == 0
    assert 'Model: "resnet50"  (input 2x3x160x160, eval mode, depth 1, torch style)' in out
    assert "Total params: 25,557,032" in out
    assert " layer4 (Sequential)" in out and "[2, 2048, 5, 5]" in out


def test_summary_json_and_csv(capsys):
    code, out, _ = run(capsys, "summary", "vgg16", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["totals"]["total_params"] == 138_357_544 and data["totals"]["macs"] == 15_470_264_320
    conv5_3 = next(r for r in data["rows"] if r["name"] == "features.block5_conv3")
    assert conv5_3["receptive_field"] == [196, 196]
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert (
        code == 0
        and rows[1]["layer"] == "features.conv1"
        and rows[1]["params"] == "156"
        and rows[1]["receptive_field"] == "5"
    )


def test_summary_errors_exit_2_with_the_reason(capsys):
    code, _, err = run(capsys, "summary", "resnet5")
    assert code == 2 and err.startswith("cnnzoo summary: error: unknown model 'resnet5'. Did you mean")
    code, _, err = run(capsys, "summary", "inception_v3", "--input", "3x64x64")
    assert code == 2 and "needs an input of at least 75x75 pixels" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", "vgg16", "--input", "3x224x"])
    assert exit_info.value.code == 2
    assert "expected CxHxW (3x224x224)" in capsys.readouterr().err


# --- shape --------------------------------------------------------------------------------------------


def test_shape_of_one_layer(capsys):
    code, out, _ = run(capsys, "shape", "--size", "224", "--kernel", "7", "--stride", "2", "--padding", "3")
    assert code == 0
    assert out.splitlines() == [
        "H = 224, FH = 7, P = 3, S = 2",
        "OH = (H + 2P - FH)/S + 1",
        "   = (224 + 2*3 - 7)/2 + 1",
        "   = 223/2 + 1",
        "   = 112.5",
        "223 is not a multiple of 2: rounded down to 112, leaving 1 pixel at the end of the padded input uncovered",
        "Receptive field: each output pixel sees 7x7 input pixels; neighbouring outputs are 2 input pixels apart (jump 2).",
        "Nearest fixes (the division must come out whole):",
        "  padding (before, after) = (2, 3) gives OH = 112",
        "  padding (before, after) = (3, 4) gives OH = 113",
        "  stride 1 gives OH = 224",
    ]
    code, out, _ = run(
        capsys, "shape", "--size", "224", "--kernel", "3", "--stride", "2", "--padding", "same", "--format", "json"
    )
    assert code == 0 and json.loads(out)["output"] == 112 and json.loads(out)["receptive_field"] == 3


def test_shape_of_one_layer_that_does_not_fit(capsys):
    code, _, err = run(capsys, "shape", "--size", "2", "--kernel", "5")
    assert code == 2 and "the output would be -2" in err and "Input 2 is too small for kernel 5" in err


def test_shape_walk_of_a_model(capsys):
    code, out, _ = run(capsys, "shape", "resnet18", "--input", "3x224x224")
    assert code == 0
    assert "conv1 (Conv2d)" in out and "OH = OW = (224 + 2*3 - 7)/2 + 1 = 112.5, rounded down to 112" in out
    assert out.splitlines()[-1] == "All 32 layers above fit; the output is 1000."


def test_shape_walk_that_fails_exits_1_and_names_the_layer(capsys):
    code, out, _ = run(capsys, "shape", "inception_v3", "--input", "3x32x32")
    assert code == 1
    assert "Stops at layer Mixed_6a.branch3x3.conv (Conv2d)" in out
    assert out.splitlines()[-1] == "Inputs that work: square images of at least 75x75 (input 3x75x75; 74x74 fails)."
    code, out, _ = run(capsys, "shape", "vgg16", "--input", "16", "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["smallest_input"] == 32 and data["rows"][-1]["layer"] == "features.block5_pool"


def test_shape_needs_a_model_or_a_layer(capsys):
    code, _, err = run(capsys, "shape")
    assert code == 2 and "give a model" in err
    code, _, err = run(capsys, "shape", "vgg16", "--size", "224")
    assert code == 2 and "--size and --kernel describe one layer" in err


# --- visualize ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
def test_visualize_writes_the_pictures(capsys, tmp_path):
    y, x = np.mgrid[0:40, 0:50]
    image = tmp_path / "in.png"
    Image.fromarray(np.stack([x * 5, y * 6, (x + y) * 3], -1).astype(np.uint8)).save(image)
    code, out, _ = run(capsys, "visualize", "resnet20", "--image", str(image), "--out", str(tmp_path / "pics"))
    assert code == 0
    assert out.splitlines()[0] == "stages: layer1.2.relu[1], layer2.2.relu[1], layer3.2.relu[1]"
    written = [line.removeprefix("wrote ") for line in out.splitlines()[1:]]
    assert [p.rsplit("/", 1)[-1] for p in written] == [
        "input.png",
        "filters.png",
        "feature_maps.png",
        "activation_stats.png",
    ]
    assert all(Image.open(p).size[0] >= 400 for p in written)
    code, _, err = run(capsys, "visualize", "resnet20", "--image", str(tmp_path / "nope.jpg"), "--out", str(tmp_path))
    assert code == 2 and "not found" in err


# --- argument parsing ---------------------------------------------------------------------------------


def test_parsers():
    assert parse_input_size("3x224x224") == (3, 224, 224)
    assert parse_input_size("224x200") == (224, 200)
    assert parse_input_size("299") == 299
    assert parse_padding("same") == "same" and parse_padding("0,1") == (0, 1) and parse_padding("3") == 3
    for bad in ("3x224x", "0x224x224", "a", "1x2x3x4"):
        with pytest.raises(Exception, match="expected CxHxW"):
            parse_input_size(bad)
    with pytest.raises(Exception, match="expected a padding"):
        parse_padding("-1")
