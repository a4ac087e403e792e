"""Convolution arithmetic: output sizes, 'same' padding, receptive fields, parameter counts.

A filter of FH pixels slides S pixels at a time over an input of H pixels padded with P pixels on
each side. Its first position starts at pixel 0 and its last must end inside the padded input, so
it fits

    OH = (H + 2P - FH)/S + 1

times. The division must come out whole. When it does not, the filter cannot reach the end of the
padded input and the last pixels are never looked at; frameworks then round down without a word
(or up, with ``ceil_mode``). Here the lenient functions round as the frameworks do but say so
(:class:`OutputSize`), and ``strict=True`` refuses and proposes the nearest padding or stride that
makes the division whole.

Two generalisations, both PyTorch's:

* a kernel of K taps with dilation D (taps D pixels apart) spans FH = (K - 1)*D + 1 pixels;
* the padding may differ before and after: 2P becomes P_before + P_after ('same' needs that).

The arithmetic is the same along each axis. The 1-D functions (``conv_output_size`` ...) do one
axis; the 2-D ones (``conv2d_output_shape`` ...) take an int (both axes) or a (height, width) pair.
Padding along one axis is an int (both sides), a (before, after) pair, 'valid' or 'same'; in 2-D,
one of these for both axes or a (height, width) pair of them. So ``padding=(1, 2)`` pads 1 above
and below, 2 left and right, as in PyTorch, and ``padding=((0, 1), (0, 1))`` only bottom and right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from .errors import ShapeError

IntPair = int | tuple[int, int]
# Along one axis: p on both sides, a (before, after) pair, 'valid' (no padding) or 'same'.
Padding = int | tuple[int, int] | str
# In 2-D: one Padding for both axes, or a (height, width) pair of them.
Padding2d = Padding | tuple[Padding, Padding]

__all__ = [
    "Layer",
    "OutputSize",
    "ReceptiveField",
    "batchnorm_params",
    "conv2d_output_shape",
    "conv2d_params",
    "conv_output",
    "conv_output_size",
    "explain",
    "linear_params",
    "pool2d_output_shape",
    "pool_output",
    "pool_output_size",
    "receptive_fields",
    "resolve_padding",
    "resolve_padding2d",
    "same_padding",
]


@dataclass(frozen=True)
class OutputSize:
    """An output size and how it came about.

    ``size`` is what the frameworks produce; ``exact`` says whether the division was whole;
    ``formula`` is the formula with the numbers, e.g. ``OH = (224 + 2*1 - 3)/2 + 1 = 112.5``;
    ``note`` says how a fraction was rounded (empty when ``exact``).
    """

    size: int
    exact: bool
    formula: str
    note: str = ""

    def __int__(self) -> int:
        return self.size


# --- padding ----------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """The (before, after) padding of ``padding='same'`` along one axis.

    With stride 1, 'same' means the output is as large as the input: the kernel's span minus one,
    (kernel - 1)*dilation pixels, is padded in total, (k - 1)/2 on each side for an odd kernel.

    With stride > 1 the output cannot be as large as the input. 'same' then means TensorFlow's rule:
    the output has ceil(size/stride) positions, as if computed at stride 1 and subsampled, and the
    total padding is just enough for the last window to fit, max((out - 1)*stride + span - size, 0).
    It depends on the input size. PyTorch's ``padding='same'`` refuses stride > 1.

    When the total is odd the extra pixel goes after (bottom/right), as in TensorFlow and in
    PyTorch's stride-1 'same'.

    >>> same_padding(224, 3)         # the seed's p = (k - 1)/2
    (1, 1)
    >>> same_padding(224, 4)         # even kernel: the extra pixel at the end
    (1, 2)
    >>> same_padding(224, 7, 2)      # ResNet's 7x7/2 stem in TensorFlow: 112 outputs
    (2, 3)
    """
    _check_geometry(size=size, kernel=kernel, stride=stride, dilation=dilation)
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + _span(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def resolve_padding(
    padding: Padding, size: int, kernel_size: int, stride: int = 1, dilation: int = 1
) -> tuple[int, int]:
    """The (before, after) padding along one axis, from an int, a pair, 'valid' or 'same'."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return same_padding(size, kernel_size, stride, dilation)
    before, after = padding if isinstance(padding, (tuple, list)) and len(padding) == 2 else (padding, padding)
    if not all(isinstance(p, int) and p >= 0 for p in (before, after)):
        raise ValueError(
            f"padding must be a non-negative int, a (before, after) pair, 'valid' or 'same'; got {padding!r}"
        )
    return before, after


def resolve_padding2d(
    padding: Padding2d,
    input_size: tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair = 1,
    dilation: IntPair = 1,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The padding ((top, bottom), (left, right)) of a 2-D layer, from any form :data:`Padding2d` allows."""
    axes = zip(_padding_per_axis(padding), _pair(input_size), _pair(kernel_size), _pair(stride), _pair(dilation))
    (top, bottom), (left, right) = (resolve_padding(*axis) for axis in axes)
    return (top, bottom), (left, right)


# --- output size -------------------------------------------------------------------------------


def conv_output(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: Padding = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
    strict: bool = False,
) -> OutputSize:
    """Output size of a convolution along one axis, with the formula and a note on rounding.

    Lenient (default): a fraction is rounded down, or up with ``ceil_mode`` (PyTorch's rule for
    pooling, see :func:`pool_output`), as the frameworks do, and ``note`` says so.
    ``strict=True``: a fraction raises :class:`ShapeError` with the nearest fixes.
    An output below 1 always raises :class:`ShapeError`: the input is too small.

    >>> result = conv_output(224, 3, stride=2, padding=1)
    >>> result.size, result.exact
    (112, False)
    >>> result.formula
    'OH = (224 + 2*1 - 3)/2 + 1 = 112.5'
    >>> result.note
    '223 is not a multiple of 2: rounded down to 112, leaving 1 pixel at the end of the padded input uncovered'
    """
    return _output(size, kernel_size, stride, padding, dilation, ceil_mode, strict)


def conv_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: Padding = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
    strict: bool = False,
) -> int:
    """Output size of a convolution along one axis; :func:`conv_output` without the explanation.

    >>> conv_output_size(32, 5)                        # LeNet-5's first convolution
    28
    >>> conv_output_size(227, 11, stride=4)            # AlexNet's first convolution
    55
    """
    return _output(size, kernel_size, stride, padding, dilation, ceil_mode, strict).size


def pool_output(
    size: int,
    kernel_size: int,
    stride: int | None = None,
    padding: Padding = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
    strict: bool = False,
) -> OutputSize:
    """Output size of a pooling layer along one axis: the convolution formula, stride = kernel by default.

    ``ceil_mode`` rounds up, so that a last, partial window covers the end of the input; but PyTorch
    drops that window when it would start in the right padding (it would see only padding).

    As in PyTorch, the padding may be at most half the kernel size: with more, a window could
    see nothing but padding.
    """
    return _pool_output(size, kernel_size, stride, padding, dilation, ceil_mode, strict)


def pool_output_size(
    size: int,
    kernel_size: int,
    stride: int | None = None,
    padding: Padding = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
    strict: bool = False,
) -> int:
    """Output size of a pooling layer along one axis; :func:`pool_output` without the explanation.

    >>> pool_output_size(224, 2)                       # VGG's 2x2/2 max pooling halves the size
    112
    >>> pool_output_size(55, 3, stride=2)              # AlexNet's overlapping 3x3/2 pooling
    27
    """
    return pool_output(size, kernel_size, stride, padding, dilation, ceil_mode, strict).size


def conv2d_output_shape(
    input_size: tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding2d = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    strict: bool = False,
) -> tuple[int, int]:
    """Output (OH, OW) of a 2-D convolution on an (H, W) input; ints apply to both axes.

    >>> conv2d_output_shape((224, 224), 7, stride=2, padding=3)   # ResNet's stem
    (112, 112)
    """
    h, w = input_size
    pads = _padding_per_axis(padding)
    ks, ss, ds = _pair(kernel_size), _pair(stride), _pair(dilation)
    oh, ow = (
        _output(n, k, s, p, d, ceil_mode, strict, name).size
        for n, k, s, p, d, name in zip((h, w), ks, ss, pads, ds, ("OH", "OW"))
    )
    return oh, ow


def pool2d_output_shape(
    input_size: tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding2d = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    strict: bool = False,
) -> tuple[int, int]:
    """Output (OH, OW) of a 2-D pooling layer on an (H, W) input; stride = kernel by default."""
    h, w = input_size
    stride = kernel_size if stride is None else stride
    pads = _padding_per_axis(padding)
    ks, ss, ds = _pair(kernel_size), _pair(stride), _pair(dilation)
    oh, ow = (
        _pool_output(n, k, s, p, d, ceil_mode, strict, name).size
        for n, k, s, p, d, name in zip((h, w), ks, ss, pads, ds, ("OH", "OW"))
    )
    return oh, ow


def explain(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: Padding = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> str:
    """The output-size formula worked through with the numbers, one step a line.

    The stride defaults to 1, as for a convolution; for pooling, pass it.

    >>> print(explain(224, 3, stride=2, padding=1))
    H = 224, FH = 3, P = 1, S = 2
    OH = (H + 2P - FH)/S + 1
       = (224 + 2*1 - 3)/2 + 1
       = 223/2 + 1
       = 112.5
    223 is not a multiple of 2: rounded down to 112, leaving 1 pixel at the end of the padded input uncovered
    """
    result = _output(size, kernel_size, stride, padding, dilation, ceil_mode, strict=False)
    before, after = resolve_padding(padding, size, kernel_size, stride, dilation)
    span = _span(kernel_size, dilation)
    room = size + before + after - span
    p = _pad_text(before, after)
    if isinstance(padding, str):
        p = f"'{padding}' = {p}"
    lines = []
    if dilation == 1:
        lines.append(f"H = {size}, FH = {kernel_size}, P = {p}, S = {stride}")
    else:
        lines.append(f"H = {size}, K = {kernel_size}, D = {dilation}, P = {p}, S = {stride}")
        lines.append(f"FH = (K - 1)*D + 1 = ({kernel_size} - 1)*{dilation} + 1 = {span}")
    lines.append("OH = (H + 2P - FH)/S + 1" if before == after else "OH = (H + P_before + P_after - FH)/S + 1")
    lines.append(f"   = {_fraction(size, before, after, span, stride)}")
    lines.append(f"   = {room}/{stride} + 1")
    lines.append(f"   = {_number(Fraction(room, stride) + 1)}")
    lines.append(result.note or "whole: the last window ends exactly at the end of the padded input")
    return "\n".join(lines)


def _output(
    size: int,
    kernel_size: int,
    stride: int,
    padding: Padding,
    dilation: int,
    ceil_mode: bool,
    strict: bool,
    name: str = "OH",
    max_pad: int | None = None,
) -> OutputSize:
    """The one place the output-size arithmetic is done; every public function comes here."""
    _check_geometry(size=size, kernel_size=kernel_size, stride=stride, dilation=dilation)
    before, after = resolve_padding(padding, size, kernel_size, stride, dilation)
    span = _span(kernel_size, dilation)
    room = size + before + after - span  # how far the window moves after its first position
    rem = room % stride
    formula = f"{name} = {_fraction(size, before, after, span, stride)} = {_number(Fraction(room, stride) + 1)}"

    dropped = False
    if ceil_mode:
        out = -(-room // stride) + 1  # ceil(room / stride) + 1
        # PyTorch's rule (aten pooling_output_shape): the last window must start inside the input
        # or the left padding; one starting in the right padding would see only padding.
        if (out - 1) * stride >= size + before:
            out, dropped = out - 1, True
    else:
        out = room // stride + 1

    if out < 1:
        raise ShapeError(
            f"{formula}: the output would be {out}. Input {size} is too small for kernel {kernel_size}"
            + (f" (dilation {dilation}: it spans {span})" if dilation > 1 else "")
            + f" with padding {_pad_text(before, after)}: the padded input ({size + before + after}) must be"
            f" at least as large as the kernel's span ({span})."
            " Use a larger input, more padding or a smaller kernel."
        )
    if strict and rem:
        fixes = _fixes(size, span, stride, before, after, name, max_pad)
        raise ShapeError(
            f"{formula}: not whole, the stride {stride} does not divide {room} (without strict: {name} = {out})."
            + (f" Nearest fixes: {'; '.join(fixes)}." if fixes else "")
        )

    note = ""
    if rem and not ceil_mode:
        note = (
            f"{room} is not a multiple of {stride}: rounded down to {out}, "
            f"leaving {_pixels(rem)} at the end of the padded input uncovered"
        )
    elif rem and not dropped:
        note = (
            f"{room} is not a multiple of {stride}: rounded up to {out} (ceil_mode), "
            f"the last window reaching {_pixels(stride - rem)} past the padded input"
        )
    elif dropped:
        note = (
            f"ceil_mode gives {out + 1}, but the last window would start in the right padding "
            f"and PyTorch drops it: {out}"
        )
    return OutputSize(out, rem == 0, formula, note)


def _pool_output(
    size: int,
    kernel_size: int,
    stride: int | None,
    padding: Padding,
    dilation: int,
    ceil_mode: bool,
    strict: bool,
    name: str = "OH",
) -> OutputSize:
    """:func:`_output` for pooling: the stride defaults to the kernel, the padding is limited."""
    stride = kernel_size if stride is None else stride
    before, after = resolve_padding(padding, size, kernel_size, stride, dilation)
    half = kernel_size // 2  # PyTorch's limit (aten pool2d_shape_check), of the undilated kernel
    if max(before, after) > half:
        raise ShapeError(
            f"pooling padding {_pad_text(before, after)} is more than half the kernel size ({kernel_size}):"
            f" a window could see only padding, and PyTorch refuses it. Use padding <= {half}."
        )
    return _output(size, kernel_size, stride, (before, after), dilation, ceil_mode, strict, name, max_pad=half)


def _fixes(size: int, span: int, stride: int, before: int, after: int, name: str, max_pad: int | None) -> list[str]:
    """The nearest paddings, then strides, that make (size + padding - span)/stride whole."""
    total = before + after
    room = size + total - span
    rem = room % stride
    fixes = []
    # Padding: the nearest totals below and above that the stride divides, the odd pixel after.
    for new_total in (total - rem, total + stride - rem):
        new_room = room - total + new_total
        pad = (new_total // 2, new_total - new_total // 2)
        if new_total < 0 or new_room < 0 or (max_pad is not None and pad[1] > max_pad):
            continue
        text = f"padding {pad[0]}" if pad[0] == pad[1] else f"padding (before, after) = {pad}"
        fixes.append(f"{text} gives {name} = {new_room // stride + 1}")
    # Stride: the nearest divisors of room below and above. Above, stop at the kernel's span: a
    # stride longer than the window skips pixels between windows, the very fault being fixed.
    if room > 0:
        below = next(s for s in range(stride - 1, 0, -1) if room % s == 0)  # 1 always divides
        above = next((s for s in range(stride + 1, span + 1) if room % s == 0), None)
        fixes += [f"stride {s} gives {name} = {room // s + 1}" for s in (below, above) if s]
    return fixes


# --- receptive field -------------------------------------------------------------------------


class Layer(NamedTuple):
    """The geometry of one sliding-window layer (convolution or pooling) along one axis."""

    kernel_size: int
    stride: int = 1
    dilation: int = 1


class ReceptiveField(NamedTuple):
    """What one output pixel of a layer sees of the network's input."""

    receptive_field: int  # input pixels one output pixel depends on, along one axis
    jump: int  # input pixels between two neighbouring output pixels


def receptive_fields(layers: Iterable[Layer | tuple[int, ...] | Any]) -> list[ReceptiveField]:
    """Receptive field and jump after each layer of a chain, along one axis.

    ``layers`` holds (kernel, stride[, dilation]) tuples, :class:`Layer` s, or modules with
    ``kernel_size`` and ``stride`` attributes such as ``nn.Conv2d`` and ``nn.MaxPool2d`` (square).

    An output pixel of a layer combines k taps of the layer below, d taps apart; neighbouring pixels
    of the layer below are j_in input pixels apart, so each layer widens the view by (k - 1)*d*j_in:

        r_out = r_in + (k - 1)*d*j_in,    j_out = j_in*s,    from r = 1, j = 1 (one input pixel).

    Padding shifts where the view lies, not its size, and plays no part.

    >>> [r.receptive_field for r in receptive_fields([(3, 1), (3, 1), (3, 1)])]
    [3, 5, 7]
    """
    r, j = 1, 1
    fields = []
    for layer in layers:
        k, s, d = _as_layer(layer)
        _check_geometry(kernel_size=k, stride=s, dilation=d)
        r, j = r + (k - 1) * d * j, j * s
        fields.append(ReceptiveField(r, j))
    return fields


def _as_layer(layer: Layer | tuple[int, ...] | Any) -> Layer:
    if isinstance(layer, (tuple, list)):
        return Layer(*layer)
    if hasattr(layer, "kernel_size") and hasattr(layer, "stride"):
        return Layer(_square(layer.kernel_size), _square(layer.stride), _square(getattr(layer, "dilation", 1)))
    raise TypeError(
        f"expected a (kernel, stride[, dilation]) tuple or a layer with kernel_size and stride, got {layer!r}"
    )


def _square(v: IntPair) -> int:
    a, b = _pair(v)
    if a != b:
        raise ValueError(
            f"receptive_fields works along one axis; give (kernel, stride) tuples for a non-square layer, got {v!r}"
        )
    return a


# --- parameter count -------------------------------------------------------------------------


def conv2d_params(in_channels: int, out_channels: int, kernel_size: IntPair, bias: bool = True, groups: int = 1) -> int:
    """Learned parameters of ``nn.Conv2d``: out_channels filters of (in_channels/groups) x KH x KW, plus biases.

    >>> conv2d_params(3, 64, 3)              # VGG16's block1_conv1: 64*3*3*3 + 64
    1792
    """
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
    kh, kw = _pair(kernel_size)
    return out_channels * (in_channels // groups) * kh * kw + (out_channels if bias else 0)


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Learned parameters of ``nn.Linear``: an out x in weight matrix, plus biases.

    >>> linear_params(512 * 7 * 7, 4096)     # VGG16's fc1
    102764544
    """
    return out_features * in_features + (out_features if bias else 0)


def batchnorm_params(num_features: int, affine: bool = True) -> int:
    """Learned parameters of ``nn.BatchNorm2d``: a scale and a shift per channel when ``affine``.

    The running mean and variance are buffers, not parameters, in PyTorch; Keras counts them as
    non-trainable parameters (4 per channel in all), see ``cnnzoo.counting``.
    """
    return 2 * num_features if affine else 0


# --- helpers ---------------------------------------------------------------------------------


def _span(kernel_size: int, dilation: int) -> int:
    return (kernel_size - 1) * dilation + 1


def _pair(v: Any) -> tuple[Any, Any]:
    return (v[0], v[1]) if isinstance(v, (tuple, list)) else (v, v)


def _padding_per_axis(padding: Padding2d) -> tuple[Padding, Padding]:
    # An int or a string applies to both axes; a pair holds one Padding for height, one for width.
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return padding[0], padding[1]
    return padding, padding


def _check_geometry(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _fraction(size: int, before: int, after: int, span: int, stride: int) -> str:
    padding = f"2*{before}" if before == after else f"{before} + {after}"
    return f"({size} + {padding} - {span})/{stride} + 1"


def _pad_text(before: int, after: int) -> str:
    return str(before) if before == after else f"({before}, {after})"


def _number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.3f}".rstrip("0")


def _pixels(n: int) -> str:
    return "1 pixel" if n == 1 else f"{n} pixels"
