"""Which CPU inference path is fastest? Each of cnnzoo's back ends against torchvision eager, on this machine.

For every model and batch size, each back end of :func:`cnnzoo.fast.optimize_for_inference` is run against
torchvision in its own :func:`cnnzoo.bench.benchmark` (same process, alternated rounds), so each ratio is
measured side by side. torchvision runs as it does out of the box (fp32, NCHW, eager); ``--tv-channels-last``
gives it channels-last too, the stronger baseline.

    python benchmarks/cpu_infer_paths.py --threads 2 --out benchmarks/results/cpu_infer_paths.json

The winner is what ``backend="auto"`` picks on a CPU (cnnzoo.fast.pick_backend); RESULTS.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cnnzoo.bench import benchmark, environment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--backends", default="eager,inductor,onnxruntime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float, default=1.5)
    p.add_argument("--tv-channels-last", action="store_true", help="give torchvision channels-last as well")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(
        "| model | batch | cnnzoo back end | cnnzoo img/s | torchvision img/s | ratio (median) | min-max | first call s |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for backend in args.backends.split(","):
                r = benchmark(model, batch_size=batch, backend=backend, vs=["torchvision"], rounds=args.rounds,
                              round_seconds=args.round_seconds, channels_last=True if args.tv_channels_last else None)  # fmt: skip
                ours, tv = r["results"]
                q = r["ratios"]["torchvision"]
                rows.append(r)
                print(f"| {model} | {batch} | {backend} | {ours['images_per_s']:.1f} | {tv['images_per_s']:.1f} | "
                      f"{q['median']:.2f}x | {q['min']:.2f}-{q['max']:.2f} | {ours['first_call_s']:.1f} |", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(env=environment("cpu"), runs=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
