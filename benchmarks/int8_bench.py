"""INT8 on the CPU: cnnzoo's ONNX Runtime INT8 models against torchvision eager fp32, and what INT8 costs in accuracy.

Speed (``--via bench``, the default). Each model and batch through ``cnnzoo bench MODEL --precision int8
--device cpu --vs torchvision`` (:func:`cnnzoo.bench.benchmark`): cnnzoo's INT8 model (BN folded, exported,
quantized by ONNX Runtime, calibrated on random images: speed does not depend on the ranges) against torchvision
eager fp32, rounds alternated in one process; the cores other processes kept busy over the call are recorded,
and each case first waits (``--quiet-below``, up to ``--max-wait`` s) for the machine to go quiet.

Speed (``--via script``). For each model and batch, three contenders run on the same random images in one process, with the
same threads (``--threads``: PyTorch's and ONNX Runtime's intra-op threads): torchvision's model eager in
fp32 (NCHW, as it runs out of the box), the cnnzoo model exported to ONNX and run by ONNX Runtime in fp32,
and that export quantized by :func:`cnnzoo.quantize.quantize_onnx` (QDQ, u8s8, 7-bit per-channel weights,
minmax calibration on 16 smooth random images: speed does not depend on the calibration). All are built and
warmed up first; then ``--rounds`` rounds, each contender running about ``--round-seconds`` per round in an
order rotated from round to round, so a busy neighbour slows all of them alike. The ratio INT8 / torchvision
is taken within each round; the median is reported with every round's. Each contender's window also records
how many cores other processes kept busy meanwhile (/proc/stat less this process's own CPU time): before each
round the script waits, up to ``--max-wait`` seconds, for that to fall under ``--quiet-below``, and the
rounds where it stayed under 0.25 cores for every contender are summarised apart (``ratio_vs_torchvision_quiet``):
on a shared 2-core machine a busy neighbour slows PyTorch's 2-thread OpenMP many-fold, ONNX Runtime far less,
which inflates the ratios. For resnet50 the INT8 session's time per op type comes from ONNX Runtime's profiler
(``int8_time_by_op``), to say where the time goes.

Accuracy. A LeNet-5 trained as ``cnnzoo train lenet5`` does (mnist5k, 30 epochs), and a resnet20 trained on
a generated image folder (10 classes of faint coloured shapes on noisy backgrounds, 32x32 PNGs, ImageNet layout),
each quantized with calibration images from its run folder's training split
and checked on the whole held-out split, as ``cnnzoo export RUN --quantize int8`` does
(:func:`cnnzoo.quantize.quantize_export`). Run folders are kept in ``--work`` and reused.

    python benchmarks/int8_bench.py                      # appends a run to benchmarks/results/int8_bench.json
    python benchmarks/int8_bench.py --only speed --cases resnet18:32 --rounds 3
    python benchmarks/int8_bench.py --only speed --via script   # torchvision fp32, ORT fp32 and ORT INT8

Each invocation is appended to the JSON's ``runs`` (``--fresh`` starts the file over), with the load average
(``os.getloadavg()``) at its start and end: on a shared machine, compare runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import cnnzoo  # noqa: E402
from cnnzoo import quantize as q  # noqa: E402
from cnnzoo.bench import environment  # noqa: E402
from cnnzoo.export import export_model  # noqa: E402

DEFAULT_CASES = ",".join(
    f"{m}:{b}"
    for m in ("resnet50", "resnet18", "googlenet", "inception_v3", "vgg11", "alexnet", "lenet5")
    for b in (32, 1)
)
TARGETS = {(m, b): t for m in ("resnet50", "resnet18") for b, t in ((32, 4.0), (1, 3.0))}  # issue 15: INT8 / tv fp32
QUIET_CORES = 0.25  # other processes' load (cores) under which a round counts as quiet
SHAPES = ("circle", "square", "triangle", "cross", "hbars", "vbars", "ring", "diagonal", "dots", "checker")


# --------------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------------


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    return low + 0.3 * torch.randn(n, 3, size, size, generator=g)


def build_contenders(name: str, batch: int, threads: int, work: Path) -> tuple[dict[str, Callable[[], object]], dict]:
    """torchvision eager fp32, ORT fp32 and ORT INT8 for ``name``, each a no-argument step on one fixed batch."""
    size = cnnzoo.get_model_info(name).input_size[1]
    x = smooth_images(batch, size, seed=1)
    fp32_path, int8_path = work / f"{name}.onnx", work / f"{name}.int8.onnx"
    t0 = time.perf_counter()
    export_model(cnnzoo.create_model(name).eval(), fp32_path, image_size=size, dynamic_batch=True, force=True)
    t1 = time.perf_counter()
    report = q.quantize_onnx(fp32_path, int8_path, smooth_images(16, size, seed=0), force=True)
    t2 = time.perf_counter()
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    tv = getattr(torchvision.models, name)(weights=None, **kwargs).eval().requires_grad_(False)
    sessions = {
        k: q.inference_session(p, threads=threads) for k, p in (("ort_fp32", fp32_path), ("ort_int8", int8_path))
    }
    xn = x.numpy()

    def torchvision_step():
        with torch.inference_mode():
            return tv(x)

    steps = {"torchvision_fp32": torchvision_step}
    steps.update({k: (lambda s=s: s.run(None, {"images": xn})) for k, s in sessions.items()})
    info = dict(
        input_size=size,
        export_s=t1 - t0,
        quantize_s=t2 - t1,
        int8_report=str(report),
        int8_mb=report.int8_bytes / 1e6,
        fp32_mb=report.fp32_bytes / 1e6,
        int8_path=str(int8_path),
    )
    return steps, info


def busy_cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have used, CPU seconds this process has used): /proc/stat and getrusage."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    own = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process: PyTorch's and ORT's pools
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def foreign_load(window: Callable[[], object]) -> float:
    """Cores other processes kept busy while ``window()`` ran (the machine's busy time less this process's)."""
    t0, (all0, own0) = time.perf_counter(), busy_cpu_seconds()
    window()
    t1, (all1, own1) = time.perf_counter(), busy_cpu_seconds()
    return max(0.0, (all1 - all0) - (own1 - own0)) / (t1 - t0)


def wait_until_quiet(threshold: float, max_wait_s: float) -> float:
    """Sample 1-second windows until other processes use under ``threshold`` cores (or ``max_wait_s`` passes)."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        load = foreign_load(lambda: time.sleep(1.0))
        if load < threshold or time.perf_counter() > deadline:
            return load


def alternate_rounds(steps: dict[str, Callable[[], object]], batch: int, args) -> tuple[dict, dict]:
    """Images per second of each step and the foreign load during it, one figure per round, order rotated.

    Before each round, with ``--quiet-below``, waits (at most ``--max-wait`` s) for the other processes on the
    machine to go quiet: on a shared 2-core machine one busy neighbour slows PyTorch's 2-thread OpenMP many-fold.
    """
    iters = {}
    for name, step in steps.items():
        step()  # first call: allocations, ORT's kernel selection
        t0 = time.perf_counter()
        step()
        iters[name] = max(1, round(args.round_seconds / (time.perf_counter() - t0)))
    names, rates, foreign = list(steps), defaultdict(list), defaultdict(list)
    for r in range(args.rounds):
        if args.quiet_below:
            wait_until_quiet(args.quiet_below, args.max_wait)
        for name in names[r % len(names) :] + names[: r % len(names)]:

            def window(step=steps[name], n=iters[name]):
                for _ in range(n):
                    step()

            t0 = time.perf_counter()
            foreign[name].append(foreign_load(window))
            rates[name].append(batch * iters[name] / (time.perf_counter() - t0))
    return dict(rates), dict(foreign)


def profile_ops(path: str, batch: int, size: int, threads: int, runs: int = 5) -> dict[str, float]:
    """Share of the INT8 session's kernel time per op type, from ONNX Runtime's profiler (top 8)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "int8")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        xn = smooth_images(batch, size, seed=1).numpy()
        for _ in range(runs):
            session.run(None, {"images": xn})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            totals[e["args"].get("op_name", "?")] += e["dur"]
    total = sum(totals.values()) or 1.0
    return {op: round(t / total, 3) for op, t in sorted(totals.items(), key=lambda kv: -kv[1])[:8]}


def speed_case(name: str, batch: int, args, work: Path) -> dict:
    steps, info = build_contenders(name, batch, args.threads, work)
    load_start = os.getloadavg()
    rates, foreign = alternate_rounds(steps, batch, args)
    base = rates["torchvision_fp32"]
    ratios = {k: [a / b for a, b in zip(v, base, strict=True)] for k, v in rates.items() if k != "torchvision_fp32"}
    # A round is quiet when no contender shared the cores with more than QUIET_CORES of other work.
    quiet = [max(f[r] for f in foreign.values()) < QUIET_CORES for r in range(args.rounds)]
    quiet_ratios = {k: [x for x, ok in zip(v, quiet, strict=True) if ok] for k, v in ratios.items()}
    row = dict(
        model=name,
        batch=batch,
        **info,
        images_per_s={k: statistics.median(v) for k, v in rates.items()},
        images_per_s_per_round=rates,
        foreign_cores_per_round=foreign,
        ratio_vs_torchvision={k: statistics.median(v) for k, v in ratios.items()},
        ratio_vs_torchvision_per_round=ratios,
        quiet_rounds=sum(quiet),
        ratio_vs_torchvision_quiet={k: statistics.median(v) if v else None for k, v in quiet_ratios.items()},
        int8_vs_ort_fp32=statistics.median([a / b for a, b in zip(rates["ort_int8"], rates["ort_fp32"], strict=True)]),
        target=TARGETS.get((name, batch)),
        load_average=[round(v, 2) for v in load_start + os.getloadavg()],
    )
    if name == "resnet50":
        row["int8_time_by_op"] = profile_ops(info["int8_path"], batch, info["input_size"], args.threads)
    rate = row["images_per_s"]
    print(
        f"{name} batch {batch}: INT8 {rate['ort_int8']:.1f} img/s, ORT fp32 {rate['ort_fp32']:.1f}, "
        f"torchvision {rate['torchvision_fp32']:.1f}: INT8/torchvision {row['ratio_vs_torchvision']['ort_int8']:.2f}x "
        f"(rounds {', '.join(f'{r:.2f}' for r in ratios['ort_int8'])}), INT8/ORT fp32 {row['int8_vs_ort_fp32']:.2f}x, "
        f"quiet rounds {row['quiet_rounds']}/{args.rounds} "
        f"(median INT8/torchvision {row['ratio_vs_torchvision_quiet']['ort_int8'] or float('nan'):.2f}x), "
        f"load {row['load_average'][0]:.1f}",
        flush=True,
    )
    return row


def bench_case(name: str, batch: int, args) -> dict:
    """One row through the library's own benchmark: ``cnnzoo bench NAME --precision int8 --vs torchvision``.

    What the user runs: cnnzoo's INT8 ONNX Runtime model (calibrated on random images, speed only) against
    torchvision eager fp32, alternated round by round in one process. Waits for quiet first (``--quiet-below``),
    and records the cores other processes kept busy over the whole call.
    """
    from cnnzoo.bench import benchmark

    if args.quiet_below:
        waited = wait_until_quiet(args.quiet_below, args.max_wait)
    result = {}

    def run():
        result.update(benchmark(
            name, precision="int8", device="cpu", vs=["torchvision"], batch_size=batch, rounds=args.rounds,
            round_seconds=args.round_seconds, warmup=2,
        ))  # fmt: skip

    foreign = foreign_load(run)
    ours = result["results"][0]
    ratio = result["ratios"].get("torchvision")
    row = dict(
        model=name, batch=batch, via="cnnzoo bench", recipe=ours["recipe"],
        images_per_s={c["library"]: c["images_per_s"] for c in result["results"]},
        ratio_vs_torchvision=None if ratio is None else ratio["median"],
        ratio_per_round=None if ratio is None else ratio["per_round"],
        skipped=result["skipped"], foreign_cores=foreign, foreign_cores_before=waited if args.quiet_below else None,
        target=TARGETS.get((name, batch)), load_average=result["env"]["load_average_start"] + result["env"]["load_average"],
    )  # fmt: skip
    shown = "no torchvision twin" if ratio is None else f"INT8/torchvision fp32 {ratio['median']:.2f}x"
    rounds = "" if ratio is None else f" (rounds {', '.join(f'{r:.2f}' for r in ratio['per_round'])})"
    print(f"{name} batch {batch}: INT8 {ours['images_per_s']:.1f} img/s, {shown}{rounds}, "
          f"other processes {foreign:.2f} cores", flush=True)  # fmt: skip
    return row


# --------------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------------


def shape_image(kind: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A ``size`` x ``size`` RGB uint8 image: shape ``SHAPES[kind]``, random colour, place, size, opacity, on noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(10, size - 10, 2)
    r = rng.uniform(5, 10)
    dy, dx = yy - cy, xx - cx
    period = rng.uniform(4, 7)
    masks = {
        "circle": dy**2 + dx**2 < r**2,
        "square": (abs(dy) < r * 0.8) & (abs(dx) < r * 0.8),
        "triangle": (dy < r * 0.7) & (dy > -r) & (abs(dx) < (dy + r) * 0.6),
        "cross": ((abs(dy) < 2) & (abs(dx) < r)) | ((abs(dx) < 2) & (abs(dy) < r)),
        "hbars": (yy % period) < period / 2,
        "vbars": (xx % period) < period / 2,
        "ring": abs(np.sqrt(dy**2 + dx**2) - r) < 1.8,
        "diagonal": ((yy + xx) % period) < period / 2,
        "dots": ((yy % 8) - 4) ** 2 + ((xx % 8) - 4) ** 2 < 4,
        "checker": ((yy // 6 + xx // 6) % 2) == 0,
    }
    # Low contrast on heavy noise, the shape's colour sometimes close to the background's: hard enough that a
    # short training stays below 100% and an INT8 loss would show.
    background = rng.uniform(0, 140, 3) + rng.normal(0, 45, (size, size, 3))
    alpha = rng.uniform(0.35, 0.9)
    shape = masks[SHAPES[kind]][..., None] * alpha
    image = shape * rng.uniform(60, 255, 3) + (1 - shape) * background
    return np.clip(image, 0, 255).astype(np.uint8)


def make_shapes_folder(root: Path, train_per_class: int, val_per_class: int, seed: int = 0) -> Path:
    """A CIFAR-sized ImageNet-layout folder (train/CLASS/*.png, val/CLASS/*.png) of :func:`shape_image` images."""
    from torchvision.io import write_png

    if (root / "val" / SHAPES[-1]).is_dir():
        return root
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for kind, cls in enumerate(SHAPES):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_png(
                    torch.from_numpy(shape_image(kind, rng)).permute(2, 0, 1).contiguous(),
                    str(root / split / cls / f"{i}.png"),
                )
    return root


def trained_run(out: Path, **config) -> tuple[Path, float]:
    """Train into ``out``, or finish the run there if it was interrupted; (run folder, seconds spent training)."""
    from cnnzoo.train import TrainConfig, train

    metrics = out / "metrics.jsonl"
    if (out / "config.json").is_file():
        epochs = json.loads((out / "config.json").read_text())["epochs"]
        done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        if done >= epochs:
            return out, 0.0
        config = dict(model=config["model"], resume=str(out))  # resumes with its own config.json
    t0 = time.perf_counter()
    train(TrainConfig(out=str(out), progress=False, **config))
    return out, time.perf_counter() - t0


def accuracy_case(name: str, run: Path, train_s: float, work: Path) -> dict:
    """``cnnzoo export RUN --quantize int8``'s path (:func:`cnnzoo.quantize.quantize_export`): calibrated on 256
    of the run's training images, fp32 and INT8 files compared on every held-out image."""
    model = cnnzoo.load_model(run)
    done = q.quantize_export(model, work / f"{name}-trained.int8.onnx", str(run), check_images=10**6, force=True)
    print(f"{name} ({run}): {done.check}", flush=True)
    return dict(
        model=name,
        run=str(run),
        train_s=train_s,
        data=json.loads((run / "config.json").read_text())["data"],
        quantize=str(done.quantize),
        **done.check.as_dict(),
    )


def accuracy(args, work: Path) -> list[dict]:
    rows = []
    lenet, seconds = trained_run(work / "lenet5", model="lenet5")  # `cnnzoo train lenet5`: mnist5k, 30 epochs
    rows.append(accuracy_case("lenet5", lenet, seconds, work))
    folder = make_shapes_folder(work / "shapes", args.shapes_train, args.shapes_val)
    resnet, seconds = trained_run(
        work / "resnet20",
        model="resnet20",
        data=f"folder:{folder}",
        image_size=32,
        epochs=args.resnet20_epochs,
        workers=2,
    )
    rows.append(accuracy_case("resnet20", resnet, seconds, work))
    return rows


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help="MODEL:BATCH,... for the speed part")
    p.add_argument("--only", choices=("speed", "accuracy"), help="run one part only")
    p.add_argument(
        "--via", choices=("bench", "script"), default="bench",
        help="speed through cnnzoo bench --precision int8 --vs torchvision (default), or this script's own three-way "
        "rounds (torchvision eager fp32, ORT fp32, ORT INT8) with a quiet wait before each round",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.25,
        help="wait before each round until other processes use fewer cores than this (0: do not wait)",
    )
    p.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for quiet before a round, at most")
    p.add_argument("--round-seconds", type=float, default=1.5)
    p.add_argument(
        "--work", default=str(Path(tempfile.gettempdir()) / "cnnzoo-int8-bench"), help="exports and run folders"
    )
    p.add_argument("--shapes-train", type=int, default=300, help="training images per class of the shapes folder")
    p.add_argument("--shapes-val", type=int, default=50)
    p.add_argument("--resnet20-epochs", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8_bench.json"))
    p.add_argument("--fresh", action="store_true", help="start the JSON file over instead of appending this run")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = dict(env=environment("cpu"), threads=args.threads, rounds=args.rounds, round_seconds=args.round_seconds)
    if args.only != "accuracy":
        cases = [(m, int(b)) for m, b in (c.split(":") for c in args.cases.split(","))]
        case = (
            (lambda m, b: bench_case(m, b, args))
            if args.via == "bench"
            else (lambda m, b: speed_case(m, b, args, work))
        )
        run["speed"] = [case(m, b) for m, b in cases]
        run["via"] = args.via
    if args.only != "speed":
        run["accuracy"] = accuracy(args, work)
    run["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out)
    old = [] if args.fresh or not out.is_file() else json.loads(out.read_text()).get("runs", [])
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(runs=old + [run]), indent=1)
    out.write_text(text)
    print(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
