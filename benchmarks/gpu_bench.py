"""The whole GPU benchmark in one call: cnnzoo against torchvision (and timm where installed), JSON out.

Made for a lent H100/H200 machine that has torch and torchvision preinstalled and no package index: it
runs from the source tree (nothing to install) and stops starting new jobs once its time budget is
spent, so it ends in about ``--budget-s`` seconds (default 330, under the 6 minutes asked for). Jobs run
in order of importance; each one's result is written to the JSON file as soon as it is done, so a run cut
short still leaves everything measured before. A job that fails is recorded with its error and the run
goes on.

    python3 benchmarks/gpu_bench.py --out "$OUT"            # on the GPU machine
    python3 benchmarks/gpu_bench.py --smoke --out /tmp/x    # anywhere: tiny sizes on the CPU, checks it runs

Writes ``gpu_bench.json`` (settings, environment, one entry per job), ``profile_*.txt`` (the kernels
that take the time in a resnet50 training and inference step) and ``gpu_tests.txt`` (pytest's output for
the tests that need a GPU) to ``--out``. See benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from the source tree: nothing is installed on the GPU machine

import torch  # noqa: E402

from cnnzoo.bench import benchmark, benchmark_data, environment  # noqa: E402

VS = ["torchvision", "timm"]
QUICK = dict(rounds=3, round_seconds=0.5, warmup=2)  # one model per family: enough for a ratio, cheap

# (job name, benchmark() arguments, rough cost in seconds on an H200: compile time dominates), most
# important first. Reference figures (ANCHORS.md, H200, torch 2.11): torchvision resnet50 trains at
# 4,682 img/s eager / 6,903 compiled and infers at 15,429 eager / 23,771 compiled; targets: train >= 8,000,
# infer >= 30,000.
JOBS: list[tuple[str, dict, float]] = [
    ("resnet50-train-eager", dict(model="resnet50", mode="train", batch_size=256, vs=VS), 30),
    # cnnzoo's default inference path on a GPU (inductor: freezing + CUDA graphs) against the others eager.
    ("resnet50-infer-default", dict(model="resnet50", mode="infer", batch_size=256, vs=VS, warmup=5), 60),
    # The folder pipeline alone: decoding in worker processes (CPU) and in batches on the GPU (nvJPEG).
    ("jpeg-pipeline", dict(), 45),
    # The tests that need a GPU (nvJPEG path, inductor + CUDA graphs, a training step), under pytest.
    ("gpu-tests", dict(), 50),
    ("resnet18-infer-eager", dict(model="resnet18", mode="infer", batch_size=256, backend="eager", vs=VS, **QUICK), 8),
    ("resnet18-train-eager", dict(model="resnet18", mode="train", batch_size=256, vs=VS, **QUICK), 8),
    ("vgg16-infer-eager", dict(model="vgg16", mode="infer", batch_size=128, backend="eager", vs=VS, **QUICK), 10),
    ("vgg16-train-eager", dict(model="vgg16", mode="train", batch_size=128, vs=VS, **QUICK), 12),
    (
        "googlenet-infer-eager",
        dict(model="googlenet", mode="infer", batch_size=256, backend="eager", vs=VS, **QUICK),
        8,
    ),
    ("googlenet-train-eager", dict(model="googlenet", mode="train", batch_size=256, vs=VS, **QUICK), 10),
    (
        "inception_v3-infer-eager",
        dict(model="inception_v3", mode="infer", batch_size=128, backend="eager", vs=VS, **QUICK),
        10,
    ),
    ("inception_v3-train-eager", dict(model="inception_v3", mode="train", batch_size=128, vs=VS, **QUICK), 12),
    ("alexnet-infer-eager", dict(model="alexnet", mode="infer", batch_size=256, backend="eager", vs=VS, **QUICK), 6),
    ("alexnet-train-eager", dict(model="alexnet", mode="train", batch_size=256, vs=VS, **QUICK), 6),
    ("lenet5-infer-eager", dict(model="lenet5", mode="infer", batch_size=256, backend="eager", **QUICK), 3),
    ("lenet5-train-eager", dict(model="lenet5", mode="train", batch_size=256, **QUICK), 3),
    ("profile-resnet50", dict(model="resnet50"), 15),
    # `cnnzoo train` end to end on the JPEG folder with its GPU defaults: bf16, channels-last, fused SGD, compiled.
    ("train-folder-e2e", dict(model="resnet18"), 75),
    # The whole training step compiled, for both (torchvision's graph is ours: inductor's cache may hit).
    (
        "resnet50-train-compiled",
        dict(model="resnet50", mode="train", batch_size=256, compile=True, vs=["torchvision"], warmup=5),
        130,
    ),
    ("resnet50-infer-eager", dict(model="resnet50", mode="infer", batch_size=256, backend="eager", vs=VS), 20),
    # torchvision compiled for inference as cnnzoo's inductor back end is (freezing + CUDA graphs).
    (
        "resnet50-infer-compiled",
        dict(model="resnet50", mode="infer", batch_size=256, compile=True, vs=["torchvision"], warmup=5),
        70,
    ),
]


def smoke_arguments(kwargs: dict) -> dict:
    """Tiny versions of a job, for a CPU: small batch and input, one step per round, no compiling."""
    small = dict(kwargs, batch_size=2, rounds=2, iters=1, warmup=1, compile=False, backend="eager", device="cpu")
    if kwargs.get("model") == "inception_v3":  # its auxiliary head needs 299x299 inputs: leave it out here
        small.update(input_size=80, model_options={"aux_logits": False})
    elif kwargs.get("model") != "lenet5":
        small["input_size"] = 64
    return small


def profile_step(model: str, mode: str, device: str, batch_size: int, out: Path, smoke: bool) -> dict:
    """The kernels that take the time in a few cnnzoo steps (eager, the bench's settings), as a table file."""
    from torch.profiler import ProfilerActivity, profile

    from cnnzoo import bench as B
    from cnnzoo import create_model, get_model_info

    dev = torch.device(device)
    size = (3, 64, 64) if smoke else tuple(get_model_info(model).input_size)
    s = B.Settings(model=model, mode=mode, device=dev, batch_size=batch_size, input_size=size,
                   precision="fp32" if dev.type == "cpu" else "bf16", channels_last=None, compile=False,
                   backend="eager", fast=True, model_options={})  # fmt: skip
    x = torch.randn(batch_size, *size, device=dev)
    y = torch.randint(0, 1000, (batch_size,), device=dev)
    net = create_model(model)
    c = B._train_contender("cnnzoo", net, s, x, y) if mode == "train" else B._infer_contender("cnnzoo", net, s, x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    grad = torch.enable_grad() if mode == "train" else torch.inference_mode()
    with grad:
        for _ in range(3):
            c.step()
        B._sync(dev)
        with B._stderr_silenced(), profile(activities=activities) as prof:
            for _ in range(3):
                c.step()
            B._sync(dev)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    path = out / f"profile_{model}_{mode}.txt"
    path.write_text(f"{model} {mode}, batch {batch_size}, {c.recipe}, 3 steps\n{table}\n")
    return dict(file=path.name, recipe=c.recipe)


def scratch(prefix: str) -> Path:
    """A temporary folder that goes when the script ends: the JPEG folder and the run folder are 100s of MB."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def jpeg_folder(smoke: bool) -> Path:
    """A folder of ImageNet-like JPEGs (375x500, grainy, about 75 KiB each), made once per run."""
    from jpeg_folder import make_jpeg_folder  # beside this script

    root = scratch("cnnzoo-jpeg-")
    n, (h, w) = (16, (48, 64)) if smoke else (3072, (375, 500))
    make_jpeg_folder(root, n, h, width=w, noise=10)
    return root


def jpeg_pipeline(device: str, smoke: bool) -> dict:
    """The folder pipeline of `cnnzoo train` alone: CPU decoding in workers, and nvJPEG batches on the GPU."""
    root = jpeg_folder(smoke)
    files = sorted((root / "train").rglob("*.jpg"))
    result = dict(
        files=len(files), mean_kib=sum(f.stat().st_size for f in files) / len(files) / 1024, crop=32 if smoke else 224
    )
    cores = os.cpu_count() or 1
    runs = [("workers", min(16, cores)), ("device", min(8, cores))]
    for decode, workers in runs:
        result[decode] = benchmark_data(f"folder:{root}", batch_size=8 if smoke else 256, device=device, image_size=result["crop"],
                                        workers=0 if smoke else workers, batches=1 if smoke else 40, decode=decode)  # fmt: skip
        print(
            f"    decode={decode}: {result[decode]['images_per_s']:,.0f} img/s ({result[decode]['settings']['pipeline']})",
            flush=True,
        )
    # The device path's two stages apart: nvJPEG (libjpeg on a CPU) alone, the crops alone.
    result["device_stages"] = device_stages(root, files, device, result["crop"])
    print(f"    device path stages: {result['device_stages']}", flush=True)
    return result


def device_stages(root: Path, files: list[Path], device: str, crop: int) -> dict:
    from torchvision.io import ImageReadMode, decode_jpeg

    from cnnzoo.data import DeviceDecoder, load_data

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files[:1024]]
    batches = [datas[i : i + 256] for i in range(0, len(datas), 256)]
    decode_jpeg(batches[0], mode=ImageReadMode.RGB, device=device)  # warm-up: nvJPEG handles, allocator
    sync()
    t0 = time.perf_counter()
    images = [img for b in batches for img in decode_jpeg(b, mode=ImageReadMode.RGB, device=device)]
    sync()
    decode_s = time.perf_counter() - t0
    decoder = DeviceDecoder(load_data(f"folder:{root}", image_size=crop).train, device)
    t0 = time.perf_counter()
    for img in images:
        decoder._crop(img)
    sync()
    crop_s = time.perf_counter() - t0
    return dict(
        images=len(images), nvjpeg_decode_images_per_s=len(images) / decode_s, crop_images_per_s=len(images) / crop_s
    )


def gpu_tests(out: Path, smoke: bool) -> dict:
    """The tests that need a GPU, run by pytest in a child process; its output goes to gpu_tests.txt."""
    import subprocess

    selection = [
        "tests/test_fast.py",
        "tests/test_device_decode.py",
        "tests/test_data.py",
        "-k",
        "cuda or nvjpeg or gpu",
    ]
    if smoke:  # on a CPU they are skipped: run the selection only to check that it collects
        selection += ["--collect-only"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *selection],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    (out / "gpu_tests.txt").write_text(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return dict(returncode=proc.returncode, summary=lines[-1] if lines else "", file="gpu_tests.txt")


def train_folder_e2e(model: str, device: str, smoke: bool) -> dict:
    """`cnnzoo train` for two epochs on the JPEG folder with the defaults (on a GPU: compiled, bf16, channels-last)."""
    from cnnzoo.train import TrainConfig, train

    root = jpeg_folder(smoke)
    out = scratch("cnnzoo-run-") / "run"
    cfg = TrainConfig(
        model=model,
        data=f"folder:{root}",
        epochs=2,
        batch_size=8 if smoke else 256,
        image_size=32 if smoke else 224,
        workers=0 if smoke else None,
        device=device,
        progress=False,
        out=str(out),
        lr=0.02,
    )  # fmt: skip  (random labels: a gentle rate, so nothing diverges)
    t0 = time.perf_counter()
    result = train(cfg)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    keys = ("epoch", "img_per_s", "epoch_time", "train_loss", "test_acc", "test_count")
    return dict(
        seconds=time.perf_counter() - t0, epochs=[{k: h[k] for k in keys} for h in history],
        settings={k: config[k] for k in ("amp", "channels_last", "compile", "decode", "batch_size", "workers")},
        checkpoint_files=sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").is_dir() else [],
        test_acc=result["test_acc"],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results" / "gpu"),
        help="folder for the JSON (default: $OUT, else benchmarks/results/gpu)",
    )
    p.add_argument("--budget-s", type=float, default=330, help="start no job that would end after this many seconds")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that everything runs")
    p.add_argument("--only", nargs="*", help="run only these jobs (names as listed by --list)")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, _, cost in JOBS:
            print(f"{name:28s} ~{cost:.0f} s")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("no CUDA GPU here: use --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    report = dict(
        script="benchmarks/gpu_bench.py", smoke=args.smoke, budget_s=args.budget_s, env=environment(device), jobs={}
    )
    path = out / "gpu_bench.json"
    start = time.perf_counter()
    for name, kwargs, cost in JOBS:
        if args.only and name not in args.only:
            continue
        elapsed = time.perf_counter() - start
        if not args.smoke and elapsed + cost > args.budget_s:
            report["jobs"][name] = dict(
                skipped=f"time budget: {elapsed:.0f} s spent, this job needs about {cost:.0f} s"
            )
            continue
        t0 = time.perf_counter()
        print(f"[{elapsed:6.1f} s] {name}", flush=True)
        try:
            if name.startswith("profile-"):
                bs = 2 if args.smoke else 256
                result = {m: profile_step(kwargs["model"], m, device, bs, out, args.smoke) for m in ("train", "infer")}
            elif name == "jpeg-pipeline":
                result = jpeg_pipeline(device, args.smoke)
            elif name == "gpu-tests":
                result = gpu_tests(out, args.smoke)
                print(f"    {result['summary']}", flush=True)
            elif name == "train-folder-e2e":
                result = train_folder_e2e(kwargs["model"], device, args.smoke)
                print(
                    "    " + "; ".join(f"epoch {e['epoch']}: {e['img_per_s']:,.0f} img/s" for e in result["epochs"]),
                    flush=True,
                )
            else:
                result = benchmark(**(smoke_arguments(kwargs) if args.smoke else dict(kwargs, device=device)))
                _print_line(result)
        except Exception as e:  # record and go on: one failing job must not cost the others
            result = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-2000:])
            print(f"    failed: {result['error']}", flush=True)
        result["job_seconds"] = time.perf_counter() - t0
        report["jobs"][name] = result
        report["elapsed_s"] = time.perf_counter() - start
        path.write_text(json.dumps(report, indent=1))  # after every job: a cut-short run keeps what it has
        if device == "cuda":
            torch.cuda.empty_cache()
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return 0


def _print_line(r: dict) -> None:
    parts = [
        f"{c['library']} {c['images_per_s']:,.0f} img/s (first call {c['first_call_s']:.1f} s)" for c in r["results"]
    ]
    ratios = [f"/{k} {v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}]" for k, v in r["ratios"].items()]
    print("    " + "; ".join(parts) + ("  ratio " + ", ".join(ratios) if ratios else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
