"""cnnzoo.shapes: the output-size formula against PyTorch, the strict check, 'same' padding,
receptive fields and parameter counts against known figures."""

import ast
import doctest
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnzoo import shapes
from cnnzoo.errors import ShapeError
from cnnzoo.shapes import (
    Layer,
    OutputSize,
    ReceptiveField,
    batchnorm_params,
    conv2d_output_shape,
    conv2d_params,
    conv_output,
    conv_output_size,
    explain,
    linear_params,
    pool2d_output_shape,
    pool_output,
    pool_output_size,
    receptive_fields,
    resolve_padding,
    resolve_padding2d,
    same_padding,
)

# Same examples on every run, and no per-example deadline (the first torch call is slow).
DETERMINISTIC = settings(derandomize=True, max_examples=150, deadline=None)

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def test_docstring_examples():
    result = doctest.testmod(shapes)
    assert result.attempted > 10 and result.failed == 0


# --- the formula ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, kernel, stride, padding, expected, exact",
    [
        (5, 3, 1, 0, 3, True),  # the seed's n - f + 1
        (5, 3, 1, 1, 5, True),  # the seed's 'same': p = (k - 1)/2 keeps the size
        (32, 5, 1, 0, 28, True),  # LeNet-5 C1
        (227, 11, 4, 0, 55, True),  # AlexNet conv1, the paper's 227
        (224, 11, 4, 2, 55, False),  # torchvision's AlexNet conv1: 217/4, rounded down
        (224, 3, 1, 1, 224, True),  # every VGG convolution
        (224, 7, 2, 3, 112, False),  # ResNet's stem: 223/2, rounded down
    ],
)
def test_known_layers(size, kernel, stride, padding, expected, exact):
    result = conv_output(size, kernel, stride, padding)
    assert (result.size, result.exact) == (expected, exact)
    assert conv_output_size(size, kernel, stride, padding) == int(result) == expected
    assert (result.note == "") == exact


def test_lenient_mode_rounds_down_and_says_so():
    assert conv_output(224, 3, stride=2, padding=1) == OutputSize(
        112,
        exact=False,
        formula="OH = (224 + 2*1 - 3)/2 + 1 = 112.5",
        note="223 is not a multiple of 2: rounded down to 112, leaving 1 pixel at the end of the padded input uncovered",
    )


def test_explain_works_the_formula_through():
    assert explain(224, 3, stride=2, padding="same").splitlines() == [
        "H = 224, FH = 3, P = 'same' = (0, 1), S = 2",
        "OH = (H + P_before + P_after - FH)/S + 1",
        "   = (224 + 0 + 1 - 3)/2 + 1",
        "   = 222/2 + 1",
        "   = 112",
        "whole: the last window ends exactly at the end of the padded input",
    ]
    dilated = explain(10, 3, dilation=2).splitlines()
    assert dilated[1] == "FH = (K - 1)*D + 1 = (3 - 1)*2 + 1 = 5"
    assert dilated[-2] == "   = 6"


@DETERMINISTIC
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    kh=st.integers(1, 6),
    kw=st.integers(1, 6),
    sh=st.integers(1, 4),
    sw=st.integers(1, 4),
    ph=st.integers(0, 3),
    pw=st.integers(0, 3),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
)
def test_conv2d_output_shape_matches_torch(h, w, kh, kw, sh, sw, ph, pw, dh, dw):
    geometry = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
    try:
        expected = F.conv2d(torch.zeros(1, 1, h, w), torch.zeros(1, 1, kh, kw), **geometry).shape[2:]
    except RuntimeError:  # torch: kernel larger than the padded input
        with pytest.raises(ShapeError, match="too small"):
            conv2d_output_shape((h, w), (kh, kw), **geometry)
    else:
        assert conv2d_output_shape((h, w), (kh, kw), **geometry) == tuple(expected)


@DETERMINISTIC
@given(
    h=st.integers(1, 16),
    w=st.integers(1, 16),
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    top=st.integers(0, 3),
    bottom=st.integers(0, 3),
    left=st.integers(0, 3),
    right=st.integers(0, 3),
)
def test_per_side_padding_matches_explicit_pad(h, w, k, s, d, top, bottom, left, right):
    assume(h + top + bottom >= (k - 1) * d + 1 and w + left + right >= (k - 1) * d + 1)
    x = F.pad(torch.zeros(1, 1, h, w), (left, right, top, bottom))
    expected = F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, dilation=d).shape[2:]
    padding = ((top, bottom), (left, right))
    assert conv2d_output_shape((h, w), k, s, padding, d) == tuple(expected)
    assert resolve_padding2d(padding, (h, w), k, s, d) == padding


@DETERMINISTIC
@given(
    h=st.integers(1, 16),
    w=st.integers(1, 16),
    k=st.integers(1, 5),
    s=st.one_of(st.none(), st.integers(1, 4)),
    p=st.integers(0, 2),
    d=st.integers(1, 3),
    ceil_mode=st.booleans(),
)
def test_max_pool2d_output_shape_matches_torch(h, w, k, s, p, d, ceil_mode):
    assume(p <= k // 2)  # torch's limit, tested on its own below
    geometry = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
    try:
        expected = F.max_pool2d(torch.zeros(1, 1, h, w), k, **geometry).shape[2:]
    except RuntimeError:  # torch: "Output size is too small"
        with pytest.raises(ShapeError, match="too small"):
            pool2d_output_shape((h, w), k, **geometry)
    else:
        assert pool2d_output_shape((h, w), k, **geometry) == tuple(expected)


@DETERMINISTIC
@given(
    h=st.integers(1, 16),
    w=st.integers(1, 16),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    s=st.integers(1, 4),
    p=st.integers(0, 2),
    ceil_mode=st.booleans(),
)
def test_avg_pool2d_output_shape_matches_torch(h, w, kh, kw, s, p, ceil_mode):
    assume(p <= min(kh, kw) // 2)
    try:
        expected = F.avg_pool2d(torch.zeros(1, 1, h, w), (kh, kw), s, p, ceil_mode).shape[2:]
    except RuntimeError:
        with pytest.raises(ShapeError, match="too small"):
            pool2d_output_shape((h, w), (kh, kw), s, p, ceil_mode=ceil_mode)
    else:
        assert pool2d_output_shape((h, w), (kh, kw), s, p, ceil_mode=ceil_mode) == tuple(expected)


def test_ceil_mode_drops_a_last_window_that_starts_in_the_right_padding():
    # (5 + 2 - 2)/2 + 1 = 3.5: ceil gives 4, but window 4 would start at 6, in the right padding.
    expected = F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, padding=1, ceil_mode=True).shape[-1]
    result = pool_output(5, 2, 2, padding=1, ceil_mode=True)
    assert result.size == expected == 3
    assert "PyTorch drops it" in result.note
    # without the padding the last window starts inside the input and is kept: 3 windows, not 2
    assert pool_output_size(5, 2, 2, ceil_mode=True) == 3 == pool_output_size(5, 2, 2) + 1


def test_pool_stride_defaults_to_kernel():
    assert pool_output_size(224, 2) == 112 == pool_output_size(224, 2, 2)
    assert pool2d_output_shape((224, 224), 2) == (112, 112)


@pytest.mark.parametrize("kernel, padding, dilation", [(3, 2, 1), (2, 2, 3)])
def test_pool_padding_over_half_the_kernel_is_refused_as_by_torch(kernel, padding, dilation):
    # half the kernel size, not of its dilated span: 2 taps 3 apart span 4, yet padding 2 is refused
    with pytest.raises(RuntimeError, match="half of"):
        F.max_pool2d(torch.zeros(1, 1, 9, 9), kernel, 1, padding, dilation)
    with pytest.raises(ShapeError, match="more than half"):
        pool_output(9, kernel, 1, padding, dilation)


# --- the strict check and the input too small -------------------------------------------------

FIX = re.compile(r"(padding|stride) (?:\(before, after\) = )?(\(\d+, \d+\)|\d+) gives OH = (\d+)")


def test_strict_shows_the_formula_and_the_nearest_fixes():
    with pytest.raises(ShapeError) as error:
        conv_output_size(224, 3, stride=2, padding=1, strict=True)
    message = str(error.value)
    assert message.startswith("OH = (224 + 2*1 - 3)/2 + 1 = 112.5: not whole")
    # 221 + 2P is odd for every P: only an uneven padding, or stride 1, makes it whole
    assert FIX.findall(message) == [
        ("padding", "(0, 1)", "112"),
        ("padding", "(1, 2)", "113"),
        ("stride", "1", "224"),
    ]


def test_strict_names_the_axis_in_2d():
    with pytest.raises(ShapeError, match=r"^OW = \(15 \+ 2\*0 - 2\)/2 \+ 1 = 7.5: not whole"):
        conv2d_output_shape((16, 15), 2, stride=2, strict=True)


def _assert_fixes_are_nearest_and_work(message, size, kernel, stride, padding, dilation, output):
    fixes = FIX.findall(message)
    assert any(kind == "padding" for kind, _, _ in fixes)  # a bigger padding always works
    span = (kernel - 1) * dilation + 1
    for kind, value, claimed in fixes:
        value = ast.literal_eval(value)
        if kind == "padding":
            result = output(size, kernel, stride, value, dilation, strict=True)
            # no total padding between the given one and the fix would do
            total = sum(resolve_padding(value, size, kernel))
            between = range(min(total, 2 * padding) + 1, max(total, 2 * padding))
            assert all((size + t - span) % stride for t in between)
        else:
            result = output(size, kernel, value, padding, dilation, strict=True)
            between = range(min(value, stride) + 1, max(value, stride))
            assert all((size + 2 * padding - span) % s for s in between)
        assert result.exact and result.size == int(claimed)


@DETERMINISTIC
@given(
    size=st.integers(1, 64),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 5),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_strict_raises_exactly_when_not_whole_and_its_fixes_work(size, kernel, stride, padding, dilation):
    room = size + 2 * padding - (kernel - 1) * dilation - 1
    assume(room >= 0)  # smaller inputs are too small, tested below
    lenient = conv_output(size, kernel, stride, padding, dilation)
    if room % stride == 0:
        assert conv_output(size, kernel, stride, padding, dilation, strict=True) == lenient
        return
    with pytest.raises(ShapeError) as error:
        conv_output(size, kernel, stride, padding, dilation, strict=True)
    message = str(error.value)
    assert message.startswith(f"OH = ({size} + 2*{padding} - {(kernel - 1) * dilation + 1})/{stride} + 1 = ")
    shown = float(re.search(r"\+ 1 = ([\d.]+): not whole", message).group(1))
    assert shown == pytest.approx(room / stride + 1, abs=5e-4)
    assert f"without strict: OH = {lenient.size}" in message
    _assert_fixes_are_nearest_and_work(message, size, kernel, stride, padding, dilation, conv_output)


@DETERMINISTIC
@given(size=st.integers(1, 64), kernel=st.integers(2, 5), stride=st.integers(2, 4), padding=st.integers(0, 2))
def test_strict_pooling_fixes_respect_the_padding_limit(size, kernel, stride, padding):
    assume(padding <= kernel // 2 and size + 2 * padding >= kernel and (size + 2 * padding - kernel) % stride)
    with pytest.raises(ShapeError) as error:
        pool_output(size, kernel, stride, padding, strict=True)
    for kind, value, _ in FIX.findall(str(error.value)):
        if kind == "padding":  # would raise "more than half" otherwise
            assert pool_output(size, kernel, stride, ast.literal_eval(value), strict=True).exact


@pytest.mark.parametrize("strict", [False, True])
def test_an_input_too_small_always_raises(strict):
    with pytest.raises(ShapeError) as error:
        conv_output_size(2, 5, strict=strict)
    message = str(error.value)
    assert message.startswith("OH = (2 + 2*0 - 5)/1 + 1 = -2")
    assert "Input 2 is too small for kernel 5" in message
    with pytest.raises(ShapeError, match=r"Input 3 is too small for kernel 3 \(dilation 2: it spans 5\)"):
        conv_output(3, 3, dilation=2, strict=strict)
    with pytest.raises(ShapeError, match=r"^OW = .*Input 1 is too small for kernel 2"):
        pool2d_output_shape((4, 1), 2, strict=strict)


def test_bad_hyper_parameters_are_refused():
    with pytest.raises(ValueError, match="padding must be"):
        conv_output_size(8, 3, padding=-1)
    with pytest.raises(ValueError, match="padding must be"):
        conv_output_size(8, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
        conv_output_size(8, 0)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        conv2d_output_shape((8, 8), 3, stride=(1, 0))


# --- 'same' padding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [
        (224, 3, 1, (1, 1)),  # the seed's p = (k - 1)/2
        (224, 4, 1, (1, 2)),  # even kernel: the extra pixel after
        (224, 3, 2, (0, 1)),  # stride 2: 112 outputs need one pixel, put after
        (225, 3, 2, (1, 1)),
        (224, 7, 2, (2, 3)),  # Keras ResNet50's stem in TensorFlow
        (8, 1, 2, (0, 0)),  # a 1x1 kernel never needs padding
    ],
)
def test_same_padding_known_values(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    assert resolve_padding("same", size, kernel, stride) == expected
    assert conv_output_size(size, kernel, stride, "same") == math.ceil(size / stride)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch: even kernels pad a copy
@DETERMINISTIC
@given(h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 6), kw=st.integers(1, 6), d=st.integers(1, 3))
def test_same_padding_at_stride_1_is_pytorchs(h, w, kh, kw, d):
    x = torch.randn(1, 1, h, w, dtype=torch.float64)
    weight = torch.randn(1, 1, kh, kw, dtype=torch.float64)
    (top, bottom), (left, right) = resolve_padding2d("same", (h, w), (kh, kw), 1, d)
    ours = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, dilation=d)
    torch.testing.assert_close(ours, F.conv2d(x, weight, padding="same", dilation=d))
    assert conv2d_output_shape((h, w), (kh, kw), 1, "same", d) == (h, w)
    if kh % 2:
        assert top == bottom == (kh - 1) * d // 2  # odd kernels pad evenly


@DETERMINISTIC
@given(size=st.integers(1, 24), k=st.integers(1, 6), s=st.integers(2, 4), d=st.integers(1, 2))
def test_same_padding_at_larger_strides_is_tensorflows(size, k, s, d):
    # TensorFlow's documented rule, restated: ceil(n/s) outputs, the odd padding pixel after
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    assert same_padding(size, k, s, d) == (total // 2, total - total // 2)
    x = F.pad(torch.zeros(1, 1, size, size), (total // 2, total - total // 2) * 2)
    expected = F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, dilation=d).shape[2:]
    assert conv2d_output_shape((size, size), k, s, "same", d) == tuple(expected) == (out, out)


def test_valid_means_no_padding():
    assert resolve_padding("valid", 10, 3) == (0, 0)
    assert conv2d_output_shape((10, 12), 3, padding="valid") == (8, 10)
    # a 2-D pair holds one padding per axis: here 'same' for height, none for width
    assert conv2d_output_shape((10, 12), 3, padding=("same", 0)) == (10, 10)


# --- receptive field -------------------------------------------------------------------------


def _vgg16_layers():
    return [(2, 2) if v == "M" else (3, 1) for v in VGG16_CFG]


def test_stacked_3x3_convolutions_see_like_one_larger_kernel():
    assert [r.receptive_field for r in receptive_fields([(3, 1)] * 3)] == [3, 5, 7]
    assert receptive_fields([(3, 1), (3, 1)])[-1] == ReceptiveField(5, 1)


def test_vgg16_receptive_fields():
    fields = receptive_fields(_vgg16_layers())
    conv5_3, pool5 = fields[-2], fields[-1]
    assert conv5_3 == ReceptiveField(196, 16)
    assert pool5 == ReceptiveField(212, 32)  # 2**5: pool5's pixels are 32 input pixels apart
    assert [r.receptive_field for r in fields[:3]] == [3, 5, 6]  # conv1_1, conv1_2, pool1


def test_receptive_fields_read_pytorch_layers():
    layers = [nn.MaxPool2d(2) if v == "M" else nn.Conv2d(3, 3, 3, padding=1) for v in VGG16_CFG]
    assert receptive_fields(layers) == receptive_fields(_vgg16_layers())
    with pytest.raises(ValueError, match="one axis"):
        receptive_fields([nn.Conv2d(1, 1, (1, 7))])


def test_dilation_grows_the_receptive_field_exponentially():
    # Yu & Koltun 2016: 3x3 convolutions dilated 1, 2, 4, ... see 3, 7, 15, ... = 2**(i+2) - 1 pixels
    layers = [Layer(3, dilation=2**i) for i in range(5)]
    assert [r.receptive_field for r in receptive_fields(layers)] == [2 ** (i + 2) - 1 for i in range(5)]
    assert receptive_fields([(3, 1, 2)]) == [ReceptiveField(5, 1)]


# --- parameter count -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cin, cout, kernel, bias, groups",
    [
        (3, 64, 3, True, 1),
        (6, 16, 5, True, 1),
        (64, 64, 3, False, 1),
        (32, 32, 3, True, 32),  # depthwise
        (8, 12, (1, 7), True, 4),  # grouped, rectangular kernel (Inception v3's 1x7)
    ],
)
def test_conv2d_params_match_pytorch(cin, cout, kernel, bias, groups):
    layer = nn.Conv2d(cin, cout, kernel, bias=bias, groups=groups, device="meta")
    assert conv2d_params(cin, cout, kernel, bias, groups) == sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_batchnorm_params_match_pytorch(bias):
    fc = nn.Linear(120, 84, bias, device="meta")
    assert linear_params(120, 84, bias) == sum(p.numel() for p in fc.parameters())
    for affine in (True, False):
        bn = nn.BatchNorm2d(64, affine=affine, device="meta")
        assert batchnorm_params(64, affine) == sum(p.numel() for p in bn.parameters())


def test_vgg16_params_from_its_hyper_parameters():
    assert conv2d_params(3, 64, 3) == 1792  # block1_conv1
    assert linear_params(512 * 7 * 7, 4096) == 102_764_544  # fc1
    channels = [3] + [v for v in VGG16_CFG if v != "M"]
    convs = sum(conv2d_params(cin, cout, 3) for cin, cout in zip(channels, channels[1:]))
    fcs = linear_params(512 * 7 * 7, 4096) + linear_params(4096, 4096) + linear_params(4096, 1000)
    assert convs + fcs == 138_357_544  # torchvision's and Keras' VGG16


def test_groups_must_divide_the_channels():
    with pytest.raises(ValueError, match="groups=3"):
        conv2d_params(4, 6, 3, groups=3)
