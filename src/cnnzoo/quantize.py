"""INT8 inference on the CPU: static post-training quantization of exported ONNX models by ONNX Runtime.

An exported fp32 model (:func:`cnnzoo.export.export_model`) becomes an INT8 one in three steps, all ONNX
Runtime's own tools:

1. **Pre-processing** (``onnxruntime.quantization.shape_inference.quant_pre_process``): shape inference,
   so that every tensor's shape is known to the quantizer, and ORT's basic graph optimisation,
   which folds each BatchNorm into the convolution before it (so the folded weights are what gets quantized,
   one scale per output channel, as :func:`cnnzoo.fast.fold_batchnorm` would fold them).
2. **Calibration**: the pre-processed model is run on calibration images, normalised as the model expects,
   and the range of every activation is recorded: ``minmax`` (the extremes seen), ``entropy`` (the range that
   keeps the quantized histogram closest in KL divergence) or ``percentile`` (clip the rarest values).
   Calibration runs a batch at a time, so the histograms of ``entropy`` and ``percentile`` hold one batch of
   activations in memory, never all of them.
3. **Quantization** into the QDQ format (``quantize_static(quant_format=QuantFormat.QDQ)``): a
   QuantizeLinear/DequantizeLinear pair on every activation and weight. Weights are int8, symmetric, one scale
   per output channel; activations uint8 with a zero point (asymmetric: after a ReLU nothing is negative, so
   all 256 levels are used). ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv when it opens the file.

Why uint8 activations with int8 weights (u8s8): x86 integer dot products (``vpmaddubsw`` on AVX2,
``vpdpbusd`` with VNNI) multiply unsigned by signed bytes, and MLAS's fast kernels are u8s8. Measured with
ORT 1.32 on 2 cores of an AMD EPYC with AVX2 and no VNNI, resnet18 at batch 32 against torchvision eager
fp32: u8s8 4.3x, s8s8 1.5x, u8u8 1.6x (ORT fp32: 2.7x), on a busy machine; in quiet rounds u8s8 gave 3.5x
(benchmarks/RESULTS.md, "INT8 on the CPU").

Why 7-bit weights (``reduce_range=True``, the default): without VNNI, ``vpmaddubsw`` adds two u8 x s8
products into an int16, which overflows (255 * 127 * 2 > 32767) and saturates. Measured on that CPU with a
trained LeNet-5, the fused INT8 kernels then differed from the QDQ graph computed in float by up to 8.1 in
the logits (0.4% of 500 predictions changed); with 7-bit weights the sum fits and the two agreed
exactly, at the same speed. VNNI (AVX512-VNNI, AVX-VNNI) accumulates in int32 and cannot saturate: a file
that only ever runs on such CPUs (or on ARM) may use ``reduce_range=False`` for one more bit of weights.

The quantized file keeps the fp32 file's ``cnnzoo.*`` metadata (model name, mean and std, class names) and
adds ``cnnzoo.quantization``: dtype, format, calibration method and image count, activation and weight types.
:func:`compare_accuracy` runs the fp32 and INT8 files on held-out images (:func:`held_out_batch`) and reports
the top-1 of each and how often they agree; :func:`calibration_batch` draws calibration images from a data
spec or from a run folder's own training data.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import CnnzooError
from .export import ExportReport, OnnxModel, export_metadata, export_model
from .fileio import atomic_write, safe_output
from .options import DEFAULT_MAX_PIXELS

__all__ = [
    "ACTIVATION_TYPES",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_CHECK_IMAGES",
    "METHODS",
    "AccuracyReport",
    "QuantizeError",
    "QuantizeReport",
    "QuantizedExport",
    "calibration_batch",
    "centred_cosine",
    "compare_accuracy",
    "held_out_batch",
    "inference_session",
    "quantize_export",
    "quantize_model",
    "quantize_onnx",
]

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")
DEFAULT_CALIBRATION_IMAGES = 256  # ORT's examples calibrate on a few hundred images; ranges settle well before
DEFAULT_CHECK_IMAGES = 1000  # held-out images of the fp32 / INT8 comparison: one changed prediction is 0.1 points
DEFAULT_PERCENTILE = 99.999
CALIBRATION_BATCH = 16  # images per calibration run: one batch's activations of every layer are in memory at once
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")  # the ops whose weights hold the model's arithmetic


class QuantizeError(CnnzooError, RuntimeError):
    """A quantization that cannot run (missing package, unusable calibration data) or whose file fails to load."""


# --------------------------------------------------------------------------------------------------
# ONNX Runtime, imported when needed (it is the optional extra cnnzoo[onnx])
# --------------------------------------------------------------------------------------------------


def _ort():
    try:
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise QuantizeError("INT8 quantization needs onnxruntime (and onnx): pip install 'cnnzoo[onnx]'") from None
    return onnxruntime


def inference_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` with all graph optimisations (QDQ fusion among them).

    ``threads`` is ORT's intra-op thread count; None: PyTorch's (``torch.get_num_threads()``), so both
    use the same cores when they run in one process.
    """
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # these graphs are chains: parallel branches gain nothing on few cores
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable models
        raise QuantizeError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None


@contextlib.contextmanager
def _quiet():
    """Silence the quantizer's progress prints, log warnings and Python warnings; errors still raise."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------------------------------
# Calibration batches
# --------------------------------------------------------------------------------------------------


def _as_array(batch: Any, where: str) -> np.ndarray:
    if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], (int, float)):
        batch = batch[0]  # (images, labels) as the training batchers give them
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
    if array.ndim != 4:
        raise QuantizeError(
            f"{where}: calibration images must be float (N, C, H, W), normalised as the model expects; "
            f"got shape {array.shape}"
        )
    return array


def _calibration_batches(images: Any, input_shape: Sequence[int | str], batch: int) -> list[np.ndarray]:
    """The calibration images as float32 batches the model takes: ``batch`` images each, or the model's fixed batch."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        arrays = [_as_array(images, "calibration_images")]
    else:
        arrays = [_as_array(b, f"calibration batch {i}") for i, b in enumerate(images)]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        raise QuantizeError("calibration_images is empty: give at least one image (a few hundred calibrate well)")
    want = tuple(input_shape[1:])
    for a in arrays:
        if a.shape[1:] != want:
            raise QuantizeError(
                f"calibration images of shape {a.shape[1:]} (C, H, W), but the model takes {want}; "
                "resize them to the exported size"
            )
        if not np.isfinite(a).all():
            raise QuantizeError("calibration images hold NaN or infinite values")
    flat = np.concatenate(arrays)
    fixed = input_shape[0] if isinstance(input_shape[0], int) else None
    step = fixed or batch
    if fixed is not None and len(flat) < fixed:
        raise QuantizeError(f"the model's batch is fixed to {fixed}; give at least {fixed} calibration images")
    # A fixed batch takes exactly `fixed` images: the remainder (fewer than one batch) is left out.
    stop = len(flat) - len(flat) % fixed if fixed else len(flat)
    return [flat[i : i + step] for i in range(0, stop, step)]


def _reader(input_name: str, batches: list[np.ndarray]):
    """An ORT calibration data reader over ``batches`` that can be narrowed to a range of them.

    ``quantize_static`` calls ``set_range`` once per batch when given ``CalibStridedMinMax=1``; every
    calibrator then collects one batch at a time (histograms are merged), which bounds memory.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._items = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {input_name: batch}

    return Reader()


# --------------------------------------------------------------------------------------------------
# Quantizing an ONNX file
# --------------------------------------------------------------------------------------------------


@dataclass
class QuantizeReport:
    """What :func:`quantize_onnx` wrote: the file, how it was calibrated, and how much of the model is INT8."""

    path: Path
    source: Path
    model: str
    method: str
    per_channel: bool
    activations: str
    weights: str
    reduce_range: bool
    calibration_images: int
    quantized_ops: int  # Conv / Gemm / MatMul nodes whose weights are int8
    weight_ops: int  # all Conv / Gemm / MatMul nodes
    fp32_bytes: int
    int8_bytes: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"quantized {self.model} to {self.path} (INT8 QDQ, {self.int8_bytes / 1e6:.1f} MB, "
            f"{self.fp32_bytes / self.int8_bytes:.1f}x smaller than fp32): "
            f"{self.quantized_ops}/{self.weight_ops} conv and "
            f"matmul layers int8, weights {self.weights}{' per channel' if self.per_channel else ''}"
            f"{' (7-bit range)' if self.reduce_range else ''}, activations {self.activations}, "
            f"{self.method} calibration on {self.calibration_images:,} images, {self.seconds:.1f} s"
        )


def _input_of(model) -> tuple[str, list[int | str]]:
    (inp,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


def _count_quantized(model) -> tuple[int, int]:
    """(weight ops whose weight comes from a DequantizeLinear, all weight ops) in a QDQ graph."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops = [n for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]
    return sum(len(n.input) > 1 and n.input[1] in dequantized for n in ops), len(ops)


def _check_options(method: str, activations: str, percentile: float, calibration_batch_size: int) -> None:
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    if activations not in ACTIVATION_TYPES:
        raise ValueError(
            f"activation type {activations!r}: expected one of {', '.join(ACTIVATION_TYPES)} "
            "(uint8 is the fast one on x86)"
        )
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile {percentile!r}: expected a number in (50, 100], e.g. {DEFAULT_PERCENTILE}")
    if calibration_batch_size < 1:
        raise ValueError(f"calibration_batch_size {calibration_batch_size!r}: expected a positive integer")


def _float_logits(model: Any) -> Any:
    """``model`` with the QuantizeLinear / DequantizeLinear pair on its output removed: the logits stay float.

    The quantizer also quantizes the graph's output, to 256 levels over the calibration range: the last
    layer's float result is rounded for nothing, and close logits become equal (measured on a trained
    LeNet-5: 1 of 200 held-out digits tied, and ``argmax`` and ``topk`` then broke the tie differently).
    ONNX Runtime still runs the last Gemm / Conv in INT8, with a float output (QGemm without an output scale).
    """
    out = model.graph.output[0].name
    producer = {o: n for n in model.graph.node for o in n.output}
    dq = producer.get(out)
    q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    if q is None or q.op_type != "QuantizeLinear" or sum(q.output[0] in n.input for n in model.graph.node) != 1:
        return model
    source = q.input[0]
    for node in model.graph.node:  # the float tensor takes the output's name, wherever it is produced or read
        node.output[:] = [out if name == source else name for name in node.output]
        node.input[:] = [out if name == source else name for name in node.input]
    model.graph.node.remove(q)
    model.graph.node.remove(dq)
    used = {name for node in model.graph.node for name in node.input}
    # the renamed tensor's shape records, and the pair's scale and zero point if nothing else reads them
    for entries, gone in ((model.graph.value_info, {source, out}), (model.graph.initializer, set(q.input[1:]) - used)):
        stale = [e for e in entries if e.name in gone]
        for entry in stale:
            entries.remove(entry)
    return model


def _stamp_metadata(model: Any, props: dict[str, str], quantization: dict[str, Any]) -> None:
    """The fp32 file's cnnzoo metadata, plus how it was quantized, on the quantized ONNX ``model``."""
    record = dict(dtype="int8", format="QDQ", weights="int8", logits="float", **quantization)
    props = {**props, "cnnzoo.quantization": json.dumps(record)}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def quantize_onnx(
    fp32_onnx_path: str | Path,
    out_path: str | Path,
    calibration_images: Any,
    *,
    per_channel: bool = True,
    method: str = "minmax",
    activations: str = "uint8",
    reduce_range: bool = True,
    percentile: float = DEFAULT_PERCENTILE,
    calibration_batch_size: int = CALIBRATION_BATCH,
    nodes_to_exclude: Sequence[str] = (),
    force: bool = False,
) -> QuantizeReport:
    """Quantize the fp32 ONNX file ``fp32_onnx_path`` to INT8 (QDQ) at ``out_path``, calibrated on images.

    ``calibration_images``: a float tensor or array (N, C, H, W) normalised as the model expects, or an
    iterable of such batches (or of ``(images, labels)`` pairs); see :func:`calibration_batch`. ``method``
    is how activation ranges are chosen (see the module docstring; ``percentile`` is used by "percentile").
    Weights are int8, per output channel unless ``per_channel=False``; activations ``"uint8"`` (fast on x86)
    or ``"int8"``; ``reduce_range`` (default) quantizes weights to 7 bits, which x86 CPUs without VNNI
    need to compute them exactly (module docstring). ``nodes_to_exclude`` names ONNX nodes to
    keep in fp32. An existing ``out_path`` is replaced only with ``force`` (and only by an ONNX file). The
    written file is loaded by ONNX Runtime before this returns.
    """
    _check_options(method, activations, percentile, calibration_batch_size)
    ort = _ort()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = time.perf_counter()
    out = safe_output(out_path, force=force, kind="onnx")  # before any work: a refused path costs nothing
    source = Path(fp32_onnx_path)
    if not source.is_file():
        raise QuantizeError(f"{source}: no such ONNX file (export the model first: cnnzoo export MODEL)")
    fp32 = onnx.load(str(source))
    input_name, input_shape = _input_of(fp32)
    batches = _calibration_batches(calibration_images, input_shape, calibration_batch_size)
    props = {p.key: p.value for p in fp32.metadata_props}
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    extra = {"CalibStridedMinMax": 1, "CalibPercentile": percentile}  # one batch per calibration pass (see _reader)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-int8-") as tmp, _quiet():
        pre, quantized = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            # ONNX's own shape inference suffices for these CNNs (every shape but the batch is fixed); ORT's
            # symbolic one, meant for transformers' dynamic sizes, would double the pre-processing time.
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(quantized),
                _reader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate[method],
                nodes_to_exclude=list(nodes_to_exclude),
                extra_options=extra,
            )
        except Exception as e:  # ORT's quantizer raises whatever its steps raise; say which file and step
            raise QuantizeError(
                f"{source}: ONNX Runtime could not quantize it ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
            ) from e
        model = _float_logits(onnx.load(str(quantized)))
    count = sum(len(b) for b in batches)
    quantization = dict(method=method, calibration_images=count, activations=activations)
    quantization.update(per_channel=per_channel, reduce_range=reduce_range, onnxruntime=ort.__version__)
    if method == "percentile":
        quantization["percentile"] = percentile
    _stamp_metadata(model, props, quantization)
    atomic_write(out, lambda tmp: onnx.save(model, tmp))
    inference_session(out)  # fails here, not in the user's server, if ORT cannot run what it wrote
    name = json.loads(props.get("cnnzoo.model", json.dumps(source.stem)))
    done, total = _count_quantized(model)
    return QuantizeReport(
        out,
        source,
        name,
        method,
        per_channel,
        activations,
        "int8",
        reduce_range,
        count,
        done,
        total,
        source.stat().st_size,
        out.stat().st_size,
        time.perf_counter() - start,
    )


def quantize_model(
    model: nn.Module,
    out_path: str | Path,
    calibration_images: Any,
    *,
    image_size: int | None = None,
    dynamic_batch: bool = True,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> QuantizeReport:
    """Export ``model`` to fp32 ONNX (checked against PyTorch by :func:`export_model`), then :func:`quantize_onnx` it.

    ``image_size`` defaults to the calibration images' size; ``metadata`` and ``dynamic_batch`` go to the
    export (metadata defaults to the model's registry entry); ``options`` to :func:`quantize_onnx`. The fp32
    file is temporary: export with :func:`export_model` and call :func:`quantize_onnx` to keep both.
    """
    if not isinstance(calibration_images, (torch.Tensor, np.ndarray)):
        calibration_images = list(calibration_images)  # an iterator of batches: read once, used for the size too
    if image_size is None and len(calibration_images):
        whole = isinstance(calibration_images, (torch.Tensor, np.ndarray))
        first = calibration_images if whole else calibration_images[0]
        image_size = int(_as_array(first, "calibration_images").shape[-1])
    safe_output(out_path, force=options.get("force", False), kind="onnx")  # refused before the export's work
    with tempfile.TemporaryDirectory(prefix="cnnzoo-fp32-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_model(model, fp32, image_size=image_size, dynamic_batch=dynamic_batch, metadata=metadata)
        return quantize_onnx(fp32, out_path, calibration_images, **options)


# --------------------------------------------------------------------------------------------------
# Accuracy: fp32 against INT8
# --------------------------------------------------------------------------------------------------


@dataclass
class AccuracyReport:
    """fp32 against INT8 on the same images: top-1 of each (with labels), agreement, and logit similarity."""

    images: int
    fp32_top1: float | None  # fraction correct; None without labels
    int8_top1: float | None
    agreement: float  # fraction of images where both predict the same class
    logit_cosine: float  # centred_cosine of the two models' logits

    @property
    def top1_drop(self) -> float | None:
        """fp32 top-1 minus INT8 top-1, in percentage points (positive: INT8 is worse)."""
        return None if self.fp32_top1 is None else 100 * (self.fp32_top1 - self.int8_top1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top1_drop_points": self.top1_drop}

    def __str__(self) -> str:
        head = f"INT8 check on {self.images:,} held-out images: "
        if self.fp32_top1 is not None:
            fp32, int8 = 100 * self.fp32_top1, 100 * self.int8_top1
            head += f"top-1 fp32 {fp32:.2f}%, int8 {int8:.2f}% ({int8 - fp32:+.2f} points); "
        return head + f"int8 agrees with fp32 on {100 * self.agreement:.2f}%, logit cosine {self.logit_cosine:.4f}"


def centred_cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Cosine similarity of two (N, K) logit batches after subtracting each one's mean logit vector over the batch.

    Centring removes what the model outputs whatever the input (a random-weight network's logits are mostly
    that), so the figure measures how well ``b`` follows ``a`` from input to input: a model that ignores its
    input scores about 0, even when its plain cosine is near 1.
    """
    a = torch.as_tensor(a, dtype=torch.float64).flatten(1)
    b = torch.as_tensor(b, dtype=torch.float64).flatten(1)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(
            "centred_cosine needs two batches of the same shape, at least 2 rows; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a, b = a - a.mean(0), b - b.mean(0)
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def _runner(model: Callable | str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(model, (str, Path)):
        return OnnxModel(model)
    if isinstance(model, nn.Module):
        model.eval()
    return model


def _logits(run: Callable, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    fixed = getattr(run, "input_shape", [None])[0]
    step = fixed if isinstance(fixed, int) else batch_size  # an ONNX file exported with a fixed batch
    with torch.no_grad():
        return torch.cat([run(images[i : i + step]).float() for i in range(0, len(images), step)])


def compare_accuracy(
    fp32: Callable | str | Path,
    int8: Callable | str | Path,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 64,
) -> AccuracyReport:
    """Run both models on ``images`` (normalised, N x C x H x W) and compare them, and with ``labels`` the truth.

    ``fp32`` and ``int8`` are ONNX file paths (run with :class:`cnnzoo.export.OnnxModel`) or callables that
    take an image batch and return logits (a PyTorch model, an ``OnnxModel``).
    """
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() != 4 or len(images) < 2:
        raise ValueError(
            f"compare_accuracy needs a batch of at least 2 images (N, C, H, W); got shape {tuple(images.shape)}"
        )
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    a = _logits(_runner(fp32), images, batch_size)
    b = _logits(_runner(int8), images, batch_size)
    pa, pb = a.argmax(1), b.argmax(1)
    top1 = (lambda p: float((p == labels).double().mean())) if labels is not None else (lambda p: None)
    return AccuracyReport(len(images), top1(pa), top1(pb), float((pa == pb).double().mean()), centred_cosine(a, b))


# --------------------------------------------------------------------------------------------------
# Images from a data spec or a run folder
# --------------------------------------------------------------------------------------------------


def _channel_stats(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """Per-channel mean/std for ``channels`` channels, as ``cnnzoo train`` normalises (averaged, then repeated)."""
    return tuple(values) if len(values) == channels else (sum(values) / len(values),) * channels


def _run_settings(run_dir: Path) -> dict[str, Any]:
    """What a run folder's config.json says about its data: spec, channels, image size, mean, std."""
    from .registry import get_model_info

    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        info = get_model_info(cfg["model"])
    except (OSError, ValueError, KeyError) as e:
        raise QuantizeError(f"{run_dir}: not a readable cnnzoo run folder ({type(e).__name__}: {e})") from None
    channels = (cfg.get("model_options") or {}).get("in_chans", info.input_size[0])
    spec = cfg.get("data")
    in_memory = not str(spec).startswith("folder:")
    image_size = cfg.get("image_size") or (None if in_memory else info.input_size[1])  # as cnnzoo train chose it
    return dict(
        spec=spec,
        channels=channels,
        image_size=image_size,
        mean=_channel_stats(info.mean, channels),
        std=_channel_stats(info.std, channels),
    )


def _sample(
    source: str | Path,
    split_name: str,
    n_images: int | None,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    seed: int,
    channels: int | None = None,
    channel_order: str = "RGB",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(normalised images, labels, the data's class names) drawn from one split of a run folder's data or a spec;
    a folder's image over ``max_pixels`` pixels (None: no limit) is skipped and named, as a corrupt one is."""
    from . import data as datalib

    run_dir = Path(source).expanduser()
    if run_dir.is_dir() and (run_dir / "config.json").is_file():
        settings = _run_settings(run_dir)
    elif isinstance(source, str) and not run_dir.exists():
        settings = dict(spec=source, channels=None, image_size=None, mean=None, std=None)
    else:
        raise QuantizeError(
            f"{source}: neither a run folder (no config.json) nor a data spec such as mnist5k or folder:DIR"
        )
    image_size = image_size or settings["image_size"]
    mean, std = mean or settings["mean"], std or settings["std"]
    if mean is None or std is None:
        raise QuantizeError(
            f"{source}: give mean and std (the model's normalisation, e.g. its registry entry's) for a plain data spec"
        )
    splits = datalib.load_data(
        settings["spec"], channels=channels or settings["channels"], image_size=image_size, max_pixels=max_pixels
    )
    split = splits.train if split_name == "train" else splits.test
    n = len(split) if n_images is None else min(n_images, len(split))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(split, datalib.ArrayData):
        images, labels = split.images[order], split.labels[order]
    else:
        # An image folder: the evaluation transform (resize, centre crop) for both splits, so that calibration
        # sees images framed as they will be at inference, not training's random crops.
        folder = datalib.ImageFolderData(
            split.samples, split.classes, train=False, image_size=splits.image_size, channels=splits.channels,
            max_pixels=max_pixels,
        )  # fmt: skip
        samples = [s for s in (folder[int(i)] for i in order) if s is not None]
        if not samples:
            raise QuantizeError(f"{source}: none of the {n} images drawn from the {split_name} split could be read")
        images, labels = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
    if channel_order == "BGR" and images.shape[1] == 3:  # Keras' caffe-style weights: flipped before normalising
        images = images.flip(1)
    mean, std = _channel_stats(mean, images.shape[1]), _channel_stats(std, images.shape[1])
    return datalib.normalize_batch(images, mean, std), labels, list(splits.classes)


def calibration_batch(
    source: str | Path,
    n_images: int = DEFAULT_CALIBRATION_IMAGES,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``n_images`` training images (fewer if the split is smaller), normalised, as float (N, C, H, W).

    ``source`` is a run folder (its config.json names the data, the channels and size it was trained at,
    and the model whose mean and std normalised it) or a data spec for :func:`cnnzoo.data.load_data` (then
    give ``mean`` and ``std``). Images are drawn at random without replacement (``seed``); image folders
    are resized and centre-cropped to ``image_size`` as at evaluation.
    """
    return _sample(source, "train", n_images, image_size, mean, std, seed)[0]


def held_out_batch(
    source: str | Path,
    n_images: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` from the held-out split, like :func:`calibration_batch` (default: all of it)."""
    return _sample(source, "test", n_images, image_size, mean, std, seed)[:2]


# --------------------------------------------------------------------------------------------------
# Export, calibrate, quantize and check in one go: what `cnnzoo export --quantize int8` runs
# --------------------------------------------------------------------------------------------------


@dataclass
class QuantizedExport:
    """What :func:`quantize_export` did: the fp32 export's check, the INT8 file, and the held-out comparison."""

    export: ExportReport  # the fp32 file was temporary: its path no longer exists
    quantize: QuantizeReport
    check: AccuracyReport
    data: str  # where the calibration and held-out images came from
    data_classes: int  # classes in that data; top-1 is reported only when they are the model's

    def __str__(self) -> str:
        e = self.export
        lines = [
            f"exported {e.model} to fp32 ONNX (opset {e.opset}) and checked it with {e.checked_with} against "
            f"PyTorch: max abs diff {e.max_abs_diff:.1e} <= {e.tolerance:.0e}",
            str(self.quantize),
            f"calibrated on {self.quantize.calibration_images:,} training images of {self.data}; "
            "fp32 and INT8 run on its held-out images:",
            str(self.check),
        ]
        if self.check.fp32_top1 is None:
            lines.append(
                f"(no top-1: the data has {self.data_classes} classes, the model {e.output_shape[-1]}; "
                "agreement and logit cosine compare INT8 with fp32 alone)"
            )
        return "\n".join(lines)


def quantize_export(
    model: nn.Module,
    out_path: str | Path,
    data: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    check_images: int = DEFAULT_CHECK_IMAGES,
    image_size: int | None = None,
    dynamic_batch: bool = False,
    opset: int | None = None,
    force: bool = False,
    seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **options: Any,
) -> QuantizedExport:
    """Export ``model`` to fp32 ONNX, quantize it to INT8 at ``out_path``, and compare the two on held-out images.

    ``data`` is a run folder or a data spec: ``calibration_images`` images of its training split calibrate the
    activation ranges, ``check_images`` of its held-out split are run through both files
    (:func:`compare_accuracy`; top-1 too when the data has as many classes as the model). Images are
    normalised as ``metadata`` says (default :func:`cnnzoo.export.export_metadata`: mean, std, channel order)
    at the export's size. Every image is read before anything is written, so bad data costs no file (a folder's
    image over ``max_pixels`` pixels is skipped, as a corrupt one is). The fp32 file is temporary; ``options`` go
    to :func:`quantize_onnx`.
    """
    for name, value, least in (("calibration_images", calibration_images, 1), ("check_images", check_images, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} {value!r}: expected an integer >= {least} (a few hundred calibrate well)")
    out = safe_output(out_path, force=force, kind="onnx")
    meta = dict(metadata) if metadata is not None else export_metadata(model)
    size = image_size or meta.get("image_size") or getattr(model, "native_size", None)
    feed = dict(
        image_size=size, mean=meta.get("mean"), std=meta.get("std"), seed=seed,
        channels=getattr(model, "in_chans", None), channel_order=meta.get("channel_order", "RGB"), max_pixels=max_pixels,
    )  # fmt: skip
    calibration = _sample(data, "train", calibration_images, **feed)[0]
    images, labels, classes = _sample(data, "test", check_images, **feed)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-fp32-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        exported = export_model(model, fp32, image_size=size, dynamic_batch=dynamic_batch, opset=opset, metadata=meta)
        report = quantize_onnx(fp32, out, calibration, force=force, **options)
        labelled = len(classes) == exported.output_shape[-1]
        check = compare_accuracy(fp32, report.path, images, labels if labelled else None)
    return QuantizedExport(exported, report, check, str(data), len(classes))
