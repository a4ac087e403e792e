"""``cnnzoo cam``, ``cnnzoo diagram`` and ``cnnzoo report``: where a network looks, what it is, one page of both.

A thin skin over :mod:`cnnzoo.cam`, :mod:`cnnzoo.diagram` and :mod:`cnnzoo.report`; nothing here imports torch
until a handler runs. The three commands name their model alike (a zoo name, a cnnzoo checkpoint, a run
folder) and load it in one place, :func:`_subject`, with the options of :func:`_add_weights_options`: a new way
to get weights (published ones by name) is one more option there and one more argument there, for all three.
Outputs are checked with :func:`cnnzoo.fileio.safe_output` before any work, and replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any

from ..errors import CnnzooError
from .options import (
    add_batch_size,
    add_device,
    add_force,
    add_max_image_pixels,
    add_out,
    add_shared,
    max_pixels_of,
    parse_input_size,
    positive,
)

__all__ = ["register"]


# --- loading the model ---------------------------------------------------------------------------------------


def _add_weights_options(p: argparse.ArgumentParser) -> None:
    """Which weights the model gets: a file with a model name, or a run folder's best or last checkpoint."""
    p.add_argument("--weights", metavar="FILE", help="with a model name: load this weights file (any format)")
    add_shared(p, "which", default="best")


def _subject(args: argparse.Namespace, device: str | None = None) -> Any:
    """The model ``args.model`` names, with its class names and preprocessing (:func:`cnnzoo.report.load_subject`)."""
    from ..report import load_subject

    pretrained = getattr(args, "pretrained", False)  # published weights, where the command offers the flag
    return load_subject(
        args.model, weights=args.weights, pretrained=pretrained, which=args.which, device=device or args.device
    )


def _is_zoo_name(text: str) -> bool:
    from ..registry import list_models

    return text in list_models()


# --- cam -------------------------------------------------------------------------------------------------------


def _class_index(text: str | None, classes: list[str] | None) -> int | None:
    """``--class``: an index, or one of the model's class names."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    if classes is None:
        raise CnnzooError(f"--class {text!r}: this model's weights carry no class names; give a class index")
    if text in classes:
        return classes.index(text)
    close = difflib.get_close_matches(text, classes, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise CnnzooError(f"--class {text!r} is not one of the model's {len(classes)} class names.{hint}")


def _out_names(files: list[str], method: str) -> list[str]:
    """``photo_gradcam`` per image; a second ``photo`` from another folder becomes ``photo-2_gradcam``."""
    tag = method.replace("+", "p")
    seen: dict[str, int] = {}
    names = []
    for f in files:
        stem = Path(f).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}{'' if seen[stem] == 1 else f'-{seen[stem]}'}_{tag}")
    return names


def _print_layers(subject: Any) -> int:
    from ..cam import list_layers

    layers = list_layers(subject.model, input_size=subject.input_size)
    c, h, w = subject.input_size
    print(f"{subject.name} on a {c}x{h}x{w} input: the layers a map can be taken at (* the default, without --layer)")
    width = max(len(layer.name) for layer in layers)
    for layer in layers:
        print(f"{'*' if layer.default else ' '} {layer.name.ljust(width)}  {'x'.join(map(str, layer.shape[1:]))}")
    return 0


def _cam_outputs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(overlay, heatmap) path per image, each checked before any work: a folder, files replaced only with --force."""
    from ..fileio import safe_output

    folder = safe_output(args.out, kind="folder")
    paths = []
    for stem in _out_names(args.images, args.method):
        png, npy = folder / f"{stem}.png", folder / f"{stem}.npy"
        paths.append((safe_output(png, force=args.force, kind="png"), safe_output(npy, force=args.force)))
    return paths


def cmd_cam(args: argparse.Namespace) -> int:
    if args.list_layers:
        if args.images or args.out:
            raise ValueError("--list-layers takes only the model: cnnzoo cam --list-layers MODEL")
        return _print_layers(_subject(args, device=args.device or "cpu"))
    if not args.images:
        raise ValueError("give one or more images: cnnzoo cam MODEL IMAGE... --out DIR")
    if args.out is None:
        raise ValueError("--out DIR: the folder to write each image's overlay (.png) and heatmap (.npy) to")
    from ..cam import cam, save_overlay, to_json
    from ..report import load_pictures

    outputs = _cam_outputs(args)
    subject = _subject(args)
    target = _class_index(args.target_class, subject.classes)
    pictures = load_pictures(args.images, subject, max_pixels=max_pixels_of(args))
    results = cam(
        subject.model, pictures.batch, method=args.method, layer=args.layer, target=target, topk=args.topk,
        batch_size=args.batch_size,
    )  # fmt: skip
    most = max(k for r in results for k, _ in r.topk)
    names = subject.classes if subject.classes and len(subject.classes) > most else None
    records = []
    for file, crop, result, (png, npy) in zip(args.images, pictures.crops, results, outputs, strict=True):
        save_overlay(crop, result, png, names)  # writes png and, beside it, npy (the same stem)
        records.append({"image": file, "overlay": str(png), "heatmap": str(npy), **to_json(result, names)})
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        top = ", ".join(f"{c['name'] or c['class']} {c['prob']:.1%}" for c in r["topk"])
        peak = "none (all-zero map)" if r["peak"] is None else f"(y, x) = ({r['peak']['y']}, {r['peak']['x']})"
        explained = r["target"]["name"] or r["target"]["class"]
        print(f"{r['image']}: top-{len(r['topk'])} {top}; {r['method']} at {r['layer']} for {explained}, peak {peak}")
        print(f"  wrote {r['overlay']}, {r['heatmap']}")
    return 0


# --- diagram ---------------------------------------------------------------------------------------------------


def cmd_diagram(args: argparse.Namespace) -> int:
    from ..diagram import diagram
    from ..fileio import safe_output

    suffix = Path(args.out).suffix.lower().lstrip(".")
    if suffix not in ("svg", "png"):
        raise ValueError(f"--out {args.out}: the diagram is written as .svg or .png; give a name ending in one of them")
    out = safe_output(args.out, force=args.force, kind=suffix)
    if _is_zoo_name(args.model) and args.weights is None and not getattr(args, "pretrained", False):
        d = diagram(args.model, input_size=args.input, depth=args.depth)  # built on meta: no weights needed
    else:
        subject = _subject(args, device="cpu")
        d = diagram(subject.model, input_size=args.input or subject.input_size, depth=args.depth)
    path = d.save(out)
    c, h, w = d.input_size
    print(f"wrote {path}: {d.model_name} on {c}x{h}x{w}, {len(d.boxes)} boxes, {d.width}x{d.height}")
    return 0


# --- report ----------------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from ..fileio import safe_output
    from ..report import report

    if Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {args.out}: the report is one HTML page; give a name ending in .html")
    out = safe_output(args.out, force=args.force, kind="html")
    page = report(
        _subject(args), args.image or (), method=args.method, layer=args.layer, batch_size=args.batch_size,
        max_pixels=max_pixels_of(args),
    )  # fmt: skip
    path = page.save(out)
    megabytes = path.stat().st_size / 1e6
    print(f"wrote {path} ({megabytes:.1f} MB): {page.model_name}, {len(page.layers)} layers, {len(page.images)} images")
    return 0


# --- registration ----------------------------------------------------------------------------------------------


def _add_cam_options(p: argparse.ArgumentParser) -> None:
    add_shared(
        p, "cam_method", default="gradcam", dest="method", help="how the feature maps are weighed (default gradcam)"
    )
    p.add_argument(
        "--layer",
        help="the layer to take the map at (default: the last feature map before the head; "
        "cnnzoo cam --list-layers MODEL lists them)",
    )


def _register_cam(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cam",
        help="class activation maps: where in each image the network found its evidence (Grad-CAM and others)",
        description="For each IMAGE: the top classes, and the map of where the network looked for one of them (the "
        "top-1, or --class), as an overlay PNG and a .npy heatmap at input resolution in [0, 1], written to --out.",
    )
    p.add_argument("model", metavar="RUN_OR_CHECKPOINT_OR_MODEL", help="a run folder, a checkpoint or a zoo model")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG ...)")
    add_out(p, help="folder for the overlays and heatmaps (created if missing)")
    add_force(p)
    _add_cam_options(p)
    p.add_argument("--class", dest="target_class", metavar="K|NAME", help="explain this class (default: the top-1)")
    add_shared(p, "topk", default=5, help="predicted classes reported per image (default 5)")
    p.add_argument("--json", action="store_true", help="print per image the classes, the layer and the peak as JSON")
    p.add_argument("--list-layers", action="store_true", help="list the layers a map can be taken at, and stop")
    _add_weights_options(p)
    add_device(p)
    add_batch_size(p, default=16, help="images per forward/backward pass (default 16)")
    add_max_image_pixels(p)
    p.set_defaults(func=cmd_cam)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cam``, ``diagram`` and ``report`` to the ``cnnzoo`` command line."""
    _register_cam(sub)
    p = sub.add_parser(
        "diagram",
        help="the architecture as a picture: blocks, branches side by side, shortcuts, repeats collapsed (SVG or PNG)",
        description="Draw MODEL from the trace behind cnnzoo summary (so the shapes agree): each box a layer with its "
        "window and output shape, Inception's branches side by side, residual shortcuts on the side, N identical "
        "blocks in a row drawn once and marked xN. No system package (graphviz) needed.",
    )
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="a zoo model, a cnnzoo checkpoint or a run folder")
    add_out(p, required=True, help="FILE.svg or FILE.png")
    add_force(p)
    p.add_argument("--depth", type=positive, help="open blocks down to this level (default: all, repeats collapsed)")
    p.add_argument("--input", type=parse_input_size, help="input size CxHxW, HxW or one side (default: native)")
    _add_weights_options(p)
    p.set_defaults(func=cmd_diagram)

    p = sub.add_parser(
        "report",
        help="one self-contained HTML page explaining a network: diagram, layers, shapes, filters, CAMs",
        description="Write one HTML file (everything inline, opens offline): the diagram, the layer table with MACs, "
        "receptive field and jump, the shape walk with its formulas, the first-layer filters and, for each --image, "
        "the top-5 classes, the class activation map and the feature maps after each stage. Clicking a layer draws "
        "its receptive field on the input.",
    )
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="a zoo model, a cnnzoo checkpoint or a run folder")
    p.add_argument("--image", nargs="+", action="extend", metavar="IMG", help="image files to explain (repeatable)")
    add_out(p, required=True, help="the page to write (FILE.html)")
    add_force(p)
    _add_cam_options(p)
    _add_weights_options(p)
    add_device(p)
    add_batch_size(p, default=16, help="images per pass (default 16)")
    add_max_image_pixels(p)
    p.set_defaults(func=cmd_report)
