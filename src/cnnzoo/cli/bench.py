"""``cnnzoo bench``: images per second of a zoo model, side by side with torchvision and timm."""

from __future__ import annotations

import argparse
import json

from .options import (
    add_batch_size,
    add_decode,
    add_device,
    add_max_image_pixels,
    add_model_options,
    add_shared,
    add_workers,
    max_pixels_of,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="speed of a model (or of a data pipeline), optionally against torchvision and timm",
        description="Measure MODEL: images/s, latency per batch, peak memory, achieved TFLOP/s, warm-up. With --vs the "
        "same network from torchvision (and timm) runs in the same process with the same settings, the runs alternated "
        "round by round, and the ratio cnnzoo / other is given per round. With --data the training data pipeline "
        "alone is measured. See cnnzoo.bench for what is measured and how.",
    )
    p.add_argument(
        "model", nargs="?", help="a zoo model name (optional with --data: it sets the image size and normalisation)"
    )
    p.add_argument(
        "--mode", choices=["infer", "train"], default="infer", help="a forward pass, or a full training step"
    )
    add_device(p, help="cpu or cuda (default: cuda when available)")
    add_batch_size(p, help="default: 256 on a GPU, 32 on the CPU (16 for training)")
    p.add_argument("--input", help="input size: 224 or 3x224x224 (default: the model's native size)")
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16", "int8"],
        help="default: bf16 on a GPU, fp32 on the CPU; int8 (CPU, inference): cnnzoo's ONNX Runtime INT8 model, "
        "calibrated on random images (speed only), against the others in fp32",
    )  # fmt: skip
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force the memory format of every contender (default: channels-last on a GPU; on the CPU for cnnzoo's fast paths only)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile every contender (the whole step when training)"
    )
    add_shared(p, "backend", default="auto")
    p.add_argument(
        "--plain",
        action="store_true",
        help="run cnnzoo's model as it is: no BN folding, back end or channels-last of its own",
    )
    p.add_argument("--vs", default="", help="comma-separated: torchvision,timm")
    add_shared(p, "rounds", default=5, help="alternated rounds (default 5)")
    add_shared(p, "iters", help="steps per round (default: about --round-seconds worth)")
    add_shared(p, "round_seconds", default=1.0)
    add_shared(p, "bench_warmup", default=3, dest="warmup")
    add_shared(p, "threads", help="CPU threads for PyTorch and ONNX Runtime (default: PyTorch's)")
    add_model_options(p, example="aux_logits=false")
    p.add_argument(
        "--data", metavar="SPEC", help="measure the data pipeline alone: folder:DIR, mnist5k, cifar10:DIR, synthetic:N"
    )
    add_workers(p, default=4, help="file reading (and CPU decoding) processes for folder data (--data)")
    add_decode(
        p,
        help="folder data (--data): decode in the worker processes (auto) or in batches on the device (nvJPEG on a GPU)",
    )
    add_shared(p, "batches", default=20)
    add_max_image_pixels(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)


def _input(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input {text!r}: expected a size such as 224 or 3x224x224") from None
    if len(dims) not in (1, 3) or min(dims) < 1:
        raise ValueError(f"--input {text!r}: expected a size such as 224 or 3x224x224")
    return dims if len(dims) == 3 else dims[0]


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from ..bench import benchmark, benchmark_data
    from ..model_options import parse_model_options

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        result = benchmark_data(args.data, model=args.model, batch_size=args.batch_size or 256, device=args.device,
                                image_size=(lambda s: s if s is None or isinstance(s, int) else s[1])(_input(args.input)),
                                workers=args.workers, batches=args.batches, decode=args.decode,
                                max_pixels=max_pixels_of(args))  # fmt: skip
        print(json.dumps(result, indent=2) if args.json else _data_text(result))
        return 0
    if not args.model:
        raise ValueError("give a MODEL to benchmark (see cnnzoo list), or --data SPEC for the data pipeline")
    vs = [v.strip() for v in args.vs.split(",") if v.strip()]
    result = benchmark(
        args.model, mode=args.mode, device=args.device, batch_size=args.batch_size, input_size=_input(args.input),
        precision=args.precision, channels_last=args.channels_last, compile=args.compile, backend=args.backend,
        fast=not args.plain, vs=vs, rounds=args.rounds, iters=args.iters, warmup=args.warmup,
        round_seconds=args.round_seconds, model_options=parse_model_options(args.model, args.option),
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s, env = r["settings"], r["env"]
    where = env.get("gpu") or f"{env['cpu']}, {env['torch_threads']} threads"
    title = (f"{s['model']} {s['mode']}: batch {s['batch_size']}, input {'x'.join(map(str, s['input_size']))}, {s['precision']}, "
             f"{s['device']} ({where})")  # fmt: skip
    table = Table(title=title, title_justify="left")
    for col in ("library", "recipe", "img/s", "p50 ms", "p90 ms", "peak MiB", "TFLOP/s", "first call s", "warm-up s"):
        table.add_column(col, justify="left" if col in ("library", "recipe") else "right")
    for c in r["results"]:
        table.add_row(
            c["library"], c["recipe"], f"{c['images_per_s']:,.1f}", _fmt(c["latency_ms"]["p50"], ".2f"), _fmt(c["latency_ms"]["p90"], ".2f"),
            _fmt(c["peak_memory_mb"], ",.0f"), _fmt(c["tflops"], ".3f"), f"{c['first_call_s']:.2f}", f"{c['warmup_s']:.2f}",
        )  # fmt: skip
    console = Console(width=max(140, Console().width))
    console.print(table)
    rounds = s["rounds"]
    for other, q in r["ratios"].items():
        console.print(f"cnnzoo / {other}: [bold]{q['median']:.2f}x[/bold] (median of {rounds} rounds; min {q['min']:.2f}, "
                      f"max {q['max']:.2f}, quartiles {q['q1']:.2f}-{q['q3']:.2f})")  # fmt: skip
    for library, why in r["skipped"].items():
        console.print(f"{library}: skipped ({why})")
    if s.get("int8"):
        console.print(f"note: {s['int8']}", highlight=False)
    console.print(f"load average {env['load_average_start']} -> {env['load_average']}; torch {env['torch']}, "
                  f"torchvision {env['torchvision']}, timm {env['timm']}, onnxruntime {env['onnxruntime']}", highlight=False)  # fmt: skip


def _data_text(r: dict) -> str:
    s = r["settings"]
    return (
        f"{s['data']}: {r['images_per_s']:,.0f} images/s ({s['image_size']}x{s['image_size']}, batch {s['batch_size']}, {s['pipeline']}); "
        f"batch p50 {r['latency_ms']['p50']:.1f} ms, p90 {r['latency_ms']['p90']:.1f} ms; first batch {r['first_batch_s']:.2f} s"
    )
