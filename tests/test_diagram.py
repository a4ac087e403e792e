"""cnnzoo.diagram: every zoo model drawn, its shapes the summary's, its structure torchvision's.

The SVG is read back with xml.etree, so what is checked is what a reader sees: box titles and
shapes, the ×N marks, where the boxes are, which edges are shortcuts and where arrows end.
"""

import re
import struct
import xml.etree.ElementTree as ET

import pytest
import torch
import torchvision
from torch import nn

from cnnzoo import list_models
from cnnzoo.diagram import diagram
from cnnzoo.errors import InputShapeError, ShapeError
from cnnzoo.summary import summary
from cnnzoo.trace import resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")

SVG = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rect(element):
    rect = element.find(f"{SVG}rect")
    return tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))


def _texts(element):
    return {t.get("class"): t for t in element.findall(f"{SVG}text")}


def read_svg(svg: str) -> dict:
    """Boxes, frames, edges and arrowheads of a diagram's SVG, as a reader would find them."""
    root = ET.fromstring(svg)
    boxes, frames = [], []
    for g in root.iter(f"{SVG}g"):
        cls = g.get("class", "").split()
        if "box" in cls:
            texts = _texts(g)
            boxes.append(
                dict(name=g.get("data-name"), rect=_rect(g), title=texts["title"].text, shape=texts["shape"].text)
            )
        elif "frame" in cls:
            border = g.find(f"{SVG}rect[@class='frame-border']")
            rect = tuple(float(border.get(k)) for k in ("x", "y", "width", "height")) if border is not None else None
            heads = " ".join(t.text for t in g.findall(f"{SVG}text"))
            frames.append(dict(name=g.get("data-name"), repeat=int(g.get("data-repeat")), rect=rect, head=heads))
    paths = [(p.get("class"), p.get("d")) for p in root.iter(f"{SVG}path")]
    arrows = [[tuple(map(float, xy.split(","))) for xy in p.get("points").split()] for p in root.iter(f"{SVG}polygon")]
    shapes = [(t.get("data-layer"), t.text) for t in root.iter(f"{SVG}text") if t.get("class") == "shape"]
    return dict(boxes=boxes, frames=frames, paths=paths, arrows=arrows, shapes=shapes)


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(a, b) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def _on_border(point, rect, tol=0.6) -> bool:
    x, y = point
    rx, ry, w, h = rect
    inside = rx - tol <= x <= rx + w + tol and ry - tol <= y <= ry + h + tol
    near = min(abs(x - rx), abs(x - rx - w), abs(y - ry), abs(y - ry - h)) <= tol
    return inside and near


def check_geometry(seen: dict) -> None:
    """No two boxes overlap; frames nest or stay apart; a box is inside a frame or clear of it; arrows end on boxes."""
    boxes = [b["rect"] for b in seen["boxes"]]
    frames = [f["rect"] for f in seen["frames"] if f["rect"] is not None]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not _overlap(a, b), (a, b)
        for f in frames:
            assert _inside(a, f) or not _overlap(a, f), (a, f)
    for i, a in enumerate(frames):
        for b in frames[i + 1 :]:
            assert _inside(a, b) or _inside(b, a) or not _overlap(a, b), (a, b)
    for arrow in seen["arrows"]:
        assert any(_on_border(arrow[0], r) for r in boxes), f"an arrow ends at {arrow[0]}, on no box"


def check_shapes(seen: dict, model: nn.Module, input_size=None) -> None:
    """Every shape printed is the summary's output shape of the layer it names."""
    rows = {r.name: r for r in summary(model, input_size).rows}
    assert seen["shapes"]
    for layer, text in seen["shapes"]:
        assert layer in rows, f"{layer} is not a row of the summary"
        assert text == "x".join(map(str, rows[layer].output_shape[1:])), (layer, text, rows[layer].output_shape)


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model(name):
    model, _ = resolve_model(name)  # on meta: building is the cost, no weights are allocated
    d = diagram(model)
    seen = read_svg(d.to_svg())
    assert len(seen["boxes"]) >= 5 and seen["paths"]
    assert seen["boxes"][0]["title"] == "Input"
    check_geometry(seen)
    check_shapes(seen, model)


# Every weighted layer drawn when nothing is collapsed: the count of the summary's rows of that type.
@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg16_bn", "googlenet", "inception_v3_keras", "resnet50_keras"])
def test_every_layer_drawn_when_open(name):
    model, _ = resolve_model(name)
    seen = read_svg(diagram(model, depth=10).to_svg())
    rows = summary(model).rows
    for op in ("Conv2d", "Linear"):
        drawn = sum(b["title"].count(f"{op} ") for b in seen["boxes"])
        assert drawn == sum(r.type == op for r in rows), op
    assert all(f["repeat"] == 1 for f in seen["frames"])
    check_geometry(seen)


def _torchvision(name: str) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def test_resnet50_stages_collapse_to_their_block_counts():
    tv = _torchvision("resnet50")
    d = diagram("resnet50")
    seen = read_svg(d.to_svg())
    groups = [f for f in seen["frames"] if f["repeat"] > 1]
    assert [f["name"] for f in groups] == ["layer1", "layer2", "layer3", "layer4"]
    marks = [int(m) for f in groups for m in re.findall(r"×(\d+)", f["head"])]
    assert marks == [len(tv.layer1), len(tv.layer2), len(tv.layer3), len(tv.layer4)] == [3, 4, 6, 3]
    assert [f["rect"][1] for f in groups] == sorted(f["rect"][1] for f in groups)  # top to bottom in stage order
    assert all("projection shortcut (downsample)" in f["head"] for f in groups)
    # The first block drawn, with its projection shortcut as a box of its own; the other blocks are not drawn.
    names = {b["name"] for b in seen["boxes"]}
    assert {"layer1.0.conv1", "layer1.0.downsample", "layer4.0.downsample"} <= names
    assert not any(n.startswith("layer1.1.") for n in names)


def test_conv_bn_relu_fold_into_one_box():
    tv = _torchvision("resnet50")
    (k, _), (s, _), (p, _) = tv.conv1.kernel_size, tv.conv1.stride, tv.conv1.padding
    boxes = {b["name"]: b for b in read_svg(diagram("resnet50").to_svg())["boxes"]}
    assert boxes["conv1"]["title"] == f"Conv2d {k}x{k}/{s} p{p} + BN + ReLU"
    assert boxes["conv1"]["shape"] == "64x112x112"
    assert "bn1" not in boxes and "relu" not in boxes
    keras = {b["name"]: b for b in read_svg(diagram("resnet50_keras").to_svg())["boxes"]}
    assert keras["conv1_conv"]["title"] == "pad 3 + Conv2d 7x7/2 + BN + ReLU"  # Keras pads explicitly


def test_googlenet_inception3a_branches_side_by_side():
    seen = read_svg(diagram("googlenet").to_svg())
    boxes = {b["name"]: b["rect"] for b in seen["boxes"]}
    firsts = [
        boxes[n]
        for n in ("inception3a.branch1", "inception3a.branch2.0", "inception3a.branch3.0", "inception3a.branch4.0")
    ]
    xs = [r[0] for r in firsts]
    assert xs == sorted(xs) and len(set(xs)) == 4
    assert max(r[1] for r in firsts) < min(r[1] + r[3] for r in firsts)  # one shared y-range
    for i, a in enumerate(firsts):  # four columns: no two overlap horizontally
        assert all(a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] for b in firsts[i + 1 :])
    concat = boxes["inception3a"]
    assert all(concat[1] > r[1] + r[3] for r in firsts)
    tips = [a[0] for a in seen["arrows"] if _on_border(a[0], concat)]
    assert len(tips) == 4  # the four branches join there
    assert "concat" in next(b["title"] for b in seen["boxes"] if b["name"] == "inception3a")


def test_residual_shortcuts_drawn_as_shortcuts():
    seen = read_svg(diagram("resnet18").to_svg())
    boxes = {b["name"]: b["rect"] for b in seen["boxes"]}
    frames = {f["name"]: f["rect"] for f in seen["frames"]}
    shortcuts = [d for cls, d in seen["paths"] if cls == "edge shortcut"]
    assert shortcuts
    # layer1's blocks keep the shape: the identity runs from the block's input (the frame's top) to the add's side.
    top = frames["layer1"][1]
    starts = [tuple(map(float, d.split()[1:3])) for d in shortcuts]
    add = boxes["layer1.0.add"]
    assert any(abs(y - top) < 0.6 for _, y in starts)
    assert any(_on_border(a[0], add) and a[0][0] >= add[0] + add[2] - 0.6 for a in seen["arrows"])
    # No shortcut in a plain network.
    assert not any(cls == "edge shortcut" for cls, _ in read_svg(diagram("vgg16").to_svg())["paths"])


def test_depth_opens_blocks_monotonically():
    tv = _torchvision("resnet50")
    counts = {depth: len(read_svg(diagram("resnet50", depth=depth).to_svg())["boxes"]) for depth in (1, 2, 3, 4)}
    default = len(read_svg(diagram("resnet50").to_svg())["boxes"])
    assert counts[1] < counts[2] < counts[3] <= counts[4]
    assert counts[1] < default < counts[3]
    top = read_svg(diagram("resnet50", depth=1).to_svg())["boxes"]
    assert all("." not in b["name"] for b in top)  # only the model's children
    assert [b["title"] for b in top if b["name"].startswith("layer")] == ["Sequential"] * 4
    opened = read_svg(diagram("resnet50", depth=4).to_svg())["boxes"]
    blocks = sum(len(getattr(tv, f"layer{i}")) for i in range(1, 5))
    assert sum(b["name"].endswith(".add") for b in opened) == blocks == 16


class TwoPaths(nn.Module):
    """A user's network: a residual block and a two-branch block, not from the zoo."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.left = nn.Conv2d(8, 4, 1)
        self.right = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.body(x) + x)
        x = torch.cat([self.left(x), self.right(x)], 1)
        return self.head(x.mean((2, 3)))


def test_a_users_module():
    model = TwoPaths()
    d = diagram(model, input_size=(3, 20, 20))
    seen = read_svg(d.to_svg())
    check_geometry(seen)
    check_shapes(seen, model, (3, 20, 20))
    titles = {b["name"]: b["title"] for b in seen["boxes"]}
    assert titles["stem"] == "Conv2d 3x3/1 p1 + BN + ReLU"
    assert any(cls == "edge shortcut" for cls, _ in seen["paths"])  # x + body(x)
    boxes = {b["name"]: b["rect"] for b in seen["boxes"]}
    left, right = boxes["left"], boxes["right.0"]  # the two branches side by side
    assert left[0] + left[2] < right[0] and max(left[1], right[1]) < min(left[1] + left[3], right[1] + right[3])
    with pytest.raises(InputShapeError, match="input size"):
        diagram(model)
    with pytest.raises(ShapeError, match=r"stem\.0 \(Conv2d\) cannot take its 1x20x20 input"):
        diagram(model, input_size=(1, 20, 20))
    with pytest.raises(InputShapeError, match="expects 3 input channels, got 1"):  # a zoo model says it itself
        diagram("resnet18", input_size=(1, 224, 224))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_and_svg_files(tmp_path):
    d = diagram("lenet5", fmt="png")
    assert _png_size(d.to_png()) == (round(d.width), round(d.height))
    assert d.to_bytes()[:8] == PNG_MAGIC
    png = d.save(tmp_path / "lenet5.png")
    assert png.stat().st_size > 0 and _png_size(png.read_bytes()) == (round(d.width), round(d.height))
    svg = d.save(tmp_path / "lenet5.svg")
    ET.fromstring(svg.read_text(encoding="utf-8"))
    assert d.save(tmp_path / "plain") == tmp_path / "plain.png"  # no suffix: the diagram's format
    with pytest.raises(ValueError, match=r"\.svg or \.png, not \.jpg"):
        d.save(tmp_path / "lenet5.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.png", "lenet5.svg", "plain.png"]  # no temp files left


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        diagram("lenet5", depth=0)
    with pytest.raises(ValueError, match="fmt must be one of svg, png"):
        diagram("lenet5", fmt="jpg")
