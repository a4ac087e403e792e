"""Small building blocks shared by the families.

Family-specific blocks (Inception modules, residual blocks) live in their family's file, next to
the table that uses them, as in torchvision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation, the unit of most post-2015 networks.

    Children are named ``conv``, ``bn`` (and ``act``) so state-dict keys read ``...conv.weight``,
    ``...bn.running_mean``, as in torchvision's ``BasicConv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        *,
        bias: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.1,
        bn_scale: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        if padding == "same" and _any_gt(stride, 1):
            self.pad = SamePad2d(kernel_size, stride)
            padding = 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.bn = (
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
            if bn_scale
            else BatchNorm2dNoScale(out_channels, eps=eps, momentum=momentum)
        )
        if act:
            self.act = nn.ReLU(inplace=True)


def _any_gt(v: int | tuple[int, int], n: int) -> bool:
    return any(s > n for s in (v if isinstance(v, tuple) else (v,)))


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return v if isinstance(v, tuple) else (v, v)


class SamePad2d(nn.Module):
    """TensorFlow/Keras ``padding='same'``: output = ceil(input / stride), extra pixel at bottom/right.

    PyTorch's ``padding='same'`` only exists for stride 1, where the padding is symmetric for odd
    kernels; for stride > 1 TensorFlow pads ``max((ceil(n/s)-1)*s + k - n, 0)`` pixels in total and puts
    the odd one at the end. Keras models trained with that padding need it reproduced exactly.
    """

    def __init__(
        self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1, dilation: int | tuple[int, int] = 1
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class BatchNorm2dNoScale(nn.BatchNorm2d):
    """BatchNorm with a learned shift (beta) but no scale (gamma), as Keras' ``BatchNormalization(scale=False)``.

    Keras' InceptionV3 uses it: a ReLU follows, so a scale would be redundant. Keeping gamma out of the
    parameters keeps the parameter count equal to Keras' (23,817,352 trainable).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            None,
            self.bias,
            use_batch_stats,
            self.momentum,
            self.eps,
        )


class ShortcutA(nn.Module):
    """Paper option A (sections 3.3 and 4.2): identity, subsampled by ``stride``, extra channels zero.

    No parameters, so the CIFAR nets have exactly as many weights as their plain (non-residual)
    counterparts. ``x[..., ::2, ::2]`` keeps ceil(H / 2) rows, as many as the stride-2 3x3 conv (padding
    1) of the branch produces, so the two always add up. The new channels are appended after the old.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A shortcuts can only add channels, not go from {in_channels} to {out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's last pair pads dim 1 (channels): nothing before, the missing channels after.
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class GlobalAvgPool2d(nn.Module):
    """Keras ``GlobalAveragePooling2D``: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
