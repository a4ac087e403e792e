"""The trace engine: run a network once on a shape and record one :class:`Node` per layer call.

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

For each sliding-window layer the output size is computed *before* the layer runs, by
:mod:`cnnzoo.geometry` (the formulas of :mod:`cnnzoo.shapes`), and checked against what PyTorch
produces after it runs. So a trace can stop at the first layer whose output would be empty, and
name it (:class:`WalkError`), instead of failing deep in PyTorch; and every formula shown was
confirmed by PyTorch itself (:attr:`~cnnzoo.geometry.Step.verified`).

Receptive field and jump (see :func:`cnnzoo.shapes.receptive_fields`) are carried along each axis.
Where branches meet (a concatenation, a residual add) the receptive field of the result is the
*largest* of its inputs', and so is the jump (the inputs of a concatenation or an add have the same
resolution, so their jumps agree in the networks of the zoo). Flattening keeps each value's field.

Its clients: :mod:`cnnzoo.walk` (the shape table), :mod:`cnnzoo.summary` (the Keras-style summary)
and :mod:`cnnzoo.visualize` (feature maps), which all start from :func:`resolve_model` and
:func:`trace`.
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
from .factory import create_model
from .geometry import Pair, Step, function_step, grow, module_step, op_name
from .registry import get_model_info
from .shapes import Layer, ReceptiveField

__all__ = [
    "Field",
    "Node",
    "Scope",
    "Trace",
    "WalkError",
    "default_input_size",
    "has_neighbours",
    "model_channels",
    "normalize_input_size",
    "resolve_model",
    "shape_text",
    "trace",
]


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
    weights: list[Tensor] = field(
        default_factory=list
    )  # tensors a functional op used that no layer produced (parameters)

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


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape without its batch axis, as the tables print it: ``64x56x56``, ``400``."""
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

    def add_input(self, x: Tensor) -> None:
        """Node 0, the input: each of its pixels sees one pixel (receptive field 1, jump 1)."""
        node = Node(
            index=0,
            kind="input",
            path="input",
            op="Input",
            out_shape=tuple(x.shape),
            out_bytes=x.numel() * x.element_size(),
            rf=Field((1, 1), (1, 1), (x.shape[-2], x.shape[-1])),
        )
        self.nodes.append(node)
        self.produced([x], 0)

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

    def fail(self, node: Node, reason: str) -> WalkError:
        """The error for ``node`` refusing its input: it names the layer and keeps the nodes that ran before it."""
        shapes = " and ".join(shape_text(s) for s in node.in_shapes) or "?"
        return WalkError(
            f"{self.model_name}: layer {node.name} ({node.op}) cannot take its {shapes} input: {reason}",
            node,
            list(self.nodes),
            reason,
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
        node = self._new(
            kind="module",
            path=path or type(module).__name__.lower(),
            op=type(module).__name__,
            module=module,
            call=call,
        )
        node.inputs, node.in_shapes = inputs, [tuple(t.shape) for t in traced]
        if traced:
            try:
                node.step = module_step(module, node.in_shapes[0], node.name)
            except ShapeError as e:
                raise self.fail(node, str(e)) from None
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
        op = op_name(func)
        scope = self._open[-1]
        count = scope.ops[op]
        label = op if count == 0 else f"{op}_{count}"
        path = f"{scope.path}.{label}" if scope.path else label
        node = self._new(kind="function", path=path, op=op)
        node.inputs, node.in_shapes, node.weights = inputs, [tuple(t.shape) for t in traced], others
        try:
            node.step = function_step(op, args, kwargs, node.in_shapes[0], node.name)
        except ShapeError as e:
            raise self.fail(node, str(e)) from None
        try:
            out = func(*args, **kwargs)
        except CnnzooError:
            raise
        except (RuntimeError, ValueError) as e:  # PyTorch refused, with no formula of ours to say why
            raise self.fail(node, str(e).split("\n")[0]) from None
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
                node.step = Step(
                    text=step.text,
                    notes=(f"PyTorch gave {shape_text(node.out_shape)}, not the formula's {step.out_hw}",),
                )
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
        grown = [grow(ReceptiveField(before.receptive_field[a], before.jump[a]), windows[a]) for a in (0, 1)]
        # A window that leaves no map behind (global pooling) has looked at the whole map: a 1x1 grid.
        return Field(
            (grown[0].receptive_field, grown[1].receptive_field), (grown[0].jump, grown[1].jump), grid or (1, 1)
        )


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
    if (
        size is None
        or len(size) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise InputShapeError(
            f"{what}: an input size is (C, H, W), (H, W) or one int for a square image, all positive; got {input_size!r}"
        )
    return size  # type: ignore[return-value]


def resolve_model(model_or_name: nn.Module | str, device: str = "meta", **options: Any) -> tuple[nn.Module, str]:
    """(module, name): a zoo model built by name on ``device``, or the module given, as it is.

    On ``meta`` (the default) no weights are allocated, which is all a shape trace needs. This is
    what the trace's clients accept as a model; a checkpoint is :func:`cnnzoo.load_model`'s business.
    """
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


def _own_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters and buffers by name, as a state dict names them."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _meta_stand_ins(model: nn.Module) -> dict[str, Tensor]:
    """Empty meta tensors in place of the model's parameters and buffers, for :func:`torch.func.functional_call`."""
    return {name: torch.empty_like(t, device="meta") for name, t in _own_tensors(model).items()}


@contextmanager
def _hooked(model: nn.Module, tracer: _Tracer) -> Iterator[None]:
    """The tracer's pre- and post-hooks on every module of ``model``, removed again after the pass."""
    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _in_mode(model: nn.Module, mode: str, check_input: bool) -> Iterator[None]:
    """``model`` in ``mode`` ("eval" or "train"), its own input check off unless ``check_input``.

    The trace must leave the model as it found it: every module's ``training`` flag and the zoo
    model's ``check_inputs`` are put back afterwards, also when the pass fails.
    """
    modes = {m: m.training for m in model.modules()}
    checks = getattr(model, "check_inputs", None)
    try:
        model.train(mode == "train")
        if checks is not None and not check_input:
            model.check_inputs = False
        yield
    finally:
        for m, training in modes.items():
            m.training = training
        if checks is not None:
            model.check_inputs = checks


def _forward(model: nn.Module, tracer: _Tracer, x: Tensor, stand_ins: dict[str, Tensor] | None) -> Any:
    """One forward pass under ``tracer``: on ``stand_ins`` in place of the model's tensors, or on its own if None.

    A layer that PyTorch refuses (with no formula of ours to say why) becomes a :class:`WalkError`
    that names the layer, so the caller learns where the input stopped, not where PyTorch raised.
    """
    with torch.no_grad(), tracer:
        try:
            if stand_ins is None:
                return model(x)
            return torch.func.functional_call(model, stand_ins, (x,))
        except CnnzooError:
            raise
        except (RuntimeError, ValueError) as e:
            node = tracer.running()
            if node is None:
                raise
            reason = str(e).split("\n")[0]
            if "more than 1 value per channel" in reason:
                reason += "; BatchNorm in train mode needs a batch of several values: use batch_size=2 or more"
            raise tracer.fail(node, reason) from None


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
    x = torch.empty((batch_size, *input_size), device="meta") if image is None else image
    tracer = _Tracer(model, model_name, on_output)
    tracer.add_input(x)
    stand_ins = _meta_stand_ins(model) if image is None else {}
    originals = _own_tensors(model)
    with _hooked(model, tracer), _in_mode(model, mode, check_input):
        output = _forward(model, tracer, x, stand_ins if image is None else None)
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


def has_neighbours(shape: tuple[int, ...]) -> bool:
    """Whether a layer's jump, the distance between neighbouring outputs, means anything: a map larger than 1x1."""
    return len(shape) == 4 and shape[-2:] != (1, 1)
