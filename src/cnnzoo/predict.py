"""Use a trained checkpoint: evaluate it on a data split, or classify image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import data as datalib
from .checkpoint import read_metadata, resolve_checkpoint
from .data.batches import make_batches
from .errors import WeightsError
from .factory import load_model
from .train.distributed import pick_device, setup_distributed
from .train.engine import evaluate


def _checkpoint_info(path: str, which: str) -> tuple[Path, dict[str, Any]]:
    weights = resolve_checkpoint(path, which)
    info = read_metadata(weights).get("info")
    if not info or "classes" not in info:
        raise WeightsError(f"{weights}: no class names in this checkpoint; it was not written by cnnzoo train")
    return weights, info


def evaluate_checkpoint(path: str, *, data: str | None = None, which: str = "best", batch_size: int = 256, device: str | None = None, workers: int = 4) -> dict[str, Any]:
    """Top-1, top-5, per-class accuracy and confusion matrix of a checkpoint on a split (the test split).

    Under torchrun each process evaluates its own shard and the counts are summed, so every sample
    is counted exactly once."""
    weights, info = _checkpoint_info(path, which)
    d = setup_distributed(device)
    dev = pick_device(device, d)
    model = load_model(weights).to(dev)
    spec = data or info["data"]
    splits = datalib.load_data(spec, channels=model.in_chans, image_size=info["image_size"])
    if len(splits.classes) != len(info["classes"]):
        raise WeightsError(f"{weights} was trained on {len(info['classes'])} classes, {spec!r} has {len(splits.classes)}")
    batches = make_batches(splits.test, batch_size, dev, info["mean"], info["std"], d, train=False, workers=workers)
    result = evaluate(model, batches, len(info["classes"]), d)
    return dict(result, model=model.model_name, checkpoint=str(weights), data=spec, classes=info["classes"])


@torch.no_grad()
def predict_images(path: str, images: list[str], *, topk: int = 5, which: str = "best", device: str | None = None) -> list[dict[str, Any]]:
    """Top-k class names and probabilities for each image file (EXIF orientation, grayscale, RGBA handled).

    ``path`` is a run folder, a cnnzoo checkpoint, or an exported ``.onnx`` file (run by onnxruntime)."""
    from .export import OnnxModel, is_onnx_file

    if is_onnx_file(path):
        model = OnnxModel(path)
        in_chans, size = model.input_shape[1], model.image_size
        mean, std = model.mean, model.std
        batched = not isinstance(model.input_shape[0], int)
        dev = torch.device("cpu")
    else:
        weights, info = _checkpoint_info(path, which)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_model(weights).to(dev)
        in_chans, size, mean, std, batched = model.in_chans, info["image_size"], info["mean"], info["std"], True
    # The eval transform of folder data: EXIF orientation, gray/RGB(A) to the model's channels, resize + centre crop.
    files = datalib.ImageFolderData([(str(p), 0) for p in images], classes=["?"], train=False, image_size=size, channels=in_chans, strict=True)
    batch = datalib.normalize_batch(torch.stack([files[i][0] for i in range(len(files))]).to(dev), mean, std)
    logits = model(batch) if batched else torch.cat([model(x[None]) for x in batch])
    probs = logits.float().softmax(1)
    classes = model.classes if isinstance(model, OnnxModel) else info["classes"]
    classes = classes or [str(i) for i in range(probs.shape[1])]  # an export made from a bare model name
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [
        dict(image=str(p), top=[(classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True)])
        for p, vals, idx in zip(images, top.values, top.indices, strict=True)
    ]
