"""The filter operation in plain NumPy: a slow, readable oracle for the PyTorch layers.

A convolution slides a small array of weights, the filter, over the input. At each position it
multiplies the filter with the input elements under it, element by element, sums the products
(over all input channels too) and writes the sum, plus a bias, to one element of the output, the
feature map. Then it slides S pixels on and does it again. The code below does exactly that, one
output position at a time; only the batch and the filters are handled at once, by ``np.einsum``.

Pooling slides a window the same way but has no weights: it writes the max, or the mean, of what
the window sees.

Arrays are NCHW (batch, channels, height, width), weights OIHW (out, in, height, width), as in
PyTorch. Output sizes and padding come from :mod:`cnnzoo.shapes`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .shapes import IntPair, Padding2d, conv2d_output_shape, pool2d_output_shape, resolve_padding2d

__all__ = ["avg_pool2d", "conv2d", "max_pool2d"]


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntPair = 1,
    padding: Padding2d = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """2-D convolution of NCHW ``x`` with OIHW ``weight``, as ``torch.nn.functional.conv2d``.

    Like every deep learning framework it does not flip the filter (strictly, a cross-correlation).
    ``padding`` also takes per-side pairs, ((top, bottom), (left, right)), and 'same' with stride > 1
    (TensorFlow's rule, see :func:`cnnzoo.shapes.same_padding`).

    Worked through for one 5x5 image and one 3x3 filter, stride 1, no padding::

        x = 1 1 1 0 0    w = 1 0 1    filter on the top-left corner of x: multiply and sum
            0 1 1 1 0        0 1 0        1*1 + 1*0 + 1*1
            0 0 1 1 1        1 0 1      + 0*0 + 1*1 + 1*0
            0 0 1 1 0                   + 0*1 + 0*0 + 1*1  = 4
            0 1 1 0 0                   slide right: 3, again: 4; one row down, and so on:
                                        (5 - 3)/1 + 1 = 3 positions a side, feature map
                                        4 3 4 / 2 4 3 / 2 3 4

    With C input channels a filter is C x KH x KW and the sum runs over the channels too; O filters
    make O output channels. With ``groups`` the channels split into groups that do not see each
    other: a filter sums over the C/groups input channels of its own group only.
    """
    x, weight = np.asarray(x), np.asarray(weight)
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d needs NCHW x and OIHW weight, got shapes {x.shape} and {weight.shape}")
    n, c, h, w = x.shape
    o, c_per_group, kh, kw = weight.shape
    if c != c_per_group * groups or o % groups:
        raise ValueError(
            f"weight {weight.shape} with groups={groups} needs {c_per_group * groups} input channels "
            f"and out_channels divisible by {groups}; x has {c} channels"
        )
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    oh, ow = conv2d_output_shape((h, w), (kh, kw), stride, padding, dilation)
    (top, bottom), (left, right) = resolve_padding2d(padding, (h, w), (kh, kw), stride, dilation)
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    # Split channels and filters by group: group g's filters meet only group g's channels.
    x = x.reshape(n, groups, c // groups, *x.shape[2:])
    weight = weight.reshape(groups, o // groups, c_per_group, kh, kw)
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1  # a dilated filter's taps are d apart

    out = np.zeros((n, o, oh, ow), dtype=np.result_type(x, weight))
    for i in range(oh):
        for j in range(ow):
            # the input elements under the filter at output position (i, j)
            patch = x[..., i * sh : i * sh + span_h : dh, j * sw : j * sw + span_w : dw]
            # multiply matching elements and sum them over channels (c) and the window (h, w),
            # for every image (n) and every filter (o) of every group (g)
            out[:, :, i, j] = np.einsum("ngchw,gochw->ngo", patch, weight).reshape(n, o)
    if bias is not None:
        out += np.asarray(bias).reshape(1, o, 1, 1)
    return out


def max_pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding2d = 0,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Max pooling of NCHW float ``x``, as ``torch.nn.functional.max_pool2d``.

    The padding is -inf, so that it never wins the max: padding only lets windows sit over the edge.
    """
    return _pool2d(x, kernel_size, stride, padding, ceil_mode, -np.inf, np.max)


def avg_pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding2d = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Average pooling of NCHW float ``x``, as ``torch.nn.functional.avg_pool2d``.

    Each window's sum is divided by the number of elements it covers: the padding's zeros included
    (``count_include_pad=True``) or only the input's. Either way, the part of a ``ceil_mode`` window
    that hangs past the padded input does not count.
    """
    x = np.asarray(x)
    sums = _pool2d(x, kernel_size, stride, padding, ceil_mode, 0.0, np.sum)
    # Count the elements by pooling ones the same way, the padding counting as 1 or as 0.
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    counts = _pool2d(ones, kernel_size, stride, padding, ceil_mode, float(count_include_pad), np.sum)
    return sums / counts


def _pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: Padding2d,
    ceil_mode: bool,
    pad_value: float,
    reduce: Callable[..., np.ndarray],
) -> np.ndarray:
    """Slide a KH x KW window over ``x`` padded with ``pad_value`` and ``reduce`` what it sees."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"pooling needs an NCHW array, got shape {x.shape}")
    stride = kernel_size if stride is None else stride
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
    oh, ow = pool2d_output_shape(x.shape[2:], kernel_size, stride, padding, ceil_mode=ceil_mode)
    (top, bottom), (left, right) = resolve_padding2d(padding, x.shape[2:], kernel_size, stride)
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)

    out = np.empty((*x.shape[:2], oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            # With ceil_mode the last window may hang past the padded input; the slice stops at its edge.
            window = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            out[:, :, i, j] = reduce(window, axis=(2, 3))
    return out


def _pair(v: IntPair) -> tuple[int, int]:
    return (v[0], v[1]) if isinstance(v, (tuple, list)) else (v, v)
