"""Published pretrained weights by name: ``cnnzoo.get_pretrained("resnet50")``, ``"resnet50.IMAGENET1K_V2"``.

Every entry names one file (URL and the digest it is pinned to), what it was trained for (classes,
categories), how to feed it (the evaluation preprocessing) and what it scored. Names are
``model.tag``:

- **torchvision twins** (alexnet, vgg*, googlenet, inception_v3, resnet18-152): one entry per weights
  enum member the *installed* torchvision publishes, read from its enums on first use (URL, the
  SHA-256 prefix in the file name that torch.hub checks, categories, transforms, metrics, size,
  parameter count, recipe), never copied; the default is torchvision's ``DEFAULT``.
- **Keras files** (vgg16, vgg19, resnet*_keras, inception_v3_keras): ``imagenet`` and
  ``imagenet_notop``, the files ``keras.applications`` downloads, pinned by the MD5 Keras pins
  (:mod:`cnnzoo.pretrained_keras`). For vgg16/vgg19 the default stays torchvision's.
- **Yours**: :func:`register_pretrained` adds a mirror or your own hosted file at run time.

Preprocessing says what the *cnnzoo* model needs, as mean/std for pixels scaled to [0, 1] in
``channel_order`` (the convention of :class:`cnnzoo.registry.ModelInfo`):

- torchvision: resize the shorter side to ``resize``, centre-crop ``crop``, ``interpolation``, then
  normalise. GoogLeNet and Inception v3: torchvision's enum lists the ImageNet mean/std, but its
  builder then sets ``transform_input=True``, which maps those to mean = std = 0.5; cnnzoo's models
  have no ``transform_input``, so their entries say mean = std = 0.5 (as their ModelInfo does).
- Keras: ``preprocess_input`` has no resize and no crop; the entries say resize to the native size
  (``resize_mode="exact"``, what ``keras.utils.load_img(target_size=...)`` does, nearest-neighbour by
  default there) and Keras' normalisation: caffe mode for VGG and ResNet (BGR, minus the ImageNet mean
  in 0..255, no scaling: mean = m / 255, std = 1 / 255) and tf mode for InceptionV3 (scale to [-1, 1]:
  mean = std = 0.5).

This module reads model metadata from :mod:`cnnzoo.registry` only (it builds nothing), and fetches
files through :mod:`cnnzoo.hub`.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import hub
from .errors import UnknownPretrainedError, WeightsError
from .pretrained_keras import (
    CAFFE_MEAN_BGR_255,
    KERAS_FILES,
    KERAS_INPUT_SIZE,
    KERAS_LICENSE,
    KERAS_METRICS_SOURCE,
    KERAS_PREPROCESSING_MODE,
    KERAS_PUBLISHED,
    KerasFile,
)
from .registry import ModelInfo, get_model_info, list_models

log = logging.getLogger(__name__)

SOURCES = ("torchvision", "keras", "user")
TORCHVISION_LICENSE = "BSD-3-Clause (torchvision); trained on ImageNet-1K, whose terms of access apply"
# torchvision's builders for these set transform_input=True with pretrained weights: ImageNet
# normalisation followed by transform_input is (x - 0.5) / 0.5 per channel.
TRANSFORM_INPUT_MODELS = ("googlenet", "inception_v3")
TRANSFORM_INPUT_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
DEFAULT_TAG = "DEFAULT"


@dataclass(frozen=True)
class Preprocessing:
    """How images are fed to the weights at evaluation, for the cnnzoo model.

    ``resize_mode="shorter"``: the shorter side goes to ``resize`` (aspect kept), then a centre crop of
    ``crop`` (torchvision). ``"exact"``: the image goes to ``resize`` x ``resize`` and ``crop`` is None
    (Keras). ``mean`` and ``std`` are per channel in ``channel_order``, for pixels scaled to [0, 1].
    """

    resize: int
    crop: int | None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"
    resize_mode: str = "shorter"
    antialias: bool = True

    @property
    def input_size(self) -> int:
        """The side of the square the network sees."""
        return self.crop if self.crop is not None else self.resize

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for JSON: checkpoint and ONNX metadata, ``--json`` output."""
        data = asdict(self)
        data.update(mean=list(self.mean), std=list(self.std), image_size=self.input_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`as_dict` (extra keys such as ``image_size`` are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])})


@dataclass(frozen=True)
class PretrainedEntry:
    """One published (or registered) weights file of a zoo model. ``cached`` is asked of the disk, not stored."""

    model: str
    tag: str
    url: str
    digest: str  # "sha256:<hex>" (full, or the 8+ digit prefix torchvision publishes) or "md5:<hex>" (Keras)
    source: str  # "torchvision", "keras" or "user"
    num_classes: int | None  # outputs of the file's classifier; None: no usable classifier
    categories: tuple[str, ...] | None
    preprocessing: Preprocessing
    top1: float | None = None  # published ImageNet-1K accuracy, %
    top5: float | None = None
    file_size_mb: float | None = None  # as published (torchvision: MiB), approximate
    num_params: int | None = None
    recipe: str | None = None
    license: str = "unknown"
    has_classifier: bool = True  # False: features only (Keras *_notop, torchvision VGG16 IMAGENET1K_FEATURES)
    metrics_source: str | None = None
    notes: str = ""
    file_name: str = field(default="", compare=False)  # the cache file name; from the URL when empty

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise WeightsError(f"{self.model}.{self.tag}: source {self.source!r}, expected one of {', '.join(SOURCES)}")
        hub.Digest.parse(self.digest)  # pinned, in the documented form
        if not self.file_name:
            object.__setattr__(self, "file_name", hub.file_name_from_url(self.url))

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def pinned(self) -> hub.Digest:
        return hub.Digest.parse(self.digest)

    @property
    def metrics(self) -> dict[str, float]:
        """Published accuracy: ``{"top1": ..., "top5": ...}`` (empty when none is published)."""
        return {k: v for k, v in (("top1", self.top1), ("top5", self.top5)) if v is not None}

    @property
    def cache_path(self) -> Path:
        """Where cnnzoo keeps the file (and, offline, expects it)."""
        return hub.cache_path(self.url, self.file_name)

    def cached_path(self) -> Path | None:
        """A verified local copy (cnnzoo's, torch.hub's or Keras' cache), or None; never downloads."""
        return hub.find_cached(self.url, self.pinned, file_name=self.file_name)

    @property
    def cached(self) -> bool:
        return self.cached_path() is not None

    def fetch(self, *, progress: bool | None = None) -> Path:
        return fetch_pretrained(self, progress=progress)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (categories left out: 1000 names), with ``name`` and ``cached``."""
        data = asdict(self)
        data.pop("categories")
        return {"name": self.name, **data, "cached": self.cached}


# --------------------------------------------------------------------------------------------------
# The table: built-in entries (built once, on first use) and registered ones on top
# --------------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_BUILTIN: dict[str, dict[str, PretrainedEntry]] | None = None
_BUILTIN_DEFAULT: dict[str, str] = {}
_USER: dict[str, dict[str, PretrainedEntry]] = {}
_USER_DEFAULT: dict[str, str] = {}


def _builtin() -> dict[str, dict[str, PretrainedEntry]]:
    global _BUILTIN
    with _LOCK:
        if _BUILTIN is None:
            table: dict[str, dict[str, PretrainedEntry]] = {}
            defaults: dict[str, str] = {}
            _add_torchvision_entries(table, defaults)
            _add_keras_entries(table, defaults)
            _BUILTIN_DEFAULT.update(defaults)
            _BUILTIN = table
        return _BUILTIN


def _add_torchvision_entries(table: dict[str, dict[str, PretrainedEntry]], defaults: dict[str, str]) -> None:
    from torchvision.models import get_model_weights

    for model in list_models():
        info = get_model_info(model)
        if info.torchvision is None:
            continue
        try:
            enum = get_model_weights(info.torchvision)
        except (ValueError, KeyError):  # an older torchvision without this model's weights
            log.info("torchvision %s publishes no weights; %s has no torchvision entries", info.torchvision, model)
            continue
        for weights in enum:  # iterating an Enum skips its aliases (DEFAULT)
            entry = torchvision_entry(model, info, weights)
            if entry is not None:
                table.setdefault(model, {})[entry.tag] = entry
        if model in table and enum.DEFAULT.name in table[model]:
            defaults[model] = enum.DEFAULT.name


def torchvision_entry(model: str, info: ModelInfo, weights: Any) -> PretrainedEntry | None:
    """The entry of one torchvision weights enum member (``ResNet50_Weights.IMAGENET1K_V2``) for ``model``."""
    file_name = hub.file_name_from_url(weights.url)
    prefix = hub.hash_prefix_in_file_name(file_name)
    if prefix is None:  # torch.hub could not check it either: not a file cnnzoo fetches unpinned
        log.warning("%s has no SHA-256 prefix in its file name; left out of the table", weights.url)
        return None
    meta = weights.meta
    categories = tuple(meta["categories"]) if meta.get("categories") else None
    scores = meta.get("_metrics", {}).get("ImageNet-1K", {})
    return PretrainedEntry(
        model=model,
        tag=weights.name,
        url=weights.url,
        digest=f"sha256:{prefix}",
        source="torchvision",
        num_classes=len(categories) if categories else None,
        categories=categories,
        preprocessing=_torchvision_preprocessing(info, weights),
        top1=_number(scores.get("acc@1")),
        top5=_number(scores.get("acc@5")),
        file_size_mb=_number(meta.get("_file_size")),
        num_params=meta.get("num_params"),
        recipe=meta.get("recipe"),
        license=TORCHVISION_LICENSE,
        has_classifier=categories is not None,
        metrics_source="torchvision weights meta['_metrics']['ImageNet-1K']",
        notes=" ".join((meta.get("_docs") or "").split()),
        file_name=file_name,
    )


def _torchvision_preprocessing(info: ModelInfo, weights: Any) -> Preprocessing:
    transform = weights.transforms()  # torchvision.transforms._presets.ImageClassification
    mean, std = tuple(transform.mean), tuple(transform.std)
    if info.torchvision in TRANSFORM_INPUT_MODELS:
        mean, std = TRANSFORM_INPUT_MEAN_STD
    return Preprocessing(
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        interpolation=transform.interpolation.value,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        channel_order="RGB",
        resize_mode="shorter",
        antialias=bool(transform.antialias),
    )


def _number(value: Any) -> float | None:
    """torchvision writes NaN for scores it has not measured (VGG16's feature-only weights)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names in class-index order ("tench", ..., "tabby" at 281, ...)."""
    return _imagenet_categories()


def _imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names in synset order, as torchvision publishes them (Keras uses the same order)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def keras_preprocessing(keras_name: str) -> Preprocessing:
    """What ``keras.applications.<model>.preprocess_input`` does, as mean/std over [0, 1] pixels."""
    size = KERAS_INPUT_SIZE[keras_name]
    if KERAS_PREPROCESSING_MODE[keras_name] == "caffe":
        mean, std, order = tuple(m / 255 for m in CAFFE_MEAN_BGR_255), (1 / 255,) * 3, "BGR"
    else:  # "tf": x / 127.5 - 1
        mean, std, order = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "RGB"
    return Preprocessing(size, None, "nearest", mean, std, order, resize_mode="exact", antialias=False)


def keras_entry(spec: KerasFile, categories: tuple[str, ...]) -> PretrainedEntry:
    top1, top5, size = KERAS_PUBLISHED[spec.keras_name] if spec.include_top else (None, None, None)
    return PretrainedEntry(
        model=spec.model,
        tag=spec.tag,
        url=spec.url,
        digest=f"md5:{spec.md5}",
        source="keras",
        num_classes=len(categories) if spec.include_top else None,
        categories=categories if spec.include_top else None,
        preprocessing=keras_preprocessing(spec.keras_name),
        top1=top1,
        top5=top5,
        file_size_mb=size,
        license=KERAS_LICENSE,
        has_classifier=spec.include_top,
        metrics_source=KERAS_METRICS_SOURCE if spec.include_top else None,
        notes=f"keras.applications.{spec.keras_name}(weights='imagenet', include_top={spec.include_top})",
    )


def _add_keras_entries(table: dict[str, dict[str, PretrainedEntry]], defaults: dict[str, str]) -> None:
    categories = _imagenet_categories()
    for spec in KERAS_FILES:
        get_model_info(spec.model)  # the zoo must have the model the table names
        table.setdefault(spec.model, {})[spec.tag] = keras_entry(spec, categories)
        defaults.setdefault(spec.model, "imagenet")


def _tags(model: str) -> dict[str, PretrainedEntry]:
    """The model's entries by tag: built-in ones, then registered ones (which may replace them)."""
    return {**_builtin().get(model, {}), **_USER.get(model, {})}


def _default_tag(model: str) -> str | None:
    """A registered default, else the published one, else the first tag (a model with only registered weights)."""
    tags = _tags(model)
    for tag in (_USER_DEFAULT.get(model), _BUILTIN_DEFAULT.get(model)):
        if tag in tags:
            return tag
    return next(iter(tags), None)


# --------------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------------


def list_pretrained(model: str | None = None) -> list[str]:
    """The ``model.tag`` names of every available entry (of one model), in zoo order, default tag first."""
    with _LOCK:
        models = list_models() if model is None else [get_model_info(model).name]
        names = []
        for name in models:
            tags = list(_tags(name))
            default = _default_tag(name)
            tags.sort(key=lambda tag: tag != default)  # stable: the default first, the rest as published
            names += [f"{name}.{tag}" for tag in tags]
        return names


def get_pretrained(model: str, tag: str | None = None) -> PretrainedEntry:
    """The entry of ``model`` (or ``"model.tag"``) and ``tag``; no tag, or ``"DEFAULT"``: the default one.

    Tags match case-insensitively (``imagenet1k_v2`` finds ``IMAGENET1K_V2``).
    """
    if not isinstance(model, str):
        raise UnknownPretrainedError(
            f"pretrained weights are named by a string such as 'resnet50.IMAGENET1K_V2', got {model!r}"
        )
    if tag is None and "." in model:
        model, tag = model.split(".", 1)
    info = get_model_info(model)  # unknown model: UnknownModelError with the closest names
    with _LOCK:
        tags = _tags(info.name)
        if not tags:
            raise UnknownPretrainedError(
                f"{info.name} has no published pretrained weights (cnnzoo lists them with list_pretrained()); train "
                f"it, or add your own file with register_pretrained({info.name!r}, TAG, url=..., sha256=...)."
            )
        wanted = _default_tag(info.name) if tag is None or tag.upper() == DEFAULT_TAG else tag
        found = {t.lower(): t for t in tags}.get(str(wanted).lower())
        if found is None:
            close = difflib.get_close_matches(str(tag), list(tags), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            listed = ", ".join(f"{t} (default)" if t == _default_tag(info.name) else t for t in tags)
            raise UnknownPretrainedError(
                f"{info.name} has no pretrained weights tagged {tag!r}.{hint} Its tags: {listed}."
            )
        return tags[found]


def fetch_pretrained(entry_or_name: PretrainedEntry | str, *, progress: bool | None = None) -> Path:
    """The verified local file of an entry (or of ``"model"`` / ``"model.tag"``): cached, or downloaded now.

    What ``create_model(name, pretrained=...)`` calls before loading the file with ``load_pretrained``.
    """
    entry = entry_or_name if isinstance(entry_or_name, PretrainedEntry) else get_pretrained(entry_or_name)
    return hub.fetch_file(entry.url, entry.pinned, file_name=entry.file_name, progress=progress)


def register_pretrained(
    model: str,
    tag: str,
    *,
    url: str,
    sha256: str | None = None,
    md5: str | None = None,
    categories: Sequence[str] | None = None,
    like: PretrainedEntry | str | None = None,
    default: bool = False,
    replace_existing: bool = False,
    **details: Any,
) -> PretrainedEntry:
    """Add an entry at run time (a company mirror, weights you host): fetched, verified and cached like the rest.

    ``like="resnet50.IMAGENET1K_V2"`` copies what is not given (digest, categories, preprocessing,
    metrics...) from that entry: a mirror of a published file needs only ``url``. Otherwise a digest
    (``sha256``, full or 8+ digit prefix, or ``md5``) is required. ``details`` are other
    :class:`PretrainedEntry` fields (``num_classes``, ``preprocessing`` as a :class:`Preprocessing` or
    a dict, ``top1``, ``top5``, ``license``, ``has_classifier``, ``file_name``, ``notes``...).
    ``default=True`` makes it the model's default; an existing tag is replaced only with
    ``replace_existing=True`` (removing it with :func:`unregister_pretrained` brings the built-in back).
    """
    info = get_model_info(model)
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or tag.upper() == DEFAULT_TAG:
        raise WeightsError(
            f"pretrained tag {tag!r}: use letters, digits, _ and - (up to 64, not starting with _ or -), not DEFAULT"
        )
    base = get_pretrained(like) if isinstance(like, str) else like
    values = _entry_values(info, tag, url, sha256, md5, categories, base, details)
    entry = PretrainedEntry(**values)
    with _LOCK:
        clash = next((t for t in _tags(info.name) if t.lower() == tag.lower()), None)
        if clash is not None and not replace_existing:
            raise WeightsError(
                f"{info.name}.{clash} already exists ({_tags(info.name)[clash].url}); choose another tag, or pass "
                "replace_existing=True to put yours in its place"
            )
        if clash is not None and clash != tag:
            _USER.get(info.name, {}).pop(clash, None)
        _USER.setdefault(info.name, {})[tag] = entry
        if default:
            _USER_DEFAULT[info.name] = tag
    return entry


def _entry_values(
    info: ModelInfo,
    tag: str,
    url: str,
    sha256: str | None,
    md5: str | None,
    categories: Sequence[str] | None,
    base: PretrainedEntry | None,
    details: dict[str, Any],
) -> dict[str, Any]:
    """The fields of a registered entry: given ones checked, the rest from ``base`` or the model's metadata."""
    known = {f.name for f in fields(PretrainedEntry)} - {"model", "tag", "url", "digest", "source", "categories"}
    unknown = sorted(set(details) - known)
    if unknown:
        raise TypeError(
            f"register_pretrained() got unexpected keyword arguments {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    hub.check_url(url)
    values = {f.name: getattr(base, f.name) for f in fields(PretrainedEntry)} if base is not None else {}
    values.update(model=info.name, tag=tag, url=url, source="user", file_name=details.pop("file_name", ""))
    values["digest"] = _registered_digest(url, sha256, md5, base)
    if categories is not None:
        values["categories"] = tuple(str(c) for c in categories)
    values.setdefault("categories", None)
    values.update(details)
    if isinstance(values.get("preprocessing"), Mapping):
        values["preprocessing"] = Preprocessing(**values["preprocessing"])
    values.setdefault("preprocessing", _preprocessing_from_info(info))
    values.setdefault("has_classifier", True)
    if values.get("num_classes") is None and values["has_classifier"]:
        values["num_classes"] = len(values["categories"]) if values["categories"] else info.num_classes
    values.setdefault("num_classes", None)
    if values["categories"] is not None and len(values["categories"]) != values["num_classes"]:
        raise WeightsError(
            f"{info.name}.{tag}: {len(values['categories'])} categories for num_classes={values['num_classes']}; "
            "give one name per class"
        )
    return values


def _registered_digest(url: str, sha256: str | None, md5: str | None, base: PretrainedEntry | None) -> str:
    if sha256 is not None and md5 is not None:
        raise WeightsError(f"{url}: give one digest, sha256= or md5=, not both")
    if sha256 is not None:
        return str(hub.Digest.parse(sha256, "sha256"))
    if md5 is not None:
        return str(hub.Digest.parse(md5, "md5"))
    if base is not None:
        return base.digest
    raise WeightsError(
        f"{url}: a URL is used only with a pinned digest: give sha256= (8 or more hex digits) or md5=, or like= a "
        "published entry"
    )


def preprocessing_of_model(model: str, *, keras: bool = False) -> Preprocessing:
    """How to feed a weights file of ``model`` that is in no table: Keras' ``preprocess_input`` for a Keras file
    of a model with a Keras twin, otherwise the model's own normalisation with torchvision's usual crop."""
    info = get_model_info(model)
    if keras and info.keras in KERAS_PREPROCESSING_MODE:
        return keras_preprocessing(info.keras)
    return _preprocessing_from_info(info)


def _preprocessing_from_info(info: ModelInfo) -> Preprocessing:
    """The model's own normalisation and torchvision's usual evaluation crop: the native size, resized by 1/0.875."""
    size = info.input_size[1]
    return Preprocessing(round(size / 0.875), size, "bilinear", tuple(info.mean), tuple(info.std), info.channel_order)


def unregister_pretrained(model: str, tag: str) -> None:
    """Remove an entry added by :func:`register_pretrained` (a built-in one it replaced comes back)."""
    with _LOCK:
        tags = _USER.get(model, {})
        found = next((t for t in tags if t.lower() == tag.lower()), None)
        if found is None:
            raise UnknownPretrainedError(f"{model}.{tag} was not registered with register_pretrained; nothing removed")
        del tags[found]
        if _USER_DEFAULT.get(model) == found:
            del _USER_DEFAULT[model]


# --------------------------------------------------------------------------------------------------
# What create_model, convert and the command line ask of the table
# --------------------------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str | None]:
    """``"resnet50.IMAGENET1K_V1"`` -> ``("resnet50", "IMAGENET1K_V1")``; a plain model name -> ``(name, None)``.

    timm's convention for naming weights in the model argument (zoo model names hold no dot).
    """
    model, dot, tag = str(name).partition(".")
    if dot and not tag:
        raise UnknownPretrainedError(f"{name!r}: nothing after the dot; write MODEL.TAG, e.g. resnet50.IMAGENET1K_V2")
    return model, (tag if dot else None)


def resolve_pretrained(model: str, pretrained: bool | str | PretrainedEntry | None) -> PretrainedEntry | None:
    """The entry ``create_model(model, pretrained=...)`` loads: None for False/None, the default for True,
    a tag (``"IMAGENET1K_V1"``), a full name (``"resnet50.IMAGENET1K_V1"``, of this model) or an entry."""
    if pretrained is None or pretrained is False:
        return None
    if isinstance(pretrained, PretrainedEntry):
        entry = pretrained
    elif pretrained is True:
        entry = get_pretrained(model)
    elif isinstance(pretrained, str):
        named, tag = split_name(pretrained) if "." in pretrained else (model, pretrained)
        entry = get_pretrained(named, tag)
    else:
        raise UnknownPretrainedError(
            f"pretrained={pretrained!r}: expected True (the default weights), a tag such as 'IMAGENET1K_V2', or "
            "'model.TAG' (cnnzoo weights list)"
        )
    if entry.model != get_model_info(model).name:
        raise UnknownPretrainedError(f"{entry.name} are weights of {entry.model}, not of {model}")
    return entry


def match_file(model: str, path: str | Path) -> PretrainedEntry | None:
    """The entry of ``model`` whose pinned digest the file at ``path`` has (a published file, any name), or None."""
    for name in list_pretrained(model):
        entry = get_pretrained(name)
        digest = entry.pinned
        if digest.matches(hub.file_digest(path, digest.algorithm)):
            return entry
    return None
