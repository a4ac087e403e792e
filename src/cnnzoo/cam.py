"""Class activation maps: where in the image a network found its evidence for a class.

Every method here weighs the feature maps ``A_k`` (channel k, at the layer's resolution h x w) of one
convolutional layer and sums them; only the weights differ. ``Y_c`` is the class's score before
the softmax and ``G_k = dY_c / dA_k``:

* **Grad-CAM** (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization"): ``w_k = mean_ij G_kij``, map ``ReLU(sum_k w_k A_k)``. On a network
  ending in global average pooling + linear, ``w_k`` is the linear weight over h*w, so the map is
  Zhou et al. 2016's class activation map.
* **Grad-CAM++** (Chattopadhay et al. 2018): per-pixel weights ``alpha = G^2 / (2 G^2 + sum_ij(A) G^3)``
  from the paper's closed form for an exponential score (higher derivatives of ``exp(Y_c)`` are powers
  of the first), then ``w_k = sum_ij alpha_kij ReLU(G_kij)``; as pytorch-grad-cam computes it
  (eps = 1e-6 in the denominator, alpha = 0 where the gradient is 0).
* **LayerCAM** (Jiang et al. 2021): no channel weights, each position weighted by its own positive
  gradient: ``ReLU(sum_k ReLU(G_k) * A_k)``.
* **Score-CAM** (Wang et al. 2020): no gradients. Each ``A_k``, upsampled to the input and min-max
  scaled to [0, 1], masks the input; the softmax probability of the class on the masked image is
  ``w_k`` (the authors' code, without the paper's optional baseline subtraction). Channels whose map is
  flat mask nothing useful and get weight 0, as in the authors' code. One forward per channel, batched.

The map is then upsampled bilinearly to the input size (bilinear interpolation is linear, so this
equals summing upsampled maps) and min-max normalised per image.

The layer, unless named, is found for any model by one probing forward pass (:func:`default_layer`).
The model is put in eval mode for the call and left as it was: training flags restored, hooks
removed, ``requires_grad`` untouched, no ``.grad`` written (gradients are taken with
``torch.autograd.grad`` with respect to the layer's output only; the forward pass runs without a
graph up to that layer, so backward costs only the layers above it).
"""

from __future__ import annotations

import difflib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CnnzooError, InputShapeError
from .fileio import atomic_write
from .options import SHARED

__all__ = [
    "METHODS", "CamResult", "LayerOutput", "cam", "default_layer", "list_layers", "overlay_png", "save_overlay",
    "to_json",
]  # fmt: skip

METHODS = SHARED["cam_method"].allowed.choices  # declared with --method, which the CLI reads without torch
_GRADCAM_PP_EPS = 1e-6  # pytorch-grad-cam's, keeps alpha finite where the gradients vanish


@dataclass(frozen=True)
class CamResult:
    """One image's class activation map and the prediction it explains."""

    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the input's resolution
    layer_map: np.ndarray  # (h, w) float32 >= 0: the ReLU'd map at the layer's resolution, before upsampling
    target: int  # the class the map explains
    target_prob: float  # its softmax probability
    topk: tuple[tuple[int, float], ...]  # (class, probability), most probable first
    layer: str
    method: str
    peak: tuple[int, int] | None  # (y, x) of the heatmap's maximum in input pixels; None for an all-zero map


class LayerOutput(NamedTuple):
    """A layer a map can be taken at: its module name, output shape for the probe input, whether it is the default."""

    name: str
    shape: tuple[int, ...]
    default: bool


# --- which layer ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    name: str
    module: nn.Module
    shape: tuple[int, ...]


def _spatial(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[2] * shape[3] > 1


def _is_feature_leaf(module: nn.Module) -> bool:
    """A leaf that computes features. Pooling, padding, dropout, flattening and identities only move
    or shrink them; class names are checked too, since models bring their own (``GlobalAvgPool2d``,
    ``SamePad2d``)."""
    if next(module.children(), None) is not None:
        return False
    if isinstance(module, (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)):
        return False
    return not any(word in type(module).__name__ for word in ("Pool", "Pad", "Dropout"))


def _probe(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    """Every module call of one forward pass, in the order the calls finish (a container after its children)."""
    calls: list[_Call] = []

    def recorder(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                calls.append(_Call(name, module, tuple(output.shape)))

        return record

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def _climb(calls: list[_Call], i: int) -> str:
    """From call ``i`` up through its enclosing modules while they output a map of the same height and
    width: ``layer4.2.relu`` -> ``layer4``, ``inception5b.branch4.1.act`` -> ``inception5b``, but not
    from VGG's last ReLU to ``features``, whose trailing max-pool halves the map."""
    hw = calls[i].shape[2:]
    parts = calls[i].name.split(".")
    best = calls[i].name
    for depth in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:depth])
        call = next((c for c in calls[i + 1 :] if c.name == parent), None)
        if call is None or len(call.shape) != 4 or call.shape[2:] != hw:
            break
        best = parent
    return best


def _choose(calls: list[_Call], what: str) -> str:
    """The last feature map before the head: the output of the last feature leaf, lifted to the outermost
    block that ends there. When that map is 1x1 (a small input), the last block-level map wider than
    1x1 instead: the top-most modules first (``Mixed_6e`` of Inception v3 at 75x75)."""
    leaves = [i for i, c in enumerate(calls) if len(c.shape) == 4 and _is_feature_leaf(c.module)]
    if not leaves:
        raise CnnzooError(
            f"no layer of {what} outputs a 4-D (N, C, H, W) feature map; a class activation map needs one"
        )
    if _spatial(calls[leaves[-1]].shape):
        return _climb(calls, leaves[-1])
    wide = [c for c in calls if _spatial(c.shape) and (_is_feature_leaf(c.module) or next(c.module.children(), None))]
    if not wide:
        return _climb(calls, leaves[-1])  # every map is 1x1: the map is flat, but it is still the right layer
    top = min(c.name.count(".") for c in wide)
    return [c.name for c in wide if c.name.count(".") == top][-1]


def _example_input(model: nn.Module, input_size: Sequence[int] | None) -> torch.Tensor:
    """A zero batch of one for probing: ``input_size`` (C, H, W), else the zoo model's native size."""
    if input_size is None:
        info = getattr(model, "info", None)
        if info is not None:
            input_size = info.input_size
        elif hasattr(model, "in_chans") and hasattr(model, "native_size"):
            input_size = (model.in_chans, model.native_size, model.native_size)
        else:
            raise CnnzooError(
                f"cannot tell the input size of {type(model).__name__}: pass input_size=(C, H, W) or example images"
            )
    if len(input_size) != 3 or not all(isinstance(s, int) and s > 0 for s in input_size):
        raise InputShapeError(f"input_size must be (C, H, W) of positive integers, got {tuple(input_size)!r}")
    device, dtype = _device_dtype(model)
    return torch.zeros((1, *input_size), device=device, dtype=dtype)


def default_layer(
    model: nn.Module, images: torch.Tensor | np.ndarray | None = None, *, input_size: Sequence[int] | None = None
) -> str:
    """The layer :func:`cam` uses when none is named, for these images (or a zero image of ``input_size``).

    It depends on the input size only where the last map shrinks to 1x1 (see :func:`_choose`)."""
    x = _example_input(model, input_size) if images is None else _as_batch(images, model)[:1]
    with _inspecting(model):
        return _choose(_probe(model, x), _model_name(model))


def list_layers(
    model: nn.Module, images: torch.Tensor | np.ndarray | None = None, *, input_size: Sequence[int] | None = None
) -> list[LayerOutput]:
    """Every module whose output is a 4-D feature map (where a map can be taken), in execution order,
    with its output shape for one image and the default marked; for ``cnnzoo cam --list-layers``.

    A module called several times in one forward (torchvision's shared ``relu`` in a residual block)
    is listed once, with the shape of its last call, which is the one :func:`cam` uses."""
    x = _example_input(model, input_size) if images is None else _as_batch(images, model)[:1]
    with _inspecting(model):
        calls = _probe(model, x)
        default = _choose(calls, _model_name(model))
    last = {c.name: c.shape for c in calls}  # dict keeps the first call's place, takes the last call's shape
    return [LayerOutput(n, s, n == default) for n, s in last.items() if len(s) == 4]


def _resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return modules[layer]
    close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise CnnzooError(
        f"layer {layer!r}: {_model_name(model)} has no module of that name.{hint} "
        f"List the layers a map can be taken at with cnnzoo.cam.list_layers (cnnzoo cam --list-layers)."
    )


# --- the model, left as it was ---------------------------------------------------------------------------


@contextmanager
def _inspecting(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (dropout off, BatchNorm statistics frozen, aux heads skipped), then every
    module's own training flag back: ``model.train(flag)`` would set one flag on all of them."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def _as_batch(images: torch.Tensor | np.ndarray, model: nn.Module) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] == 0:
        raise InputShapeError(
            f"images must be a (N, C, H, W) batch or one (C, H, W) image, normalised as the model expects; "
            f"got shape {tuple(x.shape)}"
        )
    device, dtype = _device_dtype(model)
    return x.to(device=device, dtype=dtype)


def _logits(output: Any, what: str) -> torch.Tensor:
    """The class scores of a forward pass; a tuple's first element (torchvision's ``(logits, aux)``)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise CnnzooError(
            f"{what} must return (N, classes) class scores for a class activation map; it returned {shape}"
        )
    return output


class _Capture:
    """A forward hook on the target layer that keeps its output.

    With ``gradients`` it cuts the graph there: the output is replaced by a leaf that requires grad
    (the model's own parameters are not asked for gradients), grad mode is switched on for the layers
    above (the pass runs under ``no_grad`` up to here, so nothing below the layer is recorded), and
    the layers above get a copy, so that an in-place op there (``ReLU(inplace=True)``) cannot touch
    the kept activation. A module called several times keeps its last call."""

    def __init__(self, name: str, gradients: bool) -> None:
        self.name, self.gradients = name, gradients
        self.activation: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise CnnzooError(
                f"layer {self.name!r} outputs {shape}; a class activation map needs a 4-D (N, C, H, W) feature map: "
                f"pick one from cnnzoo.cam.list_layers (cnnzoo cam --list-layers)"
            )
        if not self.gradients:
            self.activation = output.detach().clone()
            return None
        self.activation = output.detach().requires_grad_(True)
        torch.set_grad_enabled(True)  # the enclosing no_grad() restores the caller's mode on exit
        return self.activation.clone()


def _forward(model: nn.Module, x: torch.Tensor, layer: nn.Module, capture: _Capture) -> torch.Tensor:
    handle = layer.register_forward_hook(capture)
    try:
        with torch.no_grad():
            logits = _logits(model(x), _model_name(model))
    finally:
        handle.remove()
    if capture.activation is None:
        raise CnnzooError(
            f"layer {capture.name!r} was not run by {_model_name(model)}'s forward pass in eval mode; pick another"
        )
    return logits


# --- the methods -----------------------------------------------------------------------------------------


def _gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g.mean((2, 3), keepdim=True) * a).sum(1)


def _gradcam_pp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + _GRADCAM_PP_EPS)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return ((g.clamp(min=0) * alpha).sum((2, 3), keepdim=True) * a).sum(1)


def _layercam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g.clamp(min=0) * a).sum(1)


_GRADIENT_METHODS = {"gradcam": _gradcam, "gradcam++": _gradcam_pp, "layercam": _layercam}


def _gradient_maps(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, name: str, method: str, wanted: list[int] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward for the batch: (layer maps (N, h, w), logits, targets)."""
    capture = _Capture(name, gradients=True)
    logits = _forward(model, x, layer, capture)
    targets = _targets(wanted, logits)
    with torch.enable_grad():  # the caller may be under no_grad: the score must still join the graph
        score = logits.gather(1, targets[:, None]).sum()  # images are independent in eval mode: one backward for all
        (grads,) = torch.autograd.grad(score, capture.activation, allow_unused=True) if score.requires_grad else (None,)
    if grads is None:
        raise CnnzooError(
            f"the class scores of {_model_name(model)} do not depend on layer {name!r}; "
            f"pick a layer on the path to the output"
        )
    return _GRADIENT_METHODS[method](capture.activation.detach(), grads), logits.detach(), targets


@torch.no_grad()
def _score_maps(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, name: str, wanted: list[int] | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score-CAM: one masked forward per channel, ``batch_size`` masked images per pass."""
    capture = _Capture(name, gradients=False)
    logits = _forward(model, x, layer, capture)
    targets = _targets(wanted, logits)
    acts = capture.activation
    weights = torch.zeros(acts.shape[:2], dtype=acts.dtype, device=acts.device)
    for b in range(x.shape[0]):
        varied = acts[b].amax((1, 2)) > acts[b].amin((1, 2))
        for chunk in torch.nonzero(varied).flatten().split(batch_size):
            up = F.interpolate(acts[b : b + 1, chunk], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
            lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
            masks = (up - lo) / (hi - lo).clamp(min=torch.finfo(up.dtype).tiny)
            masked = x[b : b + 1] * masks[:, None]  # (channels, C, H, W)
            probs = _logits(model(masked), _model_name(model)).float().softmax(1)
            weights[b, chunk] = probs[:, targets[b]].to(weights.dtype)
    return (weights[:, :, None, None] * acts).sum(1), logits, targets


def _wanted(target: Any, n: int) -> list[int] | None:
    """The class asked for per image (None: each image's prediction): one class for all, or one each."""
    if target is None:
        return None
    if isinstance(target, (torch.Tensor, np.ndarray)):
        target = target.tolist()
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return [int(target)] * n
    if not isinstance(target, Sequence) or isinstance(target, str):
        raise CnnzooError(
            f"target: {target!r} is not a class index; give an int, one int per image, or None for the predicted class"
        )
    if len(target) != n:
        raise CnnzooError(
            f"target: {len(target)} classes given for {n} images; "
            f"give one class, one per image, or None for the predicted one"
        )
    return list(target)


def _targets(wanted: list[int] | None, logits: torch.Tensor) -> torch.Tensor:
    """The class per image of this batch, checked against the model's classes; the top-1 where none is asked."""
    if wanted is None:
        return logits.argmax(1)
    classes = logits.shape[1]
    for t in wanted:
        if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or not 0 <= t < classes:
            raise CnnzooError(f"target: class {t!r} is not one of the model's classes 0..{classes - 1}")
    return torch.tensor([int(t) for t in wanted], device=logits.device)


# --- the call --------------------------------------------------------------------------------------------


def _normalised(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU'd layer maps (N, h, w) to (N, H, W) in [0, 1]: bilinear upsampling, then min-max per image.
    An all-zero map stays zero; a flat positive one (a 1x1 layer) becomes all ones."""
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    flat = (hi - lo) <= 0
    scaled = (up - lo) / torch.where(flat, torch.ones_like(hi), hi - lo)
    return torch.where(flat, (hi > 0).to(up.dtype).expand_as(up), scaled)


def _check_options(method: str, topk: int, batch_size: int) -> None:
    if method not in METHODS:
        raise CnnzooError(f"method {method!r} is not one of {', '.join(METHODS)}")
    for what, value in (("topk", topk), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CnnzooError(f"{what} must be a positive integer, got {value!r}")


def cam(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: int | Sequence[int] | None = None,
    topk: int = 1,
    batch_size: int = 16,
) -> list[CamResult]:
    """Class activation maps of ``images`` (N, C, H, W) or (C, H, W), normalised as the model expects.

    ``method``: one of :data:`METHODS`. ``layer``: a module name (``model.named_modules()``), default
    :func:`default_layer`. ``target``: the class to explain, one for all images or one per image;
    None explains each image's top-1 prediction. ``topk``: how many (class, probability) pairs each
    result carries. ``batch_size``: images per forward/backward pass; for Score-CAM, masked images
    per forward pass (it runs one per channel of the layer and image).
    """
    _check_options(method, topk, batch_size)
    x = _as_batch(images, model)
    results: list[CamResult] = []
    with _inspecting(model):
        name = layer if layer is not None else _choose(_probe(model, x[:1]), _model_name(model))
        module = _resolve_layer(model, name)
        wanted = _wanted(target, x.shape[0])
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size]
            chunk_target = None if wanted is None else wanted[start : start + batch_size]
            if method == "scorecam":
                maps, logits, targets = _score_maps(model, batch, module, name, chunk_target, batch_size)
            else:
                maps, logits, targets = _gradient_maps(model, batch, module, name, method, chunk_target)
            results += _results(maps.float().clamp(min=0), logits, targets, name, method, topk, tuple(x.shape[-2:]))
    return results


def _results(
    maps: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    layer: str,
    method: str,
    topk: int,
    size: tuple[int, int],
) -> list[CamResult]:
    heat = _normalised(maps, size).cpu().numpy().astype(np.float32)
    probs = logits.float().softmax(1).cpu()
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    out = []
    for i, t in enumerate(targets.tolist()):
        peak = None if heat[i].max() <= 0 else tuple(int(v) for v in np.unravel_index(heat[i].argmax(), heat[i].shape))
        out.append(
            CamResult(
                heatmap=heat[i],
                layer_map=maps[i].cpu().numpy().astype(np.float32),
                target=t,
                target_prob=float(probs[i, t]),
                topk=tuple(zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True)),
                layer=layer,
                method=method,
                peak=peak,
            )
        )
    return out


# --- output ----------------------------------------------------------------------------------------------


def _class_name(k: int, class_names: Sequence[str] | None) -> str | None:
    if class_names is None:
        return None
    if not 0 <= k < len(class_names):
        raise CnnzooError(
            f"class_names: {len(class_names)} names given, but the map is for class {k}; give one name per class"
        )
    return str(class_names[k])


def to_json(result: CamResult, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A JSON-ready dict: method, layer and its map size, input size, the target and top-k classes
    (index, name or None, probability), and the peak ``{"y", "x"}`` in input pixels (None for a zero map)."""

    def cls(k: int, p: float) -> dict[str, Any]:
        return {"class": k, "name": _class_name(k, class_names), "prob": p}

    return {
        "method": result.method,
        "layer": result.layer,
        "layer_size": list(result.layer_map.shape),
        "input_size": list(result.heatmap.shape),
        "target": cls(result.target, result.target_prob),
        "topk": [cls(k, p) for k, p in result.topk],
        "peak": None if result.peak is None else {"y": result.peak[0], "x": result.peak[1]},
    }


def _display_image(image: Any, size: tuple[int, int]) -> np.ndarray:
    """The picture as (H, W) or (H, W, 3) floats in [0, 1] for drawing.

    Tensors are (C, H, W), arrays (H, W, C) unless their first axis has 1 or 3 channels and the last
    does not; PIL images are converted. uint8 is divided by 255; floats outside [0, 1] (a normalised
    tensor) are min-max scaled, which keeps the shapes but not the true colours."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    is_tensor = isinstance(image, torch.Tensor)
    a = image.detach().cpu().float().numpy() if is_tensor else np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and (is_tensor or (a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4))):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[-1] >= 3 else a.mean(-1)
    if a.ndim not in (2, 3) or a.shape[:2] != size:
        raise InputShapeError(
            f"image: shape {tuple(np.shape(image))} does not match the {size[0]}x{size[1]} map; "
            f"pass the image the model saw"
        )
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if a.min() < 0 or a.max() > 1:
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a


def save_overlay(
    image: Any,
    result: CamResult,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> tuple[Path, Path]:
    """Write a PNG of the image next to the heatmap laid over it (``colormap`` at ``alpha``, the peak
    marked), titled with the class and its probability; and the heatmap itself as ``.npy`` beside it.

    ``image`` is the picture the model saw (see :func:`_display_image` for the layouts taken); for true
    colours pass it before normalisation. Returns (png path, npy path)."""
    png = Path(path)
    npy = png.with_suffix(".npy")
    if png == npy:
        raise CnnzooError(f"{png}: the overlay is a PNG; give a path ending in .png")
    picture = _display_image(image, result.heatmap.shape)
    fig = _overlay_figure(picture, result, class_names, alpha, colormap)
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))

    def write_npy(tmp: str) -> None:
        with open(tmp, "wb") as f:  # np.save on a name would append .npy to the temporary name
            np.save(f, result.heatmap)

    atomic_write(npy, write_npy)
    return png, npy


def overlay_png(
    image: Any,
    result: CamResult,
    class_names: Sequence[str] | None = None,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> bytes:
    """The picture :func:`save_overlay` writes, as PNG bytes: for a page that carries its pictures inline
    (``cnnzoo report``), where a file per image would be one more thing to lose."""
    buffer = io.BytesIO()
    fig = _overlay_figure(_display_image(image, result.heatmap.shape), result, class_names, alpha, colormap)
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _overlay_figure(
    picture: np.ndarray, result: CamResult, class_names: Sequence[str] | None, alpha: float, colormap: str
):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    label = _class_name(result.target, class_names) or f"class {result.target}"
    fig = Figure(figsize=(8, 4.4), dpi=100)
    grey = {"cmap": "gray", "vmin": 0, "vmax": 1} if picture.ndim == 2 else {}
    for k, title in enumerate(("input", f"{result.method} at {result.layer}")):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(picture, interpolation="nearest", **grey)
        if k == 1:
            ax.imshow(result.heatmap, cmap=colormap, alpha=alpha, vmin=0, vmax=1, interpolation="nearest")
            if result.peak is not None:
                ax.plot(result.peak[1], result.peak[0], marker="x", color="white", markersize=10, markeredgewidth=2)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{label}: {result.target_prob:.1%}", fontsize=12)
    return fig
