"""Export zoo models for serving: ONNX, checked against PyTorch with onnxruntime, and TorchScript.

Models are exported in eval mode, where GoogLeNet and Inception v3 return their logits alone (their
auxiliary classifiers only run in training), so every export has one input, ``images`` (N, C, H, W),
and one output, ``logits`` (N, num_classes). ``dynamic_batch`` leaves N free; H and W are fixed.

After writing, the file is run on random images and compared with the PyTorch model: the export
fails unless the largest difference is at most 1e-4 (relative to the output's scale when that
exceeds 1). ONNX files are written by ``torch.onnx.export(dynamo=True)`` into one self-contained
file (every zoo model is below protobuf's 2 GB) and carry what a server needs in their
``metadata_props``, as JSON under ``cnnzoo.*`` keys: model name and arguments, class names when the
checkpoint has them, mean, std, channel order, image size. :class:`OnnxModel` reads them back.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CnnzooError, InputShapeError, OptionError
from .fileio import atomic_write, safe_output
from .options import check_option

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ExportError(CnnzooError, RuntimeError):
    """An export that failed, or whose file does not compute what the PyTorch model computes."""


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how well the file matches PyTorch."""

    path: Path
    format: str
    model: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    opset: int | None
    checked_with: str
    max_abs_diff: float
    tolerance: float
    seconds: float

    def __str__(self) -> str:
        fmt = f"ONNX opset {self.opset}" if self.format == "onnx" else "TorchScript"
        size = self.path.stat().st_size / 1e6
        shape = lambda s: "x".join(map(str, s))  # noqa: E731
        return (
            f"exported {self.model} to {self.path} ({fmt}, {size:.1f} MB): {INPUT_NAME} {shape(self.input_shape)} -> "
            f"{OUTPUT_NAME} {shape(self.output_shape)}\n"
            f"checked with {self.checked_with} against PyTorch: max abs diff {self.max_abs_diff:.1e} <= {self.tolerance:.0e}"
        )


def export_metadata(model: nn.Module, **overrides: Any) -> dict[str, Any]:
    """What the exported file should say about ``model``: name, arguments, preprocessing (``overrides`` win).

    Defaults come from the model's registry entry, then from its published weights when it was built
    with ``pretrained=`` (``model.pretrained``: the class names, the evaluation resize/crop/interpolation,
    mean, std, channel order, and the entry's name); pass ``classes``, ``mean``, ``std``, ``image_size``
    (and the rest of a :class:`~cnnzoo.pretrained.Preprocessing`) from a checkpoint's metadata.
    """
    info = getattr(model, "info", None)
    meta: dict[str, Any] = {"model": getattr(model, "model_name", type(model).__name__)}
    if info is not None:
        meta.update(
            mean=list(info.mean), std=list(info.std), channel_order=info.channel_order, image_size=info.input_size[1]
        )
    entry = getattr(model, "pretrained", None)
    if entry is not None:
        meta.update(entry.preprocessing.as_dict(), pretrained=entry.name)
        if entry.categories and entry.num_classes == getattr(model, "num_classes", None):  # not a replaced head
            meta["classes"] = list(entry.categories)
    meta.update({k: v for k, v in overrides.items() if v is not None})
    return meta


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    image_size: int | None = None,
    dynamic_batch: bool = False,
    opset: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    force: bool = False,
) -> ExportReport:
    """Export ``model`` (switched to eval mode) to ``path`` and check the file against it.

    ``image_size`` defaults to ``metadata["image_size"]``, else the model's native size. ``opset``
    defaults to the exporter's (``torch.onnx``'s newest tested opset). ``metadata`` defaults to
    :func:`export_metadata`; ONNX files store it in ``metadata_props``, TorchScript files as the extra
    file ``cnnzoo.json``. ``path`` is checked first (:func:`cnnzoo.fileio.safe_output`): an existing file is
    replaced only with ``force`` and only by the same kind of file; a folder or a device never.
    """
    if format not in FORMATS:
        raise ValueError(f"export format {format!r}: expected one of {', '.join(FORMATS)}")
    if opset is not None and format != "onnx":
        raise ValueError("--opset applies to ONNX exports only")
    check_option("image_size", image_size)
    _check_opset(opset)
    path = safe_output(path, force=force, kind=format)  # before any work: a refused path costs nothing
    start = time.perf_counter()
    model = model.eval()
    name = getattr(model, "model_name", type(model).__name__)
    meta = dict(metadata) if metadata is not None else export_metadata(model)
    size = image_size or meta.get("image_size") or getattr(model, "native_size", None)
    in_chans = getattr(model, "in_chans", None)
    if size is None or in_chans is None:
        raise ValueError(f"{name}: give image_size (and use a zoo model, which knows its input channels)")
    least = getattr(model, "min_size", 1)
    if size < least:  # torch.export would fail deep in a layer, in words that do not say why
        raise InputShapeError(
            f"{name} takes inputs of at least {least}x{least} pixels; image_size {size} is smaller (use {least} or more)"
        )
    meta["image_size"] = size
    # Batch 2 for a dynamic export: torch.export would specialise a batch of 1 to the constant 1.
    example = _images(2 if dynamic_batch else 1, in_chans, size)
    check = _images(3, in_chans, size, seed=1) if dynamic_batch else example
    path = Path(path)
    if format == "onnx":
        opset = _export_onnx(model, example, path, dynamic_batch, opset, meta)
        run, checked_with = OnnxModel(path), f"onnxruntime {_ort_version()}"
    else:
        _export_torchscript(model, example, path, meta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            run, checked_with = torch.jit.load(str(path)), "torch.jit.load"
    with torch.no_grad():
        want, got = model(check), run(check)
    diff = float((got - want).abs().max())
    tolerance = TOLERANCE * max(1.0, float(want.abs().max()))
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"{path}: the exported {name} differs from PyTorch by {diff:.2e} (max abs), more than {tolerance:.0e}"
        )
    batch: int | str = "N" if dynamic_batch else 1
    return ExportReport(
        path,
        format,
        name,
        (batch, in_chans, size, size),
        (batch, *got.shape[1:]),
        opset,
        checked_with,
        diff,
        tolerance,
        time.perf_counter() - start,
    )


def _check_opset(opset: int | None) -> None:
    """The declared range (--opset >= 18), and at most the newest opset the installed onnx knows."""
    check_option("opset", opset)
    if opset is not None:
        import onnx

        newest = onnx.defs.onnx_opset_version()
        if opset > newest:
            raise OptionError(
                "opset",
                opset,
                f"an integer >= 18 and <= {newest}, the newest the installed onnx {onnx.__version__} knows",
            )


def _images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress lines and warnings; errors still raise."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export_onnx(
    model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool, opset: int | None, meta: Mapping[str, Any]
) -> int:
    name = getattr(model, "model_name", type(model).__name__)
    try:
        with _quiet():
            program = torch.onnx.export(
                model, (x,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamic_shapes=({0: "batch"},) if dynamic_batch else None, verbose=False,
            )  # fmt: skip
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs the packages onnx and onnxscript ({e}); pip install onnx onnxscript onnxruntime"
        ) from None
    except Exception as e:
        raise ExportError(f"{name}: ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    written = program.model.opset_imports[""]
    if opset is not None and written != opset:  # the exporter keeps its own opset when it cannot convert
        raise ExportError(
            f"{name}: ONNX opset {opset} was asked for, but the exporter could only write opset {written} for this model; leave --opset out, or give {written}"
        )
    program.model.metadata_props.update({f"cnnzoo.{k}": json.dumps(v) for k, v in meta.items()})
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
    return written


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path, meta: Mapping[str, Any]) -> None:
    # Tracing records the eval-mode forward only: the aux heads and the Python input checks stay out.
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    with _quiet():
        atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files={"cnnzoo.json": json.dumps(meta)}))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix: ONNX, a protobuf, has no magic bytes)."""
    return Path(path).suffix.lower() == ".onnx"


class OnnxModel:
    """An exported ONNX file run by onnxruntime, called like the PyTorch model: images in, logits out.

    ``OnnxModel(path)(x)`` takes a float tensor (N, C, H, W), normalised as the metadata says, and
    returns the logits as a CPU tensor. The ``cnnzoo.*`` metadata is in :attr:`metadata` and the
    properties :attr:`model_name`, :attr:`classes`, :attr:`mean`, :attr:`std`, :attr:`image_size`.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("running ONNX models needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise ExportError(f"{self.path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
        outputs = [o.name for o in self.session.get_outputs()]
        if len(outputs) != 1:
            raise ExportError(
                f"{self.path}: OnnxModel runs models with one output (the logits); this one has {len(outputs)}: {', '.join(outputs)}"
            )
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {
            k.removeprefix("cnnzoo."): json.loads(v) for k, v in props.items() if k.startswith("cnnzoo.")
        }
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)

    model_name = property(lambda self: self.metadata.get("model"))
    classes = property(lambda self: self.metadata.get("classes"))
    mean = property(lambda self: self.metadata.get("mean"))
    std = property(lambda self: self.metadata.get("std"))
    image_size = property(lambda self: self.metadata.get("image_size"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        fixed = [(i, d) for i, d in enumerate(self.input_shape) if isinstance(d, int)]
        if x.dim() != len(self.input_shape) or any(shape[i] != d for i, d in fixed):
            want = "x".join(str(d) if isinstance(d, int) else "N" for d in self.input_shape)
            hint = (
                " It was exported with a fixed batch; export again with --dynamic-batch."
                if shape[1:] == tuple(self.input_shape[1:])
                else ""
            )
            raise InputShapeError(
                f"{self.path}: the ONNX model takes {self.input_name} of shape {want}, got {shape}.{hint}"
            )
        (out,) = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, model={self.model_name!r}, input={self.input_shape})"
