"""How long the architecture diagram of every zoo model takes (target: under 2 s each on 2 cores).

Per model: building it on the ``meta`` device (no weights), :func:`cnnzoo.diagram.diagram` (the
trace and the layout), writing the SVG text and rendering the PNG; each the best of ``--repeat``
runs, in seconds. Not a timed test: a loaded machine makes these numbers noisy.

    python benchmarks/diagram_bench.py --threads 2 [--models resnet50 googlenet] [--out results.json]

Prints one JSON object: the environment, then one entry per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cnnzoo import list_models  # noqa: E402
from cnnzoo.diagram import diagram  # noqa: E402
from cnnzoo.fileio import atomic_write_text  # noqa: E402
from cnnzoo.trace import resolve_model  # noqa: E402

TARGET_S = 2.0


def best_of(repeat: int, work) -> tuple[float, object]:
    """The fastest of ``repeat`` runs of ``work()``, and what the last run returned."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_model(name: str, repeat: int) -> dict:
    build_s, (model, _) = best_of(repeat, lambda: resolve_model(name))
    diagram_s, d = best_of(repeat, lambda: diagram(model))
    svg_s, svg = best_of(repeat, d.to_svg)
    png_s, png = best_of(repeat, d.to_png)
    total = build_s + diagram_s + svg_s
    return dict(
        model=name,
        build_s=round(build_s, 4),
        diagram_s=round(diagram_s, 4),
        svg_s=round(svg_s, 4),
        png_s=round(png_s, 4),
        total_svg_s=round(total, 4),
        within_target=total < TARGET_S,
        boxes=len(d.boxes),
        frames=len(d.frames) - 1,
        size=[round(d.width), round(d.height)],
        svg_bytes=len(svg.encode("utf-8")),
        png_bytes=len(png),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="zoo models (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diagram("lenet5")  # the first trace of a process pays for torch's lazy imports; keep it out of the figures
    results = [bench_model(name, args.repeat) for name in args.models or list_models()]
    report = dict(
        environment=dict(
            python=platform.python_version(),
            torch=torch.__version__,
            threads=args.threads,
            cpus=os.cpu_count(),
            machine=platform.machine(),
        ),
        target_s=TARGET_S,
        all_within_target=all(r["within_target"] for r in results),
        slowest=max(results, key=lambda r: r["total_svg_s"])["model"],
        results=results,
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
