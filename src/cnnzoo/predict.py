"""Use a trained checkpoint: evaluate it on a data split, or classify image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import data as datalib
from .checkpoint import load_model, read_metadata, resolve_checkpoint
from .errors import WeightsError


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
    from .train import Dist, evaluate, make_batches, pick_device, setup_distributed, TrainConfig

    weights, info = _checkpoint_info(path, which)
    d = setup_distributed(device)
    dev = pick_device(device, d)
    model = load_model(weights).to(dev)
    spec = data or info["data"]
    splits = datalib.load_data(spec, channels=model.in_chans, image_size=info["image_size"])
    if len(splits.classes) != len(info["classes"]):
        raise WeightsError(f"{weights} was trained on {len(info['classes'])} classes, {spec!r} has {len(splits.classes)}")
    cfg = TrainConfig(model=model.model_name, batch_size=batch_size, workers=workers)
    batches = make_batches(splits.test, cfg, dev, info["mean"], info["std"], d, train=False)
    result = evaluate(model, batches, len(info["classes"]), d)
    return dict(result, model=model.model_name, checkpoint=str(weights), data=spec, classes=info["classes"])


@torch.no_grad()
def predict_images(path: str, images: list[str], *, topk: int = 5, which: str = "best", device: str | None = None) -> list[dict[str, Any]]:
    """Top-k class names and probabilities for each image file (EXIF orientation, grayscale, RGBA handled)."""
    weights, info = _checkpoint_info(path, which)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(weights).to(dev)
    size = info["image_size"]
    # The eval transform of folder data: EXIF orientation, gray/RGB(A) to the model's channels, resize + centre crop.
    files = datalib.ImageFolderData([(str(p), 0) for p in images], classes=info["classes"], train=False, image_size=size, channels=model.in_chans, strict=True)
    batch = torch.stack([files[i][0] for i in range(len(files))]).to(dev)
    probs = model(datalib.normalize_batch(batch, info["mean"], info["std"])).softmax(1)
    k = min(topk, probs.shape[1])
    top = probs.topk(k, dim=1)
    classes = info["classes"]
    return [
        dict(image=str(p), top=[(classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())])
        for p, vals, idx in zip(images, top.values, top.indices)
    ]
