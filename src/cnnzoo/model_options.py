"""A zoo model's options (``--option KEY=VALUE``, ``create_model(name, **options)``), typed from its own code.

A builder has one signature, ``name(num_classes, in_chans, **options)``, and hands the options to its network
class, whose ``__init__`` declares each by its annotation and default: ``aux_logits: bool = False``. So the
builder's return annotation names the class, and :func:`model_options` reads the class's keyword parameters
with plain defaults (bool, int, float, str, None), keeping those the builder takes: the builder is asked
(its ``check_options`` refuses any other keyword before anything is built, e.g. vgg11's ``batch_norm``, which
its name fixes). :func:`parse_model_option` turns the command line's text into a value of that type and
refuses what it cannot parse (``batch_norm=no`` is False, never the true string ``'no'``);
:func:`check_model_options` holds the Python API's values to the same types. Option names shared by the
families carry a range too (:data:`RANGES`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import OptionError
from .options import Allowed
from .registry import get_model_info

__all__ = [
    "ModelOption",
    "RANGES",
    "check_model_options",
    "model_options",
    "parse_model_option",
    "parse_model_options",
    "shapes_only",
]

# Ranges of the options whose meaning every family shares.
RANGES: dict[str, Allowed] = {
    "in_chans": Allowed(int, min=1),
    "dropout": Allowed(float, min=0, max=1),
    "dropout_aux": Allowed(float, min=0, max=1),
    "branch3_kernel": Allowed(int, min=1),
}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_PLAIN = (bool, int, float, str, type(None))
_PROBE = "__cnnzoo_probe__"  # a keyword no builder takes


@dataclass(frozen=True)
class ModelOption:
    """One option of one model: its name, the type its annotation gives, its default."""

    name: str
    kind: Any  # bool, int, float, str, a typing.Literal, or X | None
    default: Any

    def words(self) -> str:
        """What the option takes, in words: ``true or false``, ``a number >= 0 and <= 1`` ..."""
        base, optional = _base(self.kind)
        if typing.get_origin(base) is typing.Literal:
            text = "one of " + ", ".join(map(str, typing.get_args(base)))
        elif base is bool:
            text = "true or false (also yes/no, on/off, 1/0)"
        elif self.name in RANGES:
            text = RANGES[self.name].words()
        else:
            text = {int: "an integer", float: "a number", str: "a text"}.get(base, "a JSON value")
        return text + (", or none" if optional else "")

    def parse(self, text: str) -> Any:
        """The command line's text -> the value; ``ValueError`` when the text is not one of :meth:`words`."""
        base, optional = _base(self.kind)
        low = text.strip().lower()
        if optional and low in ("none", "null"):
            return None
        if base is bool and low in _TRUE + _FALSE:
            return low in _TRUE
        if base in (int, float, str) or typing.get_origin(base) is typing.Literal:
            value = _convert(base, text.strip())
        elif base is not bool:  # an annotation of another shape: the text as JSON, as before
            value = _json_or_text(text)
        else:
            value = None
        if value is None or not self.allows(value):
            raise ValueError(self.words())
        return value

    def allows(self, value: Any) -> bool:
        base, optional = _base(self.kind)
        if value is None:
            return optional
        if typing.get_origin(base) is typing.Literal:
            return value in typing.get_args(base)
        if base is bool:
            return isinstance(value, bool)
        if base in (int, float):
            ok = isinstance(value, (int, float) if base is float else int) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
            return ok and (self.name not in RANGES or RANGES[self.name].allows(value))
        if base is str:
            return isinstance(value, str)
        return True  # annotations of other shapes: the network class checks


def _base(kind: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (it, False)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(kind))
    return kind, False


def _convert(base: Any, text: str) -> Any:
    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        return next((c for c in choices if str(c) == text), None)
    try:
        return base(text)
    except ValueError:
        return None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# --- what a model takes ---------------------------------------------------------------------------------


@functools.cache
def model_options(name: str) -> dict[str, ModelOption]:
    """The options model ``name`` takes, by name, with their types and defaults (``in_chans`` among them)."""
    info = get_model_info(name)
    builder = info.builder
    found = {"in_chans": ModelOption("in_chans", int, info.input_size[0])}
    network = _hints(builder).get("return")
    if not isinstance(network, type):
        return found  # a builder without a class annotation: only what every builder takes
    hints = _hints(network.__init__)
    for p in list(inspect.signature(network.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("num_classes", "in_chans"):
            continue
        if p.default is inspect.Parameter.empty or not isinstance(p.default, _PLAIN):
            continue  # what the builder itself supplies: the network's table, its block type, its name
        kind = hints.get(p.name, type(p.default) if p.default is not None else Any)
        found[p.name] = ModelOption(p.name, kind, p.default)
    return {k: v for k, v in found.items() if k == "in_chans" or _builder_takes(name, k, v.default)}


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that does not resolve: fall back to the defaults' types
        return {}


def _builder_takes(name: str, key: str, default: Any) -> bool:
    """Ask the builder whether it takes ``key``: it refuses an unknown keyword with a TypeError naming it, and
    the probe keyword after ``key`` makes it refuse before building anything (built on the meta device, without
    initialisation, should a builder not refuse early)."""
    builder = get_model_info(name).builder
    try:
        with shapes_only():
            builder(num_classes=1, **{key: default, _PROBE: None})
    except TypeError as e:
        return repr(key) not in str(e)
    except Exception:  # refused for its value, not its name
        return True
    return True


# --- reading and checking values ------------------------------------------------------------------------


def parse_model_option(name: str, text: str, *, label: str = "--option") -> tuple[str, Any]:
    """``KEY=VALUE`` for model ``name`` -> (key, typed value); :class:`~cnnzoo.errors.OptionError` naming the
    option, the text and what it takes, when the key is not an option of the model or the value does not parse."""
    if "=" not in text:
        raise OptionError(label, text, "KEY=VALUE, e.g. --option aux_logits=true")
    key, value = (s.strip() for s in text.split("=", 1))
    options = model_options(name)
    if key not in options:
        raise OptionError(label, text, f"an option of {name}: {', '.join(sorted(options))}")
    try:
        return key, options[key].parse(value)
    except ValueError as e:
        raise OptionError(label, text, f"{key} set to {e}") from None


def parse_model_options(name: str, texts: list[str] | tuple[str, ...], *, label: str = "--option") -> dict[str, Any]:
    """Every ``--option KEY=VALUE`` text for model ``name``, typed; a key given twice is refused."""
    values: dict[str, Any] = {}
    for text in texts:
        key, value = parse_model_option(name, text, label=label)
        if key in values:
            raise OptionError(label, text, f"given once: {key} is already {values[key]!r}")
        values[key] = value
    return values


def check_model_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse an option value of the wrong type or range (``aux_logits="no"``) with one line; options the model
    does not know are left to its builder, which names them."""
    if not options:
        return
    known = model_options(name)
    for key, value in options.items():
        if key in known and not known[key].allows(value):
            raise OptionError(f"{name} option {key}", value, known[key].words())


# --- building without weights ---------------------------------------------------------------------------

_RANDOM_FILLS = frozenset({
    "normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
    "orthogonal_", "random_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_", "erfinv_",
})  # fmt: skip


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build models on the meta device without running their random initialisers: shapes and parameter counts
    only, in milliseconds. (On the meta device an initialiser computes nothing, yet ``normal_`` there imports
    torch's compiler, seconds on the first call.)"""
    import torch
    from torch.overrides import TorchFunctionMode

    class _SkipRandomInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in _RANDOM_FILLS:
                tensor = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
                if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                    return tensor
            return func(*args, **kwargs)

    with torch.device("meta"), _SkipRandomInit():
        yield
