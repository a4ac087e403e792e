"""The ``cnnzoo`` command line: a thin skin over the Python API, one module per command group.

:mod:`.models` (list, info), :mod:`.train` (train, eval, predict), :mod:`.inspect` (summary, shape,
visualize), :mod:`.weights` (convert, export), :mod:`.bench`; shared options in :mod:`.options`. Each
module's ``register(subparsers)`` adds its commands; a handler returns the exit code, and a
:class:`~cnnzoo.errors.CnnzooError` (or ValueError / TypeError) it raises is printed here as one line,
exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import CnnzooError
from . import bench, inspect, models, train, weights

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnzoo", description="The landmark CNNs, exact and verified, on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, train, weights, inspect, bench):  # the order of `cnnzoo --help`
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CnnzooError, ValueError, TypeError) as e:
        print(f"cnnzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
