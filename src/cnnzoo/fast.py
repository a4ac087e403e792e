"""Inference fast paths: BatchNorm folding, channels-last, reduced precision, compiled or ONNX Runtime back ends.

At inference a BatchNorm is a fixed per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``.
When it reads the output of a convolution and nothing else does, it can be folded into that convolution's
weights and bias, and the network does one pass over memory fewer per layer, for exactly the same function:

    scale = gamma / sqrt(var + eps)
    W' = W * scale        (per output channel)
    b' = (b - mean) * scale + beta

The hard part is knowing that the BN really follows the conv. A module that owns ``conv1`` and ``bn1`` says
nothing about how its ``forward`` wires them (``bn1(relu(conv1(x)))`` cannot be folded; ``conv1``'s output
may also feed a shortcut). So :func:`find_conv_bn_pairs` traces the model with ``torch.fx`` and folds a pair
only where the graph shows it: the BN's only input is the conv's output, the conv's output goes nowhere
else, each module is called exactly once, and no code reads their tensors directly. Where a model cannot be
traced it falls back to what is safe without a graph: consecutive children of a plain ``nn.Sequential``.

:func:`optimize_for_inference` puts it together, and is what ``cnnzoo bench --mode infer`` runs for cnnzoo:

* ``backend="eager"``: folded BN, channels-last, weights in the chosen precision. Plain PyTorch.
* ``backend="inductor"``: that, compiled by ``torch.compile`` with inductor's *freezing* (weights become
  constants, so oneDNN can keep them pre-packed on the CPU; CUDA graphs on the GPU).
* ``backend="onnxruntime"``: the folded model exported to ONNX in memory and run by ONNX Runtime (CPU).
* ``precision="int8"``: the folded model quantized by :mod:`cnnzoo.quantize` (ONNX Runtime, static QDQ), calibrated
  on the images given as ``calibration``; CPU only. 2.95-5.5x torchvision eager fp32 on 2 AVX2 cores.
* ``backend="auto"`` (the default): on a CPU, ONNX Runtime when it is installed, else inductor when a C++
  compiler is there, else eager; on a GPU, inductor. Measured on 2 cores of an AMD EPYC against
  torchvision eager fp32 (resnet18 and resnet50, batch 1 and 32): ONNX Runtime 1.85-3.4x, inductor
  1.09-2.05x, eager 1.03-1.74x (``benchmarks/RESULTS.md``). On an H200 (bf16, batch 256) inductor with
  freezing and CUDA graphs ran cnnzoo's folded resnet50 at 27,296 img/s, 1.77x torchvision eager and 1.16x
  torchvision compiled the same way.
"""

from __future__ import annotations

import copy
import io
import shutil
import warnings
from collections import Counter
from typing import Any

import torch
from torch import fx, nn

from .layers import BatchNorm2dNoScale
from .options import SHARED

__all__ = [
    "BACKENDS",
    "InferenceModel",
    "find_conv_bn_pairs",
    "fold_batchnorm",
    "fuse_conv_bn",
    "inductor_options",
    "optimize_for_inference",
    "pick_backend",
]

BACKENDS = SHARED["backend"].allowed.choices  # declared with the --backend flag, which the CLI reads without torch
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INT8 = "int8"  # not a weight dtype of the PyTorch model: the folded fp32 model quantized by ONNX Runtime

# The BatchNorm types whose eval-mode forward is exactly the affine map above. Exact types, not
# isinstance: a subclass may change the forward (BatchNorm2dNoScale does, and is listed because its
# forward is that map with gamma = 1).
_FOLDABLE_BN = (nn.BatchNorm2d, nn.SyncBatchNorm, BatchNorm2dNoScale)


# --------------------------------------------------------------------------------------------------
# Folding one pair
# --------------------------------------------------------------------------------------------------


def _foldable_conv(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d  # a subclass (weight standardisation, say) may compute something else


def _foldable_bn(m: nn.Module) -> bool:
    return type(m) in _FOLDABLE_BN and m.track_running_stats and m.running_mean is not None


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new ``Conv2d`` computing ``bn(conv(x))`` with ``bn`` in eval mode (its running statistics).

    The arithmetic is done in float64 and rounded once to the conv's dtype, so the folded conv differs
    from the pair by rounding only.
    """
    if not (_foldable_conv(conv) and _foldable_bn(bn)):
        raise TypeError(f"cannot fold {type(bn).__name__} into {type(conv).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"BatchNorm over {bn.num_features} channels cannot follow a conv with {conv.out_channels} outputs"
        )
    w = conv.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)  # BatchNorm2dNoScale: no gamma
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)

    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
        bias=True, padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
    )  # fmt: skip
    fused.weight.copy_(w * scale.view(-1, 1, 1, 1))  # dim 0 is the output channel, also for grouped convs
    fused.bias.copy_((b - mean) * scale + beta)
    return fused


# --------------------------------------------------------------------------------------------------
# Finding the pairs
# --------------------------------------------------------------------------------------------------


class _PairTracer(fx.Tracer):
    """Traces down to every Conv2d and BatchNorm, and no further.

    A module that holds neither is a leaf: it cannot hide a pair, and its forward may do things fx cannot
    trace (``SamePad2d`` computes its padding from the input's size as Python numbers).
    """

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)):
            return True
        return not any(isinstance(c, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)) for c in m.modules())


def _trace(model: nn.Module) -> fx.Graph:
    # ZooModel.check_input branches on the input's shape, which a symbolic trace cannot; switch it off
    # while tracing. Eval mode: the graph of inference (no auxiliary heads).
    checks = [(m, m.check_inputs) for m in model.modules() if isinstance(getattr(m, "check_inputs", None), bool)]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in checks:
            m.check_inputs = False
        model.eval()
        return _PairTracer().trace(model)
    finally:
        for m, flag in checks:
            m.check_inputs = flag
        for m, flag in modes:
            m.training = flag


def _pairs_from_graph(model: nn.Module, graph: fx.Graph) -> list[tuple[str, str]]:
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    read_directly = [n.target for n in graph.nodes if n.op == "get_attr"]  # e.g. F.conv2d(x, self.conv.weight)

    def untouched(path: str) -> bool:
        return calls[path] == 1 and not any(t == path or t.startswith(path + ".") for t in read_directly)

    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _foldable_bn(model.get_submodule(node.target)):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        (src,) = node.args
        if not (
            isinstance(src, fx.Node) and src.op == "call_module" and _foldable_conv(model.get_submodule(src.target))
        ):
            continue
        if len(src.users) == 1 and untouched(src.target) and untouched(node.target):
            pairs.append((src.target, node.target))
    return pairs


def _pairs_in_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """Conv -> BN pairs that are neighbours in a plain ``nn.Sequential``, which chains its children by definition."""
    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    pairs = []
    for path, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        children = list(seq.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if _foldable_conv(a) and _foldable_bn(b) and uses[id(a)] == uses[id(b)] == 1:
                prefix = f"{path}." if path else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv path, bn path)`` of every BatchNorm that reads a conv's output and nothing else, in eval mode.

    Found in the ``torch.fx`` graph of the model (see the module docstring); for a model fx cannot trace,
    only the neighbours in plain ``nn.Sequential`` containers.
    """
    try:
        graph = _trace(model)
    except Exception:  # data-dependent Python control flow and the like: fall back to what is safe without a graph
        return _pairs_in_sequentials(model)
    return _pairs_from_graph(model, graph)


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` in eval mode with every foldable BatchNorm folded into its conv (and replaced by ``nn.Identity``).

    The result computes what ``model.eval()`` computes, up to float rounding, and is for inference only:
    the BatchNorms are gone, so training it would not normalise. ``inplace=False`` (the default) leaves
    ``model`` as it was and works on a copy. The folded pairs are listed in ``result.folded_batchnorms``.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    pairs = find_conv_bn_pairs(model)
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        _replace(model, conv_path, fuse_conv_bn(conv, bn))
        _replace(model, bn_path, nn.Identity())
    model.folded_batchnorms = pairs
    return model


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)  # also for names that are not identifiers (Keras' "1_conv"): they live in _modules


# --------------------------------------------------------------------------------------------------
# The inference model
# --------------------------------------------------------------------------------------------------


def _has_cxx_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo ONNX exporter needs it)
    except ImportError:
        return False
    return True


def pick_backend(device: torch.device | str, precision: str = "fp32") -> str:
    """What ``backend="auto"`` means on ``device``: the fastest back end measured there (benchmarks/RESULTS.md)."""
    device = torch.device(device)
    if precision == INT8:
        return "onnxruntime"  # the only INT8 back end (ONNX Runtime's QDQ kernels); it needs no probing here
    if device.type == "cpu":
        if precision == "fp32" and _has_onnxruntime():
            return "onnxruntime"
        return "inductor" if _has_cxx_compiler() else "eager"
    return "inductor"


class InferenceModel(nn.Module):
    """A model prepared by :func:`optimize_for_inference`: call it on images, get float32 logits.

    ``self.model`` is the folded PyTorch module (in the chosen precision and memory format); the back end
    runs it. Inputs are converted to the model's device, dtype and memory format on the way in. Attributes
    ``model_name``, ``info``, ``in_chans``, ``native_size`` and ``min_size`` are the original model's.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        backend: str,
        dtype: torch.dtype,
        channels_last: bool,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.backend, self.dtype, self.channels_last = backend, dtype, channels_last
        for attr in ("model_name", "info", "in_chans", "native_size", "min_size"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))
        self._sessions: dict[tuple[int, ...], Any] = {}  # onnxruntime: one session per (C, H, W)
        self.precision = next(k for k, v in PRECISIONS.items() if v == dtype)  # "int8" once quantized
        self.quantize_report: Any = None  # INT8: what cnnzoo.quantize wrote (calibration, layers in int8)
        compiled = (
            torch.compile(model, dynamic=False, options=dict(compile_options or {})) if backend == "inductor" else None
        )
        # Kept out of nn.Module's registry, so the state dict and repr show the model once, not twice.
        object.__setattr__(self, "_compiled", compiled)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the model takes it: on its device, in its dtype and memory format."""
        x = x.to(self.device, self.dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "onnxruntime":
            return self._run_onnx(x)
        x = self.prepare(x)
        out = (self.model if self._compiled is None else self._compiled)(x)
        return out.float()

    # ONNX Runtime ---------------------------------------------------------------------------------

    def _run_onnx(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "check_input"):  # the zoo's clear shape errors, which the ONNX graph leaves out
            self.model.check_input(x)
        key = tuple(x.shape[1:])
        session = self._sessions.get(key)
        if session is None and self.precision == INT8:  # calibrated at one size: another needs its own ranges
            (calibrated,) = self._sessions
            raise ValueError(
                f"this INT8 model was calibrated on {'x'.join(map(str, calibrated))} images; got "
                f"{'x'.join(map(str, key))}: call optimize_for_inference with calibration images of that size"
            )
        if session is None:
            session = self._sessions[key] = _onnx_session(self.model, x)
        (out,) = session.run(None, {"images": x.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(out)


def _onnx_session(model: nn.Module, x: torch.Tensor):
    """Export ``model`` for inputs shaped like ``x`` (any batch) to ONNX in memory and open it in ONNX Runtime."""
    import onnxruntime as ort

    # Batch 2 for the example: torch.export would specialise a batch of 1 to the constant 1.
    example = torch.zeros(2, *x.shape[1:], dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, input_names=["images"], output_names=["logits"],
            dynamic_shapes=({0: "batch"},), verbose=False,
        )  # fmt: skip
        program.save(buffer)  # type: ignore[union-attr]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores PyTorch would use
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def optimize_for_inference(
    model: nn.Module,
    *,
    backend: str = "auto",
    precision: str = "fp32",
    channels_last: bool = True,
    device: torch.device | str | None = None,
    fold: bool | None = None,
    compile_options: dict[str, Any] | None = None,
    calibration: Any = None,
) -> InferenceModel:
    """The fastest way this library knows to run ``model`` for inference; ``model`` itself is left as it was.

    BatchNorm folded into the convs (``fold``; unset: everywhere but the eager back end on a GPU, see
    below), weights in ``precision`` ("fp32", "bf16", "fp16"; BatchNorms left unfolded keep fp32; "int8":
    see below), laid out
    channels-last, on ``device`` (default: where the model is), run by ``backend`` (see the module
    docstring; "auto" picks the fastest measured on that device). ``compile_options`` are inductor
    settings for ``torch.compile(options=...)``, on top of the defaults: ``freezing``, and on a GPU
    ``triton.cudagraphs`` (e.g. ``{"max_autotune": True}``).

    The first call is slow where the back end compiles (inductor) or exports (onnxruntime); later calls
    with the same input shape are fast. The result returns float32 logits whatever the precision::

        fast = optimize_for_inference(create_model("resnet50", weights=...))
        logits = fast(images)

    ``precision="int8"`` (CPU, ONNX Runtime): the folded model exported to ONNX and quantized by
    :func:`cnnzoo.quantize.quantize_model` (static QDQ, per-channel int8 weights, uint8 activations),
    its activation ranges calibrated on ``calibration``: a float tensor (N, C, H, W) or batches of one,
    normalised as the model expects, a few hundred images of the data it will see (e.g.
    ``cnnzoo.quantize.calibration_batch(RUN_DIR)``). The model then takes images of that size only.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if precision == INT8:
        return _int8_model(model, backend, device, calibration, fold)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, {INT8}; got {precision!r}")
    if calibration is not None:
        raise ValueError("calibration images are for precision='int8' only")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if backend == "auto":
        backend = pick_backend(device, precision)
    if backend == "onnxruntime":
        if device.type != "cpu" or precision != "fp32":
            raise ValueError(
                "the onnxruntime back end runs fp32 on the CPU; use inductor or eager for other devices and precisions"
            )
        if not _has_onnxruntime():
            raise ImportError(
                "the onnxruntime back end needs onnxruntime, onnx and onnxscript: pip install 'cnnzoo[onnx]'"
            )

    if fold is None:
        # On a GPU, eager PyTorch adds a folded conv's bias in a kernel of its own, which for channels-last
        # tensors is not vectorised: on an H200 it took 42% of a resnet50 batch and made the folded eager
        # model 0.87x torchvision's (benchmarks/RESULTS.md). cuDNN's BatchNorm kernel does that pass faster.
        # Inductor fuses bias, ReLU and residual add into one kernel, so folding pays there.
        fold = not (device.type == "cuda" and backend == "eager")
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    model.requires_grad_(False)
    dtype = PRECISIONS[precision]
    model.to(device=device, dtype=dtype)
    for m in model.modules():  # BatchNorms that are left: statistics in fp32, as autocast runs them
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.float()
    channels_last = channels_last and backend != "onnxruntime"  # ONNX Runtime picks its own layouts
    if channels_last:
        model.to(memory_format=torch.channels_last)
    options = {**inductor_options(device), **(compile_options or {})} if backend == "inductor" else {}
    return InferenceModel(model, backend=backend, dtype=dtype, channels_last=channels_last, compile_options=options)


def inductor_options(device: torch.device | str) -> dict[str, Any]:
    """The inductor settings of the inductor back end (``cnnzoo bench --compile`` gives them to everyone)."""
    # Freezing turns the weights into constants: inductor can fold and pre-pack them (oneDNN on the CPU).
    options: dict[str, Any] = {"freezing": True}
    if torch.device(device).type == "cuda":
        options["triton.cudagraphs"] = True  # static shapes at inference: replay the whole launch sequence
    return options


def _int8_model(
    model: nn.Module, backend: str, device: torch.device | str | None, calibration: Any, fold: bool | None
) -> InferenceModel:
    """optimize_for_inference(precision="int8"): the folded model, quantized and opened in ONNX Runtime."""
    import tempfile
    from pathlib import Path

    from . import quantize  # floor 10 beside this module; quantize does not import fast, so nothing cycles

    if backend not in ("auto", "onnxruntime"):
        raise ValueError(f"precision='int8' runs on the onnxruntime back end (or auto), not {backend}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"precision='int8' runs on the CPU (ONNX Runtime's INT8 kernels), not {device}")
    if calibration is None:
        raise ValueError(
            "precision='int8' needs calibration=: a float tensor (N, C, H, W) of a few hundred images normalised as "
            "the model expects (e.g. cnnzoo.quantize.calibration_batch(RUN_DIR)), to set the activation ranges"
        )
    folded = fold_batchnorm(model) if fold is not False else copy.deepcopy(model).eval()
    folded.requires_grad_(False).to("cpu", torch.float32)
    fast = InferenceModel(folded, backend="onnxruntime", dtype=torch.float32, channels_last=False)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-int8-") as tmp:
        report = quantize.quantize_model(folded, Path(tmp) / "int8.onnx", calibration, dynamic_batch=True)
        session = quantize.inference_session(report.path)  # ORT holds the model in memory: the file can go
    fast._sessions[tuple(session.get_inputs()[0].shape[1:])] = session  # (C, H, W): the batch is left free
    fast.precision, fast.quantize_report = INT8, report
    return fast
