"""How long ``cnnzoo report`` takes and how large its page is (targets on 2 cores: resnet50 with 4 images
under 30 s, the file under 10 MB).

    python benchmarks/report_bench.py --threads 2 [--model resnet50] [--images 4] [--out FILE]

The images are made here (smooth colour fields with a few shapes, saved as JPEG at 320x256, so that the
eval transform resizes and crops as it does for photos); the model has its initial weights, which costs
the same as trained ones. Timed as a user meets it: building the model (random initialisation), then
:func:`cnnzoo.report.report` (diagram, summary, walk, filters, Grad-CAM, feature maps, drawing), then
writing the file. Not a timed test: a loaded machine makes these numbers noisy. ``cpu_s`` is the CPU time the
process used (all its threads): on a busy machine the wall time grows with the load, this does not, and on an
idle one the wall time is at most about this. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from cnnzoo.fileio import atomic_write_text  # noqa: E402
from cnnzoo.report import load_subject, report  # noqa: E402

TARGET_S, TARGET_BYTES = 30.0, 10_000_000


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEGs: a smooth two-colour field and a few filled shapes, different for each image."""
    rng = np.random.default_rng(seed)
    paths = []
    y, x = np.mgrid[0:256, 0:320] / 255.0
    for i in range(n):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (np.sin(x * rng.uniform(2, 6)) * np.cos(y * rng.uniform(2, 6)) + 1) / 2
        image = Image.fromarray((a * t[..., None] + b * (1 - t[..., None])).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = rng.integers(0, 260), rng.integers(0, 200)
            box = (x0, y0, x0 + rng.integers(20, 60), y0 + rng.integers(20, 60))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        paths.append(folder / f"image_{i}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = make_images(folder, args.images)
        start, cpu_start = time.perf_counter(), time.process_time()
        subject = load_subject(args.model, device="cpu")
        build_s = time.perf_counter() - start
        page = report(subject, [str(f) for f in files])
        report_s = time.perf_counter() - start - build_s
        path = page.save(folder / "report.html")
        total_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
        size = path.stat().st_size
    result = dict(
        environment=dict(
            python=platform.python_version(),
            torch=torch.__version__,
            threads=args.threads,
            cpus=os.cpu_count(),
            load_average=list(os.getloadavg()),
        ),  # fmt: skip
        model=args.model,
        images=args.images,
        build_s=round(build_s, 2),
        report_s=round(report_s, 2),
        total_s=round(total_s, 2),
        cpu_s=round(cpu_s, 2),
        file_bytes=size,
        layers=len(page.layers),
        within_targets=dict(time=total_s < TARGET_S, size=size < TARGET_BYTES),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
