"""Parameter counts the two ways the literature quotes them.

* ``torch`` style: ``sum(p.numel() for p in model.parameters())``, what torchvision reports.
* ``keras`` style: what ``model.summary()`` / ``count_params()`` of Keras reports, where BatchNorm's
  moving mean and variance are *non-trainable parameters*. So Keras' ResNet50 has 25,636,712 "params"
  of which 53,120 are BN statistics, while torchvision-style counting would give 25,583,592.

Shared parameters are counted once in both.

Trainable means ``requires_grad``: freeze a backbone (``p.requires_grad = False``) and its parameters
move to non-trainable, exactly as Keras moves the weights of layers with ``trainable = False`` (a frozen
BatchNorm's gamma and beta too); in keras style non-trainable is then the frozen parameters plus every
BatchNorm's moving statistics, which Keras never trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int
    non_trainable: int
    style: str


def count_params(model: nn.Module, style: str = "torch") -> ParamCount:
    """Count parameters in ``torch`` or ``keras`` style (see module docstring)."""
    if style not in ("torch", "keras"):
        raise ValueError(f"style must be 'torch' or 'keras', got {style!r}")
    params = list(model.parameters())  # .parameters() already de-duplicates shared tensors
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    if style == "keras":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                frozen += m.running_mean.numel() + m.running_var.numel()
    return ParamCount(trainable + frozen, trainable, frozen, style)
