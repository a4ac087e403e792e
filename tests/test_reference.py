"""cnnzoo.reference: the filter operation worked by hand, and equal to torch.nn.functional."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnzoo import reference
from cnnzoo.errors import ShapeError
from cnnzoo.shapes import resolve_padding2d

# Same examples on every run; no per-example deadline (the first torch call is slow).
DETERMINISTIC = settings(derandomize=True, max_examples=80, deadline=None)


def image(rows):
    """A hand-written 2-D array as a 1 x 1 x H x W batch."""
    return np.array(rows, dtype=np.float64)[None, None]


def assert_matches_torch(ours, theirs):
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-10)


# --- by hand ----------------------------------------------------------------------------------

X = image(
    [
        [1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 0],
        [0, 1, 1, 0, 0],
    ]
)
W = image(
    [
        [1, 0, 1],
        [0, 1, 0],
        [1, 0, 1],
    ]
)


def test_the_classic_5x5_example_by_hand():
    # Top-left: the filter's 1s fall on x[0,0], x[0,2], x[1,1], x[2,0], x[2,2] = 1 + 1 + 1 + 0 + 1 = 4.
    # One step right they fall on x[0,1], x[0,3], x[1,2], x[2,1], x[2,3] = 1 + 0 + 1 + 0 + 1 = 3.
    # (5 - 3)/1 + 1 = 3 positions each way: a 3x3 feature map.
    expected = [
        [4, 3, 4],
        [2, 4, 3],
        [2, 3, 4],
    ]
    np.testing.assert_array_equal(reference.conv2d(X, W)[0, 0], expected)


def test_stride_2_keeps_every_other_position():
    # (5 - 3)/2 + 1 = 2: the windows at rows and columns 0 and 2 of the stride-1 map
    np.testing.assert_array_equal(reference.conv2d(X, W, stride=2), reference.conv2d(X, W)[..., ::2, ::2])


def test_padding_1_keeps_the_size_and_the_corner_sees_zeros():
    out = reference.conv2d(X, W, padding=1)[0, 0]
    assert out.shape == (5, 5)  # (5 + 2*1 - 3)/1 + 1 = 5
    # centred on x[0,0], only the filter's centre and bottom-right 1s land inside: x[0,0] + x[1,1] = 2
    assert out[0, 0] == 2
    np.testing.assert_array_equal(out[1:-1, 1:-1], reference.conv2d(X, W)[0, 0])


def test_bias_is_added_once_per_output_element():
    # 4x4 input, 3x3 filter, bias 3: 2x2 sums 15 16 / 6 15, plus 3
    x = image([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]])
    w = image([[2, 0, 1], [0, 1, 2], [1, 0, 2]])
    np.testing.assert_array_equal(reference.conv2d(x, w, np.array([3.0]))[0, 0], [[18, 19], [9, 18]])


def test_pooling_by_hand():
    x = image([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]])
    np.testing.assert_array_equal(reference.max_pool2d(x, 2)[0, 0], [[6, 8], [3, 4]])
    np.testing.assert_array_equal(reference.avg_pool2d(x, 2)[0, 0], [[3.25, 5.25], [2, 2]])
    # 3x3 windows, stride 2, padding 1: the corner window covers x[0:2, 0:2] and 5 padding zeros
    assert reference.avg_pool2d(x, 3, 2, padding=1)[0, 0, 0, 0] == (1 + 1 + 5 + 6) / 9
    assert reference.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)[0, 0, 0, 0] == (1 + 1 + 5 + 6) / 4


# --- against torch ----------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    """Random conv2d arguments whose padded input is at least as large as the dilated kernel."""
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = max(1, (kh - 1) * dh + 1 - 2 * ph) + draw(st.integers(0, 6))
    w = max(1, (kw - 1) * dw + 1 - 2 * pw) + draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return dict(
        x=rng.standard_normal((draw(st.integers(1, 2)), cin, h, w)),
        weight=rng.standard_normal((cout, cin // groups, kh, kw)),
        bias=rng.standard_normal(cout) if draw(st.booleans()) else None,
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=(ph, pw),
        dilation=(dh, dw),
        groups=groups,
    )


@DETERMINISTIC
@given(conv_cases())
def test_conv2d_matches_torch(case):
    x, weight = torch.from_numpy(case["x"]), torch.from_numpy(case["weight"])
    bias = None if case["bias"] is None else torch.from_numpy(case["bias"])
    theirs = F.conv2d(x, weight, bias, case["stride"], case["padding"], case["dilation"], case["groups"])
    assert_matches_torch(reference.conv2d(**case), theirs)


@DETERMINISTIC
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    sides=st.tuples(*[st.integers(0, 3)] * 4),
    same=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_uneven_and_same_padding_match_explicit_pad(h, w, k, s, sides, same, seed):
    top, bottom, left, right = sides
    padding = "same" if same else ((top, bottom), (left, right))
    if same:  # TensorFlow's 'same', any stride: cnnzoo.shapes says how much goes where
        (top, bottom), (left, right) = resolve_padding2d("same", (h, w), k, s)
    if h + top + bottom < k or w + left + right < k:
        with pytest.raises(ShapeError, match="too small"):
            reference.conv2d(np.zeros((1, 1, h, w)), np.zeros((1, 1, k, k)), stride=s, padding=padding)
        return
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal((1, 2, h, w)), rng.standard_normal((3, 2, k, k))
    theirs = F.conv2d(F.pad(torch.from_numpy(x), (left, right, top, bottom)), torch.from_numpy(weight), stride=s)
    assert_matches_torch(reference.conv2d(x, weight, stride=s, padding=padding), theirs)


@st.composite
def pool_cases(draw):
    """Random pooling arguments torch accepts (padding at most half the kernel)."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h, w = kh + draw(st.integers(0, 6)), kw + draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w))
    return dict(x=x, kernel_size=(kh, kw), stride=stride, padding=padding, ceil_mode=draw(st.booleans()))


@DETERMINISTIC
@given(pool_cases())
def test_max_pool2d_matches_torch(case):
    x = torch.from_numpy(case["x"])
    theirs = F.max_pool2d(x, case["kernel_size"], case["stride"], case["padding"], ceil_mode=case["ceil_mode"])
    assert_matches_torch(reference.max_pool2d(**case), theirs)


@DETERMINISTIC
@given(pool_cases(), st.booleans())
def test_avg_pool2d_matches_torch(case, count_include_pad):
    x = torch.from_numpy(case["x"])
    theirs = F.avg_pool2d(x, case["kernel_size"], case["stride"], case["padding"], case["ceil_mode"], count_include_pad)
    assert_matches_torch(reference.avg_pool2d(**case, count_include_pad=count_include_pad), theirs)


def test_float32_matches_torch_to_1e_5():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 12, 12), dtype=np.float32)
    weight = rng.standard_normal((8, 2, 3, 3), dtype=np.float32)
    ours = reference.conv2d(x, weight, stride=2, padding=1, dilation=2, groups=2)
    assert ours.dtype == np.float32
    theirs = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), None, 2, 1, 2, 2)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-5)


def test_mismatched_channels_are_refused():
    with pytest.raises(ValueError, match="needs 4 input channels"):
        reference.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="NCHW"):
        reference.max_pool2d(np.zeros((5, 5)), 2)
