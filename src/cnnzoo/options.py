"""The options the commands and the API functions share, each declared once: its flag, help, kind and range.

``cnnzoo train``'s options are the fields of :class:`~cnnzoo.train.TrainConfig`; the others (``--batch-size``
of eval and bench, ``--topk``, ``--opset``, ``--device`` ...) are declared here, in :data:`SHARED`. From one
declaration come the flag (``cnnzoo.cli.options.add_shared`` turns it into an argparse argument whose
``type=`` checks the range, so a bad value stops the command before it does anything) and the check of the
Python API (:func:`check_option`, called by ``predict_images``, ``export_model``, ``benchmark`` ...), so the
command line and the API allow the same values and say so in the same words.

This module sits on the ground floor beside :mod:`cnnzoo.errors`: it imports nothing of cnnzoo's but the
errors, and torch only inside :func:`resolve_device`.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Any

from .errors import OptionError

__all__ = ["SHARED", "Allowed", "Shared", "check_device_name", "check_option", "resolve_device"]

_KIND_WORDS = {int: "an integer", float: "a number", str: "a text"}


@dataclass(frozen=True)
class Allowed:
    """What one option takes: its kind (int, float or str) and a range (``min``/``max`` inclusive, ``above``
    exclusive) or ``choices``. ``None`` is always allowed: it means "the default"."""

    kind: type = int
    min: float | None = None
    max: float | None = None
    above: float | None = None
    choices: tuple[str, ...] | None = None

    def words(self) -> str:
        """The allowed values in words, as messages and ``--help`` give them: ``an integer >= 1``."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        bounds = [f"> {self.above:g}"] if self.above is not None else []
        bounds += [f">= {self.min:g}"] if self.min is not None else []
        bounds += [f"<= {self.max:g}"] if self.max is not None else []
        return " ".join([_KIND_WORDS[self.kind], " and ".join(bounds)]).strip()

    def allows(self, value: Any) -> bool:
        if value is None:
            return True
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else self.kind):
            return False  # True is an int to Python, never a count or a size here
        if self.kind is float and not math.isfinite(value):
            return False
        return not (
            (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
            or (self.above is not None and value <= self.above)
        )

    def parse(self, text: str) -> Any:
        """A command-line text -> the value; ``ValueError`` (with :meth:`words`) when it is not allowed."""
        try:
            value = self.kind(text.strip()) if self.kind is not str else text
        except ValueError:
            raise ValueError(f"{text!r} is not allowed (must be {self.words()})") from None
        if not self.allows(value):
            raise ValueError(f"{text} is not allowed (must be {self.words()})")
        return value


@dataclass(frozen=True)
class Shared:
    """One shared option: the flag that gives it, its help, what it allows."""

    flag: str
    help: str
    allowed: Allowed


# The image reader's guard against decompression bombs (cnnzoo.data.images; TrainConfig.max_image_pixels and
# --max-image-pixels on every command that reads images): PIL's own Image.MAX_IMAGE_PIXELS default, here so that
# the command line's --help and the models' modules know it without importing PIL.
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # 89,478,485 pixels (width x height)

SHARED: dict[str, Shared] = {
    "batch_size": Shared("--batch-size", "images per batch", Allowed(int, min=1)),
    "workers": Shared(
        "--workers", "file reading and decoding processes for folder data (0: in this process)", Allowed(int, min=0)
    ),
    "topk": Shared("--topk", "the most probable classes to print per image", Allowed(int, min=1)),
    "image_size": Shared("--image-size", "input height = width", Allowed(int, min=1)),
    # The dynamo exporter's own opsets start at 18; older ones go through onnx's version converter, which has
    # no adapter for most zoo layers and then silently keeps 18. The newest is the installed onnx's (export checks).
    "opset": Shared(
        "--opset",
        "ONNX opset (default: the exporter's); the newest is the installed onnx package's",
        Allowed(int, min=18),
    ),
    "num_classes": Shared(
        "--num-classes", "build the model with this many classes (0: no classifier)", Allowed(int, min=0)
    ),
    "rounds": Shared("--rounds", "alternated rounds", Allowed(int, min=1)),
    "iters": Shared("--iters", "steps per round", Allowed(int, min=1)),
    "bench_warmup": Shared("--warmup", "untimed steps first (their time is reported)", Allowed(int, min=1)),
    "round_seconds": Shared(
        "--round-seconds", "seconds a round should take, when --iters is not given", Allowed(float, above=0)
    ),
    "threads": Shared("--threads", "CPU threads for PyTorch and ONNX Runtime", Allowed(int, min=1)),
    "batches": Shared("--batches", "batches timed for --data", Allowed(int, min=1)),
    "channels": Shared("--channels", "feature maps shown per stage", Allowed(int, min=1)),
    "size": Shared("--size", "square input side", Allowed(int, min=1)),
    "which": Shared("--which", "which checkpoint of a run folder", Allowed(str, choices=("best", "last"))),
    "device": Shared("--device", "cpu, cuda or cuda:N (default: cuda when available)", Allowed(str)),
    "backend": Shared(
        "--backend",
        "cnnzoo's inference back end (default: the fastest measured for the device)",
        Allowed(str, choices=("auto", "eager", "inductor", "onnxruntime")),
    ),
    "cam_method": Shared(
        "--method",
        "how the feature maps are weighed",
        Allowed(str, choices=("gradcam", "gradcam++", "layercam", "scorecam")),
    ),
}


def check_option(name: str, value: Any, *, label: str | None = None) -> Any:
    """``value`` if :data:`SHARED` ``[name]`` allows it, else :class:`~cnnzoo.errors.OptionError` naming
    ``label`` (default: the Python name, as the API's caller wrote it)."""
    allowed = SHARED[name].allowed
    if not allowed.allows(value):
        raise OptionError(label or name, value, allowed.words())
    return value


# --- devices ------------------------------------------------------------------------------------------

_DEVICE = re.compile(r"(cpu|cuda|cuda:\d+|mps|auto)")
DEVICE_WORDS = "cpu, cuda, cuda:N or mps"


def check_device_name(name: Any, *, label: str = "device") -> Any:
    """The spelling of a device, without torch: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (``auto``, None: the
    default). A ``torch.device`` passes as it is."""
    torch = sys.modules.get("torch")  # a torch.device can only come from an imported torch
    if name is None or (torch is not None and isinstance(name, torch.device)):
        return name
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise OptionError(label, name, DEVICE_WORDS)
    return name


def resolve_device(name: Any = None, *, label: str = "device"):
    """The ``torch.device`` for ``name`` (None / ``auto``: cuda when there is one, else cpu), refused with one
    line when this machine does not have it (``--device cuda`` without a GPU, ``cuda:3`` on a 2-GPU host)."""
    import torch

    name = check_device_name(name, label=label)
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OptionError(
                label, str(name), "cpu: this machine has no CUDA GPU (torch.cuda.is_available() is False)"
            )
        if device.index is not None and device.index >= count:
            raise OptionError(label, str(name), f"cuda or cuda:0 to cuda:{count - 1}: this machine has {count} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(label, str(name), "cpu or cuda: MPS (Apple's GPUs) is not available here")
    return device
