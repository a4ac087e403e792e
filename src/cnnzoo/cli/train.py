"""``cnnzoo train``, ``cnnzoo eval`` and ``cnnzoo predict``.

The train flags are not written here: :func:`~cnnzoo.cli.options.add_train_config_arguments` generates them
from :class:`~cnnzoo.train.TrainConfig`'s declarations, and :func:`cmd_train` builds the config back from
them, so the command line, the Python API, ``config.json`` and ``--help`` cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..pretrained import split_name
from ..registry import get_model_info
from .options import (
    add_batch_size,
    add_device,
    add_max_image_pixels,
    add_shared,
    add_train_config_arguments,
    add_workers,
    flag_of,
    max_pixels_of,
    train_config_values,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a zoo model (lenet5 on the embedded MNIST subset by default)",
        description="Train MODEL on --data. Unset options take the model's defaults (see cnnzoo.train.FAMILY_DEFAULTS). "
        "Several processes: torchrun --nproc_per_node N -m cnnzoo train ...",
    )
    add_train_config_arguments(p)
    # torchvision's references/classification/train.py spellings, so that its README's commands run as written
    p.add_argument("--model", dest="model_flag", metavar="MODEL", help="MODEL as torchvision's train.py names it")
    p.add_argument(
        "--data-path",
        metavar="DIR",
        help="torchvision's spelling of --data folder:DIR (DIR/train/CLASS/*, DIR/val/CLASS/*)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval", help="evaluate a checkpoint or published weights: top-1, top-5, per-class accuracy, confusion matrix",
        description="Evaluate a run folder or checkpoint on its data (or --data), or a model's published weights "
        "(--pretrained) with their own eval transform: cnnzoo eval resnet50 --pretrained --data folder:/data/imagenet "
        "reads val/SYNSET/*.JPEG or the flat ILSVRC2012_val_*.JPEG files with LOC_val_solution.csv.",
    )  # fmt: skip
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT_OR_MODEL",
        help="a run folder or a cnnzoo .safetensors file; with --pretrained a model name (MODEL or MODEL.TAG)",
    )
    _add_pretrained_flag(p)
    p.add_argument("--data", help="default: the data the checkpoint was trained on")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")
    add_batch_size(p, default=256)
    add_device(p)
    add_workers(p, default=4)
    add_max_image_pixels(p)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict", help="classify images with a checkpoint or published weights: top-k classes with probabilities"
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT_OR_MODEL",
        help="a run folder, a cnnzoo .safetensors file, an exported .onnx file (onnxruntime), or with --pretrained a model "
        "name (MODEL or MODEL.TAG)",
    )  # fmt: skip
    _add_pretrained_flag(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_shared(p, "topk", default=5)
    p.add_argument("--which", choices=["best", "last"], default="best")
    add_device(p)
    add_max_image_pixels(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def _add_pretrained_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", action="store_true", help="the model's published weights (cnnzoo weights list MODEL); "
                   "name others as MODEL.TAG, e.g. resnet50.IMAGENET1K_V1")  # fmt: skip


def _pretrained_of(model: str, flag: bool | str) -> tuple[str, bool | str]:
    """``MODEL.TAG`` with --pretrained -> (MODEL, TAG); a tag without the flag is refused in one line."""
    name, tag = split_name(model)
    if tag is not None and not flag:
        raise ValueError(f"{model} names published weights: add --pretrained (or give the model name {name} alone)")
    return name, (tag if tag is not None else flag)


def _check_model_tag(target: str, pretrained: bool) -> None:
    """eval / predict: a ``MODEL.TAG`` that is not a file needs --pretrained (the tag travels in the name)."""
    # A path (a separator in it, or anything on disk: a broken symlink too) is a file, never a model's name.
    is_path = os.sep in target or os.path.lexists(target)
    if not is_path and "." in target and not target.endswith((".safetensors", ".onnx")):
        _pretrained_of(target, pretrained)


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    _torchvision_spellings(args)
    if not args.model and not args.resume and not args.recipe:
        raise ValueError("name a model to train (see cnnzoo list), or --resume RUN_DIR")
    from ..model_options import parse_model_options

    model, pretrained = _pretrained_of(
        args.model or (_model_of_run(args.resume) if args.resume else _model_of_recipe(args.recipe)), args.pretrained
    )
    get_model_info(model)  # unknown names fail here, listing close matches
    values = train_config_values(args)
    values["model_options"] = parse_model_options(model, args.model_options)  # typed from the model's own signature
    cfg = TrainConfig(**{**values, "model": model, "pretrained": pretrained})
    train(cfg.validate(label=flag_of))  # a value out of range: one line naming its flag, before anything is written
    return 0


def _torchvision_spellings(args: argparse.Namespace) -> None:
    """``--model NAME`` and ``--data-path DIR`` (torchvision's train.py) as MODEL and ``--data folder:DIR``."""
    from ..train.config import TrainingError

    if args.model_flag is not None:
        if args.model and args.model != args.model_flag:
            raise TrainingError(f"MODEL {args.model!r} and --model {args.model_flag!r}: give the model once")
        args.model = args.model_flag
    if args.data_path is not None:
        if args.data is not None:
            raise TrainingError(f"--data {args.data!r} and --data-path {args.data_path!r}: give the data once")
        args.data = f"folder:{args.data_path}"


def _model_of_recipe(recipe: str) -> str:
    """With ``--recipe`` and no MODEL: the model the recipe was written for (its ``model``)."""
    from ..train.recipe import read_recipe

    model = read_recipe(recipe).get("model")
    if not model:
        raise ValueError(f"--recipe {recipe} names no model: name one to train (see cnnzoo list)")
    return model


def _model_of_run(run: str) -> str:
    """With ``--resume RUN`` and no MODEL: the model the run trains (a different MODEL is refused by the run)."""
    from ..train.config import TrainingError

    config = Path(run) / "config.json"
    try:
        return json.loads(config.read_text())["model"]
    except FileNotFoundError:
        raise TrainingError(f"--resume {run}: not a cnnzoo run folder (no config.json)") from None
    except (OSError, ValueError, KeyError) as e:
        raise TrainingError(f"--resume {run}: its config.json cannot be read ({e})") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from ..predict import evaluate_checkpoint

    _check_model_tag(args.checkpoint, args.pretrained)
    result = evaluate_checkpoint(
        args.checkpoint, data=args.data, which=args.which, batch_size=args.batch_size, device=args.device,
        workers=args.workers, pretrained=args.pretrained, max_pixels=max_pixels_of(args),
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for note in result.get("notes", []):
        print(f"note: {note}")
    label = result["checkpoint"] if args.pretrained else result["model"]  # published weights: their name, MODEL.TAG
    print(
        f"{label} on {result['data']} ({result['count']:,} images): top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%}, loss {result['loss']:.4f}"
    )
    if result.get("published"):
        print(
            "published: "
            + ", ".join(f"{k} {v:.2f}%" for k, v in result["published"].items())
            + " (the full ImageNet-1K validation set)"
        )
    seen = [(c, a) for c, a in zip(result["classes"], result["per_class"], strict=True) if a is not None]
    shown = ", ".join(f"{c} {a:.1%}" for c, a in seen[:20]) + (
        f", ... ({len(seen)} classes; --json for all)" if len(seen) > 20 else ""
    )
    print(f"per-class accuracy: {shown}")
    empty = [c for c, a in zip(result["classes"], result["per_class"], strict=True) if a is None]
    if empty and len(empty) <= 20:  # a subset of ImageNet's 1000 classes is not worth 980 names
        print(
            f"no images in the data for {len(empty)} class{'es' if len(empty) > 1 else ''}: {', '.join(empty)} (no accuracy)"
        )
    elif empty:
        print(
            f"no images in the data for {len(empty)} of the {len(result['classes'])} classes (no accuracy; --json lists them)"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import predict_images

    _check_model_tag(args.checkpoint, args.pretrained)
    results = predict_images(
        args.checkpoint, args.images, topk=args.topk, which=args.which, device=args.device, pretrained=args.pretrained,
        max_pixels=max_pixels_of(args),
    )  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for note in results.notes:
        print(f"note: {note}")
    for r in results:
        print(r["image"])
        for c, p in r["top"]:
            print(f"  {p:7.2%}  {c}")
    return 0
