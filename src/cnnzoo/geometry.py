"""What one layer does to height and width, worked out before it runs: the :class:`Step` of each layer.

The trace engine (:mod:`cnnzoo.trace`) asks this room, for every layer call, what the layer will do
to the spatial size of its input, and checks the answer against what PyTorch then produces. The
arithmetic itself is :mod:`cnnzoo.shapes`' (``conv_output``, ``pool_output``, ``same_padding``,
``receptive_fields``); this room knows which PyTorch module or functional op is which window:

* :func:`module_step` for a leaf module (``Conv2d``, ``MaxPool2d``, padding, adaptive pooling, the
  zoo's ``SamePad2d``, ``GlobalAvgPool2d`` and ``ShortcutA``);
* :func:`function_step` for a tensor operation written in a ``forward`` (``F.max_pool2d``,
  ``torch.flatten``, ``x.mean((2, 3))``, ``x[..., ::2, ::2]`` ...), named by :func:`op_name`;
* :func:`grow` for the receptive field after one more window.

A window's receptive field grows by :func:`~cnnzoo.shapes.receptive_fields`. Adaptive pooling with
uneven bins is counted with its widest bin. A fully connected layer after a flatten combines every
position of the flattened map (:attr:`Step.collapse`), so its field grows by that map's extent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import ShapeError
from .layers import GlobalAvgPool2d, SamePad2d, ShortcutA
from .shapes import Layer, ReceptiveField, conv_output, pool_output, receptive_fields, same_padding

__all__ = ["Pair", "Step", "function_step", "grow", "module_step", "op_name"]

Pair = tuple[int, int]


@dataclass(frozen=True)
class Step:
    """What a layer does to the spatial size, worked out before it runs.

    ``text`` is the kernel/stride/padding column (``3x3/2 p1``); ``out_hw`` the predicted output
    (H, W), None where the layer does not fix it; ``formulas`` the arithmetic with the numbers;
    ``windows`` the (kernel, stride, dilation) along H and W that grows the receptive field, None for
    layers that do not (BatchNorm, ReLU, padding ...). ``collapse``: a fully connected layer that
    combines every position of the map its input was flattened from. ``verified`` is set once PyTorch
    produced exactly ``out_hw``.
    """

    text: str = ""
    out_hw: Pair | None = None
    formulas: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    windows: tuple[Layer, Layer] | None = None
    collapse: bool = False
    verified: bool = False


def _pair(v: Any) -> tuple[Any, Any]:
    return (v[0], v[1]) if isinstance(v, (tuple, list)) else (v, v)


def _size_text(k: Pair) -> str:
    return f"{k[0]}x{k[1]}"


def _one_or_two(k: Pair) -> str:
    return str(k[0]) if k[0] == k[1] else f"{k[0]},{k[1]}"


def _both_axes(formulas: list[str]) -> tuple[str, ...]:
    """One formula when height and width work out alike (``OH = OW = ...``), else both."""
    oh, ow = formulas
    if ow.replace("OW", "OH", 1) == oh:
        return (oh.replace("OH", "OH = OW", 1),)
    return oh, ow


def _rounded(size: Any) -> str:
    """``OH = (224 + 2*1 - 3)/2 + 1 = 112.5, rounded down to 112``: the formula, and what PyTorch makes of it."""
    if size.exact:
        return size.formula
    how = "up" if "rounded up" in size.note else "down"
    return f"{size.formula}, rounded {how} to {size.size}"


def _window_step(
    kind: str, hw: Pair, kernel: Any, stride: Any, padding: Any, dilation: Any = 1, ceil_mode: bool = False
) -> Step:
    """A convolution or pooling window: the output size by :func:`~cnnzoo.shapes.conv_output` / ``pool_output``."""
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    pads = (padding, padding) if isinstance(padding, str) else _pair(padding)
    compute = conv_output if kind == "conv" else pool_output
    sizes = [compute(n, k[i], s[i], pads[i], d[i], ceil_mode) for i, n in enumerate(hw)]
    formulas = [_rounded(sizes[0]), _rounded(sizes[1]).replace("OH", "OW", 1)]
    text = f"{_size_text(k)}/{_one_or_two(s)}"
    if isinstance(padding, str):
        text += f" {padding}"
    elif any(pads):
        text += f" p{_one_or_two(pads)}"
    if any(x > 1 for x in d):
        text += f" d{_one_or_two(d)}"
    if ceil_mode:
        text += " ceil"
    notes = tuple(dict.fromkeys(o.note for o in sizes if o.note))
    return Step(
        text=text,
        out_hw=(sizes[0].size, sizes[1].size),
        formulas=_both_axes(formulas),
        notes=notes,
        windows=(Layer(k[0], s[0], d[0]), Layer(k[1], s[1], d[1])),
    )


def _pad_step(hw: Pair, top: int, bottom: int, left: int, right: int, label: str = "pad") -> Step:
    """Explicit padding: the size grows by what is added on both sides; the receptive field does not."""
    out = (hw[0] + top + bottom, hw[1] + left + right)
    formulas = [f"OH = {hw[0]} + {top} + {bottom} = {out[0]}", f"OW = {hw[1]} + {left} + {right} = {out[1]}"]
    uniform = len({top, bottom, left, right}) == 1
    text = f"{label} {top}" if uniform else f"{label} ({top},{bottom},{left},{right})"
    return Step(text=text, out_hw=out, formulas=_both_axes(formulas))


def _same_pad_step(hw: Pair, module: SamePad2d) -> Step:
    """Keras' 'same' padding, by :func:`~cnnzoo.shapes.same_padding` for the window that follows."""
    (top, bottom), (left, right) = (
        same_padding(n, k, s, d) for n, k, s, d in zip(hw, module.kernel_size, module.stride, module.dilation)
    )
    return _pad_step(hw, top, bottom, left, right, label="same")


def _adaptive_step(hw: Pair, output_size: Any) -> Step:
    """Adaptive pooling: the output size is fixed; bin i spans [floor(i*n/o), ceil((i+1)*n/o))."""
    out = tuple(n if o is None else o for n, o in zip(hw, _pair(output_size)))
    windows = []
    for n, o in zip(hw, out):
        widest = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o))
        windows.append(Layer(widest, max(1, n // o)))
    formulas = [f"OH = {out[0]} (adaptive, from {hw[0]})", f"OW = {out[1]} (adaptive, from {hw[1]})"]
    text = "global" if out == (1, 1) else f"adaptive {_size_text(out)}"
    return Step(text=text, out_hw=out, formulas=_both_axes(formulas), windows=(windows[0], windows[1]))


def _global_step(hw: Pair) -> Step:
    """An average over the whole map (``x.mean((2, 3))``): one window as large as the map."""
    return Step(
        text="global",
        out_hw=None,  # the H and W axes disappear
        formulas=(f"mean over {_size_text(hw)} positions",),
        windows=(Layer(hw[0], hw[0]), Layer(hw[1], hw[1])),
    )


def _subsample_step(hw: Pair, stride: Pair) -> Step:
    """Keeping every s-th row and column (``x[..., ::2, ::2]``): a 1x1 window with stride s."""
    out = (-(-hw[0] // stride[0]), -(-hw[1] // stride[1]))
    formulas = [f"OH = ceil({hw[0]}/{stride[0]}) = {out[0]}", f"OW = ceil({hw[1]}/{stride[1]}) = {out[1]}"]
    return Step(
        text=f"1x1/{_one_or_two(stride)}",
        out_hw=out,
        formulas=_both_axes(formulas),
        windows=(Layer(1, stride[0]), Layer(1, stride[1])),
    )


def _flatten_step(shape: tuple[int, ...]) -> Step:
    features = math.prod(shape[1:])
    return Step(formulas=(f"{'*'.join(map(str, shape[1:]))} = {features} features",))


def _dense_step(shape: tuple[int, ...], in_features: int, out_features: int, name: str) -> Step:
    if shape[-1] != in_features:
        hint = ""
        if len(shape) == 2:
            hint = (
                " The map flattened into it has a different size than the layer was built for: change the"
                " input size, or put an adaptive pooling layer before the flatten."
            )
        raise ShapeError(
            f"{name} (Linear) takes {in_features} features, but gets {shape[-1]} (input shape {list(shape)}).{hint}"
        )
    return Step(formulas=(f"{in_features} -> {out_features} features",), collapse=len(shape) == 2)


def module_step(module: nn.Module, shape: tuple[int, ...], name: str) -> Step | None:
    """The :class:`Step` of a leaf module on an input of ``shape``; None for layers that keep the size."""
    hw = (shape[-2], shape[-1]) if len(shape) == 4 else None
    if isinstance(module, nn.Linear):
        return _dense_step(shape, module.in_features, module.out_features, name)
    if isinstance(module, nn.Flatten):
        return _flatten_step(shape)
    if hw is None:
        return None
    if isinstance(module, nn.Conv2d):
        return _window_step("conv", hw, module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, nn.MaxPool2d):
        return _window_step(
            "pool", hw, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode
        )
    if isinstance(module, nn.AvgPool2d):
        return _window_step("pool", hw, module.kernel_size, module.stride, module.padding, 1, module.ceil_mode)
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        left, right, top, bottom = module.padding
        return _pad_step(hw, top, bottom, left, right)
    if isinstance(module, SamePad2d):
        return _same_pad_step(hw, module)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_step(hw, module.output_size)
    if isinstance(module, GlobalAvgPool2d):
        return _global_step(hw)
    if isinstance(module, ShortcutA):
        return _subsample_step(hw, _pair(module.stride))
    return None


# Positional parameters of the functional ops whose geometry matters.
_SIGNATURES = {
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive_avg_pool2d": ("input", "output_size"),
    "adaptive_max_pool2d": ("input", "output_size", "return_indices"),
    "pad": ("input", "pad", "mode", "value"),
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "linear": ("input", "weight", "bias"),
    "mean": ("input", "dim", "keepdim"),
}


def op_name(func: Callable) -> str:
    """``torch.cat`` -> cat, ``Tensor.__add__`` / ``add_`` -> add, ``F._max_pool2d`` -> max_pool2d."""
    name = getattr(func, "__name__", type(func).__name__)
    name = name.strip("_")
    name = {
        "iadd": "add",
        "radd": "add",
        "concat": "cat",
        "concatenate": "cat",
        "max_pool2d_with_indices": "max_pool2d",
    }.get(name, name)
    return name


def function_step(op: str, args: tuple, kwargs: dict, shape: tuple[int, ...], name: str) -> Step | None:
    """The :class:`Step` of a functional op on a main input of ``shape``."""
    bound = {**dict(zip(_SIGNATURES.get(op, ()), args)), **kwargs}
    hw = (shape[-2], shape[-1]) if len(shape) == 4 else None
    if op == "flatten":
        return _flatten_step(shape)
    if op == "linear":
        out_features, in_features = bound["weight"].shape
        return _dense_step(shape, in_features, out_features, name)
    if hw is None:
        return None
    if op in ("max_pool2d", "avg_pool2d"):
        kernel = bound["kernel_size"]
        stride = bound.get("stride") or kernel  # None or [] mean "as the kernel"
        dilation = bound.get("dilation", 1) if op == "max_pool2d" else 1
        return _window_step(
            "pool", hw, kernel, stride, bound.get("padding", 0), dilation, bool(bound.get("ceil_mode", False))
        )
    if op == "conv2d":
        kernel = tuple(bound["weight"].shape[-2:])
        return _window_step(
            "conv", hw, kernel, bound.get("stride", 1), bound.get("padding", 0), bound.get("dilation", 1)
        )
    if op in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        return _adaptive_step(hw, bound["output_size"])
    if op == "pad" and len(bound["pad"]) >= 4:
        left, right, top, bottom = bound["pad"][:4]
        return _pad_step(hw, top, bottom, left, right)
    if op == "mean" and bound.get("dim") is not None:
        dims = bound["dim"] if isinstance(bound["dim"], (tuple, list)) else [bound["dim"]]
        if {d % 4 for d in dims} == {2, 3}:
            return _global_step(hw)
    if op == "getitem":
        index = args[1] if len(args) > 1 else None
        if isinstance(index, tuple) and len(index) == 4 and all(isinstance(i, slice) for i in index):
            if all(i.start in (None, 0) and i.stop is None for i in index):
                return _subsample_step(hw, (index[2].step or 1, index[3].step or 1))
    return None


def grow(before: ReceptiveField, layer: Layer) -> ReceptiveField:
    """The receptive field after one more layer.

    Seen from the input, everything up to here acts as one window of size r moving j pixels at a
    time, so the stack is :func:`~cnnzoo.shapes.receptive_fields` of that window and the new layer.
    """
    return receptive_fields([Layer(before.receptive_field, before.jump), layer])[-1]
