"""The inspection commands of the ``cnnzoo`` command line: ``summary``, ``shape`` and ``visualize``.

``cnnzoo.cli`` calls :func:`register` with its sub-parsers. Each handler returns the exit code; a
:class:`~cnnzoo.errors.CnnzooError` raised here is printed by ``cnnzoo.cli.main`` (exit code 2). The size
and padding parsers are shared, in :mod:`cnnzoo.cli.options`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ShapeError
from ..shapes import conv_output, receptive_fields
from .options import add_force, add_max_image_pixels, add_out, max_pixels_of, parse_input_size, parse_padding, positive

__all__ = ["register"]


# --- handlers ----------------------------------------------------------------------------------------


def cmd_summary(args: argparse.Namespace) -> int:
    from ..summary import summary

    s = summary(args.model, args.input, style=args.style, depth=args.depth, batch_size=args.batch_size, mode=args.mode)
    if args.format == "json":
        print(s.to_json())
    elif args.format == "csv":
        print(s.to_csv(), end="")
    else:
        print(s)
    return 0


def cmd_shape(args: argparse.Namespace) -> int:
    layer_options = [o for o in ("size", "kernel") if getattr(args, o) is not None]
    if args.model is None:
        if len(layer_options) < 2:
            raise ValueError(
                "give a model (cnnzoo shape resnet50 --input 3x224x224) or one layer (--size 224 --kernel 7 [--stride 2 --padding 3])"
            )
        return _one_layer(args)
    if layer_options:
        raise ValueError("--size and --kernel describe one layer; with a model, give its input with --input")
    from ..walk import walk

    w = walk(args.model, args.input)
    print(json.dumps(w.to_dict(), indent=2) if args.format == "json" else w)
    return 0 if w.ok else 1


def _one_layer(args: argparse.Namespace) -> int:
    """One layer's output size worked through, and, when the division is not whole, the nearest fixes (the seed's
    rule: padding or stride is adjusted until it is). With --strict a fraction is an error: exit code 1."""
    if args.input is not None:
        raise ValueError("--input goes with a model; for one layer give --size")
    geometry = (args.size, args.kernel, args.stride, args.padding, args.dilation, args.ceil_mode)
    out = conv_output(*geometry)
    fixes = [] if out.exact else _nearest_fixes(*geometry)
    if args.format == "json":
        rf = receptive_fields([(args.kernel, args.stride, args.dilation)])[-1]
        data: dict[str, Any] = dict(
            size=args.size,
            kernel=args.kernel,
            stride=args.stride,
            padding=args.padding,
            dilation=args.dilation,
            ceil_mode=args.ceil_mode,
            output=out.size,
            exact=out.exact,
            formula=out.formula,
            note=out.note or None,
            fixes=fixes,
            receptive_field=rf.receptive_field,
            jump=rf.jump,
        )
        print(json.dumps(data, indent=2))
    else:
        from ..walk import explain_layer

        print(explain_layer(*geometry))
        if not out.exact:
            print(
                "Nearest fixes (the division must come out whole):"
                if fixes
                else "No padding or stride nearby makes the division whole: change the input size or the kernel."
            )
            for fix in fixes:
                print(f"  {fix}")
    if args.strict and not out.exact:
        print(f"cnnzoo shape: error: --strict: {out.formula} is not whole", file=sys.stderr)
        return 1
    return 0


def _nearest_fixes(*geometry: Any) -> list[str]:
    """The fixes ``shapes.conv_output(..., strict=True)`` proposes in its error, taken from that error, so that the
    command line and the library can never propose different ones."""
    try:
        conv_output(*geometry, strict=True)
    except ShapeError as e:
        _, found, fixes = str(e).partition(" Nearest fixes: ")
        return fixes.removesuffix(".").split("; ") if found else []
    return []


def cmd_visualize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..pretrained import split_name

    options: dict[str, Any] = {}
    if args.pretrained:
        if Path(args.model).exists():
            raise ValueError(f"{args.model} is a checkpoint: --pretrained goes with a model name (MODEL or MODEL.TAG)")
        options["pretrained"] = True
    elif split_name(args.model)[1] is not None and not Path(args.model).exists():
        raise ValueError(f"{args.model} names published weights: add --pretrained")
    from ..visualize import visualize

    pictures = visualize(
        args.model,
        args.image,
        args.out,
        size=args.size,
        channels=args.channels,
        force=args.force,
        max_pixels=max_pixels_of(args),
        **options,
    )
    print(f"stages: {', '.join(pictures.stages)}")
    for path in pictures.paths:
        print(f"wrote {path}")
    return 0


# --- registration ------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``summary``, ``shape`` and ``visualize`` to the ``cnnzoo`` command line."""
    p = subparsers.add_parser(
        "summary",
        help="a model layer by layer: shapes, params, MACs, receptive fields (Keras' summary, and more)",
        description="A model as a table in Keras' layout, with kernel/stride/padding, MACs, receptive field and jump "
        "of every layer, and totals. Runs on the meta device: no weights, no arithmetic.",
    )
    p.add_argument("model", help="a zoo model (cnnzoo list)")
    p.add_argument(
        "--input", type=parse_input_size, help="input size CxHxW, HxW or one side (default: the model's native size)"
    )
    p.add_argument(
        "--depth", type=positive, help="fold blocks nested deeper than this into one row (1: the model's children)"
    )
    p.add_argument(
        "--style",
        choices=("torch", "keras"),
        default="torch",
        help="torch: module paths, sum(p.numel()); keras: Keras names, types and (None, H, W, C) shapes, "
        "BatchNorm statistics as non-trainable params",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument(
        "--batch-size",
        type=positive,
        default=1,
        help="images per forward pass (MACs and activation memory scale with it)",
    )
    p.add_argument("--mode", choices=("eval", "train"), default="eval", help="trace in eval (default) or train mode")
    p.set_defaults(func=cmd_summary)

    p = subparsers.add_parser(
        "shape",
        help="output-size formulas: one layer (--size --kernel ...), or a whole model walked layer by layer",
        description="With --size and --kernel: one layer's output size, worked through, and its receptive field. With a "
        "model: every layer that changes the size, with its formula, stopping at the first layer the input is too small "
        "for (exit code 1) and saying which sizes work.",
    )
    p.add_argument("model", nargs="?", help="a zoo model to walk")
    p.add_argument("--input", type=parse_input_size, help="the model's input, CxHxW, HxW or one side (default: native)")
    p.add_argument("--size", type=positive, help="one layer: input height (= width)")
    p.add_argument("--kernel", type=positive, help="one layer: kernel size")
    p.add_argument("--stride", type=positive, default=1)
    p.add_argument("--padding", type=parse_padding, default=0, help="3, 0,1 (before, after), same or valid")
    p.add_argument("--dilation", type=positive, default=1)
    p.add_argument("--ceil-mode", action="store_true", help="round up, as pooling with ceil_mode=True")
    p.add_argument(
        "--strict",
        action="store_true",
        help="one layer: a division that is not whole is an error (exit code 1), as conv_output(strict=True) has it",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_shape)

    p = subparsers.add_parser(
        "visualize",
        help="PNGs of a model at work: first-layer filters, feature maps per stage, activation statistics",
        description="Runs one image through the model and writes input.png, filters.png, feature_maps.png and "
        "activation_stats.png. A model given by name has its initial (random) weights; give a checkpoint, or --pretrained, for trained ones.",
    )
    p.add_argument(
        "model",
        metavar="NAME_OR_CHECKPOINT",
        help="a zoo model (MODEL.TAG with --pretrained), or a checkpoint file or run folder",
    )
    p.add_argument(
        "--pretrained", action="store_true", help="a model name's published weights (cnnzoo weights list MODEL)"
    )
    p.add_argument("--image", required=True, help="an image file (PNG, JPEG ...)")
    add_out(
        p,
        required=True,
        help="folder to write the PNGs to (created if missing); PNGs already there are replaced only with --force",
    )
    add_force(p)
    p.add_argument("--size", type=positive, help="square input side (default: the model's native size)")
    p.add_argument("--channels", type=positive, default=8, help="feature maps shown per stage (default 8)")
    add_max_image_pixels(p)
    p.set_defaults(func=cmd_visualize)
