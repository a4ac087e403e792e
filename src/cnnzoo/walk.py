"""The shape walk: the table of ``cnnzoo shape NAME``, one row per layer that changes or checks the size.

:func:`walk` runs the trace engine (:func:`cnnzoo.trace.trace`, shapes only, on the ``meta``
device) and keeps the layers that matter to the size: every window (convolution, pooling, padding,
adaptive pooling), every flatten and fully connected layer, every place where branches meet. Each
row has its formula worked through with the numbers (:mod:`cnnzoo.geometry`, confirmed by PyTorch),
the receptive field and the jump. An input that is too small stops the walk at the first layer that
cannot take it, and :func:`smallest_input` finds the smallest square input that goes through.
:func:`explain_layer` does the same for one layer given by its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import InputShapeError
from .geometry import Step
from .shapes import Layer, explain, receptive_fields
from .trace import (
    Field,
    Node,
    Trace,
    WalkError,
    default_input_size,
    has_neighbours,
    model_channels,
    normalize_input_size,
    resolve_model,
    shape_text,
    trace,
)

# Node, Field, Step, Trace, WalkError, model_channels, normalize_input_size and trace belong to the
# trace engine; they are named here too because ``cnnzoo.walk`` offered them before the engine had a
# module of its own.
__all__ = [
    "Field",
    "Node",
    "Step",
    "Trace",
    "Walk",
    "WalkError",
    "explain_layer",
    "model_channels",
    "normalize_input_size",
    "smallest_input",
    "trace",
    "walk",
]


def _walks(node: Node) -> bool:
    """Rows of the walk: layers that change or check the size (not BatchNorm, ReLU, dropout)."""
    return node.kind == "input" or node.step is not None or len(node.inputs) > 1


def _merge_formula(node: Node) -> str:
    if node.op == "cat" and all(len(s) == 4 for s in node.in_shapes):
        channels = [s[1] for s in node.in_shapes]
        return f"{' + '.join(map(str, channels))} = {sum(channels)} channels"
    return " + ".join(shape_text(s) for s in node.in_shapes) + " (shapes agree)"


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
            formulas = (
                list(node.step.formulas) if node.step else ([_merge_formula(node)] if len(node.inputs) > 1 else [])
            )
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
            lines.append(
                f"All {len(rows) - 1} layers above fit; the output is {'x'.join(map(str, last.out_shape[1:]))}."
            )
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
    model, _ = resolve_model(model)
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
    model, name = resolve_model(model_or_name, **options)
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


def explain_layer(
    size: int, kernel: int, stride: int = 1, padding: Any = 0, dilation: int = 1, ceil_mode: bool = False
) -> str:
    """One layer: the formula worked through (:func:`cnnzoo.shapes.explain`) and its receptive field."""
    text = explain(size, kernel, stride, padding, dilation, ceil_mode)
    rf = receptive_fields([Layer(kernel, stride, dilation)])[-1]
    span = f" (kernel {kernel} with dilation {dilation})" if dilation > 1 else ""
    return (
        f"{text}\n"
        f"Receptive field: each output pixel sees {rf.receptive_field}x{rf.receptive_field} input pixels{span}; "
        f"neighbouring outputs are {rf.jump} input pixel{'s' if rf.jump != 1 else ''} apart (jump {rf.jump})."
    )
