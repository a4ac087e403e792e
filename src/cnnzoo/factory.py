"""Building models: :func:`create_model` by name, :func:`load_model` from a cnnzoo checkpoint, and
:func:`convert`, which builds one to write any weights file as a cnnzoo checkpoint.

The registry (``registry.py``) only knows what each model is; this room builds one and, when asked,
fills it with weights, so it sits above both the model files and the weight formats.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from . import hub, models  # noqa: F401  (importing models registers every family)
from .errors import CnnzooError, WeightsError
from .fileio import safe_output
from .hub import download_url, is_url
from .model_options import check_model_options
from .models import FeatureExtractor
from .pretrained import (
    PretrainedEntry,
    fetch_pretrained,
    get_pretrained,
    imagenet_categories,
    match_file,
    preprocessing_of_model,
    resolve_pretrained,
    split_name,
)
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
    pretrained: bool | str | PretrainedEntry = False,
    weights: str | None = None,
    sha256: str | None = None,
    reset_head: bool = False,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a zoo model by name.

    ``num_classes`` and ``in_chans`` default to the model's native ones; ``options`` go to the family's
    constructor (e.g. ``aux_logits=True`` for googlenet, ``stride_in_1x1=True`` for resnet50).
    ``weights`` loads a weights file after building (cnnzoo, torchvision, timm or Keras; see
    :func:`cnnzoo.weights.load_pretrained`, which ``sha256`` and ``reset_head`` go to), or an http(s)
    URL, which ``sha256`` must then pin.

    ``pretrained=True`` loads the model's default published weights (:func:`cnnzoo.list_pretrained`),
    ``pretrained="TAG"`` (or the name ``"resnet50.TAG"``, timm's convention) a named one: fetched once,
    verified, cached. ``num_classes`` then defaults to the weights' classes; another number replaces the
    classifier with a fresh one (as timm does), and so do weights published without a classifier
    (Keras' ``*_notop``). Another ``in_chans`` adapts the first convolution (summed over RGB for one
    channel, repeated and rescaled for more; :mod:`cnnzoo.weights.adapt`). The model carries the entry
    as ``model.pretrained`` (its ``categories``, ``preprocessing``, ``metrics``), else None, and what
    the load did as ``model.load_report`` (a :class:`~cnnzoo.weights.LoadReport` whose notes say which
    layers were replaced or adapted), else None.

    As a backbone (timm's arguments): ``num_classes=0`` builds the network without its classifier,
    returning (N, ``num_features``) pooled features; ``global_pool`` "avg" (default), "max" or ""
    (no pooling: the feature map) chooses the pooling. ``features_only=True`` returns a
    :class:`~cnnzoo.models.FeatureExtractor`: the list of feature maps at the stages ``out_indices``
    (default all; negative ones count from the end), described by its ``feature_info``. Weights of
    the full network load into both; the keys of the modules they lack are ignored (the load says so).
    """
    name, entry = _named_weights(name, pretrained, weights)
    info = get_model_info(name)
    check_model_options(name, options)  # aux_logits="no" is refused, not taken for True
    if num_classes is None and entry is not None and entry.has_classifier:
        num_classes = entry.num_classes
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.input_size[0] if in_chans is None else in_chans
    for what, value, least in (("num_classes", num_classes, 0), ("in_chans", in_chans, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            kind = "a non-negative integer (0: no classifier, pooled features)" if least == 0 else "a positive integer"
            raise ValueError(f"{name}: {what} must be {kind}, got {value!r}")
    if features_only and global_pool is not None:
        raise ValueError(f"{name}: features_only=True returns unpooled feature maps; global_pool applies without it")
    if out_indices is not None and not features_only:
        raise ValueError(f"{name}: out_indices chooses the maps of features_only=True; add features_only=True")
    if global_pool is not None:
        options["global_pool"] = global_pool
    assert info.builder is not None
    verifying = _verify_in_background(entry)  # hashing a cached file overlaps building the model
    try:  # a feature extractor has no head: build the network without one
        model = info.builder(num_classes=0 if features_only else num_classes, in_chans=in_chans, **options)
    except TypeError as e:  # an option the family does not know
        raise TypeError(f"{name}: {e}") from None
    model.model_name = name
    model.info = info
    if features_only:
        model = FeatureExtractor(model, out_indices)
    model.pretrained, model.load_report = entry, None
    if entry is not None:  # published weights are for the native channels: another in_chans adapts the stem
        adapt_input = in_chans != info.input_size[0]
        path = (verifying.result() if verifying is not None else None) or fetch_pretrained(entry)
        model.load_report = _load_published(model, entry, path, num_classes, adapt_input=adapt_input)
    elif weights is not None:  # a file is loaded as it is: a mismatch is listed, not adapted
        model.load_report = load_pretrained(model, weights, sha256=sha256, reset_head=reset_head, assign=True)
    return model


def _named_weights(
    name: str, pretrained: bool | str | PretrainedEntry | None, weights: Any
) -> tuple[str, PretrainedEntry | None]:
    """The model name without a ``.TAG``, and the published entry asked for (None: no pretrained weights)."""
    if not isinstance(name, str):
        raise TypeError(f"create_model: the model name must be a string such as 'resnet50', got {name!r}")
    model, tag = split_name(name)
    if tag is not None and isinstance(pretrained, str) and pretrained.split(".")[-1].lower() != tag.lower():
        raise ValueError(f"{name}: the name asks for the weights {tag}, pretrained={pretrained!r} for others; give one")
    if tag is not None:
        get_pretrained(model, tag)  # a misspelt tag fails here even without pretrained=True, as in timm
    entry = resolve_pretrained(model, tag if tag is not None and pretrained is True else pretrained)
    if entry is not None and weights is not None:
        raise ValueError(f"{name}: give pretrained= (published weights) or weights= (a file or URL), not both")
    return model, entry


def _verify_in_background(entry: PretrainedEntry | None) -> concurrent.futures.Future | None:
    """Look for a verified cached copy of the entry's file in a thread, while the model is built (hashlib and the
    model's initialisation both release the GIL). Never downloads: that waits until the model was built."""
    if entry is None or not any(path.is_file() for path in hub.candidate_paths(entry.url, entry.file_name)):
        return None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnzoo-verify")
    future = pool.submit(hub.find_cached, entry.url, entry.pinned, file_name=entry.file_name)
    pool.shutdown(wait=False)  # the thread ends with the hash; nothing waits for it here
    return future


def _load_published(
    model: nn.Module, entry: PretrainedEntry, path: Path, num_classes: int, *, adapt_input: bool
) -> LoadReport:
    """Load the entry's verified file: a classifier for another number of classes, or none in the file, stays fresh."""
    replace = entry.has_classifier and bool(num_classes) and num_classes != entry.num_classes
    how = dict(reset_head=replace, backbone_only=not entry.has_classifier, adapt_input=adapt_input)
    report = load_pretrained(model, path, assign=True, **how)  # the model is new: its tensors can be the file's
    report.notes.insert(0, f"pretrained weights {entry.name} ({entry.source}, {entry.pinned.shown()} verified)")
    return report


def load_model(path: str | os.PathLike, which: str = "best", **overrides: Any) -> nn.Module:
    """Rebuild a zoo model from a cnnzoo checkpoint file or run folder, weights loaded, in eval mode."""
    weights = resolve_checkpoint(path, which)
    args = dict(read_metadata(weights)["model_args"])
    args.update(overrides)
    name = args.pop("name")
    try:
        model = create_model(name, **args)
    except (CnnzooError, TypeError, ValueError) as e:
        if overrides:  # perhaps the caller's arguments: say it as create_model said it
            raise
        raise WeightsError(
            f"{weights}: its model arguments do not build a model ({e}); the checkpoint is damaged, or was written "
            "by another version of cnnzoo"
        ) from None
    return load_weights(model, weights).eval()


def convert(
    source: str | Path,
    dest: str | Path,
    model_name: str,
    *,
    num_classes: int | None = None,
    sha256: str | None = None,
    reset_head: bool = False,
    like: str | PretrainedEntry | None = None,
    force: bool = False,
    **options: Any,
) -> LoadReport:
    """Write a cnnzoo checkpoint ``dest`` (.safetensors) of ``model_name`` from any accepted weights file (or URL).

    The checkpoint's metadata holds the model's arguments (so ``cnnzoo.load_model`` rebuilds it), where
    the weights came from (file name, format, SHA-256, notes), the preprocessing the weights expect and,
    when known, the class names (``classes``, which ``cnnzoo predict`` prints). What the outputs mean is
    decided by the first rule that applies:

    1. ``like="resnet50.IMAGENET1K_V2"`` (``--like``): the file is that published entry, or a copy of it
       under another name: its preprocessing, and its categories while the classifier is the file's.
    2. The file's digest is that of a published entry of the model (``cnnzoo weights list``): the same.
    3. A torchvision, timm or Keras file (not a cnnzoo checkpoint) whose 1000-class classifier loads
       into a model whose zoo twin is an ImageNet network: the 1000 ImageNet classes (those libraries
       all order them by synset id), with Keras' ``preprocess_input`` for a Keras file and otherwise
       the model's normalisation with torchvision's usual crop (resize 256, crop 224, bilinear).

    Otherwise the checkpoint keeps the model's normalisation and no class names.

    ``dest`` is checked before anything is read (:func:`cnnzoo.fileio.safe_output`): an existing file is
    replaced only with ``force``, and only if it is a safetensors file.
    """
    dest = Path(dest)
    if dest.suffix != ".safetensors":
        raise WeightsError(
            f"{dest}: a cnnzoo checkpoint is a .safetensors file; name it {dest.with_suffix('.safetensors')}"
        )
    if dest.exists() and Path(source).exists() and dest.resolve() == Path(source).resolve():
        raise WeightsError(f"{dest}: the destination is the source file; write the checkpoint elsewhere")
    dest = safe_output(dest, force=force, kind="safetensors")
    if is_url(source):  # fetched into the cache once, verified by the digest it must come with
        source, sha256 = download_url(str(source), sha256=sha256), None
    source = Path(source)
    info = get_model_info(model_name)
    entry = resolve_pretrained(model_name, like) if like is not None else _published_file(model_name, source)
    if num_classes is None:
        num_classes = entry.num_classes if entry is not None and entry.has_classifier else info.num_classes
    model = create_model(model_name, num_classes, **options)
    backbone_only = entry is not None and not entry.has_classifier
    report = load_pretrained(model, source, sha256=sha256, reset_head=reset_head, backbone_only=backbone_only)
    model_args = dict(name=model_name, num_classes=num_classes, in_chans=info.input_size[0], **options)
    extra = {
        "converted_from": {
            "file": source.name,
            "format": report.format,
            "sha256": report.sha256 or file_sha256(source),
            "notes": report.notes,
        },
        **_output_meaning(model_name, entry, report.format, num_classes, reset_head),
    }
    save_weights(dest, model, model_args, extra=extra)
    return report


def _published_file(model_name: str, source: Path) -> PretrainedEntry | None:
    """The published entry whose pinned digest ``source`` has, or None (also for a file that is not there yet)."""
    return match_file(model_name, source) if source.is_file() else None


def _output_meaning(
    model_name: str, entry: PretrainedEntry | None, fmt: str, num_classes: int, reset_head: bool
) -> dict[str, Any]:
    """The checkpoint metadata that says how to feed the weights and what their outputs are (convert's rules)."""
    info = get_model_info(model_name)
    own_head = not reset_head and (entry is None or entry.has_classifier)
    if entry is not None:
        meta: dict[str, Any] = {"preprocessing": entry.preprocessing.as_dict(), "pretrained": entry.name}
        if own_head and entry.categories and num_classes == entry.num_classes:
            meta["classes"] = list(entry.categories)
        return meta
    imagenet_twin = info.num_classes == 1000 and bool(info.torchvision or info.keras)
    imagenet = own_head and fmt != "cnnzoo" and num_classes == 1000 and imagenet_twin
    meta = {"preprocessing": preprocessing_of_model(model_name, keras=fmt.startswith("keras")).as_dict()}
    if imagenet:
        meta["classes"] = list(imagenet_categories())
    return meta
