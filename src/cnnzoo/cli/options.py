"""Options shared by the ``cnnzoo`` commands, and the ``cnnzoo train`` flags generated from :class:`TrainConfig`.

:func:`add_train_config_arguments` turns each :class:`~cnnzoo.train.config.TrainConfig` field's declared
:class:`~cnnzoo.train.config.Option` into an argparse flag (type, default, help, choices and range from the
declaration), and :func:`train_config_values` reads them back from the parsed namespace, so a new training
option needs no line here. The other commands' shared options (``--batch-size``, ``--workers``, ``--topk``,
``--opset``, ``--device`` ...) are declared once in :data:`cnnzoo.options.SHARED`, which the Python API checks
too; :func:`add_shared` makes the flag, whose ``type=`` refuses a value out of range while the command line is
read, before anything runs. :class:`CliParser` reports such a refusal in one line (no usage block), exit code 2.
The outputs: :func:`add_out` and :func:`add_force`, with :func:`cnnzoo.fileio.safe_output` behind them.
Argument parsers for the other commands (``KEY=VALUE``, sizes, paddings) live here too, so every command
reads them alike.

Nothing here imports torch: ``cnnzoo --help`` and ``cnnzoo COMMAND --help`` build every parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..options import SHARED, Allowed, check_device_name
from ..train.config import Declared, declared_options

__all__ = [
    "CliParser", "add_batch_size", "add_decode", "add_device", "add_force", "add_max_image_pixels", "add_model_options",
    "add_out", "add_shared", "add_train_config_arguments", "add_workers", "flag_of", "max_pixels_of", "parse_device",
    "parse_input_size", "parse_option", "parse_padding", "positive", "train_config_values",
]  # fmt: skip

DEVICE_HELP = SHARED["device"].help


class CliParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (``cnnzoo predict: error: argument --topk: 0 is not
    allowed (must be an integer >= 1)``) and exit code 2, instead of the usage block; and ``--debug`` on every
    command (the traceback of an unexpected error; also ``CNNZOO_DEBUG=1``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="on an unexpected error, print its traceback",
        )

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _checked(allowed: Allowed):
    """An argparse ``type=``: the text parsed and range-checked by ``allowed``, refused in its words."""

    def parse(text: str) -> Any:
        try:
            return allowed.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = allowed.kind.__name__  # argparse names the type in some messages
    parse.allowed = allowed  # type: ignore[attr-defined]  # what the flag takes, for the tests that probe every flag
    return parse


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
        raise argparse.ArgumentTypeError(
            f"expected CxHxW (3x224x224), HxW (224x224) or one size (224), all positive; got {text!r}"
        )
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


def parse_device(text: str) -> str:
    """``--device``: cpu, cuda, cuda:N or mps, spelt right (whether this machine has it is checked when it is used)."""
    try:
        return check_device_name(text, label="--device")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--device: ")) from None


# --- shared flags ------------------------------------------------------------------------------------


def add_shared(
    p: argparse.ArgumentParser, name: str, *, default: Any = None, help: str | None = None, **kwargs: Any
) -> None:
    """The flag of :data:`cnnzoo.options.SHARED` ``[name]``: its spelling, its help (``help`` replaces it) with the
    range, and a ``type=`` that refuses values out of the range."""
    shared = SHARED[name]
    allowed = shared.allowed
    words = "" if allowed.choices else f" ({allowed.words()})"
    kwargs.setdefault("dest", name)
    if allowed.choices is not None:
        kwargs.update(choices=allowed.choices)
    elif name == "device":
        kwargs.update(type=parse_device)
    else:
        kwargs.update(type=_checked(allowed))
    p.add_argument(shared.flag, default=default, help=((help or shared.help) + words).replace("%", "%%"), **kwargs)


def add_device(p: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    add_shared(p, "device", help=help)


def add_batch_size(p: argparse.ArgumentParser, *, default: int | None = None, help: str = "images per batch") -> None:
    add_shared(p, "batch_size", default=default, help=help)


def add_workers(
    p: argparse.ArgumentParser, *, default: int = 4, help: str = "file reading and decoding processes for folder data"
) -> None:
    add_shared(p, "workers", default=default, help=help)


def add_out(
    p: argparse.ArgumentParser, *, help: str, required: bool = False, flags: tuple[str, ...] = ("--out",)
) -> None:
    """``--out PATH``: the command checks it with :func:`cnnzoo.fileio.safe_output` before any work."""
    p.add_argument(*flags, required=required, metavar="PATH", help=help)


def add_force(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output of the same kind (never a folder, a device or a file of another kind)."""
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file of the same kind (never a folder, a device or another kind of file)",
    )


def add_decode(p: argparse.ArgumentParser, help: str) -> None:
    """``--decode``, with the choices TrainConfig declares."""
    p.add_argument("--decode", choices=_declared("decode").option.choices, default="auto", help=help)


def add_max_image_pixels(p: argparse.ArgumentParser) -> None:
    """``--max-image-pixels N`` on a command that reads images: spelled, defaulted and bounded as TrainConfig
    declares it for ``cnnzoo train``, so that the image reader's refusal, which names this flag, holds on
    every command."""
    d = _declared("max_image_pixels")
    allowed = Allowed(int, min=d.option.min)
    p.add_argument(
        flag_of("max_image_pixels"), dest="max_image_pixels", type=_checked(allowed), default=d.default, metavar="N",
        help="an image whose header promises more pixels (width x height) is refused unread, a guard against "
        f"decompression bombs; 0: no limit (default {d.default:,}; {allowed.words()})",
    )  # fmt: skip


def max_pixels_of(args: argparse.Namespace) -> int | None:
    """``--max-image-pixels`` as the image reader takes it: 0 (no limit) is None."""
    return args.max_image_pixels or None


def add_model_options(p: argparse.ArgumentParser, example: str = "aux_logits=true") -> None:
    """``--option KEY=VALUE``, repeatable: keyword arguments of the model's builder. The texts are parsed with
    :func:`parse_option` by the command, so a malformed one is reported in the command's one-line error form."""
    p.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help=f"model option, e.g. --option {example}"
    )


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
    else:  # the device's spelling is checked here, its range (declared in TrainConfig) by TrainConfig.validate
        kwargs.update(type=parse_device if d.name == "device" else d.kind, choices=o.choices, metavar=o.metavar)
        if o.bare is not None:
            kwargs.update(nargs="?", const=o.bare)
    p.add_argument(*flags, **kwargs)


def _declared(name: str) -> Declared:
    return next(d for d in declared_options() if d.name == name)
