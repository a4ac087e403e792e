"""``cnnzoo train``, ``cnnzoo eval`` and ``cnnzoo predict``.

The train flags are not written here: :func:`~cnnzoo.cli.options.add_train_config_arguments` generates them
from :class:`~cnnzoo.train.TrainConfig`'s declarations, and :func:`cmd_train` builds the config back from
them, so the command line, the Python API, ``config.json`` and ``--help`` cannot drift apart.
"""

from __future__ import annotations

import argparse
import json

from ..registry import get_model_info
from .options import add_batch_size, add_device, add_train_config_arguments, add_workers, flag_of, train_config_values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a zoo model (lenet5 on the embedded MNIST subset by default)",
        description="Train MODEL on --data. Unset options take the model's defaults (see cnnzoo.train.FAMILY_DEFAULTS). "
        "Several processes: torchrun --nproc_per_node N -m cnnzoo train ...",
    )
    add_train_config_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1, top-5, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", help="a run folder or a cnnzoo .safetensors file")
    p.add_argument("--data", help="default: the data the checkpoint was trained on")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")
    add_batch_size(p, default=256)
    add_device(p)
    add_workers(p, default=4)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify images with a checkpoint: top-k classes with probabilities")
    p.add_argument("checkpoint", help="a run folder, a cnnzoo .safetensors file, or an exported .onnx file (onnxruntime)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--which", choices=["best", "last"], default="best")
    add_device(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    if not args.model and not args.resume:
        raise ValueError("name a model to train (see cnnzoo list), or --resume RUN_DIR")
    model = args.model or "lenet5"  # with --resume the run's own config names the model
    get_model_info(model)  # unknown names fail here, listing close matches
    cfg = TrainConfig(**{**train_config_values(args), "model": model})
    train(cfg.validate(label=flag_of))  # a value out of range: one line naming its flag, before anything is written
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..predict import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data=args.data, which=args.which, batch_size=args.batch_size, device=args.device, workers=args.workers)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} on {result['data']} ({result['count']:,} images): top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%}, loss {result['loss']:.4f}")
    print("per-class accuracy: " + ", ".join(f"{c} {a:.1%}" for c, a in zip(result["classes"], result["per_class"], strict=True)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import predict_images

    results = predict_images(args.checkpoint, args.images, topk=args.topk, which=args.which, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for c, p in r["top"]:
            print(f"  {p:7.2%}  {c}")
    return 0
