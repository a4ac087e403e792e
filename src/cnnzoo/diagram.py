"""Architecture diagrams: a network drawn as boxes and arrows, from the same trace as its summary.

:func:`diagram` runs the model once on the ``meta`` device (:func:`cnnzoo.trace.trace`, the pass
behind :func:`cnnzoo.summary`, so every shape drawn is a shape of the summary) and draws it:

* a layer is a box with its name, type, window and output shape (``Conv2d 7x7/2 p3`` over
  ``64x112x112``). A BatchNorm, activation or dropout that only post-processes one layer's output is
  folded into that layer's box (``Conv2d 3x3/1 p1 + BN + ReLU``), an explicit padding into the
  window that follows it (``pad 3 + Conv2d 7x7/2``): a conv block of three modules reads as the one
  layer it is;
* a block (a module with children) whose insides fold into one box is that box; any other block is a
  frame around its insides, laid out as the graph it is: branches side by side (an Inception module's
  paths in columns, joined by its concat), a residual shortcut as a line on the side from the block's
  input to the add, a projection shortcut as a box on that line;
* consecutive sibling blocks of one design (the blocks of a ResNet stage) are drawn once and marked
  ``×N``. "One design": the same class, each fed by the one before, the same layers with the same
  channels; the first may add layers (a projection shortcut) or change a stride, which the mark says.

``depth`` chooses how much is opened: ``None`` (the default) every block, repeats collapsed; ``1`` only
the model's children, as boxes; ``N`` blocks down to nesting level ``N - 1`` opened, those at level
``N`` as boxes, every block drawn (nothing collapsed).

The layout is the layered (Sugiyama) recipe, applied to each frame on its own, inside out. A frame's
items (boxes and inner frames) form a small graph; chains in it become columns; each column is
ranked by the longest path from the frame's input, and rank r is row r, its columns side by side,
each under the mean of the columns that feed it (an add under its main path). An edge that skips
rows runs through a thin slot reserved in each row between its ends, so it never crosses a box: a
residual shortcut is such an edge, drawn on the side. Columns are aligned on their input ports, so
a chain of layers is a straight line. Text widths are computed from character counts of a monospace
font (DejaVu Sans Mono, which matplotlib ships), so boxes fit their text in the SVG and the PNG,
which draw the same layout.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from torch import nn

from .errors import InputShapeError
from .fileio import atomic_write
from .layers import SamePad2d
from .trace import (
    Node,
    Scope,
    Trace,
    default_input_size,
    model_channels,
    normalize_input_size,
    resolve_model,
    shape_text,
    trace,
)

__all__ = ["Box", "Diagram", "Edge", "Frame", "FORMATS", "diagram"]

FORMATS = ("svg", "png")

# --- sizes, in drawing units (SVG user units; PNG pixels at scale 1) --------------------------------

FONT = "DejaVu Sans Mono"  # matplotlib ships it, so the PNG measures what the SVG assumes
SVG_FONTS = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace"
EM = 0.602  # advance width of one DejaVu Sans Mono character, in font sizes (bold has the same)
TEXT_SLACK = 1.06  # room for a viewer's monospace font that runs a little wider
# (font size, line height) of the three lines of a box, and of frame headers
NAME, TITLE, SHAPE = (10, 13), (12, 16), (11, 14)
HEAD, NOTE, ROOT = (11, 15), (10, 13), (14, 19)
BOX_PAD_X, BOX_PAD_Y, BOX_MIN_W = 10, 6, 90
FRAME_PAD = 10
ROW_GAP = 34  # between the rows of a frame: room for the curves that join them
CHAIN_GAP = 22  # between the items of one column
SLOT_GAP = 22  # between the columns of a row
LANE_W = 14  # the slot an edge that skips a row runs through
FAN_GAP = 26  # below a frame's header, when its input fans out to several places
MARGIN = 16
ARROW_LEN, ARROW_HALF = 8, 4
NOTE_CHARS = 56  # a frame's note is wrapped at this many characters
PNG_DPI = 100
PNG_COLOURS = 64
PNG_MAX_PIXELS = 30_000  # Agg refuses images above 2**16 pixels a side; keep well inside

# fill, stroke of a box, by the kind of layer
COLOURS = {
    "conv": ("#dceafb", "#4a7ab5"),
    "pool": ("#e3f2d9", "#5d9a3c"),
    "linear": ("#fde8cc", "#c98a2c"),
    "merge": ("#f6dde9", "#b04a7e"),
    "block": ("#e9e2f5", "#7b61a8"),
    "input": ("#eeeeee", "#777777"),
    "other": ("#f4f4f4", "#8a8a8a"),
}
FRAME_STROKE, GROUP_STROKE, FRAME_FILL = "#9aa3ad", "#7b61a8", "#f8f9fb"
EDGE_COLOUR, SHORTCUT_COLOUR = "#555555", "#c0392b"
NAME_COLOUR, TITLE_COLOUR, SHAPE_COLOUR = "#5a5a5a", "#111111", "#1f4e79"

# A layer folded into the box of the layer before it: it only post-processes that layer's output.
_FOLDED_MODULES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
)
_FOLDED_OPS = {"relu", "relu6", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "dropout", "batch_norm", "hardswish"}
_PADDING = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, SamePad2d)
_OP_TITLES = {"cat": "concat"}

PORT, EXIT = "port", "exit"  # the two ends of a frame's edges that lie outside it


def _text_w(text: str, size: int) -> float:
    return len(text) * EM * size * TEXT_SLACK


# --- the parts of a drawing -------------------------------------------------------------------------


@dataclass(eq=False)
class Box:
    """One drawn rectangle: a layer (with what is folded into it), or a block shown closed.

    ``name`` is the full module path, ``label`` the part shown (relative to the frame around it);
    ``layer`` is the trace node (a :func:`cnnzoo.summary` row name) whose output ``shape`` is.
    """

    name: str
    label: str
    title: str
    layer: str
    shape: str
    kind: str
    nodes: list[int]  # the trace nodes this box draws
    first: int  # the node its input goes to
    out: int  # the node whose output leaves it
    op: str = ""  # the first node's op ("add" marks a residual join)
    rel_x: float = 0.0  # position in the frame around it
    rel_y: float = 0.0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0

    @property
    def members(self) -> list[int]:
        return self.nodes

    @property
    def in_dx(self) -> float:
        return self.w / 2

    @property
    def out_dx(self) -> float:
        return self.w / 2

    def lines(self) -> list[tuple[str, tuple[int, int], str]]:
        """(text, (font size, line height), role) of the box's lines, top to bottom."""
        lines = [(self.label, NAME, "name")] if self.label else []
        return lines + [(self.title, TITLE, "title"), (self.shape, SHAPE, "shape")]

    def measure(self) -> None:
        lines = self.lines()
        self.w = max(BOX_MIN_W, max(_text_w(t, size) for t, (size, _), _ in lines) + 2 * BOX_PAD_X)
        self.h = sum(height for _, (_, height), _ in lines) + 2 * BOX_PAD_Y

    def absorb(self, other: Box, short: str) -> None:
        """Fold ``other`` (a BatchNorm, activation, dropout reading only this box) into this box."""
        self.nodes = self.nodes + other.nodes
        self.out, self.layer, self.shape = other.out, other.layer, other.shape
        self.title = f"{self.title} + {short}"

    def prefix(self, pad: Box, text: str) -> None:
        """Fold an explicit padding that only this box reads into it."""
        self.nodes = pad.nodes + self.nodes
        self.first = pad.first
        self.title = f"{text} + {self.title}"


@dataclass(eq=False)
class Frame:
    """A block drawn open: its items inside a border, with a header naming it.

    A collapsed run of ``repeat`` blocks draws the first one's items; ``alias`` sends the nodes of
    the others to the first one's output, so that what leaves the last block leaves the frame.
    """

    name: str
    name_text: str
    kind_text: str
    items: list[Box | Frame]
    members: list[int]
    out: int  # the node whose output is the block's
    scope: Scope | None = None
    repeat: int = 1
    notes: list[str] = field(default_factory=list)
    range_text: str = ""  # a collapsed run: the first and last block's paths
    shape_layer: str = ""  # a collapsed run shows the last block's output shape in its header
    shape: str = ""
    border: bool = True
    alias: dict[int, int] = field(default_factory=dict)
    rel_x: float = 0.0
    rel_y: float = 0.0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    in_dx: float = 0.0
    out_dx: float = 0.0
    head_h: float = 0.0
    head_right: bool = False  # the header is right-aligned (the input line runs left of it)
    links: list[_Link] = field(default_factory=list)
    rows: list[list[_Slot]] = field(default_factory=list)
    row_top: list[float] = field(default_factory=list)
    row_h: list[float] = field(default_factory=list)
    offset: float = 0.0  # x of the content's left edge inside the frame

    def head_lines(self) -> list[tuple[str, tuple[int, int], bool]]:
        """(text, (font size, line height), bold) of the header's lines."""
        if not self.border:  # the model itself
            return [(f"{self.name_text} · {self.kind_text}", ROOT, True)] + [(n, NOTE, False) for n in self.notes]
        title = f"{self.name_text} · {self.kind_text}" + (" →" if self.shape else "")
        lines = [(title, HEAD, True)]
        for note in self.notes:
            lines += [(part, NOTE, False) for part in textwrap.wrap(note, NOTE_CHARS)]
        return lines

    def head_width(self) -> float:
        widths = [_text_w(t, size) for t, (size, _), _ in self.head_lines()]
        if self.shape:
            widths[0] += _text_w(" " + self.shape, HEAD[0])
        return max(widths)


@dataclass(eq=False)
class _Link:
    """An edge between two items of one frame (or the frame's input / output and an item)."""

    src: Any  # an item, or PORT
    dst: Any  # an item, or EXIT
    shortcut: bool = False
    lanes: list[_Slot] = field(default_factory=list)


@dataclass(eq=False)
class _Slot:
    """A place in a row: a column (a chain of items) or a lane an edge runs through."""

    items: list[Any]
    order: int
    link: _Link | None = None
    shortcut: bool = False
    preds: list[tuple[_Slot, _Link]] = field(default_factory=list)
    ax: float = 0.0  # the axis: x of the column's input port, relative to the content's left
    lw: float = LANE_W / 2  # extent left and right of the axis
    rw: float = LANE_W / 2
    h: float = 0.0
    abs_x: float = 0.0


@dataclass
class Edge:
    """A drawn edge: ``path`` is SVG-like segments ("M", x, y) / ("L", x, y) / ("C", x1, y1, x2, y2, x, y)."""

    path: list[tuple]
    shortcut: bool
    arrow: list[tuple[float, float]] | None  # the arrowhead's triangle, where the edge ends at a box


# --- from the trace to boxes and frames --------------------------------------------------------------


def _relative(path: str, prefix: str) -> str:
    if not prefix:
        return path
    if path == prefix:
        return ""
    return path[len(prefix) + 1 :] if path.startswith(prefix + ".") else path


def _kind(n: Node) -> str:
    op = n.op.lower()
    if n.kind == "input":
        return "input"
    if isinstance(n.module, nn.modules.conv._ConvNd) or op.startswith("conv"):
        return "conv"
    if isinstance(n.module, nn.Linear) or op == "linear":
        return "linear"
    if "pool" in op or op == "mean":
        return "pool"
    return "merge" if len(n.inputs) > 1 else "other"


def _title(n: Node) -> str:
    """What the layer is, as the summary shows it: its type and its window (``MaxPool2d 3x3/2 p1``)."""
    if n.kind == "input":
        return "Input"
    op = _OP_TITLES.get(n.op, n.op)
    if n.op in ("Linear", "linear") and n.in_shapes:
        return f"{op} {n.in_shapes[0][-1]}→{n.out_shape[-1]}"
    window = n.step.text if n.step is not None else ""
    return f"{op} {window}".strip()


def _folds(n: Node) -> bool:
    """Whether a layer only post-processes its one input, keeping its shape (BN, activations, dropout)."""
    if n.kind == "input" or len(n.inputs) != 1 or n.in_shapes[0] != n.out_shape:
        return False
    return isinstance(n.module, _FOLDED_MODULES) or (n.kind == "function" and n.op in _FOLDED_OPS)


def _short(n: Node) -> str:
    if isinstance(n.module, nn.modules.batchnorm._BatchNorm) or n.op == "batch_norm":
        return "BN"
    if isinstance(n.module, nn.modules.dropout._DropoutNd) or n.op == "dropout":
        return "Dropout"
    return {"relu": "ReLU"}.get(n.op, n.op)


def _is_padding(n: Node) -> bool:
    return isinstance(n.module, _PADDING) or n.op == "pad"


class _Builder:
    """Turns a trace into the tree of boxes and frames for one ``depth``."""

    def __init__(self, t: Trace, depth: int | None) -> None:
        self.nodes = t.nodes
        self.depth = depth
        self.consumers: dict[int, list[int]] = defaultdict(list)
        self.children: dict[int, list[Node | Scope]] = defaultdict(list)  # id(scope) (0: the model) -> children
        self.scope_nodes: dict[int, list[int]] = defaultdict(list)
        self.edges = [(i, n.index) for n in t.nodes for i in n.inputs]
        seen: set[int] = set()
        for n in t.nodes:
            for i in n.inputs:
                self.consumers[i].append(n.index)
            parent = 0
            for s in n.scopes:
                self.scope_nodes[id(s)].append(n.index)
                if id(s) not in seen:
                    seen.add(id(s))
                    self.children[parent].append(s)
                parent = id(s)
            self.children[parent].append(n)

    def root(self, t: Trace) -> Frame:
        items = self.items(0, "")
        notes = ["each box: layer, window (kernel/stride, padding), output shape C x H x W"]
        if any(isinstance(f, Frame) and f.repeat > 1 for f in _frames_in(items)):
            notes.append("×N: N consecutive blocks of one design, the first one drawn")
        out = t.output if t.output is not None else len(t.nodes) - 1
        kind = type(t.model).__name__
        return Frame(t.model_name, t.model_name, kind, items, list(range(len(t.nodes))), out, notes=notes, border=False)

    def items(self, parent: int, prefix: str) -> list[Box | Frame]:
        """The items of one block (``parent``: id of its scope, 0 for the model), folded and collapsed."""
        items = [self._child(c, prefix) for c in self.children[parent]]
        items = self._fold(self._fold_pads(items))
        return self._collapse(items) if self.depth is None else items

    def _child(self, c: Node | Scope, prefix: str) -> Box | Frame:
        if isinstance(c, Node):
            return Box(c.name, _relative(c.name, prefix), _title(c), c.name, shape_text(c.out_shape), _kind(c),
                       [c.index], c.index, c.index, c.op)  # fmt: skip
        return self._block(c, prefix)

    def _block(self, s: Scope, prefix: str) -> Box | Frame:
        path = s.path if s.call == 0 else f"{s.path}[{s.call}]"
        label = _relative(path, prefix)
        members = self.scope_nodes[id(s)]
        out = s.output if s.output is not None else members[-1]
        inner = self.items(id(s), s.path)
        if len(inner) == 1 and isinstance(inner[0], Box) and inner[0].kind != "block":
            box = inner[0]  # a conv block, a projection shortcut: one layer and what it folds
            box.name, box.label, box.nodes = path, label, list(members)
            return box
        cls = type(s.module).__name__
        if self.depth is not None and s.depth >= self.depth:
            node = self.nodes[out]
            return Box(path, label, cls, node.name, shape_text(node.out_shape), "block", list(members), members[0], out)
        only = inner[0] if len(inner) == 1 else None
        if isinstance(only, Frame) and only.repeat > 1:  # a stage around its ×N: one frame, named after the stage
            only.notes = [f"{only.range_text}: {note}" for note in only.notes] or [only.range_text]
            only.name, only.name_text, only.scope, only.out = path, label, s, out
            return only
        return Frame(path, label, cls, inner, list(members), out, scope=s)

    def _fold_pads(self, items: list[Box | Frame]) -> list[Box | Frame]:
        """A padding read only by the conv or pool after it becomes part of that box."""
        pads: dict[int, Box] = {}
        out: list[Box | Frame] = []
        for item in items:
            if isinstance(item, Box) and len(item.nodes) == 1 and _is_padding(self.nodes[item.first]):
                pads[item.out] = item
            elif isinstance(item, Box) and item.kind in ("conv", "pool"):
                first = self.nodes[item.first]
                pad = pads.get(first.inputs[0]) if len(first.inputs) == 1 else None
                if pad is not None and self.consumers[pad.out] == [first.index]:
                    step = self.nodes[pad.first].step
                    item.prefix(pad, step.text if step is not None and step.text else pad.title)
                    out.remove(pad)
            out.append(item)
        return out

    def _fold(self, items: list[Box | Frame]) -> list[Box | Frame]:
        """BN, activation, dropout read only from one layer's box join that box."""
        hosts: dict[int, Box] = {}  # output node -> the layer box it leaves
        out: list[Box | Frame] = []
        for item in items:
            if isinstance(item, Box) and len(item.nodes) == 1 and _folds(self.nodes[item.first]):
                source = self.nodes[item.first].inputs[0]
                host = hosts.get(source)
                if host is not None and self.consumers[source] == [item.first]:
                    host.absorb(item, _short(self.nodes[item.first]))
                    hosts[host.out] = hosts.pop(source)
                    continue
            if isinstance(item, Box) and item.kind not in ("input", "block"):
                hosts[item.out] = item
            out.append(item)
        return out

    # collapsing repeats

    def _signature(self, s: Scope) -> tuple[tuple[str, str, str, int, bool], ...]:
        """What a block is made of: (relative path, op, window, output channels, weighted) of every layer in it."""
        sig = []
        for i in self.scope_nodes[id(s)]:
            n = self.nodes[i]
            channels = n.out_shape[1] if len(n.out_shape) > 1 else 0
            weighted = bool(n.weights) or (
                n.module is not None and any(True for _ in n.module.parameters(recurse=False))
            )
            sig.append((_relative(n.path, s.path), n.op, n.step.text if n.step else "", channels, weighted))
        return tuple(sig)

    @staticmethod
    def _design(sig: tuple) -> set[tuple[str, str, int | None]]:
        """The layers and the widths of the weighted ones: what the first block of a run shares with the rest.

        (A pooling branch passes its input's channels through, and the first block's input may be
        narrower, as in a ResNet stage; its weighted layers must have the widths of the others'.)
        """
        return {(p, op, c if weighted else None) for p, op, _, c, weighted in sig}

    def _repeats(self, run: list[Frame], item: Box | Frame) -> bool:
        """Whether ``item`` continues the run of blocks of one design (see the module docstring)."""
        first, last = run[0], run[-1]
        if not isinstance(item, Frame) or item.scope is None or first.scope is None:
            return False
        if type(item.scope.module) is not type(first.scope.module):
            return False
        if not any(last.out in self.nodes[i].inputs for i in item.members):
            return False  # side by side (two branches of one class), not one after the other
        sig = self._signature(item.scope)
        if len(run) > 1:
            return sig == self._signature(run[1].scope)
        return self._design(sig) <= self._design(self._signature(first.scope))

    def _collapse(self, items: list[Box | Frame]) -> list[Box | Frame]:
        out: list[Box | Frame] = []
        i = 0
        while i < len(items):
            run = [items[i]]
            if isinstance(items[i], Frame):
                while i + len(run) < len(items) and self._repeats(run, items[i + len(run)]):
                    run.append(items[i + len(run)])
            out.append(self._group(run) if len(run) > 1 else items[i])
            i += len(run)
        return out

    def _group(self, run: list[Frame]) -> Frame:
        first, last = run[0], run[-1]
        hidden = [n for f in run[1:] for n in f.members]
        target = first.alias.get(first.out, first.out)  # the drawn block's output (a stage's: its first block's)
        note = self._difference(first, run[1])
        node = self.nodes[last.out]
        return Frame(
            name=first.name,
            name_text=f"{first.name_text} … {last.name_text}",
            range_text=f"{first.name} … {last.name}",
            kind_text=f"{first.kind_text} ×{len(run)}",
            items=first.items,
            members=first.members + hidden,
            out=last.out,
            scope=first.scope,
            repeat=len(run),
            notes=[note] if note else [],
            shape_layer=node.name,
            shape=shape_text(node.out_shape),
            alias={**first.alias, **{n: target for n in hidden}},
        )

    def _difference(self, first: Frame, second: Frame) -> str:
        """How the first block of a run differs from the others: "the first has a projection shortcut (downsample)"."""
        a, b = self._signature(first.scope), self._signature(second.scope)
        if a == b:
            return ""
        steps = {(p, op): step for p, op, step, _, _ in b}
        children = dict(first.scope.module.named_children())
        extra = list(dict.fromkeys(p.split(".")[0] for p, op, _, _, _ in a if (p, op) not in steps and p))
        extra = [e for e in extra if e in children]
        changed = [f"{p} {step}" for p, op, step, _, _ in a if (p, op) in steps and steps[(p, op)] != step and p]
        parts = []
        if extra:
            weighted = any(p.numel() for e in extra for p in children[e].parameters())
            residual = any(op == "add" for _, op, _, _, _ in a)
            what = ("a projection shortcut" if weighted else "a shortcut") if residual else "extra layers"
            parts.append(f"{what} ({', '.join(extra)})")
        parts += changed[:2]
        if not parts:  # the same layers and widths: only what comes in differs
            channels = [self.nodes[f.members[0]].in_shapes[0][1] for f in (first, second)]
            return f"the first takes {channels[0]} input channels, the others {channels[1]}"
        return "the first has " + ", ".join(parts)


def _frames_in(items: list[Box | Frame]) -> list[Frame]:
    out = []
    for item in items:
        if isinstance(item, Frame):
            out += [item] + _frames_in(item.items)
    return out


# --- layout --------------------------------------------------------------------------------------------


def _links(frame: Frame, edges: list[tuple[int, int]]) -> list[_Link]:
    """The frame's edges between its items: every trace edge, seen from this frame."""
    owner: dict[int, Box | Frame] = {}
    for item in frame.items:
        for n in item.members:
            owner[n] = item
    links: dict[tuple[int, int], _Link] = {}
    for u, v in edges:
        a = owner.get(frame.alias.get(u, u), PORT)
        b = owner.get(frame.alias.get(v, v), EXIT)
        if a is b or (a is PORT and b is EXIT):
            continue
        links.setdefault((id(a), id(b)), _Link(a, b))
    return list(links.values())


def _columns(items: list[Box | Frame], links: list[_Link]) -> tuple[list[_Slot], dict[int, _Slot]]:
    """Chains of items (each the only successor of the one before, which is its only predecessor)."""
    succ: dict[int, list[Any]] = defaultdict(list)
    pred: dict[int, list[Any]] = defaultdict(list)
    for link in links:
        succ[id(link.src)].append(link.dst)
        pred[id(link.dst)].append(link.src)
    nxt = {}
    for item in items:
        s = succ[id(item)]
        if len(s) == 1 and s[0] is not EXIT and len(pred[id(s[0])]) == 1:
            nxt[id(item)] = s[0]
    followers = {id(v) for v in nxt.values()}
    slots: list[_Slot] = []
    col_of: dict[int, _Slot] = {}
    for item in items:
        if id(item) in followers:
            continue
        chain = [item]
        while id(chain[-1]) in nxt:
            chain.append(nxt[id(chain[-1])])
        slot = _Slot(items=chain, order=len(slots))
        slot.lw = max(i.in_dx for i in chain)
        slot.rw = max(i.w - i.in_dx for i in chain)
        slot.h = sum(i.h for i in chain) + CHAIN_GAP * (len(chain) - 1)
        for i in chain:
            col_of[id(i)] = slot
        slots.append(slot)
    return slots, col_of


def _ranks(slots: list[_Slot], links: list[_Link], col_of: dict[int, _Slot]) -> dict[int, int]:
    """The row of every column: the longest path to it from the frame's input."""
    preds: dict[int, list[_Slot]] = defaultdict(list)
    for link in links:
        if link.src is not PORT and link.dst is not EXIT and col_of[id(link.src)] is not col_of[id(link.dst)]:
            preds[id(col_of[id(link.dst)])].append(col_of[id(link.src)])
    rank: dict[int, int] = {}

    def rank_of(slot: _Slot) -> int:
        if id(slot) not in rank:
            rank[id(slot)] = 0  # a guard, should the item graph ever have a cycle
            rank[id(slot)] = 1 + max((rank_of(p) for p in preds[id(slot)]), default=-1)
        return rank[id(slot)]

    for slot in slots:
        rank_of(slot)
    return rank


def _mark_shortcuts(links: list[_Link], col_of: dict[int, _Slot]) -> None:
    """Edges into an add other than from its main (tallest) input are shortcuts, and so is what only feeds them."""
    into: dict[int, list[_Link]] = defaultdict(list)
    for link in links:
        if isinstance(link.dst, Box) and link.dst.op == "add":
            into[id(link.dst)].append(link)
    for group in into.values():
        inner = [lk for lk in group if lk.src is not PORT]
        if len(group) < 2 or not inner:
            continue
        main = max(inner, key=lambda lk: col_of[id(lk.src)].h)
        for link in group:
            link.shortcut = link is not main
    changed = True
    while changed:
        changed = False
        for slot in {id(s): s for s in col_of.values()}.values():
            outs = [lk for lk in links if lk.src is slot.items[-1]]
            if not slot.shortcut and outs and all(lk.shortcut for lk in outs):
                slot.shortcut = changed = True
                for link in links:
                    if any(link.dst is i for i in slot.items):
                        link.shortcut = True


def _rows(slots: list[_Slot], rank: dict[int, int], links: list[_Link], col_of: dict[int, _Slot]) -> list[list[_Slot]]:
    """Columns by rank, and a lane in every row an edge passes without stopping."""
    rows: list[list[_Slot]] = [[] for _ in range(max(rank.values()) + 1)]
    for slot in slots:
        rows[rank[id(slot)]].append(slot)
    for link in links:
        src = None if link.src is PORT else col_of[id(link.src)]
        dst = None if link.dst is EXIT else col_of[id(link.dst)]
        if src is dst:
            continue  # consecutive items of one column
        start = -1 if src is None else rank[id(src)]
        end = len(rows) if dst is None else rank[id(dst)]
        prev = src
        for r in range(start + 1, end):
            lane = _Slot(items=[], order=10_000 + len(link.lanes), link=link, shortcut=link.shortcut)
            if prev is not None:
                lane.preds.append((prev, link))
            rows[r].append(lane)
            link.lanes.append(lane)
            prev = lane
        if dst is not None and prev is not None:
            dst.preds.append((prev, link))
    return rows


def _want(slot: _Slot) -> float | None:
    """Where a slot would like its axis: under the mean of what feeds it (of its main inputs, for an add)."""
    preds = [p for p, link in slot.preds if not link.shortcut] or [p for p, _ in slot.preds]
    return sum(p.ax for p in preds) / len(preds) if preds else None


def _place_rows(rows: list[list[_Slot]]) -> None:
    """Axes of the slots: row 0 left to right (shortcuts last), later rows under their inputs, never overlapping."""
    for r, row in enumerate(rows):
        wants = {id(s): _want(s) for s in row}
        if r == 0:
            row.sort(key=lambda s: (s.shortcut, s.link is not None, s.order))
        else:
            row.sort(key=lambda s: (math.inf if wants[id(s)] is None else wants[id(s)], s.shortcut, s.order))
        right = -math.inf
        for slot in row:
            want = wants[id(slot)]
            earliest = slot.lw if right == -math.inf else right + SLOT_GAP + slot.lw
            slot.ax = earliest if want is None or r == 0 else max(want, earliest)
            right = slot.ax + slot.rw
        moves = [wants[id(s)] - s.ax for s in row if wants[id(s)] is not None]
        if r > 0 and moves:
            shift = sum(moves) / len(moves)
            for slot in row:
                slot.ax += shift


def _entry_axis(frame: Frame, rows: list[list[_Slot]]) -> float | None:
    """The axis of the frame's input port: the mean of its entries' axes, shortcuts left out."""
    entries = [s for s in rows[0] if (s.link is not None and s.link.src is PORT) or s.items and _is_entry(frame, s)]
    main = [s for s in entries if not s.shortcut] or entries
    return sum(s.ax for s in main) / len(main) if main else None


def _is_entry(frame: Frame, slot: _Slot) -> bool:
    return any(link.src is PORT and link.dst is slot.items[0] for link in frame.links)


def _layout(frame: Frame, edges: list[tuple[int, int]]) -> None:
    """Size ``frame`` and place its items relative to it (its inner frames first)."""
    for item in frame.items:
        if isinstance(item, Frame):
            _layout(item, edges)
        else:
            item.measure()
    frame.links = _links(frame, edges)
    slots, col_of = _columns(frame.items, frame.links)
    rank = _ranks(slots, frame.links, col_of)
    _mark_shortcuts(frame.links, col_of)
    frame.rows = _rows(slots, rank, frame.links, col_of)
    _place_rows(frame.rows)
    _size(frame)


def _size(frame: Frame) -> None:
    """The frame's header, rows and size; every item's position relative to the frame."""
    rows = frame.rows
    left = min(s.ax - s.lw for row in rows for s in row)
    right = max(s.ax + s.rw for row in rows for s in row)
    content_w = right - left
    lines = frame.head_lines()
    frame.head_h = 4 + sum(height for _, (_, height), _ in lines) + (4 if frame.border else 8)
    entry = _entry_axis(frame, rows)
    fans = sum(1 for link in frame.links if link.src is PORT) > 1
    pad_left = pad_right = FRAME_PAD
    head_w = frame.head_width()
    frame.head_right = False
    if entry is not None and frame.border:
        port = entry - left  # from the content's left edge
        room_left = port - 8  # the header must leave the input line free
        room_right = content_w - port - 8
        if head_w > room_left and head_w <= room_right:
            frame.head_right = True
        elif head_w > room_left:
            if room_left >= room_right:
                pad_left += head_w - room_left
            else:
                frame.head_right = True
                pad_right += head_w - room_right
    width = max(pad_left + content_w + pad_right, head_w + 2 * FRAME_PAD)
    pad_right = width - pad_left - content_w
    frame.offset = pad_left - left
    top = frame.head_h + (FAN_GAP if fans else FRAME_PAD / 2)
    frame.row_top, frame.row_h = [], []
    for row in rows:
        height = max((s.h for s in row if s.items), default=0.0)
        frame.row_top.append(top)
        frame.row_h.append(height)
        for slot in row:
            _stack(slot, frame.offset, top)
        top += height + ROW_GAP
    frame.w, frame.h = width, top - ROW_GAP + FRAME_PAD
    frame.in_dx = frame.offset + entry if entry is not None else frame.w / 2
    out_item = next((i for i in frame.items if frame.alias.get(frame.out, frame.out) in i.members), None)
    frame.out_dx = out_item.rel_x + out_item.out_dx if out_item is not None else frame.w / 2


def _stack(slot: _Slot, offset: float, top: float) -> None:
    """The items of a column, one under the other, their input ports on the column's axis."""
    y = top
    for item in slot.items:
        item.rel_x = offset + slot.ax - item.in_dx
        item.rel_y = y
        y += item.h + CHAIN_GAP


def _place(frame: Frame, x: float, y: float) -> None:
    """Absolute positions, from the relative ones."""
    frame.x, frame.y = x, y
    for row in frame.rows:
        for slot in row:
            slot.abs_x = x + frame.offset + slot.ax
    for item in frame.items:
        if isinstance(item, Frame):
            _place(item, x + item.rel_x, y + item.rel_y)
        else:
            item.x, item.y = x + item.rel_x, y + item.rel_y


# --- edges -------------------------------------------------------------------------------------------


def _curve(x0: float, y0: float, x1: float, y1: float) -> tuple:
    """From one point down to another: a line when they are aligned, else an S-curve with vertical ends."""
    if abs(x0 - x1) < 0.5:
        return ("L", x1, y1)
    dy = (y1 - y0) / 2
    return ("C", x0, y0 + dy, x1, y1 - dy, x1, y1)


def _arrow(tip: tuple[float, float], before: tuple[float, float]) -> list[tuple[float, float]]:
    dx, dy = tip[0] - before[0], tip[1] - before[1]
    norm = math.hypot(dx, dy) or 1.0
    dx, dy = dx / norm, dy / norm
    bx, by = tip[0] - ARROW_LEN * dx, tip[1] - ARROW_LEN * dy
    return [tip, (bx - ARROW_HALF * dy, by + ARROW_HALF * dx), (bx + ARROW_HALF * dy, by - ARROW_HALF * dx)]


def _route(frame: Frame, link: _Link, row_of: dict[int, int], col_of: dict[int, _Slot]) -> Edge:
    """The path of one link: down from its source, through its lanes, into its target."""
    if link.src is PORT:
        x, y = frame.x + frame.in_dx, frame.y
        path: list[tuple] = [("M", x, y), ("L", x, frame.y + frame.head_h)]
        y = frame.y + frame.head_h
    else:
        x, y = link.src.x + link.src.out_dx, link.src.y + link.src.h
        path = [("M", x, y)]
        same_column = link.dst is not EXIT and col_of.get(id(link.dst)) is col_of[id(link.src)]
        bottom = frame.y + frame.row_top[row_of[id(link.src)]] + frame.row_h[row_of[id(link.src)]]
        if not same_column and y < bottom - 0.5:
            path.append(("L", x, bottom))
            y = bottom
    for lane in link.lanes:
        r = row_of[id(lane)]
        top = frame.y + frame.row_top[r]
        path += [_curve(x, y, lane.abs_x, top), ("L", lane.abs_x, top + frame.row_h[r])]
        x, y = lane.abs_x, top + frame.row_h[r]
    if link.dst is EXIT:
        path.append(_curve(x, y, frame.x + frame.out_dx, frame.y + frame.h))
        return Edge(path, link.shortcut, None)
    dst = link.dst
    if isinstance(dst, Box) and link.shortcut and dst.op == "add" and abs(x - (dst.x + dst.w / 2)) > dst.w / 2 + 10:
        side = dst.x + dst.w if x > dst.x + dst.w / 2 else dst.x  # into the add's side, as a shortcut joins
        ty = dst.y + dst.h / 2
        turn = 10 if x > side else -10
        path += [("L", x, ty - 10), ("C", x, ty, x, ty, x - turn, ty), ("L", side, ty)]
        return Edge(path, True, _arrow((side, ty), (x - turn, ty)))
    tx, ty = dst.x + dst.in_dx, dst.y
    path.append(_curve(x, y, tx, ty))
    before = (tx, ty - 1) if path[-1][0] == "C" else (x, y)
    return Edge(path, link.shortcut, _arrow((tx, ty), before) if isinstance(dst, Box) else None)


def _routes(frame: Frame) -> list[Edge]:
    row_of: dict[int, int] = {}
    col_of: dict[int, _Slot] = {}
    for r, row in enumerate(frame.rows):
        for slot in row:
            row_of[id(slot)] = r
            for item in slot.items:
                row_of[id(item)] = r
                col_of[id(item)] = slot
    edges = [_route(frame, link, row_of, col_of) for link in frame.links]
    for item in frame.items:
        if isinstance(item, Frame):
            edges += _routes(item)
    return edges


# --- the diagram ---------------------------------------------------------------------------------------


@dataclass
class Diagram:
    """A laid-out architecture diagram; :meth:`to_svg`, :meth:`to_png` and :meth:`save` draw it."""

    model_name: str
    input_size: tuple[int, int, int]
    depth: int | None
    fmt: str
    root: Frame
    edges: list[Edge]
    width: int
    height: int

    @property
    def frames(self) -> list[Frame]:
        """Every frame drawn (the model's own first), outer before inner."""
        return [self.root] + _frames_in(self.root.items)

    @property
    def boxes(self) -> list[Box]:
        return [i for f in self.frames for i in f.items if isinstance(i, Box)]

    def to_svg(self) -> str:
        return _svg(self)

    def to_png(self, scale: float = 1.0) -> bytes:
        buffer = io.BytesIO()
        _png(self, buffer, scale)
        return buffer.getvalue()

    def to_bytes(self) -> bytes:
        """The drawing in the format chosen when it was made (``fmt``)."""
        return self.to_svg().encode("utf-8") if self.fmt == "svg" else self.to_png()

    def save(self, path: str | os.PathLike, scale: float = 1.0) -> Path:
        """Write the drawing to ``path``: SVG or PNG by its suffix (none: ``fmt``'s), atomically."""
        path = Path(path)
        suffix = path.suffix.lower().lstrip(".")
        if not suffix:
            path, suffix = path.with_suffix(f".{self.fmt}"), self.fmt
        if suffix not in FORMATS:
            raise ValueError(f"diagram file {str(path)!r}: the suffix must be .svg or .png, not .{suffix}; rename it")
        if suffix == "svg":
            text = self.to_svg()

            def write(tmp: str) -> None:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)

            atomic_write(path, write)
        else:
            atomic_write(path, lambda tmp: _png(self, tmp, scale))
        return path


def diagram(
    model: nn.Module | str,
    *,
    input_size: Any = None,
    depth: int | None = None,
    fmt: str = "svg",
) -> Diagram:
    """The architecture diagram of ``model`` (an ``nn.Module``, or a zoo name, built on ``meta``).

    ``input_size`` is (C, H, W), (H, W) or an int (square); a zoo model defaults to its native size,
    any other module must be given one. ``depth``: see the module docstring (None: every block open,
    repeats collapsed). ``fmt`` ("svg" or "png") is the format of :meth:`Diagram.to_bytes` and of a
    :meth:`Diagram.save` path without a suffix. The model is traced once on the ``meta`` device:
    nothing is computed and its weights are not touched.
    """
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth must be a positive integer (1: the model's children as boxes) or None; got {depth!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}; got {fmt!r}")
    module, name = resolve_model(model)
    native = default_input_size(module)
    if input_size is None and native is None:
        raise InputShapeError(
            f"{name} is not a zoo model: give its input size as (C, H, W), e.g. input_size=(3, 224, 224)"
        )
    # A wrong channel count fails in the trace: a zoo model's own input check, or the first layer that cannot take it.
    size = normalize_input_size(native if input_size is None else input_size, model_channels(module), name)
    t = trace(module, size)
    builder = _Builder(t, depth)
    root = builder.root(t)
    _layout(root, builder.edges)
    _place(root, MARGIN, MARGIN)
    width, height = math.ceil(root.w + 2 * MARGIN), math.ceil(root.h + 2 * MARGIN)  # whole pixels for the PNG
    return Diagram(name, size, depth, fmt, root, _routes(root), width, height)


# --- SVG --------------------------------------------------------------------------------------------


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _svg_path(path: list[tuple]) -> str:
    return " ".join(seg[0] + " " + " ".join(_n(v) for v in seg[1:]) for seg in path)


def _svg_text(x: float, y: float, text: str, size: int, colour: str, *, bold: bool = False, anchor: str = "start",
              cls: str = "", layer: str = "") -> str:  # fmt: skip
    attrs = f'x="{_n(x)}" y="{_n(y)}" font-size="{size}" fill="{colour}"'
    attrs += ' font-weight="bold"' * bold + (f' text-anchor="{anchor}"' if anchor != "start" else "")
    attrs += f' class="{cls}"' * bool(cls) + (f" data-layer={quoteattr(layer)}" if layer else "")
    return f"<text {attrs}>{escape(text)}</text>"


def _head_texts(frame: Frame) -> list[tuple[float, float, str, int, bool, str, str]]:
    """(x, baseline y, text, size, bold, class, layer) of a frame's header, the output shape of a run included."""
    out = []
    y = frame.y + 4
    # Right of the input line, the header is one block of left-aligned lines pushed to the right edge.
    x = frame.x + frame.w - FRAME_PAD - frame.head_width() if frame.head_right else frame.x + FRAME_PAD
    for i, (text, (size, height), bold) in enumerate(frame.head_lines()):
        y += height
        out.append((x, y - 4, text, size, bold, "head", ""))
        if i == 0 and frame.shape:
            out.append((x + _text_w(text + " ", size), y - 4, frame.shape, HEAD[0], False, "shape", frame.shape_layer))
    return out


def _box_texts(box: Box) -> list[tuple[float, float, str, int, str, str]]:
    """(centre x, baseline y, text, size, role, colour) of a box's lines."""
    out = []
    y = box.y + BOX_PAD_Y
    colours = {"name": NAME_COLOUR, "title": TITLE_COLOUR, "shape": SHAPE_COLOUR}
    for text, (size, height), role in box.lines():
        y += height
        out.append((box.x + box.w / 2, y - 3.5, text, size, role, colours[role]))
    return out


def _svg(d: Diagram) -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(d.width)}" height="{_n(d.height)}" '
        f'viewBox="0 0 {_n(d.width)} {_n(d.height)}" font-family="{SVG_FONTS}">',
        f"<title>{escape(d.model_name)}</title>",
        f'<rect width="{_n(d.width)}" height="{_n(d.height)}" fill="white"/>',
    ]
    for frame in d.frames:
        out.append(_svg_frame(frame))
    for edge in d.edges:
        colour = SHORTCUT_COLOUR if edge.shortcut else EDGE_COLOUR
        cls = "edge shortcut" if edge.shortcut else "edge"
        width = 1.6 if edge.shortcut else 1.2
        out.append(
            f'<path class="{cls}" d="{_svg_path(edge.path)}" fill="none" stroke="{colour}" stroke-width="{width}"/>'
        )
        if edge.arrow:
            points = " ".join(f"{_n(x)},{_n(y)}" for x, y in edge.arrow)
            out.append(f'<polygon class="arrow" points="{points}" fill="{colour}"/>')
    for box in d.boxes:
        out.append(_svg_box(box))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_rect(
    x: float, y: float, w: float, h: float, radius: int, fill: str, stroke: str, width: float, extra: str = ""
) -> str:
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="{radius}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{extra}/>'
    )


def _svg_frame(frame: Frame) -> str:
    parts = [f'<g class="frame" data-name={quoteattr(frame.name)} data-repeat="{frame.repeat}">']
    if frame.border:
        stroke = GROUP_STROKE if frame.repeat > 1 else FRAME_STROKE
        for k in range(min(frame.repeat - 1, 2), 0, -1):  # a run of blocks: a stack of cards
            parts.append(_svg_rect(frame.x + 4 * k, frame.y + 4 * k, frame.w, frame.h, 6, "white", stroke, 1))
        extra = ' class="frame-border"' + ("" if frame.repeat > 1 else ' stroke-dasharray="5,3"')
        parts.append(_svg_rect(frame.x, frame.y, frame.w, frame.h, 6, FRAME_FILL, stroke, 1.2, extra))
    for x, y, text, size, bold, cls, layer in _head_texts(frame):
        colour = SHAPE_COLOUR if cls == "shape" else (GROUP_STROKE if frame.repeat > 1 and bold else TITLE_COLOUR)
        parts.append(_svg_text(x, y, text, size, colour, bold=bold, cls=cls, layer=layer))
    parts.append("</g>")
    return "\n".join(parts)


def _svg_box(box: Box) -> str:
    fill, stroke = COLOURS[box.kind]
    parts = [
        f'<g class="box kind-{box.kind}" data-name={quoteattr(box.name)} data-layer={quoteattr(box.layer)}>',
        f"<title>{escape(box.name)}</title>",
        _svg_rect(box.x, box.y, box.w, box.h, 4, fill, stroke, 1.2),
    ]
    for x, y, text, size, role, colour in _box_texts(box):
        layer = box.layer if role == "shape" else ""
        parts.append(_svg_text(x, y, text, size, colour, bold=role == "title", anchor="middle", cls=role, layer=layer))
    parts.append("</g>")
    return "\n".join(parts)


# --- PNG (matplotlib, the same layout) ----------------------------------------------------------------


def _png(d: Diagram, target: Any, scale: float) -> None:
    """Draw the layout with matplotlib's Agg canvas (no pyplot: no global state, no display) into ``target``."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon
    from matplotlib.path import Path as MPath

    scale = min(scale, PNG_MAX_PIXELS / max(d.width, d.height))
    fig = Figure(figsize=(d.width * scale / PNG_DPI, d.height * scale / PNG_DPI), dpi=PNG_DPI, facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, d.width)
    ax.set_ylim(d.height, 0)
    ax.axis("off")
    pt = 72 / PNG_DPI * scale  # points per drawing unit
    # add_artist, not add_patch: the limits are set above, and add_patch's data-limit update for each of
    # hundreds of patches was a fifth of the PNG's time; the drawing is the same, byte for byte.
    add = ax.add_artist

    def rect(x: float, y: float, w: float, h: float, r: float, **style: Any) -> None:
        add(FancyBboxPatch((x, y), w, h, boxstyle=f"round,pad=0,rounding_size={r}", **style))

    def text(x: float, y: float, s: str, size: int, colour: str, bold: bool = False, ha: str = "left") -> None:
        weight = "bold" if bold else "normal"
        ax.text(x, y, s, fontsize=size * pt, family=FONT, color=colour, weight=weight, ha=ha, va="baseline")

    for frame in d.frames:
        stroke = GROUP_STROKE if frame.repeat > 1 else FRAME_STROKE
        if frame.border:
            for k in range(min(frame.repeat - 1, 2), 0, -1):
                rect(frame.x + 4 * k, frame.y + 4 * k, frame.w, frame.h, 6, facecolor="white", edgecolor=stroke, lw=pt)
            dash = "solid" if frame.repeat > 1 else (0, (5, 3))
            rect(
                frame.x,
                frame.y,
                frame.w,
                frame.h,
                6,
                facecolor=FRAME_FILL,
                edgecolor=stroke,
                lw=1.2 * pt,
                linestyle=dash,
            )
        for x, y, s, size, bold, cls, _ in _head_texts(frame):
            colour = SHAPE_COLOUR if cls == "shape" else (GROUP_STROKE if frame.repeat > 1 and bold else TITLE_COLOUR)
            text(x, y, s, size, colour, bold)
    for edge in d.edges:
        colour = SHORTCUT_COLOUR if edge.shortcut else EDGE_COLOUR
        add(
            PathPatch(
                _mpl_path(edge.path, MPath), fill=False, edgecolor=colour, lw=(1.6 if edge.shortcut else 1.2) * pt
            )
        )
        if edge.arrow:
            add(Polygon(edge.arrow, closed=True, facecolor=colour, edgecolor="none"))
    for box in d.boxes:
        fill, stroke = COLOURS[box.kind]
        rect(box.x, box.y, box.w, box.h, 4, facecolor=fill, edgecolor=stroke, lw=1.2 * pt)
        for x, y, s, size, role, colour in _box_texts(box):
            text(x, y, s, size, colour, role == "title", ha="center")
    _save_with_palette(fig, target)


def _save_with_palette(fig: Any, target: Any) -> None:
    """Render the figure and save it as a PNG with a palette: a dozen fills and their anti-aliased edges
    fit in 64 colours, and the file is a third of an RGB one (GoogLeNet's 160 KB, not 590 KB), looking the same."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    # Fast octree: a fifth of median cut's time on a diagram's few flat colours, and as good (its PNG is smaller).
    palette = rgba.convert("RGB").quantize(colors=PNG_COLOURS, method=Image.Quantize.FASTOCTREE)
    palette.save(target, format="PNG", optimize=True)


def _mpl_path(path: list[tuple], mpath: Any) -> Any:
    vertices, codes = [], []
    for seg in path:
        if seg[0] == "C":
            vertices += [seg[1:3], seg[3:5], seg[5:7]]
            codes += [mpath.CURVE4] * 3
        else:
            vertices.append(seg[1:3])
            codes.append(mpath.MOVETO if seg[0] == "M" else mpath.LINETO)
    return mpath(vertices, codes)
