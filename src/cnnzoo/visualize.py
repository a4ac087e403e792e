"""Pictures of a network at work: its first-layer filters, its feature maps, its activation statistics.

:func:`visualize` runs one image through a model and writes four PNGs:

* ``input.png``: the image as the model sees it (resized, centre-cropped, channels as the model wants);
* ``filters.png``: the filters of the first convolution, one tile each (RGB where they read RGB);
* ``feature_maps.png``: the seed's "feature map": for each stage, the channels of the stage's output
  with the most structure (largest spatial spread), each scaled to its own range;
* ``activation_stats.png``: mean, standard deviation and fraction of zeros of every layer's output,
  the quick check for dead ReLUs or activations that blow up.

A *stage* ends at a tensor that every path from the input to the output goes through (the output of
a whole Inception or residual block, never a single branch), the last such tensor at each
resolution: ``layer1`` ... ``layer4`` of a ResNet, ``mixed2``, ``mixed7``, ``mixed10`` of Inception v3,
the ReLU before each pool of VGG. Found from the layer graph of :func:`cnnzoo.trace.trace`, so any
model works without a table of its stages.

A model given by name is built with its initial (random) weights: the filters then show noise and the
feature maps what random filters make of the image. For trained weights, give a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CnnzooError, InputShapeError, UnknownModelError
from .factory import create_model, load_model
from .fileio import safe_output
from .layers import SamePad2d
from .options import DEFAULT_MAX_PIXELS
from .registry import IMAGENET_MEAN, IMAGENET_STD, list_models
from .trace import Node, Trace, default_input_size, model_channels, trace

__all__ = ["Pictures", "visualize", "stages", "load_image"]

DPI = 100
FILTERS_INCHES = (8.0, 8.0)
STATS_INCHES = (10.0, 6.0)
INPUT_INCHES = (4.0, 4.0)
MAPS_WIDTH, MAPS_ROW, MAPS_TITLE = 12.0, 1.5, 0.5  # feature_maps.png: width, height per stage, title band
TILE = 64  # pixels per feature-map tile


@dataclass
class Pictures:
    """What :func:`visualize` wrote: the PNG paths and the stages whose feature maps are shown."""

    input: Path
    filters: Path
    feature_maps: Path
    activation_stats: Path
    stages: list[str]
    first_conv: str

    @property
    def paths(self) -> list[Path]:
        return [self.input, self.filters, self.feature_maps, self.activation_stats]


# --- stages --------------------------------------------------------------------------------------------


def _is_padding(node: Node) -> bool:
    padding = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, SamePad2d)
    return isinstance(node.module, padding) or node.op == "pad"


def stages(t: Trace) -> list[Node]:
    """The stage outputs of a traced model: the last cut tensor at each resolution (see the module docstring).

    A node is a *cut* when no edge of the graph jumps over it in execution order, i.e. every path from
    the input to the output passes through it. Only nodes the output depends on count (not the
    auxiliary heads), and maps of at least 2x2 (padding layers are not stages).
    """
    if t.output is None:
        return []
    needed, todo = set(), [t.output]
    while todo:
        i = todo.pop()
        if i not in needed:
            needed.add(i)
            todo.extend(t.nodes[i].inputs)
    order = sorted(needed)
    position = {i: p for p, i in enumerate(order)}
    jumped_over = [0] * (len(order) + 1)  # difference array: +1 where an edge starts jumping, -1 where it lands
    for i in order:
        for j in t.nodes[i].inputs:
            jumped_over[position[j] + 1] += 1
            jumped_over[position[i]] -= 1
    last_at: dict[tuple[int, int], Node] = {}
    covered = 0
    for p, i in enumerate(order):
        covered += jumped_over[p]
        node = t.nodes[i]
        shape = node.out_shape
        if covered == 0 and node.kind != "input" and len(shape) == 4 and min(shape[-2:]) >= 2 and not _is_padding(node):
            last_at[(shape[-2], shape[-1])] = node
    return sorted(last_at.values(), key=lambda n: n.index)


# --- input ---------------------------------------------------------------------------------------------


def load_image(path: str | Path, model: nn.Module, size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """An image file as a (1, C, size, size) batch normalised for ``model``.

    Resized so the shorter side is ``size``, centre-cropped to a square; grayscale for one-channel
    models; RGB, or BGR where the model's ``info.channel_order`` says so; normalised with the model's
    ``info.mean`` / ``info.std`` (ImageNet's for modules without them). A file whose header promises more
    than ``max_pixels`` pixels is refused unread (None: no limit).
    """
    from torchvision.transforms.v2 import functional as TF

    from .data.images import ImageReadError, read_image  # the one image reader: see cnnzoo.data.images

    channels = model_channels(model)
    if channels not in (1, 3):
        raise InputShapeError(
            f"{_name(model)} takes {channels} input channels; only 1- and 3-channel models can be shown an image"
        )
    try:
        pixels = read_image(path, channels=channels, max_pixels=max_pixels)
    except ImageReadError as e:
        if e.reason == "no such file":
            raise CnnzooError(f"image file {str(path)!r} not found") from None
        raise CnnzooError(f"cannot read {str(path)!r} as an image: {e.reason}") from None
    x = TF.center_crop(TF.resize(pixels, [size], antialias=True), [size, size]).float() / 255
    mean, std, bgr = _normalisation(model, channels)
    return TF.normalize(x.flip(0) if bgr else x, mean, std).unsqueeze(0)


def _normalisation(model: nn.Module, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """(mean, std, BGR?) of the model's input: its ``info``, else ImageNet's (0.5 for one channel)."""
    info = getattr(model, "info", None)
    if info is not None:
        return tuple(info.mean), tuple(info.std), info.channel_order == "BGR"
    return (IMAGENET_MEAN, IMAGENET_STD, False) if channels == 3 else ((0.5,), (0.5,), False)


def _name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def _resolve(target: nn.Module | str | Path, **options: Any) -> nn.Module:
    """A module; a zoo name; or a checkpoint file or run folder (:func:`cnnzoo.load_model`)."""
    if isinstance(target, nn.Module):
        return target
    name = str(target)
    if name in list_models() or not Path(name).exists():
        try:
            return create_model(name, **options)
        except UnknownModelError as e:
            raise UnknownModelError(f"{e} Nor is there a checkpoint file or run folder of that name.") from None
    return load_model(name, **options)


# --- drawing -------------------------------------------------------------------------------------------


def _scaled(a: np.ndarray) -> np.ndarray:
    """Each picture to [0, 1] over its own range (a constant one to mid-grey)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full_like(a, 0.5) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


def _mosaic(tiles: list[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Equal-sized (h, w[, 3]) tiles on a grid; the gaps are white (NaN in one-channel mosaics,
    which the colour map draws white)."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    shape = (rows * (h + gap) + gap, columns * (w + gap) + gap) + tiles[0].shape[2:]
    canvas = np.full(shape, 1.0 if len(shape) == 3 else np.nan, dtype=np.float32)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        canvas[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = tile
    return canvas


def _upscale(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour enlargement to about ``size`` pixels, so one input value stays one block."""
    k = max(1, size // max(a.shape[:2]))
    return np.kron(a, np.ones((k, k) + (1,) * (a.ndim - 2), dtype=a.dtype))


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="white")


def _figure(inches: tuple[float, float]):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    return Figure(figsize=inches, dpi=DPI)


def _draw_input(x: Tensor, model: nn.Module, path: Path) -> None:
    channels = x.shape[1]
    mean, std, bgr = _normalisation(model, channels)
    image = (x[0].cpu() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)
    if bgr:
        image = image.flip(0)
    fig = _figure(INPUT_INCHES)
    ax = fig.add_subplot()
    if channels == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_title(f"input {channels}x{x.shape[2]}x{x.shape[3]}", fontsize=10)
    ax.axis("off")
    fig.savefig(path)


def _draw_filters(conv: nn.Conv2d, name: str, model: nn.Module, path: Path) -> None:
    w = conv.weight.detach().float().cpu()
    if w.shape[1] == 3:
        w = w.flip(1) if _normalisation(model, 3)[2] else w  # filters of a BGR model, shown as RGB
        tiles = [_scaled(f.permute(1, 2, 0).numpy()) for f in w]
        how = "RGB"
    else:
        tiles = [_scaled(f.mean(0).numpy()) for f in w]  # one input channel, or the mean over many
        how = "gray" if w.shape[1] == 1 else f"mean over {w.shape[1]} input channels"
    tiles = [_upscale(t, 24) for t in tiles]
    columns = math.ceil(math.sqrt(len(tiles)))
    fig = _figure(FILTERS_INCHES)
    ax = fig.add_subplot()
    mosaic = _mosaic(tiles, columns)
    ax.imshow(mosaic, cmap=None if mosaic.ndim == 3 else _colormap("gray"), interpolation="nearest")
    kh, kw = conv.kernel_size
    ax.set_title(
        f"{_name(model)} {name}: {w.shape[0]} filters {kh}x{kw} ({how}, each scaled to its range)", fontsize=10
    )
    ax.axis("off")
    fig.savefig(path)


def _draw_feature_maps(maps: list[tuple[Node, Tensor]], channels: int, model: nn.Module, path: Path) -> None:
    fig = _figure((MAPS_WIDTH, MAPS_ROW * len(maps) + MAPS_TITLE))
    fig.suptitle(
        f"{_name(model)}: feature maps after each stage ({channels} channels with the largest spread each)", fontsize=10
    )
    for row, (node, fmap) in enumerate(maps):
        spread = fmap.flatten(1).std(dim=1)
        chosen = spread.argsort(descending=True)[:channels].sort().values
        tiles = [_upscale(_scaled(fmap[c].numpy()), TILE) for c in chosen.tolist()]
        size = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, size - t.shape[0]), (0, size - t.shape[1])), constant_values=np.nan) for t in tiles]
        ax = fig.add_subplot(len(maps), 1, row + 1)
        ax.imshow(_mosaic(tiles, len(tiles)), cmap=_colormap("viridis"), interpolation="nearest")
        c, h, w = node.out_shape[1:]
        ax.set_ylabel(f"{node.name}\n{c}x{h}x{w}", rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(
        left=0.22, right=0.98, top=1 - MAPS_TITLE / (MAPS_ROW * len(maps) + MAPS_TITLE), bottom=0.02, hspace=0.15
    )
    fig.savefig(path)


def _draw_stats(
    stats: dict[int, tuple[float, float, float]], stage_nodes: list[Node], model: nn.Module, path: Path
) -> None:
    index = sorted(stats)
    mean = np.array([stats[i][0] for i in index])
    std = np.array([stats[i][1] for i in index])
    zeros = np.array([stats[i][2] for i in index])
    fig = _figure(STATS_INCHES)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(index, mean, label="mean", lw=1)
    top.plot(index, std, label="standard deviation", lw=1)
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        f"{_name(model)}: statistics of every layer's output, {len(index)} layers in execution order", fontsize=10
    )
    bottom.plot(index, zeros, color="tab:red", lw=1)
    bottom.set_ylabel("fraction of zeros")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("layer (execution order); dotted lines: stage outputs")
    for node in stage_nodes:
        for ax in (top, bottom):
            ax.axvline(node.index, color="grey", ls=":", lw=0.8)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.09, hspace=0.08)
    fig.savefig(path)


# --- the entry point ---------------------------------------------------------------------------------


def visualize(
    model_or_name: nn.Module | str | Path,
    image: str | Path,
    out_dir: str | Path,
    *,
    size: int | None = None,
    channels: int = 8,
    force: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **options: Any,
) -> Pictures:
    """Write ``input.png``, ``filters.png``, ``feature_maps.png`` and ``activation_stats.png`` to ``out_dir``.

    ``model_or_name``: a zoo name (built with ``options``, e.g. ``weights=`` for trained ones), a
    checkpoint file or run folder (``cnnzoo.load_model``) or an ``nn.Module``.
    ``image``: an image file. ``size``: the square input side (default: the model's native size).
    ``channels``: feature maps shown per stage. ``out_dir`` and the four files are checked before any work
    (:func:`cnnzoo.fileio.safe_output`): PNGs already there are replaced only with ``force``.
    ``max_pixels``: as :func:`load_image` takes it.
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    out_dir = safe_output(out_dir, kind="folder")
    for picture in ("input.png", "filters.png", "feature_maps.png", "activation_stats.png"):
        safe_output(Path(out_dir) / picture, force=force, kind="png")
    model = _resolve(model_or_name, **options)
    native = default_input_size(model)
    size = size if size is not None else (native[1] if native else 224)
    least = getattr(model, "min_size", 1)
    if not isinstance(size, int) or size < least:
        raise InputShapeError(f"{_name(model)} needs an input of at least {least}x{least} pixels; got size={size!r}")
    x = load_image(image, model, size, max_pixels=max_pixels)
    # Shapes first (meta, instant) to find the first convolution and the stages; then the image,
    # keeping only the stages' outputs (and a few numbers of every layer's).
    shapes = trace(model, tuple(x.shape[1:]))
    first = next((n for n in shapes.nodes if isinstance(n.module, nn.Conv2d)), None)
    if first is None:
        raise CnnzooError(f"{_name(model)} has no Conv2d layer: there are no filters to show")
    stage_nodes = stages(shapes)
    wanted = {n.index for n in stage_nodes}
    stats: dict[int, tuple[float, float, float]] = {}
    maps: dict[int, Tensor] = {}

    def keep(node: Node, out: Tensor) -> None:
        values = out.detach().float()
        spread = values.std().item() if values.numel() > 1 else 0.0
        stats[node.index] = (values.mean().item(), spread, (values == 0).float().mean().item())
        if node.index in wanted:
            maps[node.index] = values[0].cpu().clone()

    trace(model, tuple(x.shape[1:]), image=x.to(first.module.weight.device), on_output=keep)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pictures = Pictures(
        input=out / "input.png",
        filters=out / "filters.png",
        feature_maps=out / "feature_maps.png",
        activation_stats=out / "activation_stats.png",
        stages=[n.name for n in stage_nodes],
        first_conv=first.name,
    )
    _draw_input(x, model, pictures.input)
    _draw_filters(first.module, first.name, model, pictures.filters)
    _draw_feature_maps([(n, maps[n.index]) for n in stage_nodes], channels, model, pictures.feature_maps)
    _draw_stats(stats, stage_nodes, model, pictures.activation_stats)
    return pictures
