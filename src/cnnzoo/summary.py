"""``summary()``: a network as a table, layer by layer, in the layout of Keras' ``model.summary()``.

Beyond Keras' columns (``Layer (type)``, ``Output Shape``, ``Param #``, ``Connected to``), each row
has the layer's window (kernel/stride and padding), its multiply-accumulates and the receptive field
and jump of its output, all from one shape-only pass of the model on the ``meta`` device
(:func:`cnnzoo.trace.trace`), so even ResNet-152 takes a fraction of a second.

What is counted, and how:

* **Parameters.** ``style="torch"`` counts as PyTorch and torchvision do, ``sum(p.numel())`` over
  ``model.parameters()``. ``style="keras"`` counts as Keras' ``model.summary()`` does: BatchNorm's
  moving mean and variance are *non-trainable parameters* (:func:`cnnzoo.counting.count_params`).
  Trainable means ``requires_grad``, so a frozen backbone shows as Keras shows layers with
  ``trainable = False``: per row and in the totals.
  A row shows the parameters of its layer; a parameter shared by several layers is counted once, in
  the first row that uses it. Layers that did not run (GoogLeNet's auxiliary heads in eval mode) are
  listed below the table; the totals always cover the whole model.
* **MACs** (multiply-accumulates) of convolutions, out_elements x (in_channels / groups) x kh x kw,
  and of fully connected layers, out_features x in_features per sample. Biases, BatchNorm,
  activations, pooling and residual additions are not counted: they are a fraction of a percent and
  not multiply-accumulates. This is the convention of torchvision's published figures (its
  "GFLOPS", which are MACs): resnet50 4.09 G, vgg16 15.47 G. FLOPs are 2 x MACs.
* **Memory.** Parameters and buffers at their dtype; activations: the outputs of all layers of one
  forward pass at the given batch size, leaving out in-place ops and views, which allocate nothing.
* **Receptive field** and **jump** along (H, W): see :mod:`cnnzoo.trace` (through branches, the largest
  of the inputs').

Row names: ``style="torch"`` shows module paths (``layer1.0.conv1``, the state-dict prefixes);
``style="keras"`` the paths joined with ``_`` (wrapper blocks such as VGG's ``features`` left out,
see :func:`_keras_names`), which are exactly the Keras layer names for the flavours built after
Keras (``block1_conv1``, ``conv2_block1_1_conv``, ``conv2_block1_add``, ``mixed0``), together with
Keras' layer types and channels-last shapes ``(None, H, W, C)``. Rows come in execution order (Keras
sorts by depth in the graph, so a shortcut may come a few rows earlier here). A module called more than once has one row per call, the
later ones marked ``[1]``, ``[2]`` (Keras' node index).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from .counting import count_params
from .trace import (
    Node,
    Trace,
    default_input_size,
    has_neighbours,
    model_channels,
    normalize_input_size,
    resolve_model,
    trace,
)

__all__ = ["Row", "Summary", "summary", "layer_macs"]

STYLES = ("torch", "keras")

# PyTorch module / op -> the Keras layer that does the same, for style="keras".
KERAS_TYPES = {
    "Input": "InputLayer",
    "Conv2d": "Conv2D",
    "Linear": "Dense",
    "linear": "Dense",
    "MaxPool2d": "MaxPooling2D",
    "max_pool2d": "MaxPooling2D",
    "AvgPool2d": "AveragePooling2D",
    "avg_pool2d": "AveragePooling2D",
    "BatchNorm2d": "BatchNormalization",
    "BatchNorm2dNoScale": "BatchNormalization",
    "ReLU": "Activation",
    "relu": "Activation",
    "ZeroPad2d": "ZeroPadding2D",
    "SamePad2d": "ZeroPadding2D",
    "pad": "ZeroPadding2D",
    "Dropout": "Dropout",
    "dropout": "Dropout",
    "Flatten": "Flatten",
    "flatten": "Flatten",
    "cat": "Concatenate",
    "add": "Add",
    "mul": "Multiply",
    "GlobalAvgPool2d": "GlobalAveragePooling2D",
    "mean": "GlobalAveragePooling2D",
    "Softmax": "Softmax",
}


@dataclass
class Row:
    """One line of the table. ``output_shape`` is PyTorch's (N, C, H, W); ``receptive_field`` and
    ``jump`` are (H, W) pairs (``jump`` only for outputs that are still maps)."""

    name: str
    type: str
    path: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int
    connected_to: list[str]
    window: str
    macs: int
    receptive_field: tuple[int, int] | None
    jump: tuple[int, int] | None
    formula: list[str] = field(default_factory=list)

    @property
    def non_trainable(self) -> int:
        return self.params - self.trainable


@dataclass
class Summary:
    """What :func:`summary` returns: ``rows`` and totals; ``str()`` is the table, ``to_dict()`` the data."""

    model_name: str
    input_size: tuple[int, int, int]
    batch_size: int
    style: str
    mode: str
    depth: int | None
    rows: list[Row]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    macs: int
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int
    input_bytes: int
    dtype: str
    unused: list[tuple[str, int]]  # (module path, parameters) of layers the forward pass did not run

    @property
    def flops(self) -> int:
        """Floating-point operations: a multiply-accumulate is two."""
        return 2 * self.macs

    @property
    def branching(self) -> bool:
        """Whether some layer reads anything but the row above it (then "Connected to" is shown)."""
        return any(r.connected_to != [self.rows[i].name] for i, r in enumerate(self.rows[1:]))

    def to_dict(self) -> dict[str, Any]:
        return dict(
            model=self.model_name,
            input_size=list(self.input_size),
            batch_size=self.batch_size,
            style=self.style,
            mode=self.mode,
            depth=self.depth,
            rows=[
                dict(
                    name=r.name,
                    type=r.type,
                    path=r.path,
                    output_shape=list(r.output_shape),
                    params=r.params,
                    trainable_params=r.trainable,
                    connected_to=r.connected_to,
                    window=r.window,
                    macs=r.macs,
                    receptive_field=list(r.receptive_field) if r.receptive_field else None,
                    jump=list(r.jump) if r.jump else None,
                    formula=r.formula,
                )
                for r in self.rows
            ],
            totals=dict(
                total_params=self.total_params,
                trainable_params=self.trainable_params,
                non_trainable_params=self.non_trainable_params,
                params_counted_as=_COUNTED_AS[self.style],
                macs=self.macs,
                flops=self.flops,
                param_bytes=self.param_bytes,
                buffer_bytes=self.buffer_bytes,
                activation_bytes=self.activation_bytes,
                input_bytes=self.input_bytes,
                dtype=self.dtype,
            ),
            not_run=[dict(module=path, params=n) for path, n in self.unused],
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """The rows as CSV (shapes N x C x H x W, receptive field and jump as H x W)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "layer",
                "type",
                "output_shape",
                "params",
                "trainable_params",
                "connected_to",
                "window",
                "macs",
                "receptive_field",
                "jump",
            ]
        )
        for r in self.rows:
            shape = "x".join(map(str, r.output_shape))
            inputs = " ".join(r.connected_to)
            writer.writerow(
                [
                    r.name,
                    r.type,
                    shape,
                    r.params,
                    r.trainable,
                    inputs,
                    r.window,
                    r.macs,
                    _hw(r.receptive_field),
                    _hw(r.jump),
                ]
            )
        return buffer.getvalue()

    def __str__(self) -> str:
        return _table(self)


_COUNTED_AS = {
    "torch": "PyTorch: sum(p.numel() for p in model.parameters()); BatchNorm running statistics are buffers, not parameters",
    "keras": "Keras: BatchNorm moving mean and variance count as non-trainable parameters",
}


# --- counting ---------------------------------------------------------------------------------------


def layer_macs(node: Node) -> int:
    """Multiply-accumulates of one layer call: convolutions and fully connected layers, 0 for the rest.

    Each output element of a convolution is a dot product over (in_channels / groups) x kh x kw
    inputs, each of a fully connected layer over in_features inputs: out_elements x weight[0].numel(),
    since the weight is (out, in/groups, kh, kw) or (out, in).
    """
    module = node.module
    if (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed) or isinstance(module, nn.Linear):
        weight_shape = module.weight.shape
    elif node.kind == "function" and node.op in ("conv2d", "linear") and node.weights:
        weight_shape = node.weights[0].shape
    else:
        return 0
    return math.prod(node.out_shape) * math.prod(weight_shape[1:])


def _params(node: Node, t: Trace, style: str, seen: set[int]) -> tuple[int, int]:
    """(parameters, trainable) first used by this node; marks them seen."""
    if node.module is not None:
        tensors = list(node.module.parameters(recurse=False))
    else:  # a functional op: the parameters it was handed (meta stand-ins mapped back to the model's own)
        own = {id(p) for p in t.model.parameters()}
        tensors = [p for p in (t.stand_ins.get(id(w), w) for w in node.weights) if id(p) in own]
    total = trainable = 0
    for p in tensors:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    if style == "keras":
        total += _bn_statistics(node.module, seen)
    return total, trainable


def _bn_statistics(module: nn.Module | None, seen: set[int]) -> int:
    """Keras counts a BatchNorm's moving mean and variance as (non-trainable) parameters."""
    stats = [b for b in _statistics(module) if id(b) not in seen]
    seen.update(id(b) for b in stats)
    return sum(b.numel() for b in stats)


def _statistics(module: nn.Module | None) -> list[Tensor]:
    if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not module.track_running_stats:
        return []
    return [b for b in (module.running_mean, module.running_var) if b is not None]


def _unused(model: nn.Module, style: str, seen: set[int]) -> list[tuple[str, int]]:
    """Parameters no row counted, because their layers did not run, by the largest block that ran nothing."""
    counted = set(seen)
    idle: dict[str, int] = {}  # module path -> parameters not counted in any row
    untouched: set[str] = set()  # modules none of whose parameters any row counted
    holders: list[str] = []  # modules with parameters of their own
    for path, module in model.named_modules():
        tensors = list(module.parameters(recurse=False)) + (_statistics(module) if style == "keras" else [])
        if not tensors:
            continue
        holders.append(path)
        if not any(id(t) in seen for t in tensors):
            untouched.add(path)
        n = sum(t.numel() for t in tensors if id(t) not in counted)
        counted.update(id(t) for t in tensors)
        if n:
            idle[path] = n

    def idle_block(block: str) -> bool:
        return all(p in untouched for p in holders if p == block or p.startswith(block + "."))

    blocks: dict[str, int] = {}
    for path, n in idle.items():
        parts = path.split(".")
        top = next((".".join(parts[:k]) for k in range(1, len(parts)) if idle_block(".".join(parts[:k]))), path)
        blocks[top] = blocks.get(top, 0) + n
    return list(blocks.items())


# --- rows -------------------------------------------------------------------------------------------


def _keras_names(paths: list[str]) -> dict[str, str]:
    """Keras-style layer names: module paths joined with ``_``, without the model's wrapper blocks.

    ``conv2_block1.1_conv`` -> ``conv2_block1_1_conv``. When every path loses its first component and
    the names stay unique and do not start with a number, they lose it: VGG's ``features.block1_conv1``
    and ``classifier.fc1`` become Keras' ``block1_conv1`` and ``fc1``, while ResNet's ``layer1.0.conv1``
    keeps its ``layer1`` (``0_conv1`` would repeat in every stage).
    """
    joined = {p: p.replace(".", "_") for p in paths}
    stripped = {p: p.split(".", 1)[-1].replace(".", "_") for p in paths}
    names = list(stripped.values())
    if len(set(names)) == len(names) and not any(n[:1].isdigit() for n in names):
        return stripped
    return joined


def _units(t: Trace, depth: int | None) -> tuple[dict[int, Any], dict[int, list[Node]], list[Any]]:
    """The table's units in order: a unit is a row, a node or, at ``depth``, the block call (Scope) that holds it.

    Returns (node index -> its unit, id(unit) -> the nodes in it, the units in execution order).
    """
    unit_of: dict[int, Any] = {0: t.nodes[0]}
    units: dict[int, list[Node]] = {id(t.nodes[0]): [t.nodes[0]]}
    order: list[Any] = [t.nodes[0]]
    for n in t.nodes[1:]:
        unit = n.scopes[depth - 1] if depth is not None and len(n.scopes) >= depth else n
        unit_of[n.index] = unit
        if id(unit) not in units:
            units[id(unit)] = []
            order.append(unit)
        units[id(unit)].append(n)
    return unit_of, units, order


def _rows(t: Trace, style: str, depth: int | None) -> tuple[list[Row], set[int]]:
    """The table's rows (one per layer call, or per block at ``depth``) and the ids of the tensors they count."""
    seen: set[int] = set()
    counts = {n.index: _params(n, t, style, seen) for n in t.nodes[1:]}
    unit_of, units, order = _units(t, depth)

    # Nodes and blocks both have a path and a call number.
    short = _keras_names(list(dict.fromkeys(u.path for u in order))) if style == "keras" else {}

    def name(unit: Any) -> str:
        base = short.get(unit.path, unit.path)
        return base if unit.call == 0 else f"{base}[{unit.call}]"

    rows = []
    for unit in order:
        members = units[id(unit)]
        if isinstance(unit, Node):
            out, op = unit, unit.op
            window, formula = (unit.step.text, list(unit.step.formulas)) if unit.step else ("", [])
        else:  # a whole block
            out = t.nodes[unit.output] if unit.output is not None else members[-1]
            op, window, formula = type(unit.module).__name__, "", []
        if style == "keras":
            op = KERAS_TYPES.get(op, op)
            if op == "AdaptiveAvgPool2d" and out.out_shape[-2:] == (1, 1):
                op = "GlobalAveragePooling2D"
        inputs = []
        for n in members:
            for i in n.inputs:
                source = unit_of[i]
                if source is not unit and name(source) not in inputs:
                    inputs.append(name(source))
        params = sum(counts.get(n.index, (0, 0))[0] for n in members)
        trainable = sum(counts.get(n.index, (0, 0))[1] for n in members)
        rf = out.rf
        rows.append(
            Row(
                name=name(unit),
                type=op,
                path="" if isinstance(unit, Node) and unit.kind == "input" else unit.path,
                output_shape=out.out_shape,
                params=params,
                trainable=trainable,
                connected_to=inputs,
                window=window,
                macs=sum(layer_macs(n) for n in members if n.kind != "input"),
                receptive_field=rf.receptive_field if rf else None,
                jump=rf.jump if rf and has_neighbours(out.out_shape) else None,
                formula=formula,
            )
        )
    return rows, seen


# --- the table --------------------------------------------------------------------------------------


def _shape(shape: tuple[int, ...], style: str) -> str:
    if style == "keras":  # Keras: batch None, channels last
        dims = (shape[2:] + shape[1:2]) if len(shape) >= 3 else shape[1:]
        return "(" + ", ".join(["None", *map(str, dims)]) + ")"
    return "[" + ", ".join(map(str, shape)) + "]"


def _hw(v: tuple[int, int] | None, sep: str = "x") -> str:
    if v is None:
        return ""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}{sep}{v[1]}"


def _si(n: float, unit: str) -> str:
    """(15470264320, "MACs") -> '15.47 GMACs'."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{int(n)} {unit}"


def _bytes(n: int) -> str:
    """527.79 MiB, 12.00 KiB, 0 B."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n} B"


def _table(s: Summary) -> str:
    """The Keras layout: a header, one block of lines per row, the totals."""
    header = (
        ["Layer (type)", "Output Shape", "Param #"]
        + (["Connected to"] if s.branching else [])
        + ["Window", "MACs", "RF", "Jump"]
    )
    right = {"Param #", "MACs", "RF", "Jump"}
    lines_per_row = []
    for r in s.rows:
        cells = [f"{r.name} ({r.type})", _shape(r.output_shape, s.style), f"{r.params:,}"]
        connected = r.connected_to or [""]
        if s.branching:
            cells.append(connected[0])
        cells += [r.window, f"{r.macs:,}" if r.macs else "", _hw(r.receptive_field), _hw(r.jump)]
        block = [cells]
        if s.branching:
            col = header.index("Connected to")
            block += [["" if i != col else c for i in range(len(header))] for c in connected[1:]]
        lines_per_row.append(block)
    widths = [max([len(h)] + [len(line[c]) for block in lines_per_row for line in block]) for c, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return (
            " " + "  ".join(c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header)).rstrip()
        )

    rule = len(fmt(header)) + 1
    c, h, w = s.input_size
    mode = f"{s.mode} mode" + (f", depth {s.depth}" if s.depth else "")
    out = [
        f'Model: "{s.model_name}"  (input {s.batch_size}x{c}x{h}x{w}, {mode}, {s.style} style)',
        "_" * rule,
        fmt(header),
        "=" * rule,
    ]
    for block in lines_per_row:
        out += [fmt(line) for line in block]
    out.append("=" * rule)
    out += [
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"  (params counted as {_COUNTED_AS[s.style]})",
    ]
    if s.unused:
        listed = ", ".join(f"{path} ({n:,})" for path, n in s.unused)
        out.append(f"  Did not run in {s.mode} mode (no rows, counted in the totals): {listed}")
    images = f"{s.batch_size} image{'s' if s.batch_size > 1 else ''} of {c}x{h}x{w}"
    out += [
        "_" * rule,
        f"MACs: {s.macs:,} ({_si(s.macs, 'MACs')}), multiply-accumulates of the convolutions and fully connected layers for {images}",
        f"FLOPs: {s.flops:,} ({_si(s.flops, 'FLOPs')}), 2 per MAC",
        f"Parameter memory: {_bytes(s.param_bytes)} ({s.dtype}); buffers {_bytes(s.buffer_bytes)}",
        f"Activation memory: {_bytes(s.activation_bytes)} (outputs of all layers in one forward pass, in-place ops and views excluded)",
        f"Input: {_bytes(s.input_bytes)}",
        "RF: receptive field of the layer's output, in input pixels; Jump: input pixels between neighbouring outputs",
        "_" * rule,
    ]
    return "\n".join(out)


# --- the entry point --------------------------------------------------------------------------------


def summary(
    model_or_name: nn.Module | str,
    input_size: Any = None,
    *,
    style: str = "torch",
    depth: int | None = None,
    batch_size: int = 1,
    mode: str = "eval",
    **options: Any,
) -> Summary:
    """Summarise a zoo model (by name) or any ``nn.Module`` on an input of ``input_size``.

    ``input_size`` is (C, H, W), (H, W) or an int for a square image; a zoo model defaults to its
    native size. ``style`` "torch" or "keras" (see the module docstring); ``depth`` N folds every
    block nested deeper than N levels into one row (None: every layer); ``mode`` "eval" (default) or
    "train" is the mode the model is traced in, its own modes are restored afterwards. ``options``
    go to :func:`cnnzoo.create_model` when a name is given (``aux_logits=True`` ...).

    The model runs once on the ``meta`` device with stand-ins for its tensors: nothing is computed
    and the model's weights are not touched.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(
            f"depth must be a positive integer (1: the model's children) or None (every layer); got {depth!r}"
        )
    model, name = resolve_model(model_or_name, **options)
    native = default_input_size(model)
    if input_size is None and native is None:
        raise ValueError(f"{name} is not a zoo model: give its input_size as (C, H, W)")
    size = normalize_input_size(native if input_size is None else input_size, model_channels(model), name)
    t = trace(model, size, batch_size=batch_size, mode=mode)
    rows, seen = _rows(t, style, depth)
    counted = count_params(model, style)
    params = {id(p): p for p in model.parameters()}
    buffers = {id(b): b for b in model.buffers()}
    first = next(iter(params.values()), None)
    return Summary(
        model_name=name,
        input_size=size,
        batch_size=batch_size,
        style=style,
        mode=mode,
        depth=depth,
        rows=rows,
        total_params=counted.total,
        trainable_params=counted.trainable,
        non_trainable_params=counted.non_trainable,
        macs=sum(r.macs for r in rows),
        param_bytes=sum(p.numel() * p.element_size() for p in params.values()),
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers.values()),
        activation_bytes=sum(n.out_bytes for n in t.nodes[1:] if n.new_memory),
        input_bytes=t.nodes[0].out_bytes,
        dtype=str(first.dtype).removeprefix("torch.") if first is not None else "-",
        unused=_unused(model, style, seen),
    )
