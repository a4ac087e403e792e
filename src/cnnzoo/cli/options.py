"""Options shared by the ``cnnzoo`` commands, and the ``cnnzoo train`` flags generated from :class:`TrainConfig`.

:func:`add_train_config_arguments` turns each :class:`~cnnzoo.train.config.TrainConfig` field's declared
:class:`~cnnzoo.train.config.Option` into an argparse flag (type, default, help, choices and range from the
declaration), and :func:`train_config_values` reads them back from the parsed namespace, so a new training
option needs no line here. Argument parsers for the other commands (``KEY=VALUE``, sizes, paddings) live
here too, so every command reads them alike.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..train.config import Declared, declared_options

__all__ = [
    "add_batch_size", "add_decode", "add_device", "add_model_options", "add_train_config_arguments", "add_workers",
    "flag_of", "parse_input_size", "parse_option", "parse_padding", "positive", "train_config_values",
]  # fmt: skip

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available)"


# --- value parsers -----------------------------------------------------------------------------------


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value): JSON values (numbers, lists, true/false/null in any case), else the text."""
    if "=" not in text:
        raise ValueError(f"--option {text!r}: expected KEY=VALUE, e.g. aux_logits=true")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
    except json.JSONDecodeError:
        return key, value


def parse_input_size(text: str) -> int | tuple[int, ...]:
    """``3x224x224`` -> (3, 224, 224); ``224x224`` -> (224, 224); ``224`` -> 224."""
    try:
        values = tuple(int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        values = ()
    if len(values) not in (1, 2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW (3x224x224), HxW (224x224) or one size (224), all positive; got {text!r}")
    return values[0] if len(values) == 1 else values


def parse_padding(text: str) -> int | str | tuple[int, int]:
    """``3`` -> 3, ``same`` / ``valid``, ``0,1`` -> (0, 1) (before, after)."""
    if text in ("same", "valid"):
        return text
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected a padding like 3, 0,1 (before, after), same or valid; got {text!r}")
    return values[0] if len(values) == 1 else values


def positive(text: str) -> int:
    """An integer of at least 1 (argparse ``type=``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --- shared flags ------------------------------------------------------------------------------------


def add_device(p: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    p.add_argument("--device", help=help)


def add_batch_size(p: argparse.ArgumentParser, *, default: int | None = None, help: str = "images per batch") -> None:
    p.add_argument("--batch-size", type=int, default=default, help=help)


def add_workers(p: argparse.ArgumentParser, *, default: int = 4, help: str = "file reading and decoding processes for folder data") -> None:
    p.add_argument("--workers", type=int, default=default, help=help)


def add_decode(p: argparse.ArgumentParser, help: str) -> None:
    """``--decode``, with the choices TrainConfig declares."""
    p.add_argument("--decode", choices=_declared("decode").option.choices, default="auto", help=help)


def add_model_options(p: argparse.ArgumentParser, example: str = "aux_logits=true") -> None:
    """``--option KEY=VALUE``, repeatable: keyword arguments of the model's builder. The texts are parsed with
    :func:`parse_option` by the command, so a malformed one is reported in the command's one-line error form."""
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=f"model option, e.g. --option {example}")


# --- the cnnzoo train flags, from TrainConfig ---------------------------------------------------------


def flag_of(name: str) -> str:
    """How the command line spells TrainConfig field ``name``: ``batch_size`` -> ``--batch-size``."""
    d = _declared(name)
    if d.option.positional:
        return name.upper()
    return d.option.flags[0] if d.option.flags else "--" + name.replace("_", "-")


def add_train_config_arguments(p: argparse.ArgumentParser) -> None:
    """One argument per TrainConfig field declared for the command line, in declaration order."""
    for d in declared_options():
        if d.option.cli:
            _add_argument(p, d)


def train_config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig keyword arguments the command line gave (its defaults where it gave none)."""
    values = {}
    for d in declared_options():
        if d.option.cli:
            value = getattr(args, d.name)
            values[d.name] = dict(parse_option(v) for v in value) if d.kind is dict else value  # --option KEY=VALUE...
    return values


def _add_argument(p: argparse.ArgumentParser, d: Declared) -> None:
    o = d.option
    help = o.help + (f" ({o.allowed_range()})" if o.allowed_range() else "")
    kwargs: dict[str, Any] = dict(help=help.replace("%", "%%"))  # argparse formats help with %
    if o.positional:  # optional on the command line: --resume names the model of its run
        p.add_argument(d.name, nargs="?", **kwargs)
        return
    flags = o.flags or ("--" + d.name.replace("_", "-"),)
    kwargs.update(dest=d.name, default=d.default)
    if d.kind is bool:
        if d.default is None:  # three states: --x, --no-x, or unset (the device's or the model's default)
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["action"] = "store_false" if d.default else "store_true"
            if d.default and not o.flags:
                flags = ("--no-" + d.name.replace("_", "-"),)
    elif d.kind is dict:  # KEY=VALUE texts, parsed by train_config_values
        kwargs.update(action="append", default=[], metavar=o.metavar)
    else:
        kwargs.update(type=d.kind, choices=o.choices, metavar=o.metavar)
    p.add_argument(*flags, **kwargs)


def _declared(name: str) -> Declared:
    return next(d for d in declared_options() if d.name == name)
