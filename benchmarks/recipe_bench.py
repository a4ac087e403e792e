"""What the recipe's extras cost: MixUp/CutMix and the weights' EMA on a ResNet-18 training step, and
TrivialAugment in the image-folder pipeline.

    python benchmarks/recipe_bench.py                    # CPU: resnet18 at 224, batch 16; a JPEG folder
    python benchmarks/recipe_bench.py --device cuda --batch-size 128

Training steps: the same batches through ``cnnzoo.train.train_one_epoch`` four ways, in alternating
rounds (so a slow moment of a shared machine hits every variant alike): plain; with MixUp (0.2) and CutMix
(1.0) on the batch; with the EMA at torchvision's ``--model-ema-steps 32``; with the EMA at every step (the
worst case). The figure is the median over rounds of seconds per step, and each variant's overhead against
plain. Folder pipeline: images per second out of :class:`~cnnzoo.data.batches.LoaderBatches` (decoding
workers, random-resized crop and flip) with and without ``--auto-augment ta_wide``, also alternating.
Results go to ``benchmarks/results/recipe_bench_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import cnnzoo  # noqa: E402
from cnnzoo.bench import environment  # noqa: E402
from cnnzoo.data import ArrayData, load_data  # noqa: E402
from cnnzoo.data.augment import BatchAugment, MixUpCutMix, folder_train_transform  # noqa: E402
from cnnzoo.data.batches import ArrayBatches, LoaderBatches  # noqa: E402
from cnnzoo.train import Dist, Learner, TrainConfig, make_optimizer, make_scheduler, train_one_epoch  # noqa: E402
from cnnzoo.train.ema import ExponentialMovingAverage  # noqa: E402
from jpeg_folder import make_jpeg_folder  # noqa: E402

VARIANTS = ("plain", "mixup+cutmix", "ema every 32 steps", "ema every step")


def _learner(model: torch.nn.Module, device: torch.device, variant: str) -> Learner:
    cfg = TrainConfig(model="resnet18", lr=0.01, epochs=1).resolved()
    opt = make_optimizer(model, cfg, device)
    sched = make_scheduler(opt, cfg, 1000)
    ema = ExponentialMovingAverage(model, 0.999, device) if variant.startswith("ema") else None
    return Learner(
        model, opt, sched, torch.amp.GradScaler(device.type, enabled=False), torch.nn.CrossEntropyLoss(), device,
        channels_last=True, ema=ema, ema_steps=32 if variant == "ema every 32 steps" else 1,
    )  # fmt: skip


def step_overheads(device: torch.device, batch_size: int, image: int, steps: int, rounds: int) -> dict:
    """Median seconds per training step of each variant over alternating rounds, and the overheads."""
    g = torch.Generator().manual_seed(0)
    n = batch_size * steps
    split = ArrayData(
        torch.randint(0, 256, (n, 3, image, image), dtype=torch.uint8, generator=g),
        torch.randint(0, 1000, (n,), generator=g),
        [str(i) for i in range(1000)],
    )
    model = cnnzoo.create_model("resnet18").to(device).to(memory_format=torch.channels_last)
    mix = BatchAugment(mix=MixUpCutMix(1000, 0.2, 1.0))
    batches = {
        v: ArrayBatches(
            split,
            batch_size,
            device,
            (0.5,) * 3,
            (0.25,) * 3,
            Dist(),
            train=True,
            augment=mix if v == "mixup+cutmix" else None,
        )
        for v in VARIANTS
    }
    learners = {v: _learner(model, device, v) for v in VARIANTS}
    train_one_epoch(
        learners["plain"], batches["plain"], Dist(), epoch=0, epochs=1, step=0, seed=0, progress=False
    )  # warm-up
    seconds = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for v in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:  # rotate who goes first
            stats, _ = train_one_epoch(
                learners[v], batches[v], Dist(), epoch=r, epochs=rounds, step=0, seed=r, progress=False
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[v].append(stats["seconds"] / steps)
    median = {v: statistics.median(s) for v, s in seconds.items()}
    return dict(
        settings=dict(model="resnet18", device=str(device), batch_size=batch_size, image=image, steps_per_round=steps, rounds=rounds),
        seconds_per_step=median, all_rounds=seconds,
        overhead_percent={v: 100 * (median[v] / median["plain"] - 1) for v in VARIANTS[1:]},
    )  # fmt: skip


def folder_throughput(workers: int, batch_size: int, rounds: int, images: int) -> dict:
    """Images per second out of the folder pipeline, default transform against TrivialAugmentWide, alternating."""
    with tempfile.TemporaryDirectory() as root:
        make_jpeg_folder(root, n=images, side=320)
        rates = {"default": [], "ta_wide": []}
        for r in range(rounds):
            for kind in ("default", "ta_wide") if r % 2 == 0 else ("ta_wide", "default"):
                split = load_data(f"folder:{root}", image_size=224).train
                if kind == "ta_wide":
                    split.transform = folder_train_transform(224, policy="ta_wide")
                batches = LoaderBatches(
                    split, batch_size, torch.device("cpu"), (0.5,) * 3, (0.25,) * 3, Dist(), train=True, workers=workers
                )
                t0, count = time.perf_counter(), 0
                for x, _ in batches.epoch(r, r):
                    count += len(x)
                rates[kind].append(count / (time.perf_counter() - t0))
    median = {k: statistics.median(v) for k, v in rates.items()}
    return dict(settings=dict(images=images, side=320, crop=224, workers=workers, batch_size=batch_size, rounds=rounds),
                images_per_s=median, all_rounds=rates, ta_wide_relative=median["ta_wide"] / median["default"])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--steps", type=int, default=4, help="training steps per round and variant")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--folder-images", type=int, default=512)
    p.add_argument("--skip-folder", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    result = dict(
        env=environment(device), steps=step_overheads(device, args.batch_size, args.image, args.steps, args.rounds)
    )
    print(
        json.dumps(result["steps"]["seconds_per_step"], indent=1),
        json.dumps(result["steps"]["overhead_percent"], indent=1),
    )
    if not args.skip_folder:
        result["folder"] = folder_throughput(args.workers, 32, args.rounds, args.folder_images)
        print(json.dumps(result["folder"]["images_per_s"], indent=1))
    out = Path(__file__).parent / "results" / f"recipe_bench_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
