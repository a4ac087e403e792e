"""``cnnzoo convert`` (any accepted weights file -> cnnzoo checkpoint), ``cnnzoo export`` (-> ONNX / TorchScript)
and ``cnnzoo weights list`` / ``cnnzoo weights download`` (the published weights: what there is, and pre-fetching)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import WeightsError
from .options import add_force, add_max_image_pixels, add_model_options, add_out, add_shared, max_pixels_of, positive


def register(sub: argparse._SubParsersAction) -> None:
    _register_weights_group(sub)
    p = sub.add_parser(
        "convert",
        help="write a cnnzoo checkpoint from torchvision, timm, Keras or safetensors weights",
        description="Read SRC (a torchvision / timm .pth, a safetensors file, a Keras .h5 / .weights.h5 / .keras file), "
        "load it into MODEL and write DST, a cnnzoo .safetensors checkpoint with the model's name and arguments inside. "
        "The format is told from the file's content. Pickles are read with torch.load(weights_only=True): nothing in "
        "a file is ever run.",
    )
    p.add_argument("source", metavar="SRC", help="the weights file to read, or an http(s) URL (with --sha256)")
    p.add_argument(
        "dest", metavar="DST", help="the cnnzoo checkpoint to write (.safetensors); an existing one only with --force"
    )
    p.add_argument("--model", required=True, help="the zoo model the weights belong to (see cnnzoo list)")
    p.add_argument(
        "--like", metavar="MODEL.TAG",
        help="the file is (a copy of) these published weights: keep their class names and preprocessing. Without it "
        "they are kept when the file's digest is a published one, or its 1000-class head is an ImageNet one",
    )  # fmt: skip
    _add_loading_options(p)
    add_force(p)
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
    add_out(
        p,
        help="the file to write (default: MODEL.onnx / MODEL.pt here, or next to the checkpoint); an existing one only with --force",
    )
    add_shared(
        p,
        "image_size",
        help="input height = width, at least the model's smallest (default: the checkpoint's, else the model's native size)",
    )
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    add_shared(p, "opset")
    p.add_argument(
        "--quantize", choices=["int8"],
        help="write an INT8 ONNX file instead (ONNX Runtime static quantization, QDQ, per-channel int8 weights), "
        "calibrated on the run's own training images (or --calibrate), and print its top-1 against fp32 on held-out "
        "images (default name: MODEL.int8.onnx)",
    )  # fmt: skip
    p.add_argument(
        "--calibrate", metavar="DATA_SPEC",
        help="with --quantize: calibrate on this data's training split and check on its held-out split (a data spec "
        "such as folder:DIR or mnist5k, or a run folder); needed for a model name, whose weights carry no data",
    )  # fmt: skip
    p.add_argument(
        "--calibration-images", type=positive, metavar="N",
        help="with --quantize: training images that calibrate the activation ranges (default 256)",
    )  # fmt: skip
    add_max_image_pixels(p)
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")
    p.add_argument(
        "--weights", help="with a model name: load this weights file (any format convert reads) or http(s) URL first"
    )
    p.add_argument("--pretrained", action="store_true", help="with a model name (MODEL or MODEL.TAG): its published weights, "
                   "whose class names and preprocessing go into the file's metadata")  # fmt: skip
    _add_loading_options(p)
    add_force(p)
    p.set_defaults(func=cmd_export)


def _add_loading_options(p: argparse.ArgumentParser) -> None:
    add_shared(
        p, "num_classes", help="build the model with this many classes (default: the model's own; 0: no classifier)"
    )
    p.add_argument(
        "--reset-head",
        action="store_true",
        help="if the file's classifier has another number of classes, keep a new one",
    )
    p.add_argument("--sha256", help="refuse the weights file unless its SHA-256 (or a prefix of 8+ hex digits) matches; "
                   "required with a URL")  # fmt: skip
    add_model_options(p)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..factory import convert
    from ..model_options import parse_model_options

    options = parse_model_options(args.model, args.option)
    report = convert(
        args.source, args.dest, args.model, num_classes=args.num_classes, sha256=args.sha256, reset_head=args.reset_head,
        like=args.like, force=args.force, **options,
    )  # fmt: skip
    print(f"read {report}")
    size = Path(args.dest).stat().st_size / 1e6
    print(f"wrote {args.dest}: cnnzoo checkpoint of {args.model} ({size:.1f} MB); load it with cnnzoo.load_model")
    print(f"  {_outputs_line(args.dest)}")
    return 0


def _outputs_line(checkpoint: str) -> str:
    """What the checkpoint says its outputs are, in one line (the class names predict will print, or none)."""
    from ..checkpoint import read_metadata

    meta = read_metadata(checkpoint)
    classes = meta.get("classes")
    pre = meta.get("preprocessing", {})
    crop = (
        f"resize {pre.get('resize')}, crop {pre.get('crop')}" if pre.get("crop") else f"resize to {pre.get('resize')}"
    )
    feed = f"{crop} {pre.get('interpolation')}, {pre.get('channel_order')} mean {pre.get('mean')} std {pre.get('std')}"
    if not classes:
        return f"preprocessing: {feed}; no class names known (--like MODEL.TAG names them)"
    origin = f" of {meta['pretrained']}" if meta.get("pretrained") else ""
    return f"class names{origin}: {len(classes)} ({', '.join(classes[:3])}, ...); preprocessing: {feed}"


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import FORMATS, export_metadata, export_model
    from ..fileio import safe_output

    _check_quantize_args(args)
    if args.out:  # checked before the model is even loaded; export_model checks a default path itself
        safe_output(args.out, force=args.force, kind=args.format)
    model, metadata, default_out = _model_to_export(args)
    if args.quantize:
        return _export_int8(args, model, export_metadata(model, **metadata), default_out)
    out = Path(args.out) if args.out else default_out.with_suffix(FORMATS[args.format])
    report = export_model(
        model, out, format=args.format, image_size=args.image_size, dynamic_batch=args.dynamic_batch, opset=args.opset,
        metadata=export_metadata(model, **metadata), force=args.force,
    )  # fmt: skip
    print(report)
    return 0


def _check_quantize_args(args: argparse.Namespace) -> None:
    """--quantize and its options, refused before any model is loaded or file written."""
    if not args.quantize:
        if args.calibrate or args.calibration_images is not None:
            raise ValueError("--calibrate and --calibration-images go with --quantize int8")
        return
    if args.format != "onnx":
        raise ValueError(
            f"--quantize int8 writes an ONNX file (ONNX Runtime's quantizer), not {args.format}: "
            "leave --format out or give --format onnx"
        )
    if not args.calibrate and not Path(args.model).exists():
        raise ValueError(
            f"{args.model} is a model name, whose weights carry no data to calibrate on: give --calibrate DATA_SPEC "
            "(training images as the model expects them, e.g. folder:/data/imagenet), or export a run folder"
        )


def _export_int8(args: argparse.Namespace, model, metadata: dict, default_out: Path) -> int:
    """cnnzoo export --quantize int8: fp32 export, calibration, INT8 file, held-out check, in that order."""
    from ..quantize import DEFAULT_CALIBRATION_IMAGES, quantize_export

    data = args.calibrate or metadata.get("data")
    if not data:
        raise ValueError(
            f"{default_out} does not say what data it was trained on: give --calibrate DATA_SPEC (its training images)"
        )
    out = Path(args.out) if args.out else default_out.with_suffix(".int8.onnx")
    result = quantize_export(
        model, out, data, metadata=metadata, calibration_images=args.calibration_images or DEFAULT_CALIBRATION_IMAGES,
        image_size=args.image_size, dynamic_batch=args.dynamic_batch, opset=args.opset, force=args.force,
        max_pixels=max_pixels_of(args),
    )  # fmt: skip
    print(result)
    print(f"done: wrote {result.quantize.path} (run it with cnnzoo predict / cnnzoo eval, or onnxruntime)")
    return 0


def _model_to_export(args: argparse.Namespace):
    """(model, metadata overrides, default output path) for a checkpoint, a run folder or a model name."""
    from ..checkpoint import read_metadata, resolve_checkpoint
    from ..data.specs import absolute_spec, relocated_spec
    from ..factory import create_model, load_model
    from ..model_options import parse_model_options
    from ..pretrained import split_name
    from ..weights import FORMATS, detect_format, load_pretrained, verify_sha256

    target = Path(args.model)
    if target.exists():
        if args.weights or args.num_classes or args.option or args.reset_head or args.pretrained:
            raise ValueError(
                f"{target} is a checkpoint: --weights, --pretrained, --num-classes, --option and --reset-head go with a model name"
            )
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
        # A trained checkpoint keeps its preprocessing in "info", a converted one in "preprocessing" and "classes".
        pre = {
            **(meta.get("info") or meta.get("preprocessing") or {}),
            **({"classes": meta["classes"]} if meta.get("classes") else {}),
        }
        kept = (
            "classes",
            "mean",
            "std",
            "image_size",
            "channel_order",
            "resize",
            "crop",
            "interpolation",
            "resize_mode",
            "antialias",
        )
        keep = {k: pre[k] for k in kept if k in pre}
        info = meta.get("info") or {}
        # The run's data, as found from here: export --quantize calibrates on it, eval of the .onnx reads it.
        if info.get("data"):
            keep["data"] = absolute_spec(relocated_spec(info["data"], info.get("data_relative"), weights.parent))
        return load_model(weights), {"model_args": meta["model_args"], **keep}, weights
    if target.suffix in (".safetensors", ".pth", ".pt", ".h5", ".keras") or "/" in args.model:
        raise WeightsError(f"{target}: no such file or run folder")
    if args.sha256 and not args.weights:
        raise ValueError("--sha256 checks the --weights file: give --weights too")
    name, tag = split_name(args.model)
    if tag is not None and not args.pretrained:
        raise ValueError(f"{args.model} names published weights: add --pretrained to export them (or export {name})")
    options = parse_model_options(name, args.option)
    model = create_model(args.model, args.num_classes, pretrained=args.pretrained, **options)
    if model.load_report is not None:
        print(f"read {model.load_report}")
    if args.weights:
        print(f"read {load_pretrained(model, args.weights, sha256=args.sha256, reset_head=args.reset_head)}")
    model_args = dict(name=name, num_classes=model.num_classes, in_chans=model.in_chans, **options)
    return model, {"model_args": model_args}, Path(args.model.replace(".", "_"))


# --- cnnzoo weights list / download ---------------------------------------------------------------


def _register_weights_group(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="published pretrained weights: list them, download them ahead (for machines that run offline)",
        description="The published weights cnnzoo fetches by name (torchvision's and Keras' ImageNet files, and any "
        "registered with cnnzoo.register_pretrained), cached in $CNNZOO_HOME/weights (default ~/.cache/cnnzoo); a "
        "verified copy in torch.hub's or Keras' cache is used where it lies. CNNZOO_OFFLINE=1: never download.",
    )
    group = p.add_subparsers(dest="weights_command", required=True, metavar="SUBCOMMAND")
    q = group.add_parser("list", help="the table: tag, source, published top-1, size, cached or not")
    q.add_argument("model", nargs="?", help="only this model's weights")
    q.add_argument("--json", action="store_true", help="every field of every entry, as JSON")
    q.set_defaults(func=cmd_weights_list)
    q = group.add_parser("download", help="fetch and verify weights now; prints where each file is")
    q.add_argument("names", nargs="+", metavar="MODEL[.TAG]", help="a model (its default weights) or MODEL.TAG")
    q.set_defaults(func=cmd_weights_download)


def cmd_weights_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..pretrained import get_pretrained, list_pretrained

    entries = [get_pretrained(name) for name in list_pretrained(args.model)]
    defaults = {e.model: get_pretrained(e.model).tag for e in entries}
    if args.json:
        rows = [dict(e.as_dict(), default=e.tag == defaults[e.model]) for e in entries]
        print(json.dumps(rows, indent=2))
        return 0
    if not entries:
        print(
            f"{args.model} has no published weights; add yours with cnnzoo.register_pretrained({args.model!r}, TAG, url=..., sha256=...)"
        )
        return 0
    table = Table(title=f"pretrained weights: {len(entries)}", title_justify="left")
    for column, justify in (
        ("weights", "left"),
        ("source", "left"),
        ("top-1", "right"),
        ("size", "right"),
        ("cached", "left"),
    ):
        table.add_column(column, justify=justify)
    for e in entries:
        name = e.name + (" (default)" if e.tag == defaults[e.model] else "")
        top1 = f"{e.top1:.2f}%" if e.top1 is not None else ("features only" if not e.has_classifier else "")
        size = f"{e.file_size_mb:.1f} MiB" if e.file_size_mb is not None else ""  # torchvision's and keras.io's "MB"
        table.add_row(name, e.source, top1, size, _cached_where(e))
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(_list_caption(), soft_wrap=True)
    return 0


def _cached_where(entry) -> str:
    """ "yes" (cnnzoo's cache), "torch.hub" or "keras" (a verified copy in their cache, used in place), or "no"."""
    from .. import hub

    path = entry.cached_path()
    if path is None:
        return "no"
    for where, folder in (("torch.hub", hub.torch_hub_checkpoints_dir()), ("keras", hub.keras_models_dir())):
        if path.parent == folder:
            return f"yes ({where})"
    return "yes"


def _list_caption() -> str:
    from ..hub import weights_dir

    return (
        f"cache: {weights_dir()} ($CNNZOO_HOME); top-1: as published (torchvision's enums, keras.io)\n"
        "use: cnnzoo predict MODEL[.TAG] --pretrained IMAGE; cnnzoo.create_model(MODEL, pretrained=True)"
    )


def cmd_weights_download(args: argparse.Namespace) -> int:
    from ..pretrained import fetch_pretrained, get_pretrained

    entries = [get_pretrained(name) for name in args.names]  # every name checked before anything is fetched
    for entry in entries:
        path = fetch_pretrained(entry)
        print(f"{entry.name}: {path} ({path.stat().st_size / 2**20:.1f} MiB, {entry.pinned.shown()} verified)")
    return 0
