"""Building models: :func:`create_model` by name, :func:`load_model` from a cnnzoo checkpoint, and
:func:`convert`, which builds one to write any weights file as a cnnzoo checkpoint.

The registry (``registry.py``) only knows what each model is; this room builds one and, when asked,
fills it with weights, so it sits above both the model files and the weight formats.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from . import models  # noqa: F401  (importing the package registers every family)
from .errors import WeightsError
from .registry import get_model_info
from .weights import (
    LoadReport,
    file_sha256,
    load_pretrained,
    load_weights,
    read_metadata,
    resolve_checkpoint,
    save_weights,
)


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    weights: str | None = None,
    sha256: str | None = None,
    reset_head: bool = False,
    **options: Any,
) -> nn.Module:
    """Build a zoo model by name.

    ``num_classes`` and ``in_chans`` default to the model's native ones; ``options`` go to the family's
    constructor (e.g. ``aux_logits=True`` for googlenet, ``stride_in_1x1=True`` for resnet50).
    ``weights`` loads a weights file after building (cnnzoo, torchvision, timm or Keras; see
    :func:`cnnzoo.weights.load_pretrained`, which ``sha256`` and ``reset_head`` go to).
    """
    info = get_model_info(name)
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.input_size[0] if in_chans is None else in_chans
    for what, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {what} must be a positive integer, got {value!r}")
    assert info.builder is not None
    try:
        model = info.builder(num_classes=num_classes, in_chans=in_chans, **options)
    except TypeError as e:  # an option the family does not know
        raise TypeError(f"{name}: {e}") from None
    model.model_name = name
    model.info = info
    if weights is not None:
        load_pretrained(model, weights, sha256=sha256, reset_head=reset_head)
    return model


def load_model(path: str | os.PathLike, which: str = "best", **overrides: Any) -> nn.Module:
    """Rebuild a zoo model from a cnnzoo checkpoint file or run folder, weights loaded, in eval mode."""
    weights = resolve_checkpoint(path, which)
    args = dict(read_metadata(weights)["model_args"])
    args.update(overrides)
    model = create_model(args.pop("name"), **args)
    return load_weights(model, weights).eval()


def convert(
    source: str | Path,
    dest: str | Path,
    model_name: str,
    *,
    num_classes: int | None = None,
    sha256: str | None = None,
    reset_head: bool = False,
    **options: Any,
) -> LoadReport:
    """Write a cnnzoo checkpoint ``dest`` (.safetensors) of ``model_name`` from any accepted weights file.

    The checkpoint's metadata holds the model's arguments (so ``cnnzoo.load_model`` rebuilds
    it), where the weights came from (file name, format, SHA-256, notes) and the model's preprocessing.
    """
    source, dest = Path(source), Path(dest)
    if dest.suffix != ".safetensors":
        raise WeightsError(f"{dest}: a cnnzoo checkpoint is a .safetensors file; name it {dest.with_suffix('.safetensors')}")
    if dest.exists() and source.exists() and dest.resolve() == source.resolve():
        raise WeightsError(f"{dest}: the destination is the source file; write the checkpoint elsewhere")
    info = get_model_info(model_name)
    num_classes = info.num_classes if num_classes is None else num_classes
    model = create_model(model_name, num_classes, **options)
    report = load_pretrained(model, source, sha256=sha256, reset_head=reset_head)
    model_args = dict(name=model_name, num_classes=num_classes, in_chans=info.input_size[0], **options)
    extra = {
        "converted_from": {"file": source.name, "format": report.format, "sha256": report.sha256 or file_sha256(source), "notes": report.notes},
        "preprocessing": {"mean": list(info.mean), "std": list(info.std), "image_size": info.input_size[1], "channel_order": info.channel_order},
    }
    save_weights(dest, model, model_args, extra=extra)
    return report
