"""``cnnzoo train``, ``cnnzoo eval`` and ``cnnzoo predict``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .registry import get_model_info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a zoo model (lenet5 on the embedded MNIST subset by default)",
        description="Train MODEL on --data. Unset options take the model's defaults (see cnnzoo.train.FAMILY_DEFAULTS). "
        "Several processes: torchrun --nproc_per_node N -m cnnzoo train ...",
    )
    p.add_argument("model", nargs="?", help="a zoo model name (see cnnzoo list); not needed with --resume")
    p.add_argument("--data", help="mnist5k | mnist:DIR | cifar10:DIR | cifar100:DIR | folder:DIR | synthetic[:N]")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--opt", choices=["sgd", "adamw"], default="sgd", help="sgd is SGD with Nesterov momentum 0.9")
    p.add_argument("--schedule", choices=["cosine", "onecycle", "step"])
    p.add_argument("--warmup", type=int, help="epochs of linear warm-up")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--weight-decay", type=float, help="not applied to biases and BatchNorm parameters")
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], help="mixed-precision autocast (default: bf16 on CUDA, none on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC memory format (default: on, except for LeNet-5)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model (default: on a GPU yes, on the CPU no)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels: a resumed run ends bitwise equal (CPU)")
    p.add_argument("--out", help="run folder (default runs/MODEL-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--weights", help="start from these weights: a cnnzoo checkpoint or run folder, a torchvision/timm state dict, a Keras .h5/.weights.h5/.keras file")
    p.add_argument("--sha256", help="check the --weights file's SHA-256 (or a prefix of 8+ hex digits) first")
    p.add_argument("--reset-head", action="store_true", help="--weights with another class count: load all but the classifier")
    p.add_argument("--image-size", type=int, help="resize / crop images to this size")
    p.add_argument("--workers", type=int, default=None, help="decoding processes for folder data (default: 4; on a GPU one per core, up to 16)")
    p.add_argument("--decode", choices=("auto", "workers", "device"), default="auto",
                   help="folder data: decode JPEGs in the worker processes (CPU; auto) or in batches on the device (nvJPEG on a GPU, for few cores per GPU)")
    p.add_argument("--strict", action="store_true", help="stop at a corrupt image instead of skipping it")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. --option aux_logits=true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1, top-5, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", help="a run folder or a cnnzoo .safetensors file")
    p.add_argument("--data", help="default: the data the checkpoint was trained on")
    p.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of a run folder")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify images with a checkpoint: top-k classes with probabilities")
    p.add_argument("checkpoint", help="a run folder, a cnnzoo .safetensors file, or an exported .onnx file (onnxruntime)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--which", choices=["best", "last"], default="best")
    p.add_argument("--device")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"--option {text!r}: expected KEY=VALUE, e.g. aux_logits=true")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
    except json.JSONDecodeError:
        return key, value


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    if not args.model and not args.resume:
        raise ValueError("name a model to train (see cnnzoo list), or --resume RUN_DIR")
    model = args.model or "lenet5"
    get_model_info(model)  # unknown names fail here, listing close matches
    cfg = TrainConfig(
        model=model, data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, opt=args.opt,
        schedule=args.schedule, warmup=args.warmup, label_smoothing=args.label_smoothing, weight_decay=args.weight_decay,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile, device=args.device, seed=args.seed,
        deterministic=args.deterministic, out=args.out, resume=args.resume, weights=args.weights, sha256=args.sha256,
        reset_head=args.reset_head, image_size=args.image_size,
        workers=args.workers, decode=args.decode, strict=args.strict, sync_bn=args.sync_bn, progress=not args.no_progress,
        model_options=dict(_parse_option(o) for o in args.option),
    )  # fmt: skip
    train(cfg)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .predict import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data=args.data, which=args.which, batch_size=args.batch_size, device=args.device, workers=args.workers)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} on {result['data']} ({result['count']:,} images): top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%}, loss {result['loss']:.4f}")
    print("per-class accuracy: " + ", ".join(f"{c} {a:.1%}" for c, a in zip(result["classes"], result["per_class"])))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_images

    results = predict_images(args.checkpoint, args.images, topk=args.topk, which=args.which, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for c, p in r["top"]:
            print(f"  {p:7.2%}  {c}")
    return 0
