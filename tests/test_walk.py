"""cnnzoo.walk: the layer-by-layer shape walk, its formulas against PyTorch, where it stops, and which
input sizes work."""

import pytest
import torch
from torch import nn

from cnnzoo import get_model_info, list_models
from cnnzoo.errors import InputShapeError
from cnnzoo.layers import ConvBNAct
from cnnzoo.trace import resolve_model
from cnnzoo.walk import explain_layer, smallest_input, trace, walk


@pytest.mark.parametrize("name", list_models())
def test_every_formula_is_confirmed_by_pytorch(name):
    """Every layer with a formula predicted the size PyTorch then produced, at the native size."""
    model, _ = resolve_model(name)
    t = trace(model, model.info.input_size)
    predicted = [n for n in t.nodes if n.step is not None and n.step.out_hw is not None]
    assert predicted and all(n.step.verified for n in predicted)
    assert all(n.rf is not None for n in t.nodes)


@pytest.mark.parametrize("name", list_models())
def test_smallest_input_is_the_registrys(name):
    """The registry's min_size goes through and one pixel less does not (checked by walking)."""
    info = get_model_info(name)
    assert smallest_input(name) == info.min_size


def test_lenet5_walk():
    w = walk("lenet5")
    assert w.ok
    rows = w.rows()
    assert [r["layer"] for r in rows] == [
        "input",
        "features.conv1",
        "features.pool1",
        "features.conv2",
        "features.pool2",
        "avgpool",
        "flatten",
        "classifier.fc1",
        "classifier.fc2",
        "classifier.fc3",
    ]
    conv1, pool1, conv2 = rows[1:4]
    assert conv1["formula"] == ["OH = OW = (28 + 2*2 - 5)/1 + 1 = 28"] and conv1["receptive_field"] == [5, 5]
    assert pool1["output"] == [1, 6, 14, 14] and pool1["jump"] == [2, 2]
    assert conv2["formula"] == ["OH = OW = (14 + 2*0 - 5)/1 + 1 = 10"] and conv2["receptive_field"] == [14, 14]
    assert rows[6]["formula"] == ["16*5*5 = 400 features"]
    text = str(w)
    assert "All 9 layers above fit; the output is 10." in text


def test_rounding_is_shown():
    rows = walk("googlenet").rows()
    conv1 = next(r for r in rows if r["layer"] == "conv1.conv")
    pool1 = next(r for r in rows if r["layer"] == "maxpool1")
    assert conv1["formula"] == ["OH = OW = (224 + 2*3 - 7)/2 + 1 = 112.5, rounded down to 112"]
    assert (
        pool1["formula"] == ["OH = OW = (112 + 2*0 - 3)/2 + 1 = 55.5, rounded up to 56"]
        and pool1["window"] == "3x3/2 ceil"
    )


def test_inception_v3_too_small_stops_at_the_layer_and_says_what_works():
    w = walk("inception_v3", (3, 32, 32))
    assert not w.ok
    assert w.failed.name == "Mixed_6a.branch3x3.conv"
    assert w.failed.in_shapes == [(1, 288, 1, 1)]
    assert "OH = (1 + 2*0 - 3)/2 + 1 = 0" in w.error
    assert w.smallest == 75
    text = str(w)
    assert "Stops at layer Mixed_6a.branch3x3.conv (Conv2d)" in text
    assert "square images of at least 75x75 (input 3x75x75; 74x74 fails)" in text
    assert text.splitlines()[-3].lstrip().startswith("x  Mixed_6a.branch3x3.conv")
    assert w.to_dict()["ok"] is False and w.to_dict()["smallest_input"] == 75


def test_walk_of_a_network_that_needs_one_exact_size():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 15 * 15, 10))
    w = walk(model, (3, 40, 40))
    assert w.failed.name == "3" and "takes 1800 features, but gets 2888" in w.error
    assert w.smallest == 32  # by bisection: 32 -> 30 -> 15, and 31 -> 29 -> 14 fails
    assert "but the larger 40x40 does not: 3 needs one exact size" in str(w)
    assert walk(model, (3, 32, 32)).ok and walk(model, (3, 33, 33)).ok and not walk(model, (3, 34, 34)).ok


def test_smallest_input_by_bisection_matches_a_scan():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2), nn.MaxPool2d(3, stride=2), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1)
    )
    scan = next(s for s in range(1, 64) if walk(model, (1, s, s)).ok)
    assert smallest_input(model) == scan == 17  # 17 -> 7 -> 3 -> 1; 16 -> 6 -> 2 -> nothing


def test_wrong_channels_raise_before_walking():
    with pytest.raises(InputShapeError, match="lenet5 takes 1 input channel, the input has 3: use an input of 1x28x28"):
        walk("lenet5", (3, 28, 28))


def test_keras_same_padding_and_padding_layers():
    rows = walk("resnet50_keras", (3, 225, 225)).rows()
    assert rows[1]["layer"] == "conv1_pad" and rows[1]["formula"] == ["OH = OW = 225 + 3 + 3 = 231"]
    same = ConvBNAct(3, 4, 3, stride=2, padding="same")  # TensorFlow's 'same' at stride 2: padding depends on the size
    rows = walk(same, (3, 8, 8)).rows()
    assert rows[1]["window"] == "same (0,1,0,1)" and rows[1]["formula"] == ["OH = OW = 8 + 0 + 1 = 9"]
    assert rows[2]["output"] == [1, 4, 4, 4]


def test_non_square_kernels_give_both_formulas():
    rows = walk("inception_v3").rows()
    row = next(r for r in rows if r["layer"] == "Mixed_6b.branch7x7_2.conv")
    assert row["window"] == "1x7/1 p0,3"
    assert row["formula"] == ["OH = (17 + 2*0 - 1)/1 + 1 = 17", "OW = (17 + 2*3 - 7)/1 + 1 = 17"]
    assert row["receptive_field"][0] < row["receptive_field"][1]


def test_concatenation_rows():
    row = next(r for r in walk("googlenet").rows() if r["layer"] == "inception3a")
    assert row["type"] == "cat" and row["formula"] == ["64 + 128 + 32 + 32 = 256 channels"]


def test_explain_one_layer():
    text = explain_layer(224, 7, stride=2, padding=3)
    assert "= (224 + 2*3 - 7)/2 + 1" in text and "rounded down to 112" in text
    assert text.endswith(
        "each output pixel sees 7x7 input pixels; neighbouring outputs are 2 input pixels apart (jump 2)."
    )
    assert "sees 5x5 input pixels (kernel 3 with dilation 2)" in explain_layer(32, 3, dilation=2)


def test_trace_keeps_the_model_as_it_was():
    model = resolve_model("resnet20", device="cpu")[0].train()
    before = [p.clone() for p in model.parameters()]
    trace(model, (3, 32, 32))
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.check_inputs
