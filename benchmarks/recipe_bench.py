"""What the recipe's extras cost: MixUp/CutMix and the weights' EMA on a ResNet-18 training step, and
TrivialAugment in the image-folder pipeline.

    python benchmarks/recipe_bench.py                    # CPU: resnet18 at 224, batch 16; a JPEG folder
    python benchmarks/recipe_bench.py --device cuda --batch-size 128

Training steps: the same batch through ``cnnzoo.train.train_one_epoch`` three ways, in one process, one step
of each per round in rotating order (so a slow moment of a shared machine hits every variant alike): plain;
with MixUp (0.2) and CutMix (1.0) on the batch; with the EMA updated after the step. The overhead is the
median over rounds of each round's ratio to its own plain step (with the quartiles), and, since on a busy
machine the step-to-step noise is larger than the extras, the extras are also timed alone in each round (the
fastest of 3: one batch mix, one EMA update) as a share of that round's plain step. torchvision's ``--model-ema-steps
32`` updates the EMA once every 32 steps: per step that costs a 32nd of an update, given as such (each
one-step epoch here would update it, as an epoch's first step does).
Folder pipeline: images per second out of :class:`~cnnzoo.data.batches.LoaderBatches` (decoding workers,
random-resized crop and flip) with and without ``--auto-augment ta_wide``, also alternating, the workers'
start-up and read-ahead left out of the timed window.
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

import numpy as np
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

VARIANTS = ("plain", "mixup+cutmix", "ema every step")
EMA_STEPS = 32  # torchvision's --model-ema-steps default


def _learner(model: torch.nn.Module, device: torch.device, variant: str) -> Learner:
    cfg = TrainConfig(model="resnet18", lr=0.01, epochs=1).resolved()
    opt = make_optimizer(model, cfg, device)
    sched = make_scheduler(opt, cfg, 1000)
    ema = ExponentialMovingAverage(model, 0.999, device) if variant.startswith("ema") else None
    return Learner(
        model, opt, sched, torch.amp.GradScaler(device.type, enabled=False), torch.nn.CrossEntropyLoss(), device,
        channels_last=True, ema=ema, ema_steps=1,
    )  # fmt: skip


def step_overheads(device: torch.device, batch_size: int, image: int, rounds: int) -> dict:
    """Seconds per training step of each variant, one step of each per round in rotating order; each round's
    ratio to its own plain step; and the extras timed alone in the same round (one batch mix, one EMA update)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 3, image, image), dtype=torch.uint8, generator=g)
    split = ArrayData(images, torch.randint(0, 1000, (batch_size,), generator=g), [str(i) for i in range(1000)])
    model = cnnzoo.create_model("resnet18").to(device).to(memory_format=torch.channels_last)
    mix = BatchAugment(mix=MixUpCutMix(1000, 0.2, 1.0))
    batches = {
        v: ArrayBatches(split, batch_size, device, (0.5,) * 3, (0.25,) * 3, Dist(), train=True, augment=mix if v == "mixup+cutmix" else None)
        for v in VARIANTS
    }  # fmt: skip
    learners = {v: _learner(model, device, v) for v in VARIANTS}
    extras = _Extras(device, model, next(iter(batches["plain"].epoch(0, 0))), mix, learners["ema every step"].ema)
    seconds = {v: [] for v in VARIANTS}
    alone = {"mix": [], "ema_update": []}
    for r in range(rounds + 1):  # round 0 warms up
        for v in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:  # rotate who goes first
            stats, _ = train_one_epoch(
                learners[v], batches[v], Dist(), epoch=r, epochs=rounds, step=0, seed=r, progress=False
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                seconds[v].append(stats["seconds"])
        if r:  # in the same round, so under the same load as its steps
            alone["mix"].append(extras.mix())
            alone["ema_update"].append(extras.ema_update())
    ratios = {v: [t / p for t, p in zip(seconds[v], seconds["plain"], strict=True)] for v in VARIANTS[1:]}
    share = {k: [100 * t / p for t, p in zip(alone[k], seconds["plain"], strict=True)] for k in alone}
    ema_alone = statistics.median(share["ema_update"])
    return dict(
        settings=dict(model="resnet18", device=str(device), batch_size=batch_size, image=image, rounds=rounds),
        seconds_per_step_median={v: statistics.median(s) for v, s in seconds.items()},
        seconds_per_step_min={v: min(s) for v, s in seconds.items()}, all_rounds=seconds,
        overhead_percent_quartiles={v: _percent_quartiles(r) for v, r in ratios.items()},
        overhead_percent_of_fastest={v: 100 * (min(seconds[v]) / min(seconds["plain"]) - 1) for v in VARIANTS[1:]},
        alone_seconds_median={k: statistics.median(t) for k, t in alone.items()}, alone_all_rounds=alone,
        alone_percent_of_plain_step_median={"mixup+cutmix": statistics.median(share["mix"]),
                                            "ema every step": ema_alone},
        ema_every_32_steps_percent=dict(measured_over_32=_percent_quartiles(ratios["ema every step"])[1] / EMA_STEPS,
                                        alone_over_32=ema_alone / EMA_STEPS),
    )  # fmt: skip


def _percent_quartiles(ratios: list[float]) -> list[float]:
    """The first quartile, median and third quartile of ``ratios`` as overheads in percent."""
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return [100 * (q - 1) for q in (q1, median, q3)]


class _Extras:
    """The recipe's extras on their own: one batch mix, one EMA update, each the fastest of ``reps`` (the least
    disturbed by a busy machine); timed between a round's steps, so that they and the steps share its load."""

    def __init__(self, device: torch.device, model, batch, mix: BatchAugment, ema, reps: int = 3) -> None:
        self.device, self.model, self.batch, self.mix_aug, self.ema, self.reps = device, model, batch, mix, ema, reps
        self.rng = np.random.default_rng(0)

    def _fastest(self, fn) -> float:
        times = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return min(times)

    def mix(self) -> float:
        return self._fastest(lambda: self.mix_aug.tensors(*self.batch, self.rng))

    def ema_update(self) -> float:
        return self._fastest(lambda: self.ema.update_parameters(self.model))


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
                rates[kind].append(_steady_rate(batches.epoch(r, r), skip=2 * workers + 1))
    median = {k: statistics.median(v) for k, v in rates.items()}
    return dict(settings=dict(images=images, side=320, crop=224, workers=workers, batch_size=batch_size, rounds=rounds),
                images_per_s=median, all_rounds=rates, ta_wide_relative=median["ta_wide"] / median["default"],
                ta_wide_relative_median_of_rounds=statistics.median(t / d for t, d in zip(rates["ta_wide"], rates["default"], strict=True)))  # fmt: skip


def _steady_rate(epoch, skip: int) -> float:
    """Images per second of ``epoch``'s batches after the first ``skip``: the workers' start-up and the batches
    they read ahead meanwhile (two each, DataLoader's prefetch) stay out of the timed window."""
    count, t0 = 0, None
    for i, (x, _) in enumerate(epoch):
        if i == skip - 1:
            t0 = time.perf_counter()
        elif t0 is not None:
            count += len(x)
    return count / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10, help="rounds of one step of each variant")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--folder-images", type=int, default=1024)
    p.add_argument("--skip-folder", action="store_true")
    p.add_argument("--skip-steps", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    out = Path(__file__).parent / "results" / f"recipe_bench_{device.type}.json"
    result = json.loads(out.read_text()) if out.exists() else {}  # a part skipped keeps its last figures
    result["env"] = env = environment(device)
    if not args.skip_steps:
        result["steps"] = {**step_overheads(device, args.batch_size, args.image, args.rounds), "env": env}
        shown = (
            "seconds_per_step_median",
            "seconds_per_step_min",
            "overhead_percent_quartiles",
            "alone_seconds_median",
        )
        for key in (*shown, "alone_percent_of_plain_step_median", "ema_every_32_steps_percent"):
            print(key, json.dumps(result["steps"][key]))
    if not args.skip_folder:
        result["folder"] = {**folder_throughput(args.workers, 32, 6, args.folder_images), "env": env}
        print(json.dumps(result["folder"]["images_per_s"], indent=1))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
