"""The base class every zoo network derives from (it checks its input first), and the builders' option check."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputShapeError


class ZooModel(nn.Module):
    """An ``nn.Module`` that knows its name, its input channels and the smallest input it accepts.

    Every zoo model calls :meth:`check_input` first in ``forward``, so a wrong input fails with a
    message naming the model, what it needs and what it got, instead of a raw error deep inside
    (``mat1 and mat2 shapes cannot be multiplied``). Set ``check_inputs = False`` to skip it.
    """

    def __init__(self, *, model_name: str, in_chans: int, min_size: int, native_size: int) -> None:
        super().__init__()
        self.model_name = model_name
        self.in_chans = in_chans
        self.min_size = min_size
        self.native_size = native_size
        self.check_inputs = True

    def check_input(self, x: torch.Tensor) -> None:
        if not self.check_inputs or torch.jit.is_scripting():
            return
        need = f"a batch of shape (N, {self.in_chans}, H, W) with H, W >= {self.min_size} (native {self.native_size}x{self.native_size})"
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"{self.model_name} expects a torch.Tensor, {need}; got {type(x).__name__}.")
        shape = tuple(x.shape)
        if x.dim() != 4:
            fix = (
                " For a single image use x.unsqueeze(0)."
                if x.dim() == 3
                else " Images go in as (batch, channels, height, width)."
            )
            raise InputShapeError(f"{self.model_name} expects {need}; got a {x.dim()}-d tensor of shape {shape}.{fix}")
        c, h, w = shape[1:]
        if c != self.in_chans:
            if shape[3] == self.in_chans:  # (N, H, W, C): images as PIL/NumPy/Keras lay them out
                raise InputShapeError(
                    f"{self.model_name} expects {self.in_chans} input channel{'s' if self.in_chans != 1 else ''} in dim 1, "
                    f"got {c} (input shape {shape}): the data looks channels-last (N, H, W, C); "
                    f"permute it with x.permute(0, 3, 1, 2)."
                )
            raise InputShapeError(
                f"{self.model_name} expects {self.in_chans} input channel{'s' if self.in_chans != 1 else ''}, "
                f"got {c} (input shape {shape}). Create the model with in_chans={c}, or convert the images "
                f"({'to grayscale' if self.in_chans == 1 else 'to RGB' if self.in_chans == 3 else f'to {self.in_chans} channels'})."
            )
        if h < self.min_size or w < self.min_size:
            raise InputShapeError(
                f"{self.model_name} needs an input of at least {self.min_size}x{self.min_size} pixels "
                f"(native {self.native_size}x{self.native_size}); got {h}x{w} (input shape {shape}). "
                f"Resize the images to at least {self.min_size}x{self.min_size}."
            )


def check_options(model_name: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse an option the model does not take, in the words Python uses for an unknown keyword argument.

    Builders share one signature, ``name(num_classes, in_chans, **options)``; this keeps their options
    as strict as explicit keyword parameters would be, and the error names the model asked for.
    """
    allowed = set(allowed)
    for key in options:
        if key not in allowed:
            raise TypeError(f"{model_name}() got an unexpected keyword argument {key!r}")
