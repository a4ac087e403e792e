"""How long a class activation map takes on the CPU: ResNet-50 at 224x224, random weights.

    python benchmarks/cam_bench.py --threads 2 [--methods gradcam layercam] [--images 5] [--out FILE]

For each method: one warm-up call (PyTorch's first-call set-up), then one ``cam()`` call per image
with the layer found automatically (its probing forward pass included, as ``cnnzoo cam`` does it),
then the same images in one batched call; next to a plain ``model(x)`` forward of one image, which
the map cannot beat. The goal is under 1 s per image on 2 cores. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cnnzoo import create_model  # noqa: E402
from cnnzoo.cam import METHODS, cam  # noqa: E402


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_method(model: torch.nn.Module, x: torch.Tensor, method: str) -> dict:
    """Per-image seconds of one method: first call, then one call per image, then the batch at once."""
    first = _seconds(lambda: cam(model, x[:1], method=method))
    single = [_seconds(lambda i=i: cam(model, x[i : i + 1], method=method)) for i in range(len(x))]
    batched = _seconds(lambda: cam(model, x, method=method, batch_size=len(x))) / len(x)
    return {
        "method": method,
        "first_call_s": round(first, 3),
        "per_image_s_median": round(statistics.median(single), 3),
        "per_image_s_max": round(max(single), 3),
        "per_image_s_batched": round(batched, 3),
        "layer": cam(model, x[:1], method=method)[0].layer if method != "scorecam" else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=5, help="images timed after the warm-up (default 5)")
    p.add_argument(
        "--methods",
        nargs="*",
        default=["gradcam"],
        choices=[m for m in METHODS if m != "scorecam"],
        help="Score-CAM runs one forward pass per channel (2048 for ResNet-50): minutes, not benchmarked",
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(args.images, 3, args.size, args.size)
    with torch.no_grad():
        model(x[:1])  # warm-up
        forward = statistics.median(_seconds(lambda i=i: model(x[i : i + 1])) for i in range(len(x)))
    result = {
        "model": args.model,
        "input": [3, args.size, args.size],
        "threads": args.threads,
        "torch": torch.__version__,
        "forward_only_per_image_s": round(forward, 3),
        "methods": [bench_method(model, x, m) for m in args.methods],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from cnnzoo.fileio import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
