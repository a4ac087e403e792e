"""Use trained or published weights: evaluate them on a data split, or classify image files.

What the weights are comes in three kinds, each carrying its class names and how to feed it:

- a run folder or checkpoint written by ``cnnzoo train`` (its ``info``: classes, image size, mean, std);
- a checkpoint written by ``cnnzoo convert`` from published weights (its ``classes`` and
  ``preprocessing``: see :func:`cnnzoo.factory.convert` for when the class names are known);
- a model name with ``pretrained=True`` (or a tag, or ``MODEL.TAG``): the published entry's
  categories and evaluation transform (resize, crop, interpolation, mean, std, channel order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as datalib
from .checkpoint import read_metadata, resolve_checkpoint
from .data.batches import channel_stats, make_batches
from .data.images import DEFAULT_MAX_PIXELS
from .data.specs import relocated_spec
from .errors import WeightsError
from .factory import create_model, load_model
from .options import check_device_name, check_option, resolve_device
from .pretrained import Preprocessing, split_name
from .registry import list_models
from .train.distributed import pick_device, setup_distributed
from .train.engine import evaluate


@dataclass
class Weights:
    """A model ready to run, with what its outputs mean and how its input is made."""

    model: nn.Module
    classes: list[str] | None
    eval_crop: datalib.EvalCrop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str  # "RGB", or "BGR" (Keras' caffe-style weights)
    origin: str  # the checkpoint file, or the published entry's name
    data: str | None = None  # the data a cnnzoo run was trained on
    pretrained: Any = None  # the PretrainedEntry, for published weights
    notes: list[str] = field(default_factory=list)  # what the caller should be told (one line each)

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (or gray) images -> the normalised float batch the model takes."""
        mean, std = channel_stats(self.mean, images.shape[1]), channel_stats(self.std, images.shape[1])
        if self.channel_order == "BGR" and images.shape[1] == 3:
            images = images.flip(1)
        return datalib.normalize_batch(images, mean, std)


def open_weights(target: str, *, pretrained: bool | str = False, which: str = "best") -> Weights:
    """The weights ``target`` names: a run folder or cnnzoo checkpoint, or with ``pretrained`` a model name
    (``MODEL`` or ``MODEL.TAG``) whose published weights are fetched (cached, verified)."""
    if pretrained:
        return _published(target, pretrained)
    if _names_a_model(target):
        raise WeightsError(
            f"{target} is a model name, not a checkpoint: add --pretrained (pretrained=True) for its published "
            f"weights (cnnzoo weights list {split_name(target)[0]}), or give a run folder or .safetensors file"
        )
    weights = resolve_checkpoint(target, which)
    meta = read_metadata(weights)
    info = meta.get("info")
    model = load_model(weights)
    if info and "classes" in info:  # written by cnnzoo train (a fine-tune of published weights: with their crop)
        crop = datalib.EvalCrop(**info["eval_crop"]) if info.get("eval_crop") else datalib.EvalCrop(info["image_size"])
        order = info.get("channel_order", "RGB")
        data = relocated_spec(info["data"], info.get("data_relative"), weights.parent) if info.get("data") else None
        return Weights(model, info["classes"], crop, info["mean"], info["std"], order, str(weights), data)
    if meta.get("classes"):  # converted from published weights (cnnzoo convert)
        pre = _preprocessing(meta.get("preprocessing") or {}, model)
        return Weights(
            model, meta["classes"], datalib.EvalCrop.of(pre), pre.mean, pre.std, pre.channel_order, str(weights)
        )
    # No class names (converted from a state dict of unknown classes): outputs are shown as class indices.
    pre = _preprocessing(meta.get("preprocessing") or {}, model)
    note = (
        f"{weights} holds no class names: classes are shown as indices 0-{model.num_classes - 1} (convert with "
        "--like MODEL.TAG to name ImageNet's, see cnnzoo weights list)"
    )
    return Weights(
        model, None, datalib.EvalCrop.of(pre), pre.mean, pre.std, pre.channel_order, str(weights), notes=[note]
    )


def _published(target: str, pretrained: bool | str) -> Weights:
    tag = split_name(target)[1]
    model = create_model(target, pretrained=True if tag is not None else pretrained)
    entry, pre = model.pretrained, model.pretrained.preprocessing
    classes = list(entry.categories) if entry.categories else None
    return Weights(
        model.eval(),
        classes,
        datalib.EvalCrop.of(pre),
        pre.mean,
        pre.std,
        pre.channel_order,
        entry.name,
        pretrained=entry,
    )


def _names_a_model(target: str) -> bool:
    return not Path(target).exists() and split_name(target)[0] in list_models()


def _preprocessing(meta: dict[str, Any], model: nn.Module) -> Preprocessing:
    """A checkpoint's preprocessing; one written before the crop was recorded: torchvision's usual one."""
    if {"resize", "crop", "mean", "std"} <= set(meta):
        return Preprocessing.from_dict(meta)
    info = model.info
    size = meta.get("image_size", info.input_size[1])
    mean, std = meta.get("mean", info.mean), meta.get("std", info.std)
    return Preprocessing(
        round(size / 0.875), size, "bilinear", tuple(mean), tuple(std), meta.get("channel_order", "RGB")
    )


def evaluate_checkpoint(
    path: str,
    *,
    data: str | None = None,
    which: str = "best",
    batch_size: int = 256,
    device: str | None = None,
    workers: int = 4,
    pretrained: bool | str = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Top-1, top-5, per-class accuracy and confusion matrix of weights on a split (the test split).

    ``path``: a run folder or checkpoint, an exported ``.onnx`` file (fp32 or INT8, run by onnxruntime on the
    CPU, fed as its metadata says; the data defaults to the run's it was exported from), or with ``pretrained``
    a model name, evaluated with the
    published weights' own transform (e.g. resize 232, crop 224, bilinear for resnet50's V2) so that the
    ImageNet validation set (``folder:DIR``, either layout of :func:`~cnnzoo.data.load_eval_folder`)
    gives the published top-1. Under torchrun each process evaluates its own shard and the counts are
    summed, so every sample is counted exactly once. A folder's unreadable images (``max_pixels``: see
    :func:`predict_images`) are skipped with a warning naming each. Classes with no images in the data
    have ``per_class`` None; weights without class names are counted by index, and ``notes`` says so."""
    check_option("batch_size", batch_size)
    check_option("workers", workers)
    check_option("which", which)
    check_device_name(device)  # its spelling, before a process group is set up; pick_device checks the machine
    if _is_onnx(path):
        w, model = _onnx_for_evaluation(path, device, pretrained)
        d = setup_distributed("cpu")
        dev = torch.device("cpu")
    else:
        d = setup_distributed(device)
        dev = pick_device(device, d)
        w = open_weights(path, pretrained=pretrained, which=which)
        model = w.model.to(dev)
    spec = data or w.data
    if spec is None:
        raise WeightsError(
            f"{w.origin}: give the data to evaluate on, e.g. --data folder:/path/to/imagenet (its val/ images)"
        )
    split = datalib.load_eval_data(
        spec, channels=model.in_chans, image_size=w.eval_crop.crop, eval_crop=w.eval_crop, max_pixels=max_pixels
    )
    classes = align_labels(split, w.classes, model, spec)
    batches = make_batches(
        split, batch_size, dev, w.mean, w.std, d, train=False, workers=workers, channel_order=w.channel_order
    )
    result = evaluate(model, batches, len(classes), d)
    if not result["count"]:  # every image skipped: no accuracy, rather than a top-1 of 0% on nothing
        raise datalib.DataError(
            f"{spec}: none of its {len(split):,} images could be read (each skipped is named above); "
            "fix or remove them, or raise --max-image-pixels if they are genuine and only large"
        )
    published = w.pretrained.metrics if w.pretrained is not None else {}
    # A class with no images in the data has no accuracy (None), not 0%: its row of the confusion matrix is empty.
    counts = [sum(row) for row in result["confusion"]]
    result["per_class"] = [acc if n else None for acc, n in zip(result["per_class"], counts, strict=True)]
    return dict(
        result, model=model.model_name, checkpoint=w.origin, data=spec, classes=classes, published=published,
        notes=list(w.notes),
    )  # fmt: skip


def align_labels(split, classes: list[str] | None, model: nn.Module, spec: str) -> list[str]:
    """Make ``split``'s labels index the weights' ``classes`` (in place); the class names the result uses.

    The data's classes are the sorted folder names (or CSV synsets). The same names as the weights': by
    name, in any order, a subset allowed. Otherwise as many classes: by position, which is right for
    ImageNet's layout (synset folders ``n01440764`` ... sorted are ImageNet's class order; the weights
    call them "tench" ...). Anything else is an error naming both.
    """
    theirs = list(split.classes)
    outputs = getattr(model, "num_classes", None) or (len(classes) if classes else len(theirs))
    classes = list(classes) if classes else [str(i) for i in range(outputs)]
    index = {name: i for i, name in enumerate(classes)}
    if theirs == classes:
        return classes
    if all(name in index for name in theirs):
        mapping = torch.tensor([index[name] for name in theirs])
    elif len(theirs) == len(classes):
        return classes
    else:
        shown = ", ".join(theirs[:4]) + (" ..." if len(theirs) > 4 else "")
        raise WeightsError(
            f"{spec!r} has {len(theirs)} classes ({shown}), the weights {len(classes)} ({', '.join(classes[:4])} ...): "
            "name the class folders as the weights' classes, or give all of them (ImageNet: the 1000 synset folders)"
        )
    if isinstance(split, datalib.ArrayData):
        split.labels = mapping[split.labels]
    else:
        split.samples = [(p, int(mapping[label])) for p, label in split.samples]
    split.classes = classes
    return classes


@torch.no_grad()
def predict_images(
    path: str,
    images: list[str],
    *,
    topk: int = 5,
    which: str = "best",
    device: str | None = None,
    pretrained: bool | str = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Predictions:
    """Top-k class names and probabilities for each image file (EXIF orientation, grayscale, RGBA handled).

    ``path`` is a run folder, a cnnzoo checkpoint, an exported ``.onnx`` file (run by onnxruntime), or
    with ``pretrained`` a model name (``MODEL`` or ``MODEL.TAG``): ImageNet weights name ImageNet classes.
    Every image is read by :mod:`cnnzoo.data.images`: the first that cannot be (damaged, not an image,
    over ``max_pixels`` pixels by its header; None: no limit) is an error naming it."""
    from .export import OnnxModel, is_onnx_file

    check_option("topk", topk)
    check_option("which", which)
    if is_onnx_file(path):
        w = _onnx_weights(OnnxModel(path))
        dev = torch.device("cpu")
    else:
        dev = resolve_device(device)  # --device cuda on a machine without one: one line, before loading
        w = open_weights(path, pretrained=pretrained, which=which)
        w.model.to(dev)
    in_chans = w.model.input_shape[1] if isinstance(w.model, OnnxModel) else w.model.in_chans
    # The eval transform of folder data (EXIF orientation, gray/RGB(A) to the model's channels) with the weights' crop.
    files = datalib.ImageFolderData(
        [(str(p), 0) for p in images],
        classes=["?"],
        train=False,
        channels=in_chans,
        strict=True,
        eval_crop=w.eval_crop,
        max_pixels=max_pixels,
    )
    batch = w.batch(torch.stack([files[i][0] for i in range(len(files))]).to(dev))
    batched = not isinstance(w.model, OnnxModel) or not isinstance(w.model.input_shape[0], int)
    logits = w.model(batch) if batched else torch.cat([w.model(x[None]) for x in batch])
    probs = logits.float().softmax(1)
    classes = w.classes or [str(i) for i in range(probs.shape[1])]  # an export made from a bare model name
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    return Predictions(
        [
            dict(image=str(p), top=[(classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True)])
            for p, vals, idx in zip(images, top.values, top.indices, strict=True)
        ],
        notes=list(w.notes),
    )


class Predictions(list):
    """:func:`predict_images`' result: one dict per image, and ``notes`` on the weights (e.g. classes shown as indices)."""

    def __init__(self, items: list[dict[str, Any]], notes: list[str]) -> None:
        super().__init__(items)
        self.notes = notes


def _onnx_weights(model) -> Weights:
    """An exported file's metadata: its class names and preprocessing (the crop too, when the export recorded it)."""
    meta = model.metadata
    size = model.image_size
    crop = datalib.EvalCrop(size)
    if {"resize", "crop", "resize_mode"} <= set(meta):
        pre = Preprocessing.from_dict(meta)
        # exported at another size than the weights' crop (--image-size): their interpolation, the usual resize
        crop = (
            datalib.EvalCrop.of(pre)
            if pre.input_size == size
            else datalib.EvalCrop(size, None, pre.interpolation, pre.resize_mode, pre.antialias)
        )
    order = meta.get("channel_order", "RGB")
    return Weights(model, model.classes, crop, model.mean, model.std, order, str(model.path), meta.get("data"))


def _is_onnx(path: str) -> bool:
    from .export import is_onnx_file

    return is_onnx_file(path)


class _OnnxAsModule(nn.Module):
    """An exported ONNX file as :func:`~cnnzoo.train.engine.evaluate` takes a model: a module, on the CPU.

    ``evaluate`` finds the device from the parameters and switches train / eval modes; the file has neither,
    so an empty CPU parameter stands for its device. A file exported with a fixed batch (``cnnzoo export``'s
    default, 1) is run that many images at a time; the logits come back as one batch.
    """

    def __init__(self, onnx: Any) -> None:
        super().__init__()
        self.onnx = onnx
        self.device_marker = nn.Parameter(torch.empty(0), requires_grad=False)
        self.model_name = onnx.model_name or onnx.path.stem
        self.in_chans = onnx.input_shape[1]
        classes = onnx.session.get_outputs()[0].shape[-1]
        self.num_classes = classes if isinstance(classes, int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed = self.onnx.input_shape[0]
        step = fixed if isinstance(fixed, int) else len(x)
        return torch.cat([self.onnx(x[i : i + step]) for i in range(0, len(x), step)])


def _onnx_for_evaluation(path: str, device: str | None, pretrained: bool | str) -> tuple[Weights, nn.Module]:
    """An ``.onnx`` file's weights (its metadata) and the module ``evaluate`` runs; refused on another device."""
    from .export import OnnxModel

    if pretrained:
        raise WeightsError(f"{path}: an ONNX file carries its own weights; leave --pretrained out")
    if device not in (None, "auto", "cpu"):
        raise WeightsError(
            f"{path}: ONNX files are evaluated by onnxruntime on the CPU; leave --device out or give cpu"
        )
    w = _onnx_weights(OnnxModel(path))
    q = w.model.metadata.get("quantization")
    kind = f"INT8 ({q.get('format')}, {q.get('method')} calibration)" if q else "fp32"
    w.notes.append(f"{path}: {kind} ONNX model run by onnxruntime on the CPU")
    return w, _OnnxAsModule(w.model)
