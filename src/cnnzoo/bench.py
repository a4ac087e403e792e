"""Benchmarks: a zoo model against its torchvision and timm twins, in one process, with the same settings.

How :func:`benchmark` measures, and why:

* **Same process, same inputs, runs alternated.** Every contender (cnnzoo, torchvision, timm) is built
  and warmed up first; then come ``rounds`` rounds, and in each round every contender runs ``iters``
  steps, the order rotated from round to round. A busy neighbour or a clock change then hits all
  contenders alike, and the ratio *within a round* is a fair comparison even on a noisy machine. The
  reported ratio is the median of the per-round ratios, with their min, max and quartiles.
* **Warm-up is excluded and reported.** The first call pays for compilation (``torch.compile``), export
  (ONNX Runtime), cuDNN's algorithm search and allocator growth; users pay it too, so it is shown
  (``first_call_s``, ``warmup_s``) but kept out of the rates.
* **No host synchronisation inside the timed steps.** On a GPU each step is bracketed by CUDA events and
  the host waits once per round; on the CPU each step is timed with ``perf_counter``.
* **A step** is a forward pass (``mode="infer"``) or forward, loss, backward and optimizer step
  (``mode="train"``, SGD with momentum, foreach on the CPU, fused on the GPU, the same for everyone).
* **Achieved TFLOP/s** come from the model's multiply-accumulates (:func:`cnnzoo.summary`, 2 FLOPs per
  MAC), times 3 for a training step (forward, and a backward pass of about twice its cost).
* **Peak memory.** On a GPU: the contender's weights and buffers, plus the most ``torch.cuda`` allocated
  above what was already allocated, over its warm-up and one step (so gradients, optimizer state,
  activations, workspaces, CUDA-graph pools). On the CPU: its weights, buffers, gradients and optimizer
  state, plus the peak of the tensors allocated during one step, read from the PyTorch profiler's
  allocation events. That covers PyTorch's allocator only: ONNX Runtime's own arena is not seen (None).
  The process-wide peak resident set size is in ``env["max_rss_mb"]``.

What each contender runs is in its ``recipe``. cnnzoo runs what the library gives users: for inference
:func:`cnnzoo.fast.optimize_for_inference`, for training the step with
:func:`cnnzoo.train.engine.training_defaults` (``fast=False`` measures the plain eager model instead). The others
run eagerly with the same precision, or compiled with the same inductor options when ``compile=True``.
:func:`benchmark_data` measures a data pipeline alone.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .factory import create_model
from .options import DEFAULT_MAX_PIXELS, check_option, resolve_device
from .registry import get_model_info

__all__ = ["benchmark", "benchmark_data", "environment", "LIBRARIES"]

LIBRARIES = ("cnnzoo", "torchvision", "timm")
MODES = ("infer", "train")
# The autocast dtype of each precision. INT8 is cnnzoo's ONNX Runtime model (the others have no INT8 of their
# own here: torchvision's quantized models are eager FX/fbgemm ones), so its twins run fp32, the yardstick.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}
INT8_CALIBRATION_IMAGES = 16  # random images like the timed batch: speed does not depend on the ranges they give
INT8_NOTE = (
    f"cnnzoo int8: calibrated on {INT8_CALIBRATION_IMAGES} random images, which measures speed, not accuracy "
    "(for that, calibrate on real data: cnnzoo export --quantize int8); the others run fp32"
)


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: either way not usable here
        return None


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a figure depends on: hardware, software versions, threads, load, date."""
    device = torch.device(device)
    env = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        torchvision=_version("torchvision"),
        timm=_version("timm"),
        onnxruntime=_version("onnxruntime"),
        cnnzoo=_version("cnnzoo"),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version()
        )
    return env


# --------------------------------------------------------------------------------------------------
# The contenders
# --------------------------------------------------------------------------------------------------


def _twin(library: str, name: str, num_classes: int, ours: nn.Module) -> nn.Module | str:
    """The ``library``'s model of the same architecture as zoo model ``name``, or why there is none.

    Built with the library's defaults, except the auxiliary heads, which follow ours (other model options
    are not carried over).
    """
    info = get_model_info(name)
    if info.torchvision is None:
        return f"{library} has no {name}"
    if library == "torchvision":
        import torchvision

        kwargs: dict[str, Any] = dict(weights=None, num_classes=num_classes)
        if info.torchvision in ("googlenet", "inception_v3"):  # same auxiliary heads as ours; no deprecation warning
            kwargs.update(aux_logits=bool(getattr(ours, "aux_logits", False)), init_weights=True)
        return getattr(torchvision.models, info.torchvision)(**kwargs)
    if library == "timm":
        try:
            import timm
        except ImportError:
            return "timm is not installed"
        if not timm.is_model(info.torchvision):
            return f"timm has no {info.torchvision}"
        return timm.create_model(info.torchvision, pretrained=False, num_classes=num_classes)
    raise ValueError(f"unknown library {library!r}: expected one of {', '.join(LIBRARIES[1:])}")


def _loss(out: Any, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits; auxiliary heads (GoogLeNet, Inception v3 in training) weigh 0.3 each."""
    if isinstance(out, torch.Tensor):
        return F.cross_entropy(out, y)
    main, *aux = [o for o in out if o is not None]
    return F.cross_entropy(main, y) + sum(0.3 * F.cross_entropy(a, y) for a in aux)


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            key = (t.untyped_storage().data_ptr(), t.device)
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


@dataclass
class Contender:
    library: str
    recipe: str
    step: Callable[[], Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    torch_memory: bool = True  # False where the work happens outside PyTorch's allocator (ONNX Runtime)
    first_call_s: float = 0.0
    warmup_s: float = 0.0
    iters: int = 1
    latencies: list[float] = field(default_factory=list)  # seconds per step, every timed step
    rates: list[float] = field(default_factory=list)  # images per second, one per round
    peak_bytes: int | None = None

    def resident_bytes(self) -> int:
        tensors = list(self.model.parameters()) + list(self.model.buffers()) + [p.grad for p in self.model.parameters()]
        if self.optimizer is not None:
            tensors += [v for state in self.optimizer.state.values() for v in state.values()]
        return _tensor_bytes(tensors)


@dataclass
class Settings:
    model: str
    mode: str
    device: torch.device
    batch_size: int
    input_size: tuple[int, int, int]
    precision: str
    channels_last: bool | None  # None: each library's default (see benchmark)
    compile: bool
    backend: str
    fast: bool
    model_options: dict[str, Any]

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def layout(self, library: str) -> bool:
        """Channels-last for this contender? Unset: on a GPU everyone; on the CPU cnnzoo's fast paths only
        (inference and training, see :func:`cnnzoo.train.engine.training_defaults`)."""
        if self.channels_last is not None:
            return self.channels_last
        return self.device.type == "cuda" or (library == "cnnzoo" and self.fast)


def _train_contender(library: str, model: nn.Module, s: Settings, x: torch.Tensor, y: torch.Tensor) -> Contender:
    model.train().to(s.device)
    channels_last = s.layout(library)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    # Fused SGD runs the whole update in a few kernels on the GPU; foreach batches it on the CPU.
    fused = {"fused": True} if s.device.type == "cuda" else {"foreach": True}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **fused)
    amp = s.amp_dtype

    def step() -> None:
        with torch.autocast(s.device.type, dtype=amp, enabled=amp is not None):
            loss = _loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    recipe = f"train, {s.precision}{' autocast' if amp else ''}{', channels_last' if channels_last else ''}, SGD {'fused' if fused.get('fused') else 'foreach'}"
    if s.compile:
        # The whole step: dynamo compiles forward and loss (AOTAutograd their backward) and, past the graph
        # break at backward(), the optimizer update. Its second call recompiles once (momentum buffers appear).
        step = torch.compile(step)
        recipe += ", torch.compile(step)"
    return Contender(library, recipe, step, model, optimizer=opt)


def _int8_contender(model: nn.Module, s: Settings, x: torch.Tensor) -> Contender:
    """cnnzoo's INT8 model: folded, exported, quantized by ONNX Runtime (QDQ), run by an ORT session."""
    from .fast import optimize_for_inference

    gen = torch.Generator().manual_seed(1)  # calibration images: drawn like the timed batch, but not it
    calibration = torch.randn(INT8_CALIBRATION_IMAGES, *s.input_size, generator=gen)
    fast = optimize_for_inference(model, precision="int8", device="cpu", calibration=calibration)
    r = fast.quantize_report
    recipe = (
        f"infer, {len(fast.model.folded_batchnorms)} BN folded, int8 QDQ ({r.quantized_ops}/{r.weight_ops} layers, "
        f"per-channel int8 weights, {r.activations} activations, {r.calibration_images} random calibration images), "
        "onnxruntime"
    )
    return Contender("cnnzoo", recipe, lambda: fast(x), fast, torch_memory=False)


def _infer_contender(library: str, model: nn.Module, s: Settings, x: torch.Tensor) -> Contender:
    if library == "cnnzoo" and s.precision == "int8":
        return _int8_contender(model, s, x)
    if library == "cnnzoo" and s.fast:
        from .fast import optimize_for_inference, pick_backend

        backend = "inductor" if s.compile else s.backend
        if backend == "auto":
            backend = pick_backend(s.device, s.precision)
        channels_last = s.layout(library)
        fast = optimize_for_inference(
            model, backend=backend, precision=s.precision, channels_last=channels_last, device=s.device
        )
        xin = x if backend == "onnxruntime" else fast.prepare(x)  # converted once, as a caller would keep it
        layout = ", channels_last" if channels_last and backend != "onnxruntime" else ""
        folded = len(getattr(fast.model, "folded_batchnorms", []))
        recipe = f"infer, {folded} BN folded, {s.precision} weights{layout}, {backend}"
        return Contender(library, recipe, lambda: fast(xin), fast, torch_memory=backend != "onnxruntime")

    model.eval().to(s.device)
    model.requires_grad_(False)
    xin = x
    channels_last = s.layout(library)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        xin = x.contiguous(memory_format=torch.channels_last)
    amp = s.amp_dtype
    precision = "fp32" if s.precision == "int8" else s.precision  # the twins of cnnzoo's INT8 model: fp32
    recipe = f"infer, {precision}{' autocast' if amp else ''}{', channels_last' if channels_last else ''}"
    run: Callable = model
    if s.compile:
        from .fast import inductor_options

        options = inductor_options(s.device)  # the same as cnnzoo's inductor back end
        run = torch.compile(model, dynamic=False, options=options)
        recipe += ", torch.compile(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"
    else:
        recipe += ", eager"

    def step() -> Any:
        with torch.autocast(s.device.type, dtype=amp, enabled=amp is not None):
            return run(xin)

    return Contender(library, recipe, step, model)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_steps(c: Contender, n: int, device: torch.device) -> list[float]:
    """Run ``n`` steps; the seconds each took. One host wait at the end on a GPU, none in between."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            c.step()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.step()
        times.append(time.perf_counter() - t0)
    return times


def _warm_up(c: Contender, s: Settings, warmup: int, round_seconds: float, iters: int | None) -> None:
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
        before = torch.cuda.memory_allocated(s.device)
    t0 = time.perf_counter()
    c.step()
    _sync(s.device)
    c.first_call_s = time.perf_counter() - t0
    rest = _timed_steps(c, max(warmup - 1, 1), s.device)
    c.warmup_s = c.first_call_s + sum(rest)
    if s.device.type == "cuda":
        own = _tensor_bytes(list(c.model.parameters()) + list(c.model.buffers()))
        c.peak_bytes = own + torch.cuda.max_memory_allocated(s.device) - before
    # As many steps per round as fit in round_seconds (at least one): each round then lasts about as
    # long for every contender, fast or slow.
    c.iters = iters or max(1, min(1000, round(round_seconds / max(min(rest), 1e-6))))


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null: the profiler's C++ side logs every start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(c: Contender) -> int | None:
    """Resident tensors plus the peak of what one step allocates, from the profiler's allocation events."""
    if not c.torch_memory:
        return None
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        c.step()
    # Allocations are booked on the op that made them, frees that happen outside ops as "[memory]"
    # events; replayed in time order, the running sum's maximum is the step's peak.
    changes = []
    for e in prof.events():
        delta = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if delta:
            changes.append((e.time_range.start, delta))
    running = peak = 0
    for _, delta in sorted(changes):
        running += delta
        peak = max(peak, running)
    return c.resident_bytes() + peak


def _summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return dict(median=statistics.median(values), min=min(values), max=max(values), q1=q[0], q3=q[2])


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _macs(s: Settings) -> int | None:
    """Multiply-accumulates per image of the model's forward pass (the mode's: training adds aux heads)."""
    try:
        from .summary import summary

        # Batch 2: BatchNorm in training mode needs two values per channel. MACs grow linearly with the batch.
        return (
            summary(
                s.model, s.input_size, batch_size=2, mode="train" if s.mode == "train" else "eval", **s.model_options
            ).macs
            // 2
        )
    except Exception:  # a model summary cannot trace: no FLOP figure, the rest still stands
        return None


# --------------------------------------------------------------------------------------------------
# The entry points
# --------------------------------------------------------------------------------------------------


def _input_size(name: str, input_size: int | tuple[int, ...] | None) -> tuple[int, int, int]:
    info = get_model_info(name)
    if input_size is None:
        return tuple(info.input_size)
    if isinstance(input_size, int):
        return (info.input_size[0], input_size, input_size)
    if len(input_size) == 2:
        return (info.input_size[0], *input_size)
    return tuple(input_size)


def benchmark(
    model: str,
    *,
    mode: str = "infer",
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    input_size: int | tuple[int, ...] | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    backend: str = "auto",
    fast: bool = True,
    vs: tuple[str, ...] | list[str] = (),
    rounds: int = 5,
    iters: int | None = None,
    warmup: int = 3,
    round_seconds: float = 1.0,
    seed: int = 0,
    model_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure zoo model ``model`` and, with ``vs``, its torchvision / timm twins; a JSON-ready dict.

    Defaults: the GPU when there is one; batch 256 on a GPU, 32 on the CPU (16 for training); the model's
    native input size; bf16 on a GPU, fp32 on the CPU. ``channels_last`` True or False applies to every
    contender; unset, it is each one's default: channels-last for all on a GPU, and on the CPU for
    cnnzoo's fast paths only (torchvision and timm run NCHW there, as they do out of the box). ``backend`` is
    cnnzoo's inference back end (:func:`cnnzoo.fast.optimize_for_inference`); ``compile`` compiles every
    contender the same way. ``iters`` fixes the steps per round (default: as many as take about
    ``round_seconds``). See the module docstring for what is measured and how.

    The result holds ``settings``, ``env``, one entry per contender in ``results`` (images/s per round and
    their median, latency p50/p90 per batch, peak memory, achieved TFLOP/s, warm-up), the per-round ratios
    cnnzoo / other in ``ratios``, and in ``skipped`` the twins that do not exist or are not installed.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    for name, value in (
        ("batch_size", batch_size),
        ("rounds", rounds),
        ("iters", iters),
        ("round_seconds", round_seconds),
        ("backend", backend),
    ):
        check_option(name, value)
    check_option("bench_warmup", warmup, label="warmup")
    device = resolve_device(device)
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    _check_benchmark_args(mode, device, precision, vs, rounds, warmup, iters)
    if precision == "int8" and (not fast or backend not in ("auto", "onnxruntime")):
        raise ValueError("--precision int8 is cnnzoo's ONNX Runtime INT8 model: leave --plain and --backend out")
    info = get_model_info(model)
    s = Settings(
        model=model, mode=mode, device=device,
        batch_size=batch_size if batch_size is not None else (256 if device.type == "cuda" else 16 if mode == "train" else 32),
        input_size=_input_size(model, input_size), precision=precision, channels_last=channels_last,
        compile=compile, backend=backend, fast=fast, model_options=dict(model_options or {}),
    )  # fmt: skip
    if device.type == "cuda":  # static shapes: let cuDNN pick its fastest algorithms once; TF32 matmuls
        torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    x, y = _batch(s, info.num_classes, seed)
    env_start = environment(device)
    torch.manual_seed(seed)
    contenders, skipped = _contenders(s, info.num_classes, vs, x, y)
    _run_rounds(contenders, s, rounds=rounds, warmup=warmup, round_seconds=round_seconds, iters=iters)

    macs = _macs(s)
    env = environment(device)
    env.update(
        load_average_start=env_start["load_average"],
        max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    settings = dict(
        model=model, mode=mode, device=str(device), batch_size=s.batch_size, input_size=list(s.input_size),
        precision=precision, channels_last=s.channels_last, compile=compile, backend=backend, fast=fast,
        vs=list(vs), rounds=rounds, warmup=warmup, round_seconds=round_seconds, model_options=s.model_options, macs_per_image=macs,
    )  # fmt: skip
    flops_per_image = (
        None if macs is None else 2 * macs * (3 if mode == "train" else 1)
    )  # a backward pass: about 2 forwards
    if precision == "int8":
        settings["int8"] = INT8_NOTE
    results = [_contender_result(c, flops_per_image) for c in contenders]
    return dict(settings=settings, env=env, results=results, ratios=_ratios(contenders), skipped=skipped)


def _batch(s: Settings, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The one batch every step of every contender runs on: random images and labels from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(s.batch_size, *s.input_size, generator=gen).to(s.device)
    y = torch.randint(0, num_classes, (s.batch_size,), generator=gen).to(s.device)
    return x, y


def _check_benchmark_args(
    mode: str, device: torch.device, precision: str, vs, rounds: int, warmup: int, iters: int | None
) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but this machine has no CUDA GPU")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if mode == "train" and precision == "fp16":
        raise ValueError("fp16 training needs loss scaling, whose overflow check syncs the host every step; use bf16")
    if precision == "int8" and mode == "train":
        raise ValueError("--precision int8 is for inference only (an ONNX Runtime INT8 model): use --mode infer, "
                         "or fp32 / bf16 to train")  # fmt: skip
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"--precision int8 runs on the CPU (ONNX Runtime's INT8 kernels), not {device}: use --device cpu"
        )
    unknown = [v for v in vs if v not in LIBRARIES[1:]]
    if unknown:
        raise ValueError(f"--vs takes {', '.join(LIBRARIES[1:])}; got {', '.join(unknown)}")
    if rounds < 1 or warmup < 1 or (iters is not None and iters < 1):
        raise ValueError("rounds, warmup and iters must be at least 1")


def _contenders(
    s: Settings, num_classes: int, vs, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[Contender], dict[str, str]]:
    """cnnzoo's model (built first, from the global seed) and each twin asked for; why a twin is missing."""
    ours = create_model(s.model, **s.model_options)
    contenders, skipped = [], {}
    for library in ("cnnzoo", *vs):
        net = ours if library == "cnnzoo" else _twin(library, s.model, num_classes, ours)
        if isinstance(net, str):
            skipped[library] = net
            continue
        contenders.append(
            _train_contender(library, net, s, x, y) if s.mode == "train" else _infer_contender(library, net, s, x)
        )
    return contenders, skipped


def _run_rounds(
    contenders: list[Contender], s: Settings, *, rounds: int, warmup: int, round_seconds: float, iters: int | None
) -> None:
    """Warm every contender up, then the timed rounds, who goes first rotated; on the CPU, the memory peaks."""
    grad = torch.enable_grad() if s.mode == "train" else torch.inference_mode()
    with grad:
        for c in contenders:
            _warm_up(c, s, warmup, round_seconds, iters)
        for r in range(rounds):
            shift = r % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:  # rotate who goes first
                times = _timed_steps(c, c.iters, s.device)
                c.latencies += times
                c.rates.append(s.batch_size * len(times) / sum(times))
        if s.device.type == "cpu":
            for c in contenders:
                c.peak_bytes = _cpu_peak_bytes(c)


def _contender_result(c: Contender, flops_per_image: int | None) -> dict[str, Any]:
    rate = statistics.median(c.rates)
    return dict(
        library=c.library, recipe=c.recipe,
        images_per_s=rate, images_per_s_per_round=c.rates,
        latency_ms=dict(p50=1e3 * _percentile(c.latencies, 50), p90=1e3 * _percentile(c.latencies, 90)),
        peak_memory_mb=None if c.peak_bytes is None else c.peak_bytes / 2**20,
        tflops=None if flops_per_image is None else rate * flops_per_image / 1e12,
        first_call_s=c.first_call_s, warmup_s=c.warmup_s, iters_per_round=c.iters, rounds=len(c.rates),
    )  # fmt: skip


def _ratios(contenders: list[Contender]) -> dict[str, dict[str, Any]]:
    """cnnzoo's rate over each other contender's, round by round, and their summary."""
    ratios = {}
    if contenders and contenders[0].library == "cnnzoo":
        for other in contenders[1:]:
            per_round = [a / b for a, b in zip(contenders[0].rates, other.rates)]
            ratios[other.library] = dict(_summary(per_round), per_round=per_round)
    return ratios


def benchmark_data(
    spec: str,
    *,
    model: str | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    workers: int = 4,
    batches: int = 20,
    train: bool = True,
    decode: str = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Images per second of the training data pipeline alone: the batches ``cnnzoo train`` would feed a model.

    ``spec`` is a data spec (``folder:DIR``, ``mnist5k``, ``cifar10:DIR``, ``synthetic:N``, see
    :func:`cnnzoo.data.load_data`). In-memory data is indexed, augmented and normalised on ``device``;
    folders are read in ``workers`` processes and decoded and cropped there (``decode="workers"``) or on
    ``device`` a batch at a time (``"device"``: nvJPEG on a GPU; ``"auto"`` is workers). The first batch (worker
    start-up, first decodes) is timed apart; then the batches the workers read ahead are skipped, and the
    rate is over the next ``batches`` batches, waiting for the device after each. A folder's image over
    ``max_pixels`` pixels (None: no limit) is skipped, as a corrupt one is.
    """
    from . import data as datalib
    from .data.batches import channel_stats

    for name, value in (
        ("batch_size", batch_size),
        ("image_size", image_size),
        ("workers", workers),
        ("batches", batches),
    ):
        check_option(name, value)
    device = resolve_device(device)
    info = get_model_info(model) if model else None
    channels = info.input_size[0] if info else None
    if image_size is None and info is not None and spec.startswith("folder:"):
        image_size = info.input_size[1]
    splits = datalib.load_data(spec, channels=channels, image_size=image_size, max_pixels=max_pixels)
    mean = channel_stats(info.mean if info else (0.5,), splits.channels)
    std = channel_stats(info.std if info else (0.5,), splits.channels)
    split = splits.train if train else splits.test
    if isinstance(split, datalib.ArrayData):
        pipeline, how, read_ahead = _array_pipeline(split, model, batch_size, device, mean, std, train)
    else:
        pipeline, how, read_ahead = _folder_pipeline(
            split, batch_size, device, mean, std, train, workers, batches, decode
        )
    if len(pipeline) == 0:
        raise ValueError(f"{spec}: fewer images than one batch of {batch_size}")
    env_start = environment(device)
    times, images = _time_batches(pipeline, device, read_ahead + batches)
    first, rest = times[0], times[1 + read_ahead :]
    env = environment(device)
    env["load_average_start"] = env_start["load_average"]
    return dict(
        settings=dict(data=spec, model=model, batch_size=batch_size, device=str(device), image_size=splits.image_size,
                      channels=splits.channels, workers=workers, batches=batches, skipped_read_ahead=read_ahead, train=train, decode=getattr(pipeline, 'decode', None), pipeline=how),
        env=env,
        images_per_s=sum(images[1 + read_ahead :]) / sum(rest),
        first_batch_s=first,
        latency_ms=dict(p50=1e3 * _percentile(rest, 50), p90=1e3 * _percentile(rest, 90)),
    )  # fmt: skip


def _array_pipeline(split, model: str | None, batch_size: int, device: torch.device, mean, std, train: bool):
    """In-memory data as ``cnnzoo train`` batches it; (batcher, what it does, batches read ahead: none)."""
    from .data.batches import ArrayBatches
    from .train.config import defaults_for
    from .train.distributed import Dist

    # The model's training augmentation (LeNet: +/-2 px, no flips); without a model, CIFAR's.
    aug = defaults_for(model) if model else dict(aug_pad=4, aug_flip=True)
    pad, flip = (aug.get("aug_pad", 0), bool(aug.get("aug_flip"))) if train else (0, False)
    pipeline = ArrayBatches(split, batch_size, device, mean, std, Dist(), train=train, pad=pad, flip=flip)
    return pipeline, f"in memory on {device.type}: index, shift +/-{pad} px{' and flip' if flip else ''}, normalise", 0


def _folder_pipeline(
    split, batch_size: int, device: torch.device, mean, std, train: bool, workers: int, batches: int, decode: str
):
    """An image folder through DataLoader workers; (batcher, what it does, batches the workers read ahead)."""
    from .data.batches import LoaderBatches
    from .train.distributed import Dist

    # Worker processes read ahead (DataLoader: 2 batches each), so the batches right after the first come
    # out of a full queue, far faster than the workers make them: skip that many before timing. A folder
    # smaller than that is gone through several times within one epoch (its files stay in the page cache,
    # as a data set does that fits in RAM), so that workers are not restarted inside the timed window.
    read_ahead = 2 * workers
    needed = (1 + read_ahead + batches + 1) * batch_size
    if batch_size <= len(split) < needed:
        split = copy.copy(split)
        split.samples = split.samples * math.ceil(needed / len(split))
    pipeline = LoaderBatches(split, batch_size, device, mean, std, Dist(), train=train, workers=workers, decode=decode)
    crop = "random-resized crop and flip" if train else "resize and centre crop"
    if pipeline.decode == "device":
        how = f"read in {workers} worker processes; decode (batched{', nvJPEG' if device.type == 'cuda' else ''}) + {crop} + normalise on {device.type}"
    else:
        how = f"decode + {crop} in {workers} worker processes, copy to {device.type}, normalise"
    return pipeline, how, read_ahead


def _time_batches(pipeline, device: torch.device, after_first: int) -> tuple[list[float], list[int]]:
    """Seconds to each of ``1 + after_first`` batches (waiting for the device after each) and their sizes,
    going on into the next epoch when a small in-memory data set runs out."""
    times, images = [], []
    epoch, it, this_epoch = 0, iter(pipeline.epoch(0, 0)), 0
    t0 = time.perf_counter()
    while len(times) <= after_first:
        try:
            xb, _ = next(it)
        except StopIteration:  # a small in-memory data set: go on with the next epoch
            if not this_epoch:  # a whole epoch without a batch: every image was skipped (named above)
                from .data import DataError

                raise DataError(
                    "no batch could be made: every image of the data was skipped as unreadable (each is named "
                    "above); fix or remove them, or raise --max-image-pixels if they are genuine and only large"
                ) from None
            epoch, it, this_epoch = epoch + 1, iter(pipeline.epoch(0, epoch + 1)), 0
            continue
        this_epoch += 1
        _sync(device)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        images.append(len(xb))
        t0 = t1
    return times, images
