"""The shape walk: run a network on a shape and record what every layer does to it.

:func:`trace` sends an input through a model, by default on the ``meta`` device (shapes only, no
arithmetic, no memory), and records one :class:`Node` per layer call:

* every call of a *leaf* module (one without children: ``Conv2d``, ``BatchNorm2d``, ``ReLU`` ...);
* every tensor operation written in a ``forward`` outside leaf modules: the ``torch.cat`` of an
  Inception block, the ``+`` of a residual block, ``torch.flatten``, ``F.avg_pool2d`` ... These are
  caught with a :class:`~torch.overrides.TorchFunctionMode`. The op that produces a block's output
  is named after the block (the concatenation of ``mixed0`` is ``mixed0``, as in Keras); the others
  are named after the block and the op (``conv2_block1.add``).

Which node made which tensor is tracked by tensor identity, so each node knows its inputs (Keras'
"Connected to"). An in-place op (``ReLU(inplace=True)``) returns its input object; from then on
that tensor counts as the in-place op's output, which is what the next layer really reads.

For each sliding-window layer the output size is computed *before* the layer runs, with the
formulas of :mod:`cnnzoo.shapes`, and checked against what PyTorch produces after it runs. So a walk
can stop at the first layer whose output would be empty, and name it, instead of failing deep in
PyTorch; and every formula shown was confirmed by PyTorch itself (:attr:`Step.verified`).

Receptive field and jump (see :func:`cnnzoo.shapes.receptive_fields`) are carried along each axis.
Where branches meet (a concatenation, a residual add) the receptive field of the result is the
*largest* of its inputs', and so is the jump (the inputs of a concatenation or an add have the same
resolution, so their jumps agree in the networks of the zoo). Flattening keeps each value's field;
the fully connected layer after it combines every position of the flattened map, so its field
grows by that map's extent. Adaptive pooling with uneven bins is counted with its widest bin.

:func:`walk` turns a trace into the table of ``cnnzoo shape NAME``: one row per layer that changes
or checks the size, with its formula, up to the first layer that fails.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from .errors import CnnzooError, InputShapeError, ShapeError
from .layers import SamePad2d
from .registry import create_model, get_model_info
from .shapes import Layer, ReceptiveField, conv_output, explain, pool_output, receptive_fields, same_padding

__all__ = [
    "Field",
    "Node",
    "Step",
    "Trace",
    "Walk",
    "WalkError",
    "explain_layer",
    "load_model",
    "model_channels",
    "normalize_input_size",
    "smallest_input",
    "trace",
    "walk",
]

Pair = tuple[int, int]


# --- what one layer does to height and width -------------------------------------------------------


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


def _window_step(kind: str, hw: Pair, kernel: Any, stride: Any, padding: Any, dilation: Any = 1, ceil_mode: bool = False) -> Step:
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
        raise ShapeError(f"{name} (Linear) takes {in_features} features, but gets {shape[-1]} (input shape {list(shape)}).{hint}")
    return Step(formulas=(f"{in_features} -> {out_features} features",), collapse=len(shape) == 2)


def _module_step(module: nn.Module, shape: tuple[int, ...], name: str) -> Step | None:
    """The :class:`Step` of a leaf module on an input of ``shape``; None for layers that keep the size."""
    from .models.resnet import GlobalAvgPool2d, ShortcutA  # zoo layers with a geometry of their own

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
        return _window_step("pool", hw, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
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


def _op_name(func: Callable) -> str:
    """``torch.cat`` -> cat, ``Tensor.__add__`` / ``add_`` -> add, ``F._max_pool2d`` -> max_pool2d."""
    name = getattr(func, "__name__", type(func).__name__)
    name = name.strip("_")
    name = {"iadd": "add", "radd": "add", "concat": "cat", "concatenate": "cat", "max_pool2d_with_indices": "max_pool2d"}.get(name, name)
    return name


def _function_step(op: str, args: tuple, kwargs: dict, shape: tuple[int, ...], name: str) -> Step | None:
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
        return _window_step("pool", hw, kernel, stride, bound.get("padding", 0), dilation, bool(bound.get("ceil_mode", False)))
    if op == "conv2d":
        kernel = tuple(bound["weight"].shape[-2:])
        return _window_step("conv", hw, kernel, bound.get("stride", 1), bound.get("padding", 0), bound.get("dilation", 1))
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


# --- the trace ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """Receptive field and jump along (H, W) of a layer's output, and the map it was computed on."""

    receptive_field: Pair
    jump: Pair
    grid: Pair  # the (H, W) of the last spatial map the values come from


@dataclass(eq=False)
class Scope:
    """One call of a module with children (a block): the nodes inside it, and which one is its output."""

    path: str
    module: nn.Module
    call: int
    depth: int  # 1 for the model's children, 2 for theirs ...
    output: int | None = None  # index of the node that produced the block's output
    ops: Counter = field(default_factory=Counter)


@dataclass(eq=False)
class Node:
    """One layer call: a leaf module, a functional op, or the input."""

    index: int
    kind: str  # "input", "module" or "function"
    path: str  # module path ("layer1.0.conv1"), block path + op ("layer1.0.add"), or "input"
    op: str  # module class name (Conv2d) or op name (cat)
    module: nn.Module | None = None
    call: int = 0  # the how-manieth call of this module (a module used twice gives two nodes)
    scopes: tuple[Scope, ...] = ()  # the blocks it runs in, outermost first
    inputs: list[int] = field(default_factory=list)
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_shape: tuple[int, ...] = ()
    step: Step | None = None
    rf: Field | None = None  # receptive field and jump of the output
    new_memory: bool = True  # False for in-place ops and views, which allocate nothing
    out_bytes: int = 0
    weights: list[Tensor] = field(default_factory=list)  # tensors a functional op used that no layer produced (parameters)

    @property
    def name(self) -> str:
        """The path, with ``[k]`` for the k-th extra call of a module that runs more than once."""
        return self.path if self.call == 0 else f"{self.path}[{self.call}]"


@dataclass
class Trace:
    """The nodes of one forward pass, in execution order; ``nodes[0]`` is the input."""

    model: nn.Module
    model_name: str
    input_shape: tuple[int, ...]
    nodes: list[Node]
    scopes: list[Scope]
    output: int | None  # the node that produced the model's (first) output
    stand_ins: dict[int, Tensor] = field(default_factory=dict)  # id(meta stand-in) -> the model's own tensor


class WalkError(ShapeError):
    """A layer cannot take the size it gets: ``node`` is that layer, ``reason`` why, ``nodes`` the walk up to it."""

    def __init__(self, message: str, node: Node, nodes: list[Node], reason: str) -> None:
        super().__init__(message)
        self.node, self.nodes, self.reason = node, nodes, reason


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape[1:])) if len(shape) > 1 else str(list(shape))


class _Tracer(TorchFunctionMode):
    """Module hooks for leaf calls and blocks, a torch-function mode for the ops between them."""

    def __init__(self, model: nn.Module, model_name: str, on_output: Callable[[Node, Tensor], None] | None) -> None:
        super().__init__()
        self.model_name = model_name
        self.paths = {m: p for p, m in model.named_modules()}
        self.nodes: list[Node] = []
        self.scopes: list[Scope] = []
        self.on_output = on_output
        self._open: list[Scope] = []  # blocks being run, the model itself first
        self._producer: dict[int, tuple[weakref.ref, int]] = {}  # id(tensor) -> (the tensor, node index)
        self._leaf: Node | None = None  # the leaf call in progress: what runs inside it is part of it
        self._leaf_inputs: list[Tensor] = []
        self._calls: Counter = Counter()
        self._quiet = False  # set while the tracer's own code looks at tensors: those calls are not layers

    @contextmanager
    def _own_work(self) -> Iterator[None]:
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    # tensors -> nodes

    def produced(self, tensors: list[Tensor], index: int) -> None:
        for t in tensors:
            self._producer[id(t)] = (weakref.ref(t), index)

    def producer(self, t: Tensor) -> int | None:
        # The weak reference guards against a dead tensor's id being reused by a new one.
        entry = self._producer.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def _traced(self, values: Any) -> tuple[list[Tensor], list[int], list[Tensor]]:
        """(traced tensors, their producers, other tensors) among ``values``."""
        traced, inputs, others = [], [], []
        for t in tree_leaves(values):
            if isinstance(t, Tensor):
                i = self.producer(t)
                if i is None:
                    others.append(t)
                else:
                    traced.append(t)
                    inputs.append(i)
        return traced, inputs, others

    def _new(self, **kw: Any) -> Node:
        return Node(index=len(self.nodes), scopes=tuple(s for s in self._open if s.depth > 0), **kw)

    def _fail(self, node: Node, reason: str) -> WalkError:
        shapes = " and ".join(_shape_text(s) for s in node.in_shapes) or "?"
        return WalkError(
            f"{self.model_name}: layer {node.name} ({node.op}) cannot take its {shapes} input: {reason}", node, list(self.nodes), reason
        )

    # module hooks

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._leaf is None and not self._quiet:
            with self._own_work():
                self._enter(module, args, kwargs)

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._quiet:
            with self._own_work():
                self._leave(module, output)

    def _enter(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        path = self.paths.get(module, type(module).__name__)
        call = self._calls[module]
        self._calls[module] += 1
        if not _is_leaf(module):
            self._open.append(Scope(path or "", module, call, depth=len(self._open)))
            return
        traced, inputs, _ = self._traced((args, kwargs))
        node = self._new(kind="module", path=path or type(module).__name__.lower(), op=type(module).__name__, module=module, call=call)
        node.inputs, node.in_shapes = inputs, [tuple(t.shape) for t in traced]
        if traced:
            try:
                node.step = _module_step(module, node.in_shapes[0], node.name)
            except ShapeError as e:
                raise self._fail(node, str(e)) from None
        self._leaf, self._leaf_inputs = node, traced

    def _leave(self, module: nn.Module, output: Any) -> None:
        if self._leaf is not None:
            if module is self._leaf.module:
                node, inputs = self._leaf, self._leaf_inputs
                self._leaf, self._leaf_inputs = None, []
                self._finish(node, inputs, output)
            return
        scope = self._open.pop()
        outputs = [t for t in tree_leaves(output) if isinstance(t, Tensor)]
        scope.output = self.producer(outputs[0]) if outputs else None
        if scope.depth > 0 and scope.output is not None:
            last = self.nodes[scope.output]
            # A functional op that makes a block's output is that block's output layer: name it after
            # the block, as Keras names the concatenation of an Inception block ``mixed0``.
            if last.kind == "function" and last.scopes and last.scopes[-1] is scope:
                last.path = scope.path
        self.scopes.append(scope)

    def running(self) -> Node | None:
        """The leaf layer being run, if any: the one to blame when PyTorch raises."""
        return self._leaf

    # functional ops

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self._leaf is not None or self._quiet or getattr(func, "__name__", "") == "__get__" or not self._open:
            return func(*args, **kwargs)
        traced, inputs, others = self._traced((args, kwargs))
        if not traced:  # factory functions, ops on parameters alone: not part of the data flow
            return func(*args, **kwargs)
        op = _op_name(func)
        scope = self._open[-1]
        count = scope.ops[op]
        label = op if count == 0 else f"{op}_{count}"
        path = f"{scope.path}.{label}" if scope.path else label
        node = self._new(kind="function", path=path, op=op)
        node.inputs, node.in_shapes, node.weights = inputs, [tuple(t.shape) for t in traced], others
        try:
            node.step = _function_step(op, args, kwargs, node.in_shapes[0], node.name)
        except ShapeError as e:
            raise self._fail(node, str(e)) from None
        try:
            out = func(*args, **kwargs)
        except CnnzooError:
            raise
        except (RuntimeError, ValueError) as e:  # PyTorch refused, with no formula of ours to say why
            raise self._fail(node, str(e).split("\n")[0]) from None
        if not any(isinstance(t, Tensor) for t in tree_leaves(out)):
            return out  # x.dim(), x.size(): questions about a tensor, not layers
        scope.ops[op] += 1
        self._finish(node, traced, out)
        return out

    # a finished call

    def _finish(self, node: Node, inputs: list[Tensor], output: Any) -> None:
        outputs = [t for t in tree_leaves(output) if isinstance(t, Tensor)]
        if not outputs:
            return
        out = outputs[0]
        node.out_shape = tuple(out.shape)
        node.new_memory = not any(out is t for t in inputs) and not out._is_view()
        node.out_bytes = out.numel() * out.element_size()
        step = node.step
        if step is not None and step.out_hw is not None:
            if len(node.out_shape) == 4 and tuple(node.out_shape[-2:]) == step.out_hw:
                node.step = replace(step, verified=True)
            else:  # a layer that does not follow the standard formula (a subclass with its own forward)
                node.step = Step(text=step.text, notes=(f"PyTorch gave {_shape_text(node.out_shape)}, not the formula's {step.out_hw}",))
        node.rf = self._field(node)
        self.nodes.append(node)
        self.produced(outputs, node.index)
        if self.on_output is not None:
            with self._own_work():
                self.on_output(node, out)

    def _field(self, node: Node) -> Field | None:
        """Receptive field and jump of a node's output, from its inputs' (see the module docstring)."""
        fields = [self.nodes[i].rf for i in node.inputs]
        if not fields or any(f is None for f in fields):
            return None
        shape = node.out_shape
        grid = (shape[-2], shape[-1]) if len(shape) == 4 else None
        if len(fields) > 1:  # branches meet: the widest view wins
            rf = tuple(max(f.receptive_field[a] for f in fields) for a in (0, 1))
            jump = tuple(max(f.jump[a] for f in fields) for a in (0, 1))
            return Field(rf, jump, grid or fields[0].grid)
        before = fields[0]
        step = node.step
        if step is not None and step.collapse:  # fully connected: sees the whole map it was flattened from
            windows = (Layer(before.grid[0], before.grid[0]), Layer(before.grid[1], before.grid[1]))
            grid = (1, 1)
        elif step is not None and step.windows is not None:
            windows = step.windows
        else:
            in_shape = node.in_shapes[0]
            same_map = len(shape) == 4 and len(in_shape) == 4 and shape[-2:] == in_shape[-2:]
            reshaped = len(shape) < 4 and math.prod(shape[1:]) == math.prod(in_shape[1:])  # flatten / view
            if not (same_map or reshaped or (step is not None and step.out_hw is not None)):
                return None  # an unknown layer that changes the size: its field is not known
            return Field(before.receptive_field, before.jump, grid or before.grid)
        grown = [_grow(ReceptiveField(before.receptive_field[a], before.jump[a]), windows[a]) for a in (0, 1)]
        # A window that leaves no map behind (global pooling) has looked at the whole map: a 1x1 grid.
        return Field((grown[0].receptive_field, grown[1].receptive_field), (grown[0].jump, grown[1].jump), grid or (1, 1))


def _grow(before: ReceptiveField, layer: Layer) -> ReceptiveField:
    """The receptive field after one more layer.

    Seen from the input, everything up to here acts as one window of size r moving j pixels at a
    time, so the stack is :func:`~cnnzoo.shapes.receptive_fields` of that window and the new layer.
    """
    return receptive_fields([Layer(before.receptive_field, before.jump), layer])[-1]


# --- running a model ---------------------------------------------------------------------------------


def normalize_input_size(input_size: Any, channels: int | None, what: str = "the model") -> tuple[int, int, int]:
    """(C, H, W) from an int (square), an (H, W) pair or a (C, H, W) triple."""
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    size = tuple(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else None
    if size is not None and len(size) == 2:
        if channels is None:
            raise InputShapeError(f"{what}: give the input size as (C, H, W); the number of channels is not known")
        size = (channels, *size)
    if size is None or len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise InputShapeError(
            f"{what}: an input size is (C, H, W), (H, W) or one int for a square image, all positive; got {input_size!r}"
        )
    return size  # type: ignore[return-value]


def load_model(model_or_name: nn.Module | str, device: str = "meta", **options: Any) -> tuple[nn.Module, str]:
    """A zoo model by name (built on ``device``; on ``meta`` no weights are allocated), or the module given."""
    if isinstance(model_or_name, nn.Module):
        if options:
            raise TypeError(f"model options {sorted(options)} only apply when a model is given by name")
        return model_or_name, getattr(model_or_name, "model_name", type(model_or_name).__name__)
    if not isinstance(model_or_name, str):
        raise TypeError(f"expected a model name or an nn.Module, got {type(model_or_name).__name__}")
    get_model_info(model_or_name)  # unknown names fail here, with suggestions
    with torch.device(device):
        return create_model(model_or_name, **options), model_or_name


def default_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The native (C, H, W) of a zoo model, None for other modules."""
    info = getattr(model, "info", None)
    if info is not None:
        return tuple(info.input_size)
    if hasattr(model, "in_chans") and hasattr(model, "native_size"):
        return (model.in_chans, model.native_size, model.native_size)
    return None


def model_channels(model: nn.Module) -> int | None:
    """The input channels a model takes: a zoo model's ``in_chans``, else its first convolution's."""
    if hasattr(model, "in_chans"):
        return model.in_chans
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else None


def _meta_stand_ins(model: nn.Module) -> dict[str, Tensor]:
    """Empty meta tensors in place of the model's parameters and buffers, for :func:`torch.func.functional_call`."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}


def trace(
    model: nn.Module,
    input_size: tuple[int, int, int],
    *,
    batch_size: int = 1,
    mode: str = "eval",
    check_input: bool = True,
    image: Tensor | None = None,
    on_output: Callable[[Node, Tensor], None] | None = None,
) -> Trace:
    """Run ``model`` once and record every layer call (see the module docstring).

    Without ``image`` the model runs on an empty ``meta`` tensor of shape (batch_size, *input_size),
    its parameters replaced by meta stand-ins for the call (the model itself is not touched); with
    ``image``, a real (N, C, H, W) tensor, it runs on that. ``mode`` is "eval" or "train"; the mode of
    every module is restored afterwards. ``check_input=False`` skips a zoo model's own input check,
    so that an input that is too small fails at the layer where it becomes empty.
    ``on_output(node, tensor)`` sees every layer's output as it is produced (before any later
    in-place op changes it).
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    model_name = getattr(model, "model_name", type(model).__name__)
    if image is None:
        x = torch.empty((batch_size, *input_size), device="meta")
    else:
        x = image
    tracer = _Tracer(model, model_name, on_output)
    tracer.nodes.append(
        Node(index=0, kind="input", path="input", op="Input", out_shape=tuple(x.shape), out_bytes=x.numel() * x.element_size(),
             rf=Field((1, 1), (1, 1), (x.shape[-2], x.shape[-1])))
    )
    tracer.produced([x], 0)
    modes = {m: m.training for m in model.modules()}
    checks = getattr(model, "check_inputs", None)
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
        handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
    stand_ins = _meta_stand_ins(model) if image is None else {}
    originals = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    try:
        model.train(mode == "train")
        if checks is not None and not check_input:
            model.check_inputs = False
        with torch.no_grad(), tracer:
            try:
                if image is None:
                    output = torch.func.functional_call(model, stand_ins, (x,))
                else:
                    output = model(x)
            except CnnzooError:
                raise
            except (RuntimeError, ValueError) as e:  # a layer PyTorch refused, with no formula of ours to say why
                node = tracer.running()
                if node is None:
                    raise
                reason = str(e).split("\n")[0]
                if "more than 1 value per channel" in reason:
                    reason += "; BatchNorm in train mode needs a batch of several values: use batch_size=2 or more"
                raise tracer._fail(node, reason) from None
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
        if checks is not None:
            model.check_inputs = checks
    outputs = [t for t in tree_leaves(output) if isinstance(t, Tensor)]
    return Trace(
        model=model,
        model_name=model_name,
        input_shape=tuple(x.shape),
        nodes=tracer.nodes,
        scopes=tracer.scopes,
        output=tracer.producer(outputs[0]) if outputs else None,
        stand_ins={id(stand_ins[name]): originals[name] for name in stand_ins},
    )


# --- the walk ------------------------------------------------------------------------------------


def _walks(node: Node) -> bool:
    """Rows of the walk: layers that change or check the size (not BatchNorm, ReLU, dropout)."""
    return node.kind == "input" or node.step is not None or len(node.inputs) > 1


def _merge_formula(node: Node) -> str:
    if node.op == "cat" and all(len(s) == 4 for s in node.in_shapes):
        channels = [s[1] for s in node.in_shapes]
        return f"{' + '.join(map(str, channels))} = {sum(channels)} channels"
    return " + ".join(_shape_text(s) for s in node.in_shapes) + " (shapes agree)"


@dataclass
class Walk:
    """A model walked layer by layer on one input size; see :func:`walk`."""

    model_name: str
    input_size: tuple[int, int, int]
    nodes: list[Node]  # every layer that ran (the failing one not included)
    failed: Node | None = None  # the layer that cannot take its input
    error: str = ""
    smallest: int | None = None  # the smallest square H = W that goes through, when the walk failed

    @property
    def ok(self) -> bool:
        return self.failed is None

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row: the layer, its input and output, the formula, receptive field and jump."""
        out = []
        for node in [n for n in self.nodes if _walks(n)] + ([self.failed] if self.failed else []):
            f = node.rf
            formulas = list(node.step.formulas) if node.step else ([_merge_formula(node)] if len(node.inputs) > 1 else [])
            out.append(
                dict(
                    layer=node.name,
                    type=node.op,
                    input=[list(s) for s in node.in_shapes],
                    output=list(node.out_shape) if node is not self.failed else None,
                    window=node.step.text if node.step else "",
                    formula=formulas,
                    notes=list(node.step.notes) if node.step else [],
                    receptive_field=list(f.receptive_field) if f and node is not self.failed else None,
                    # The jump is a distance between neighbouring outputs: only maps larger than 1x1 have one.
                    jump=list(f.jump) if f and node is not self.failed and has_neighbours(node.out_shape) else None,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(
            model=self.model_name,
            input_size=list(self.input_size),
            ok=self.ok,
            error=self.error or None,
            smallest_input=self.smallest,
            advice=None if self.ok else self.advice(),
            rows=self.rows(),
        )

    def __str__(self) -> str:
        rows = self.rows()
        table = [("#", "layer (type)", "in", "out", "window", "formula", "RF", "jump")]
        for i, r in enumerate(rows):
            fails = r["output"] is None and i == len(rows) - 1 and not self.ok
            formulas = r["formula"] or [""]
            table.append(
                (
                    "x" if fails else str(i),
                    f"{r['layer']} ({r['type']})",
                    _inputs_text(r["input"]),
                    "FAILS" if fails else "x".join(map(str, r["output"][1:])),
                    r["window"],
                    formulas[0],
                    _axes(r["receptive_field"]),
                    _axes(r["jump"]),
                )
            )
            table += [("", "", "", "", "", extra, "", "") for extra in formulas[1:]]
        widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
        lines = [f"{self.model_name} walked on a {'x'.join(map(str, self.input_size))} input (sizes are C x H x W):"]
        for row in table:
            cells = (cell.ljust(w) if c in (1, 4, 5) else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
            lines.append("  ".join(cells).rstrip())
        if self.ok:
            last = self.nodes[-1]
            lines.append(f"All {len(rows) - 1} layers above fit; the output is {'x'.join(map(str, last.out_shape[1:]))}.")
        else:
            lines.append(f"Stops at layer {self.failed.name} ({self.failed.op}): {self.error}")
            lines.append(self.advice())
        return "\n".join(lines)

    def advice(self) -> str:
        """Which input sizes work, after a failed walk."""
        s, (c, h, w) = self.smallest, self.input_size
        if s is None:
            return "No square input tried (1x1, 2x2, 4x4 ... 4096x4096) goes through."
        if min(h, w) < s:
            return f"Inputs that work: square images of at least {s}x{s} (input {c}x{s}x{s}; {s - 1}x{s - 1} fails)."
        return (
            f"The smallest square input that goes through is {s}x{s} ({s - 1}x{s - 1} fails), but the larger {h}x{w} does not: "
            f"{self.failed.name} needs one exact size."
        )


def has_neighbours(shape: tuple[int, ...]) -> bool:
    """Whether a layer's jump, the distance between neighbouring outputs, means anything: a map larger than 1x1."""
    return len(shape) == 4 and shape[-2:] != (1, 1)


def _inputs_text(shapes: list[list[int]]) -> str:
    if len(shapes) == 1:
        return "x".join(map(str, shapes[0][1:]))
    return f"{len(shapes)} inputs" if shapes else ""


def _axes(v: list[int] | None) -> str:
    if v is None:
        return ""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def _goes_through(model: nn.Module, channels: int, size: int) -> bool:
    try:
        trace(model, (channels, size, size), check_input=False)
    except WalkError:
        return False
    return True


def smallest_input(model: nn.Module | str, channels: int | None = None, limit: int = 4096) -> int | None:
    """The smallest square H = W that goes through ``model``, by walks on the meta device; None if none up to ``limit``.

    A zoo model states its smallest size (``min_size``); that claim is checked (it goes through, one
    pixel less does not) and returned. Otherwise the size is found by bisection, which assumes that
    a size that works keeps working as the input grows: true when every layer's output grows with its
    input, as for convolutions and pooling, adaptive or not. (A ``Flatten`` into a fixed ``Linear``
    needs one exact size instead; bisection then finds a size that works, not necessarily the least.)
    """
    model, _ = load_model(model)
    channels = channels or model_channels(model) or 3
    claim = getattr(model, "min_size", None)
    if isinstance(claim, int) and _goes_through(model, channels, claim):
        if claim == 1 or not _goes_through(model, channels, claim - 1):
            return claim
    native = default_input_size(model)
    hi = native[1] if native and _goes_through(model, channels, native[1]) else 1
    while not _goes_through(model, channels, hi):
        if hi >= limit:
            return None
        hi = min(hi * 2, limit)
    lo = 0  # a size known to fail (0 always does)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _goes_through(model, channels, mid):
            hi = mid
        else:
            lo = mid
    return hi


def walk(model_or_name: nn.Module | str, input_size: Any = None, **options: Any) -> Walk:
    """Walk a model layer by layer on ``input_size`` ((C, H, W), (H, W) or an int; default: native).

    Returns a :class:`Walk`: every layer that changes the size with its formula, receptive field and
    jump. An input that is too small does not raise: the walk stops at the first layer that cannot
    take it (``walk.failed``, ``walk.error``) and ``walk.smallest`` gives the smallest square input
    that goes through. A wrong number of channels raises :class:`~cnnzoo.errors.InputShapeError`.
    """
    model, name = load_model(model_or_name, **options)
    channels = model_channels(model)
    size = normalize_input_size(default_input_size(model) if input_size is None else input_size, channels, name)
    if channels is not None and size[0] != channels:
        raise InputShapeError(
            f"{name} takes {channels} input channel{'s' if channels != 1 else ''}, the input has {size[0]}: "
            f"use an input of {channels}x{size[1]}x{size[2]}"
        )
    try:
        t = trace(model, size, check_input=False)
    except WalkError as e:
        return Walk(name, size, e.nodes, failed=e.node, error=e.reason, smallest=smallest_input(model, size[0]))
    return Walk(name, size, t.nodes)


def explain_layer(size: int, kernel: int, stride: int = 1, padding: Any = 0, dilation: int = 1, ceil_mode: bool = False) -> str:
    """One layer: the formula worked through (:func:`cnnzoo.shapes.explain`) and its receptive field."""
    text = explain(size, kernel, stride, padding, dilation, ceil_mode)
    rf = receptive_fields([Layer(kernel, stride, dilation)])[-1]
    span = f" (kernel {kernel} with dilation {dilation})" if dilation > 1 else ""
    return (
        f"{text}\n"
        f"Receptive field: each output pixel sees {rf.receptive_field}x{rf.receptive_field} input pixels{span}; "
        f"neighbouring outputs are {rf.jump} input pixel{'s' if rf.jump != 1 else ''} apart (jump {rf.jump})."
    )
