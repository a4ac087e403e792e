"""``cnnzoo convert`` (any accepted weights file -> cnnzoo checkpoint) and ``cnnzoo export`` (-> ONNX / TorchScript)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import WeightsError
from .options import add_model_options, parse_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="write a cnnzoo checkpoint from torchvision, timm, Keras or safetensors weights",
        description="Read SRC (a torchvision / timm .pth, a safetensors file, a Keras .h5 / .weights.h5 / .keras file), "
        "load it into MODEL and write DST, a cnnzoo .safetensors checkpoint with the model's name and arguments inside. "
        "The format is told from the file's content. Pickles are read with torch.load(weights_only=True): nothing in "
        "a file is ever run.",
    )
    p.add_argument("source", metavar="SRC", help="the weights file to read")
    p.add_argument("dest", metavar="DST", help="the cnnzoo checkpoint to write (.safetensors)")
    p.add_argument("--model", required=True, help="the zoo model the weights belong to (see cnnzoo list)")
    _add_loading_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "export",
        help="export a model to ONNX (checked with onnxruntime) or TorchScript",
        description="Export a cnnzoo checkpoint (a .safetensors file or a run folder) or a zoo model by name (random "
        "weights, or --weights FILE) in eval mode: GoogLeNet and Inception without their auxiliary outputs. The file "
        "is then run on random images and compared with PyTorch (max abs diff <= 1e-4).",
    )
    p.add_argument("model", metavar="CHECKPOINT_OR_NAME", help="a cnnzoo checkpoint, a run folder, or a zoo model name")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", help="the file to write (default: MODEL.onnx / MODEL.pt here, or next to the checkpoint)")
    p.add_argument("--image-size", type=int, help="input height = width (default: the checkpoint's, else the model's native size)")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's newest)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")
    p.add_argument("--weights", help="with a model name: load this weights file first (any format convert reads)")
    _add_loading_options(p)
    p.set_defaults(func=cmd_export)


def _add_loading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=int, help="build the model with this many classes (default: the model's own)")
    p.add_argument("--reset-head", action="store_true", help="if the file's classifier has another number of classes, keep a new one")
    p.add_argument("--sha256", help="refuse the weights file unless its SHA-256 (or a prefix of 8+ hex digits) matches")
    add_model_options(p)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..factory import convert

    options = dict(parse_option(o) for o in args.option)
    report = convert(args.source, args.dest, args.model, num_classes=args.num_classes, sha256=args.sha256, reset_head=args.reset_head, **options)
    print(f"read {report}")
    size = Path(args.dest).stat().st_size / 1e6
    print(f"wrote {args.dest}: cnnzoo checkpoint of {args.model} ({size:.1f} MB); load it with cnnzoo.load_model")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import FORMATS, export_metadata, export_model

    model, metadata, default_out = _model_to_export(args)
    out = Path(args.out) if args.out else default_out.with_suffix(FORMATS[args.format])
    report = export_model(
        model, out, format=args.format, image_size=args.image_size, dynamic_batch=args.dynamic_batch, opset=args.opset,
        metadata=export_metadata(model, **metadata),
    )  # fmt: skip
    print(report)
    return 0


def _model_to_export(args: argparse.Namespace):
    """(model, metadata overrides, default output path) for a checkpoint, a run folder or a model name."""
    from ..checkpoint import read_metadata, resolve_checkpoint
    from ..factory import create_model, load_model
    from ..weights import FORMATS, detect_format, load_pretrained, verify_sha256

    target = Path(args.model)
    if target.exists():
        if args.weights or args.num_classes or args.option or args.reset_head:
            raise ValueError(f"{target} is a checkpoint: --weights, --num-classes, --option and --reset-head go with a model name")
        weights = resolve_checkpoint(target, args.which)
        fmt = detect_format(weights)
        if fmt != "cnnzoo":
            raise WeightsError(
                f"{weights} is a {FORMATS[fmt]}, not a cnnzoo checkpoint: name the model and pass the file as weights, "
                f"e.g. cnnzoo export MODEL --weights {weights} (or convert it first: cnnzoo convert {weights} OUT.safetensors --model MODEL)"
            )
        if args.sha256:
            verify_sha256(weights, args.sha256)
        meta = read_metadata(weights)
        # A trained checkpoint keeps its preprocessing in "info", a converted one in "preprocessing".
        pre = meta.get("info") or meta.get("preprocessing") or {}
        keep = {k: pre[k] for k in ("classes", "mean", "std", "image_size", "channel_order") if k in pre}
        return load_model(weights), {"model_args": meta["model_args"], **keep}, weights
    if target.suffix in (".safetensors", ".pth", ".pt", ".h5", ".keras") or "/" in args.model:
        raise WeightsError(f"{target}: no such file or run folder")
    if args.sha256 and not args.weights:
        raise ValueError("--sha256 checks the --weights file: give --weights too")
    options = dict(parse_option(o) for o in args.option)
    model = create_model(args.model, args.num_classes, **options)
    if args.weights:
        print(f"read {load_pretrained(model, args.weights, sha256=args.sha256, reset_head=args.reset_head)}")
    model_args = dict(name=args.model, num_classes=model.info.num_classes if args.num_classes is None else args.num_classes, in_chans=model.in_chans, **options)
    return model, {"model_args": model_args}, Path(args.model)
