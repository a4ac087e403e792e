"""One page that explains a network: ``cnnzoo report``, and the loading that ``cnnzoo cam`` shares with it.

:func:`report` gathers what the inspection rooms compute for a zoo model, a checkpoint or a run folder,
and writes it as ONE self-contained HTML file: every picture inline (the diagram as SVG, the others as
base64 PNG), the style and the script inline, no URL fetched, so the page opens offline and survives
being mailed. In order:

* the architecture diagram (:mod:`cnnzoo.diagram`);
* the layer table in Keras' layout with window, MACs, receptive field and jump (:mod:`cnnzoo.summary`);
* the shape walk with its formulas (:mod:`cnnzoo.walk`);
* the first convolution's filters (the picture of :mod:`cnnzoo.visualize`);
* for each image: the top-5 classes, the class activation map (:mod:`cnnzoo.cam`) and the feature maps
  after each stage (:func:`cnnzoo.visualize.stages`);
* CNN Explainer's idea for any network: clicking a layer (a table row or a diagram box) draws its
  receptive field as a square on the input picture, with its output shape. The per-layer receptive
  field, jump and shape are embedded as JSON; a few lines of vanilla JavaScript centre the square on
  the pointer (or on a clicked, pinned pixel; the centre pixel at first), the size of the receptive
  field in input pixels, clipped to the image.

:func:`load_subject` builds what a command line names (a zoo name, optionally with a weights file; a
cnnzoo checkpoint; a run folder) together with its class names and preprocessing, and
:func:`load_pictures` turns image files into what that model sees, with the eval transform of
``cnnzoo predict`` (EXIF orientation, resize, centre crop). Both commands use them, so a CAM written
by ``cnnzoo cam`` is the CAM the report shows.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as datalib
from .cam import CamResult, cam, overlay_png
from .checkpoint import read_metadata, resolve_checkpoint
from .data.batches import channel_stats
from .diagram import diagram
from .errors import CnnzooError, UnknownModelError
from .factory import create_model, load_model
from .fileio import atomic_write_text
from .options import DEFAULT_MAX_PIXELS, resolve_device
from .registry import IMAGENET_MEAN, IMAGENET_STD, list_models
from .summary import Summary, summary
from .trace import Node, default_input_size, model_channels, trace
from .visualize import _draw_feature_maps, _draw_filters, stages
from .walk import Walk, walk

__all__ = ["Pictures", "Report", "Subject", "load_pictures", "load_subject", "report"]

TOPK = 5
PANEL_PIXELS = 256  # the receptive-field picture is drawn about this large, small inputs enlarged by whole pixels


# --- what is explained: the model, its classes, its preprocessing ----------------------------------------


@dataclass
class Subject:
    """A model ready to explain: built, weights loaded, in eval mode, with what its inputs must look like."""

    model: nn.Module
    name: str  # the zoo model's name
    source: str  # where its weights came from, in words
    classes: list[str] | None  # class names, None where the weights carry none
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr: bool = False  # the model reads BGR (Keras' caffe-style flavours)

    @property
    def channels(self) -> int:
        return model_channels(self.model) or 3

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def class_name(self, k: int) -> str:
        return self.classes[k] if self.classes is not None and 0 <= k < len(self.classes) else f"class {k}"


def _preprocessing(pre: dict[str, Any], model: nn.Module) -> tuple[int, tuple, tuple, bool]:
    """(image size, mean, std, BGR?) from a checkpoint's record, else the zoo model's own, else ImageNet's."""
    info = getattr(model, "info", None)
    native = default_input_size(model)
    channels = model_channels(model) or 3
    default_mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    default_std = IMAGENET_STD if channels == 3 else (0.5,) * channels
    size = pre.get("image_size") or (native[1] if native else None)
    if size is None:
        raise CnnzooError(f"{type(model).__name__} is not a zoo model: give its image_size")
    mean = tuple(pre.get("mean") or (info.mean if info is not None else default_mean))
    std = tuple(pre.get("std") or (info.std if info is not None else default_std))
    order = pre.get("channel_order") or (info.channel_order if info is not None else "RGB")
    # A model built for other channels than its family's (resnet18 with in_chans=1) averages the statistics.
    return int(size), channel_stats(mean, channels), channel_stats(std, channels), order == "BGR" and channels == 3


def load_subject(
    target: nn.Module | str | os.PathLike,
    *,
    weights: str | None = None,
    pretrained: bool | str = False,
    which: str = "best",
    device: str | torch.device | None = None,
    image_size: int | None = None,
    **options: Any,
) -> Subject:
    """Build what ``target`` names, with its class names and preprocessing, on ``device``, in eval mode.

    ``target``: a zoo name (built with ``weights`` or ``pretrained`` and ``options``, see
    :func:`cnnzoo.create_model`; published weights bring their class names and preprocessing), a
    cnnzoo checkpoint or run folder (``which`` checkpoint of it; the class names, image size and
    normalisation it was trained with come along), or an ``nn.Module`` (a zoo model's preprocessing,
    else ImageNet's; ``image_size`` where it is not a zoo model), used as it is: moved only when ``device``
    is given, its training flags left to the functions that run it. ``image_size`` overrides the size.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)  # a bad name fails before a build
    pre: dict[str, Any] = {}
    if pretrained:
        options["pretrained"] = pretrained  # only when asked: create_model's default stays its own
    if isinstance(target, nn.Module):
        if weights is not None or options:
            raise CnnzooError("weights and model options go with a model name, not with a built model")
        model, name, source, classes = target, getattr(target, "model_name", type(target).__name__), "as given", None
    elif str(target) in list_models() or not Path(target).exists():
        name = str(target)
        try:
            model = create_model(name, weights=weights, **options)
        except UnknownModelError as e:
            raise UnknownModelError(f"{e} Nor is there a checkpoint file or run folder of that name.") from None
        source, classes = (f"weights {weights}" if weights else "initial (random) weights"), None
        entry = getattr(model, "pretrained", None)  # published weights (create_model(pretrained=...)) bring their own
        if entry is not None:
            source, classes, pre = f"pretrained weights {entry.name}", entry.categories, entry.preprocessing.as_dict()
    else:
        if weights is not None or options:
            raise CnnzooError(f"{target} is a checkpoint: weights and model options go with a model name")
        path = resolve_checkpoint(target, which)
        meta = read_metadata(path)
        pre = meta.get("info") or meta.get("preprocessing") or {}
        model = load_model(path)
        name, source = model.model_name, f"checkpoint {path}"
        classes = pre.get("classes") or meta.get("classes")  # trained by cnnzoo train, or converted with known classes
    size, mean, std, bgr = _preprocessing({**pre, **({"image_size": image_size} if image_size else {})}, model)
    if not isinstance(target, nn.Module):
        model = model.to(dev).eval()
    elif device is not None:
        model = model.to(dev)
    return Subject(model, name, source, list(classes) if classes else None, size, mean, std, bgr)


@dataclass
class Pictures:
    """Image files as the model sees them: ``crops`` uint8 (N, C, S, S) for drawing, ``batch`` normalised."""

    files: list[str]
    crops: torch.Tensor
    batch: torch.Tensor


def load_pictures(
    paths: Sequence[str | os.PathLike], subject: Subject, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Pictures:
    """Decode, resize and centre-crop each file as ``cnnzoo predict`` does, then normalise for ``subject``.

    ``max_pixels``: a file whose header promises more pixels is refused unread (None: no limit)."""
    files = [str(p) for p in paths]
    for f in files:
        if not Path(f).is_file():
            raise CnnzooError(f"image {f!r}: no such file")
    folder = datalib.ImageFolderData(
        [(f, 0) for f in files], classes=["?"], train=False, image_size=subject.image_size, channels=subject.channels,
        strict=True, max_pixels=max_pixels,
    )  # fmt: skip
    crops = torch.stack([folder[i][0] for i in range(len(folder))])
    x = crops.flip(1) if subject.bgr else crops
    batch = datalib.normalize_batch(x.to(subject.device), subject.mean, subject.std)
    return Pictures(files, crops, batch)


# --- the page's parts ----------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_of_figure(draw, *args: Any) -> bytes:
    """One of visualize's drawing functions, into PNG bytes instead of a file."""
    buffer = io.BytesIO()
    draw(*args, buffer)
    return _compact(buffer.getvalue())


def _compact(png: bytes, margin: int = 6) -> bytes:
    """A matplotlib PNG made for the page: the white border the figure size leaves cut to ``margin`` pixels, and
    RGB instead of RGBA (the pictures are opaque), which is smaller."""
    from PIL import Image, ImageChops

    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box is not None:
        left, top, right, bottom = box
        rgb = rgb.crop((max(0, left - margin), max(0, top - margin), min(rgb.width, right + margin),
                        min(rgb.height, bottom + margin)))  # fmt: skip
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _crop_png(crop: torch.Tensor) -> bytes:
    from PIL import Image

    a = crop.permute(1, 2, 0).cpu().numpy()
    out = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _dims(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape[1:])) or "scalar"


def _hw(v: Sequence[int] | None) -> str:
    if v is None:
        return ""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}×{v[1]}"


def _si(n: float) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}"
    return f"{int(n)} "


def _layer_data(s: Summary) -> dict[str, dict[str, Any]]:
    """What the page's script knows of each layer: type, output shape, receptive field, jump, window."""
    return {
        r.name: dict(
            type=r.type,
            shape=list(r.output_shape[1:]),
            rf=list(r.receptive_field) if r.receptive_field else None,
            jump=list(r.jump) if r.jump else None,
            window=r.window,
            params=r.params,
            macs=r.macs,
        )
        for r in s.rows
    }


def _table_html(s: Summary) -> str:
    """The summary's rows in Keras' layout; each row names its layer for the script (``data-layer``)."""
    heads = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if s.branching else [])
    heads += ["Window", "MACs", "RF", "Jump"]
    numeric = {"Param #", "MACs", "RF", "Jump"}
    out = ["<table class='layers'><thead><tr>"]
    out += [f"<th{' class=num' if h in numeric else ''}>{_esc(h)}</th>" for h in heads]
    out.append("</tr></thead><tbody>")
    for r in s.rows:
        cells = [f"<td><b>{_esc(r.name)}</b> <span class='type'>({_esc(r.type)})</span></td>"]
        cells += [f"<td>{_esc(list(r.output_shape))}</td>", f"<td class=num>{r.params:,}</td>"]
        if s.branching:
            cells.append(f"<td>{'<br>'.join(_esc(c) for c in r.connected_to)}</td>")
        cells += [f"<td>{_esc(r.window)}</td>", f"<td class=num>{f'{r.macs:,}' if r.macs else ''}</td>"]
        cells += [f"<td class=num>{_hw(r.receptive_field)}</td>", f"<td class=num>{_hw(r.jump)}</td>"]
        out.append(f"<tr data-layer='{_esc(r.name)}'>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    totals = (
        f"Total params: {s.total_params:,} · Trainable params: {s.trainable_params:,} · "
        f"Non-trainable params: {s.non_trainable_params:,} · MACs: {s.macs:,} ({_si(s.macs)}MACs) for one image"
    )
    note = (
        "RF: receptive field of the layer's output, in input pixels; Jump: input pixels between neighbouring outputs."
    )
    return "\n".join(out) + f"<p class='totals'>{_esc(totals)}</p><p class='note'>{_esc(note)}</p>"


def _walk_html(w: Walk) -> str:
    """The shape walk: every layer that changes or checks the size, with its formula worked through."""
    heads = ["#", "layer (type)", "in", "out", "window", "formula", "RF", "jump"]
    out = ["<table class='walk'><thead><tr>", *(f"<th>{h}</th>" for h in heads), "</tr></thead><tbody>"]
    for i, r in enumerate(w.rows()):
        inputs = " + ".join("×".join(map(str, s[1:])) for s in r["input"])
        output = "×".join(map(str, r["output"][1:])) if r["output"] else "FAILS"
        cells = [str(i), f"<b>{_esc(r['layer'])}</b> <span class='type'>({_esc(r['type'])})</span>", _esc(inputs)]
        cells += [_esc(output), _esc(r["window"]), "<br>".join(f"<code>{_esc(f)}</code>" for f in r["formula"])]
        cells += [_hw(r["receptive_field"]), _hw(r["jump"])]
        out.append(f"<tr data-layer='{_esc(r['layer'])}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    end = (
        f"All {len(w.rows()) - 1} layers fit; the output is {_dims(w.nodes[-1].out_shape)}."
        if w.ok
        else f"Stops at {w.failed.name}: {w.error} {w.advice()}"
    )
    return "\n".join(out) + f"<p class='totals'>{_esc(end)}</p>"


def _top_html(result: CamResult, subject: Subject) -> str:
    items = []
    for k, p in result.topk:
        items.append(
            f"<li><span class='bar' style='width:{100 * p:.1f}%'></span>"
            f"<span class='label'>{_esc(subject.class_name(k))}</span><span class='prob'>{p:.1%}</span></li>"
        )
    return f"<ol class='top'>{''.join(items)}</ol>"


@dataclass
class _ImageFindings:
    """What the page shows of one image."""

    file: str
    crop_png: bytes
    result: CamResult
    overlay_png: bytes
    maps_png: bytes | None


def _image_html(i: int, f: _ImageFindings, subject: Subject) -> str:
    r = f.result
    peak = "none (the map is all zero)" if r.peak is None else f"(y, x) = {r.peak}"
    parts = [
        f"<article class='image' id='image-{i}'><h3>{_esc(Path(f.file).name)}</h3>",
        f"<div class='image-row'><div><h4>Top-{len(r.topk)} classes</h4>{_top_html(r, subject)}</div>",
        f"<figure><img class='overlay' alt='class activation map' src='{_data_url(f.overlay_png)}'>"
        f"<figcaption>{_esc(r.method)} at <code>{_esc(r.layer)}</code> for {_esc(subject.class_name(r.target))} "
        f"({r.target_prob:.1%}); peak {_esc(peak)}</figcaption></figure></div>",
    ]
    if f.maps_png is not None:
        parts.append(
            f"<figure><img class='maps' alt='feature maps after each stage' src='{_data_url(f.maps_png)}'>"
            "<figcaption>Feature maps after each stage: the channels with the largest spread, each scaled to "
            "its own range.</figcaption></figure>"
        )
    return "\n".join(parts) + "</article>"


def _scale(h: int, w: int) -> float:
    """Screen pixels per input pixel in the receptive-field panel: small inputs by whole pixels."""
    side = max(h, w)
    return float(max(1, PANEL_PIXELS // side)) if side <= PANEL_PIXELS else PANEL_PIXELS / side


def _panel_html(subject: Subject, findings: list[_ImageFindings], scale: float) -> str:
    c, h, w = subject.input_size
    thumbs = "".join(
        f"<img class='rf-thumb' data-index='{i}' title='{_esc(Path(f.file).name)}' alt='{_esc(Path(f.file).name)}' "
        f"src='{_data_url(f.crop_png)}'>"
        for i, f in enumerate(findings)
    )
    blank = "" if findings else f"<p class='note'>No image given: a blank {c}×{h}×{w} input (--image IMG).</p>"
    return f"""<aside id="rf-panel">
<h2>Receptive field</h2>
<p class="hint">Click a layer (a box of the diagram, a row of a table): the square is what one of its output
pixels sees of the input. Move over the picture to move it; click the picture to pin it.</p>
<div id="rf-view" style="width:{w * scale:.2f}px;height:{h * scale:.2f}px">
<img id="rf-picture" alt="input" {"" if findings else "hidden"}><div id="rf-square" hidden></div></div>
{blank}<div id="rf-thumbs">{thumbs}</div>
<dl id="rf-info"><dt>layer</dt><dd id="rf-layer">none selected</dd><dt>output</dt><dd id="rf-shape"></dd>
<dt>receptive field</dt><dd id="rf-size"></dd><dt>jump</dt><dd id="rf-jump"></dd><dt>window</dt><dd id="rf-window"></dd>
<dt>centre</dt><dd id="rf-centre"></dd></dl>
</aside>"""


# --- gathering -------------------------------------------------------------------------------------------------


def _first_conv(nodes: list[Node]) -> Node | None:
    return next((n for n in nodes if isinstance(n.module, nn.Conv2d)), None)


def _stage_maps(subject: Subject, batch: torch.Tensor, wanted: set[int]) -> dict[int, torch.Tensor]:
    """The outputs of the stage nodes for the whole batch, copied as they are produced (an in-place op may follow)."""
    maps: dict[int, torch.Tensor] = {}

    def keep(node: Node, out: torch.Tensor) -> None:
        if node.index in wanted:
            maps[node.index] = out.detach().to("cpu", torch.float32, copy=True)

    trace(subject.model, subject.input_size, image=batch, on_output=keep)
    return maps


def _findings(
    subject: Subject,
    pictures: Pictures,
    method: str,
    layer: str | None,
    channels: int,
    batch_size: int,
    stage_nodes: list[Node],
) -> list[_ImageFindings]:
    """Per image: the class activation map with the top-5, its overlay, the feature maps after each stage."""
    results = cam(subject.model, pictures.batch, method=method, layer=layer, topk=TOPK, batch_size=batch_size)
    maps = _stage_maps(subject, pictures.batch, {n.index for n in stage_nodes}) if stage_nodes else {}
    out = []
    for i, (file, result) in enumerate(zip(pictures.files, results, strict=True)):
        crop = pictures.crops[i]
        maps_png = None
        if stage_nodes:
            per_stage = [(n, maps[n.index][i]) for n in stage_nodes]
            maps_png = _png_of_figure(_draw_feature_maps, per_stage, channels, subject.model)
        overlay = _compact(overlay_png(crop, result, subject.classes if _names_fit(subject, result) else None))
        out.append(_ImageFindings(file, _crop_png(crop), result, overlay, maps_png))
    return out


def _names_fit(subject: Subject, result: CamResult) -> bool:
    return subject.classes is not None and all(k < len(subject.classes) for k, _ in result.topk)


# --- the page ----------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """A finished page: ``html`` (one self-contained document) and what it was made of; :meth:`save` writes it."""

    html: str
    model_name: str
    layers: dict[str, dict[str, Any]]  # the per-layer data embedded for the script, by summary row name
    images: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise CnnzooError(f"report file {str(path)!r}: the report is an HTML page; give a name ending in .html")
        if path.is_dir():
            raise CnnzooError(f"report file {str(path)!r} is a folder; give a file name ending in .html")
        atomic_write_text(path, self.html)
        return path


def report(
    target: nn.Module | str | os.PathLike | Subject,
    images: Sequence[str | os.PathLike] = (),
    *,
    weights: str | None = None,
    which: str = "best",
    device: str | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    channels: int = 8,
    batch_size: int = 16,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **options: Any,
) -> Report:
    """The page that explains ``target`` (see the module docstring), on ``images`` (files; none: no image part).

    ``target``, ``weights``, ``which``, ``device`` and ``options``: as :func:`load_subject` takes them (or a
    :class:`Subject` already loaded). ``method`` and ``layer``: the class activation map's (see
    :func:`cnnzoo.cam.cam`); ``channels``: feature maps shown per stage; ``batch_size``: images per pass;
    ``max_pixels``: as :func:`load_pictures` takes it.
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise CnnzooError(f"channels must be a positive integer, got {channels!r}")
    if isinstance(target, Subject):
        subject = target
    else:
        subject = load_subject(target, weights=weights, which=which, device=device, **options)
    pictures = load_pictures(images, subject, max_pixels=max_pixels) if images else None
    size = subject.input_size
    s, w, d = summary(subject.model, size), walk(subject.model, size), diagram(subject.model, input_size=size)
    shapes = trace(subject.model, size)
    first, stage_nodes = _first_conv(shapes.nodes), stages(shapes)
    filters = _png_of_figure(_draw_filters, first.module, first.name, subject.model) if first is not None else None
    findings = _findings(subject, pictures, method, layer, channels, batch_size, stage_nodes) if pictures else []
    layers = _layer_data(s)
    scale = _scale(size[1], size[2])
    data = dict(model=subject.name, input=list(size), scale=scale, layers=layers)
    sections = [
        ("diagram", "Architecture", f"<div class='diagram'>{d.to_svg()}</div>"),
        ("layers", "Layers (Keras' summary, and more)", _table_html(s)),
        ("walk", "Shape walk", _walk_html(w)),
        ("filters", "First-layer filters", _filters_html(filters, first)),
        ("images", "Images", "\n".join(_image_html(i, f, subject) for i, f in enumerate(findings))
         or "<p class='note'>No images given: cnnzoo report MODEL --image IMG ...</p>"),
    ]  # fmt: skip
    page = _page(subject, s, sections, _panel_html(subject, findings, scale), data)
    return Report(page, subject.name, layers, list(pictures.files) if pictures else [])


def _filters_html(png: bytes | None, first: Node | None) -> str:
    if png is None or first is None:
        return "<p class='note'>This model has no Conv2d layer: there are no filters to show.</p>"
    return (
        f"<figure><img class='filters' alt='first-layer filters' src='{_data_url(png)}'>"
        f"<figcaption>The filters of <code>{_esc(first.name)}</code>, each scaled to its own range.</figcaption>"
        "</figure>"
    )


def _json_for_script(data: Any) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def _page(subject: Subject, s: Summary, sections: list[tuple[str, str, str]], panel: str, data: dict) -> str:
    c, h, w = subject.input_size
    classes = f"{len(subject.classes)} classes" if subject.classes else f"{s.rows[-1].output_shape[-1]} outputs"
    facts = [f"input {c}×{h}×{w}", f"{s.total_params:,} parameters", f"{_si(s.macs)}MACs", classes, subject.source]
    nav = " · ".join(f"<a href='#{key}'>{_esc(title)}</a>" for key, title, _ in sections)
    body = "\n".join(
        f"<section id='{key}'><h2>{_esc(title)}</h2>\n{content}\n</section>" for key, title, content in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{_esc(subject.name)}: cnnzoo report</title>
<style>{_CSS}</style></head>
<body>
<header><h1>{_esc(subject.name)}</h1><p class="facts">{" · ".join(_esc(f) for f in facts)}</p><nav>{nav}</nav></header>
<div class="layout"><main>
{body}
</main>
{panel}
</div>
<script type="application/json" id="cnnzoo-data">{_json_for_script(data)}</script>
<script>{_JS}</script>
</body></html>
"""


# The page may run inline script and style and show data: pictures, and fetch nothing at all: a browser refuses
# (and reports) any request, so a page that slipped in a URL would fail its browser test, not leak.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
:root { --accent: #d62f5b; --line: #d8dde3; --muted: #5f6b76; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1f23; background: #f6f7f9; }
header { padding: 14px 24px 10px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 22px; } h2 { font-size: 18px; margin: 0 0 10px; } h3 { margin: 0 0 8px; font-size: 15px; }
h4 { margin: 0 0 6px; font-size: 13px; color: var(--muted); font-weight: 600; }
.facts { margin: 4px 0; color: var(--muted); } nav a { color: #1f5fa8; text-decoration: none; }
.layout { display: grid; grid-template-columns: minmax(0, 1fr) 330px; gap: 16px; padding: 16px 24px;
  align-items: start; }
main { min-width: 0; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px;
  margin-bottom: 16px; }
.diagram { overflow: auto; max-height: 78vh; border: 1px solid #eef0f2; }
.diagram g.box { cursor: pointer; } .diagram g.box:hover rect { stroke-width: 2.4; }
.diagram g.box.selected rect { stroke: var(--accent); stroke-width: 3; }
.diagram text.shape[data-layer] { cursor: pointer; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
.layers, .walk { display: block; overflow: auto; max-height: 70vh; }
th { position: sticky; top: 0; background: #eef1f4; text-align: left; padding: 4px 8px; white-space: nowrap; }
td { padding: 3px 8px; border-top: 1px solid #eef0f2; vertical-align: top; white-space: nowrap; }
td code { white-space: pre; } th.num, td.num { text-align: right; } .type { color: var(--muted); }
tr[data-layer] { cursor: pointer; } tr[data-layer]:hover { background: #f3f6fa; }
tr.selected, tr.selected:hover { background: #fde4eb; }
.totals { margin: 8px 0 0; font-weight: 600; } .note, .hint { color: var(--muted); font-size: 12.5px; }
figure { margin: 0 0 8px; } figcaption { color: var(--muted); font-size: 12.5px; }
img.overlay, img.maps, img.filters { max-width: 100%; height: auto; display: block; }
img.filters { max-width: 520px; }
article.image { border-top: 1px solid var(--line); padding-top: 12px; margin-top: 12px; }
article.image:first-child { border-top: 0; margin-top: 0; padding-top: 0; }
.image-row { display: grid; grid-template-columns: 230px minmax(0, 1fr); gap: 16px; align-items: start; }
ol.top { list-style: none; margin: 0; padding: 0; }
ol.top li { position: relative; display: flex; justify-content: space-between; padding: 3px 6px; margin-bottom: 3px;
  background: #f1f3f5; border-radius: 3px; overflow: hidden; }
ol.top .bar { position: absolute; left: 0; top: 0; bottom: 0; background: #cfe0f5; }
ol.top .label, ol.top .prob { position: relative; } ol.top .prob { font-variant-numeric: tabular-nums; }
#rf-panel { position: sticky; top: 12px; background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: 14px 16px; }
#rf-view { position: relative; background: #e9ecef; outline: 1px solid #c5cbd2; cursor: crosshair; margin: 8px 0; }
#rf-picture { position: absolute; left: 0; top: 0; width: 100%; height: 100%; image-rendering: pixelated; }
#rf-square { position: absolute; border: 2px solid var(--accent); background: rgba(214, 47, 91, 0.18);
  pointer-events: none; }
[hidden] { display: none !important; }
#rf-thumbs { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 8px; }
.rf-thumb { width: 40px; height: 40px; image-rendering: pixelated; cursor: pointer; outline: 1px solid #c5cbd2; }
.rf-thumb.chosen { outline: 2px solid var(--accent); }
#rf-info { display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; margin: 0; font-size: 13px; }
#rf-info dt { color: var(--muted); } #rf-info dd { margin: 0; word-break: break-word; }
@media (max-width: 900px) { .layout { grid-template-columns: 1fr; } #rf-panel { position: static; } }
"""

# The receptive-field square: a field of R input pixels centred on pixel c covers c - floor((R - 1)/2) up to
# R pixels on, clipped to the image (the padding the network adds around it is not part of the picture).
_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cnnzoo-data").textContent);
  var H = data.input[1], W = data.input[2], scale = data.scale;
  var view = document.getElementById("rf-view"), picture = document.getElementById("rf-picture");
  var square = document.getElementById("rf-square");
  var selected = null, pinned = [Math.floor(H / 2), Math.floor(W / 2)], centre = pinned;

  function text(id, value) { document.getElementById(id).textContent = value; }
  function pair(v) { return v ? (v[0] === v[1] ? String(v[0]) : v[0] + "\\u00d7" + v[1]) : "not known"; }
  function span(c, size, limit) {
    var lo = c - Math.floor((size - 1) / 2);
    return [Math.max(0, lo), Math.min(limit, lo + size)];
  }
  function draw() {
    var layer = selected === null ? null : data.layers[selected];
    text("rf-centre", "pixel (y, x) = (" + centre[0] + ", " + centre[1] + ")");
    if (!layer || !layer.rf) { square.hidden = true; return; }
    var ys = span(centre[0], layer.rf[0], H), xs = span(centre[1], layer.rf[1], W);
    square.style.top = ys[0] * scale + "px";
    square.style.left = xs[0] * scale + "px";
    square.style.height = (ys[1] - ys[0]) * scale + "px";
    square.style.width = (xs[1] - xs[0]) * scale + "px";
    square.dataset.rows = ys[1] - ys[0];
    square.dataset.cols = xs[1] - xs[0];
    square.hidden = false;
  }
  function select(name, box) {  // box: the diagram box clicked, which may fold several layers (conv + BN + ReLU)
    selected = name;
    var marked = document.querySelectorAll(".selected");
    for (var i = 0; i < marked.length; i++) { marked[i].classList.remove("selected"); }
    var all = document.querySelectorAll("tr[data-layer], g.box[data-layer]");
    for (var j = 0; j < all.length; j++) {
      if (all[j].getAttribute("data-layer") === name) { all[j].classList.add("selected"); }
    }
    var layer = data.layers[name];
    var first = box ? box.getAttribute("data-name") : name;  // a box's first layer: its window is the box's
    var shown = first !== name ? first + " \u2192 " : "";
    var window = layer && (layer.window || (data.layers[first] ? data.layers[first].window : ""));
    text("rf-layer", shown + name + (layer ? " (" + layer.type + ")" : " (no data)"));
    text("rf-shape", layer ? (layer.shape.join("\\u00d7") || "scalar") : "");
    text("rf-size", layer ? (layer.rf ? pair(layer.rf) + " input pixels" : "not known") : "");
    text("rf-jump", layer ? (layer.jump ? pair(layer.jump) + " input pixels" : "none (a single output)") : "");
    text("rf-window", layer ? (window || "-") : "");
    draw();
  }
  function pixel(event) {
    var r = view.getBoundingClientRect();
    var y = Math.floor((event.clientY - r.top) / scale), x = Math.floor((event.clientX - r.left) / scale);
    return [Math.min(H - 1, Math.max(0, y)), Math.min(W - 1, Math.max(0, x))];
  }
  function choose(thumb) {
    var thumbs = document.querySelectorAll(".rf-thumb");
    for (var i = 0; i < thumbs.length; i++) { thumbs[i].classList.toggle("chosen", thumbs[i] === thumb); }
    picture.src = thumb.src;
  }
  document.addEventListener("click", function (event) {
    var thumb = event.target.closest(".rf-thumb");
    if (thumb) { choose(thumb); return; }
    var el = event.target.closest("[data-layer]");
    if (el) { select(el.getAttribute("data-layer"), event.target.closest("g.box")); }
  });
  view.addEventListener("mousemove", function (event) { centre = pixel(event); draw(); });
  view.addEventListener("mouseleave", function () { centre = pinned; draw(); });
  view.addEventListener("click", function (event) { pinned = centre = pixel(event); draw(); });
  var first = document.querySelector(".rf-thumb");
  if (first) { choose(first); }
  draw();
})();
"""
