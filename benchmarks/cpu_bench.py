"""The CPU figures of RESULTS.md: one model per family, inference and training, against torchvision and timm.

Each line is one :func:`cnnzoo.bench.benchmark` call (same process, alternated rounds, per-round ratios).
cnnzoo runs its defaults: inference through ``optimize_for_inference`` (``backend="auto"``), training as
the same step as the others. torchvision and timm run as they do out of the box (fp32, NCHW, eager).

    python benchmarks/cpu_bench.py --threads 2 --out benchmarks/results/cpu_bench.json

Prints a Markdown table (the one in RESULTS.md) and writes every result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cnnzoo.bench import benchmark, environment  # noqa: E402

VS = ["torchvision", "timm"]

# (model, mode, batch size): batches sized so that one step takes a second or less on 2 cores.
SUITE = [
    ("lenet5", "infer", 256),
    ("alexnet", "infer", 32),
    ("vgg16", "infer", 4),
    ("googlenet", "infer", 32),
    ("inception_v3", "infer", 8),
    ("resnet18", "infer", 1),
    ("resnet18", "infer", 32),
    ("resnet50", "infer", 1),
    ("resnet50", "infer", 32),
    ("lenet5", "train", 64),
    ("alexnet", "train", 16),
    ("googlenet", "train", 8),
    ("resnet18", "train", 16),
    ("resnet50", "train", 8),
    ("vgg16", "train", 2),
    ("inception_v3", "train", 4),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float, default=1.5)
    p.add_argument(
        "--only", nargs="*", help="run only these: MODEL (every mode) or MODEL:MODE (default: the whole suite)"
    )
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = []
    print(
        "| model | mode | batch | cnnzoo recipe | cnnzoo img/s | torchvision img/s | timm img/s | cnnzoo / torchvision | cnnzoo / timm | cnnzoo first call s |"
    )
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    start = time.perf_counter()
    for model, mode, batch in SUITE:
        if args.only and model not in args.only and f"{model}:{mode}" not in args.only:
            continue
        r = benchmark(model, mode=mode, batch_size=batch, vs=VS, rounds=args.rounds, round_seconds=args.round_seconds)
        runs.append(r)
        by = {c["library"]: c for c in r["results"]}

        def rate(lib: str) -> str:
            return f"{by[lib]['images_per_s']:,.1f}" if lib in by else "-"

        def ratio(lib: str) -> str:
            q = r["ratios"].get(lib)
            return f"{q['median']:.2f}x ({q['min']:.2f}-{q['max']:.2f})" if q else "-"

        ours = by["cnnzoo"]
        print(f"| {model} | {mode} | {batch} | {ours['recipe']} | {rate('cnnzoo')} | {rate('torchvision')} | {rate('timm')} | "
              f"{ratio('torchvision')} | {ratio('timm')} | {ours['first_call_s']:.1f} |", flush=True)  # fmt: skip
    print(f"\n{len(runs)} benchmarks in {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(env=environment("cpu"), runs=runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
