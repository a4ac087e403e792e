"""``cnnzoo list`` and ``cnnzoo info``: the zoo and one model, from the registry the Python API reads.

The parameter counts are those of the models built on the meta device without their initialisers
(:func:`cnnzoo.model_options.shapes_only`): the real modules, so the real counts, with no weights allocated
or drawn; the 26 models take about a second. The API (and torch) is imported when a command runs.
"""

from __future__ import annotations

import argparse
import json

from ..registry import get_model_info, list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="the zoo: models with parameter counts and native input sizes")
    p.add_argument("--family", help="only this family (lenet, alexnet, vgg, googlenet, inception, resnet)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="one model: paper, input, normalisation, parameter counts")
    p.add_argument("model")
    p.add_argument("--layers", action="store_true", help="also print the module tree")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def _meta_model(name: str, **kwargs):
    """Build on the meta device: shapes and counts without allocating or initialising weights."""
    from ..factory import create_model
    from ..model_options import shapes_only

    with shapes_only():
        return create_model(name, **kwargs)


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..counting import count_params

    names = list_models(args.family)
    if not names:
        families = sorted({get_model_info(n).family for n in list_models()})
        raise ValueError(f"no models in family {args.family!r}; families: {', '.join(families)}")
    rows = []
    for name in names:
        info = get_model_info(name)
        model = _meta_model(name)
        rows.append(
            dict(
                name=name,
                family=info.family,
                params=count_params(model).total,
                keras_params=count_params(model, "keras").total if info.keras else None,
                input="x".join(map(str, info.input_size)),
                min_size=info.min_size,
                classes=info.num_classes,
                twins=", ".join(
                    t
                    for t in (
                        info.torchvision and f"torchvision:{info.torchvision}",
                        info.keras and f"keras:{info.keras}",
                    )
                    if t
                ),
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(
        title=f"cnnzoo: {len(rows)} models",
        title_justify="left",
        caption="params: sum(p.numel()), as torchvision counts; Keras count: as Keras' summary() counts (BatchNorm moving statistics included)",
        caption_justify="left",
    )
    for col, justify in (
        ("model", "left"),
        ("family", "left"),
        ("params", "right"),
        ("Keras count", "right"),
        ("input (C×H×W)", "right"),
        ("min H=W", "right"),
        ("classes", "right"),
        ("same weights as", "left"),
    ):
        table.add_column(col, justify=justify)
    for r in rows:
        keras = f"{r['keras_params']:,}" if r["keras_params"] is not None else ""
        table.add_row(
            r["name"],
            r["family"],
            f"{r['params']:,}",
            keras,
            r["input"],
            str(r["min_size"]),
            str(r["classes"]),
            r["twins"],
        )
    Console(width=max(140, Console().width)).print(table)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..counting import count_params

    info = get_model_info(args.model)
    model = _meta_model(args.model)
    torch_count, keras_count = count_params(model, "torch"), count_params(model, "keras")
    data = dict(
        name=info.name,
        family=info.family,
        paper=info.paper,
        url=info.url,
        input_size=list(info.input_size),
        min_size=info.min_size,
        num_classes=info.num_classes,
        mean=list(info.mean),
        std=list(info.std),
        channel_order=info.channel_order,
        torchvision=info.torchvision,
        keras=info.keras,
        notes=info.notes,
        params_torch=torch_count.total,
        params_keras=dict(
            total=keras_count.total, trainable=keras_count.trainable, non_trainable=keras_count.non_trainable
        ),
    )
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    console = Console(width=max(160, Console().width), soft_wrap=True)
    console.print(f"[bold]{info.name}[/bold] ({info.family}): {info.paper}  {info.url}")
    if info.notes:
        console.print(f"  {info.notes}")
    c, h, w = info.input_size
    console.print(
        f"  input {c}x{h}x{w} (smallest {info.min_size}x{info.min_size}), {info.num_classes} classes, "
        f"normalise {info.channel_order} with mean {info.mean}, std {info.std}"
    )
    console.print(f"  parameters: {torch_count.total:,} (torch: sum of p.numel())")
    console.print(
        f"  Keras-style: Total params {keras_count.total:,}, Trainable {keras_count.trainable:,}, "
        f"Non-trainable {keras_count.non_trainable:,} (BatchNorm moving statistics)"
    )
    twins = [
        t
        for t in (
            info.torchvision and f"torchvision.models.{info.torchvision}",
            info.keras and f"keras.applications.{info.keras}",
        )
        if t
    ]
    if twins:
        console.print(f"  same architecture as: {', '.join(twins)}")
    if args.layers:
        console.print(repr(model), markup=False, highlight=False)
    return 0
