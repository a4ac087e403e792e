"""The ``cnnzoo`` command line: a thin skin over the Python API, one module per command group.

:mod:`.models` (list, info), :mod:`.train` (train, eval, predict), :mod:`.inspect` (summary, shape,
visualize), :mod:`.weights` (convert, export), :mod:`.see`, :mod:`.bench`; shared options in :mod:`.options`.
Each module's ``register(subparsers)`` adds its commands without importing torch (handlers import the API
when they run), so ``cnnzoo --help`` and ``cnnzoo COMMAND --help`` start in a fraction of a second.

A handler returns the exit code. :func:`main` is the one place that turns what a handler raises into what the
user sees:

* a :class:`~cnnzoo.errors.CnnzooError`, or a ValueError / TypeError raised by cnnzoo's own code (the Python
  API's way to refuse an argument): one line ``cnnzoo COMMAND: error: ...``, exit code 2;
* an OSError (a disk full, a file vanished): one line naming the file and the system's reason, exit code 1;
* Ctrl-C: one line, exit code 130; stdout closed early (``cnnzoo summary resnet152 | head -1``): quiet,
  exit code 1, as the Python documentation recommends for a broken pipe;
* anything else is a bug of cnnzoo's: a short message asking for a report, exit code 1.

The traceback is printed with ``--debug`` (on any command) or ``CNNZOO_DEBUG=1``. Bad arguments found while
the command line is read (a range, a choice) are one line too, exit code 2 (:class:`.options.CliParser`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path

from ..errors import CnnzooError, OptionError
from ..options import SHARED
from . import bench, inspect, models, see, train, weights
from .options import CliParser

__all__ = ["build_parser", "main"]

_PACKAGE = Path(__file__).resolve().parent.parent  # src/cnnzoo
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A shared option's Python name -> its flag: batch_size -> --batch-size, warmup -> --warmup.
_FLAGS = {s.flag[2:].replace("-", "_"): s.flag for s in SHARED.values()}
REPORT_HINT = "this is a bug in cnnzoo, not in what you typed: please report it with the command line"


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="cnnzoo", description="The landmark CNNs, exact and verified, on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, train, weights, inspect, see, bench):  # the order of `cnnzoo --help`
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("CNNZOO_DEBUG", "") not in ("", "0")
    where = f"cnnzoo {args.command}"
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print(f"\n{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        code, line = _explain(e)
        print(f"{where}: {line}", file=sys.stderr)
        return code


def _explain(e: Exception) -> tuple[int, str]:
    """The exit code and the one line (two for a bug) that stand for ``e``."""
    if isinstance(e, OptionError) and e.option in _FLAGS:  # the API names a parameter; the user typed its flag
        e = OptionError(_FLAGS[e.option], e.value, e.allowed)
    message = _ANSI.sub("", str(e)).strip()
    if isinstance(e, CnnzooError) or (isinstance(e, (ValueError, TypeError)) and _raised_by_cnnzoo(e)):
        return 2, f"error: {message}"
    if isinstance(e, OSError):
        return 1, f"error: {message or type(e).__name__}"
    first = message.splitlines()[0] if message else ""
    return 1, f"internal error: {type(e).__name__}: {first}\n  {REPORT_HINT} (the traceback: --debug or CNNZOO_DEBUG=1)"


def _raised_by_cnnzoo(e: BaseException) -> bool:
    """Whether the innermost frame of ``e``'s traceback is in cnnzoo's source: raised on purpose by its code,
    not by a library it called (a library's ValueError escaping cnnzoo's checks is a bug of cnnzoo's)."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file descriptor (a test's capture)
        pass
