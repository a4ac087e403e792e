"""Fitting a weights file to a model built with another number of input channels.

Published ImageNet weights see RGB (or BGR) images: their first convolution has 3 input channels.
A model built with ``in_chans=1`` (grayscale) or ``in_chans=4`` (RGB + depth, multispectral) can still
start from them, as timm's ``adapt_input_conv`` does:

- **one channel**: the kernel summed over its 3 input channels. A gray image fed as R = G = B would
  give every filter exactly the response of the summed kernel on that image, so the pretrained
  filters still fire on the same gray patterns.
- **more than 3**: the RGB kernel repeated over the new channels (R, G, B, R, G, ...) and scaled by
  3 / in_chans, so that an input whose channels all carry the same signal produces the activations
  the 3-channel network produced, and the layers after it see the statistics they were trained on.

Only the convolutions that take the model's input are adapted: a Conv2d whose ``in_channels`` is the
model's ``in_chans`` and whose kernel in the file differs from the model's in the input dimension alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import WeightsError


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A (out, 3, kh, kw) kernel for ``in_chans`` inputs: summed for 1, repeated and rescaled for more.

    Computed in float32 and returned in the kernel's dtype (a half-precision file stays half).
    """
    if weight.dim() != 4:
        raise WeightsError(f"adapt_input_conv: expected a 4-d convolution kernel, got shape {tuple(weight.shape)}")
    out_chans, file_chans, kh, kw = weight.shape
    if in_chans == file_chans:
        return weight
    if not isinstance(in_chans, int) or in_chans < 1:
        raise WeightsError(f"adapt_input_conv: in_chans must be a positive integer, got {in_chans!r}")
    kernel = weight.float()
    if in_chans == 1:
        adapted = kernel.sum(dim=1, keepdim=True)
    elif file_chans == 3:
        repeats = math.ceil(in_chans / 3)
        adapted = kernel.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)
    else:
        raise WeightsError(
            f"adapt_input_conv: the file's first convolution takes {file_chans} channels; only 3-channel kernels "
            f"are repeated for {in_chans} inputs (1 input: any kernel is summed)"
        )
    return adapted.to(weight.dtype)


def adapt_input_convs(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Adapt, in ``state``, the kernels of the convolutions fed by the model's input; notes on what changed."""
    in_chans = getattr(model, "in_chans", None)
    if in_chans is None:
        return []
    notes = []
    for name, module in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if not (isinstance(module, nn.Conv2d) and module.in_channels == in_chans and key in state):
            continue
        theirs, mine = state[key], module.weight
        if (
            theirs.dim() != 4
            or theirs.shape[1] == in_chans
            or theirs.shape[0] != mine.shape[0]
            or theirs.shape[2:] != mine.shape[2:]
        ):
            continue
        if module.groups != 1:
            continue  # a grouped convolution is not an input stem; the strict load names the mismatch
        state[key] = adapt_input_conv(theirs, in_chans)
        how = "summed over the file's input channels" if in_chans == 1 else f"repeated and scaled by 3/{in_chans}"
        notes.append(
            f"adapted {key} from {theirs.shape[1]} to {in_chans} input channels ({how}, as timm's adapt_input_conv)"
        )
    return notes
