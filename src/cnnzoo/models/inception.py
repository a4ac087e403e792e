"""Inception v3, in two flavours: torchvision's and Keras'.

Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision", arXiv 1512.00567.

What v3 changes over GoogLeNet (v1), in the paper's words "factorizing convolutions":

* a 5x5 convolution becomes two stacked 3x3 ones (same receptive field, 18/25 of the cost) --
  the ``branch3x3dbl`` branches;
* an n x n convolution becomes a 1 x n followed by an n x 1 (:class:`InceptionC`, n = 7);
* the grid is shrunk by a stride-2 convolution branch *beside* a stride-2 pool, not by a pool
  alone, to avoid a representational bottleneck (:class:`InceptionB`, :class:`InceptionD`);
* on the coarsest 8x8 grid the 1x3 / 3x1 pair runs side by side to widen the output
  (:class:`InceptionE`);
* batch-normalised convolutions everywhere, one auxiliary classifier, label smoothing.

Two models share the blocks and the table :data:`INCEPTION_V3_BLOCKS`:

* :func:`inception_v3`, module for module torchvision's ``Inception3`` (names ``Conv2d_1a_3x3``,
  ``Mixed_5b`` ...), so torchvision state dicts load with the same keys; auxiliary head on by default.
* :func:`inception_v3_keras`, exactly ``keras.applications.InceptionV3``: BatchNorm without scale,
  momentum 0.99 (Keras' convention), average pools that leave the padding out of the mean (as
  TensorFlow does; torchvision's count it in), no auxiliary head, no dropout, blocks ``mixed0`` to
  ``mixed10`` and the classifier ``predictions``. :func:`keras_layer_names` maps a Keras model's
  layers onto it for :func:`cnnzoo.weights.keras.load_keras_model`.

As a backbone both have ``num_features`` 2048 (the last block) and offer to ``features_only``, as timm's
``inception_v3``: Conv2d_2b_3x3 (64 channels, /2), Conv2d_4a_3x3 (192, /4), the last block of each grid
(Mixed_5d / mixed2: 288, /8; Mixed_6e / mixed7: 768, /16) and the last block (Mixed_7c / mixed10:
2048, /32). Without padding the maps are a little smaller than input / reduction (147, 71, 35, 17, 8
at 299). The auxiliary head is not on that path; a headless network (``num_classes=0``) has none.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputShapeError, WeightsError
from ..layers import ConvBNAct
from ..registry import register_model
from ._base import FeatureStage, ZooModel, check_options

__all__ = [
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InceptionAux",
    "Inception3",
    "InceptionV3Keras",
    "InceptionOutputs",
    "INCEPTION_V3_BLOCKS",
    "inception_v3",
    "inception_v3_keras",
    "keras_layer_names",
    "creation_order_name_map",
]

# torchvision's BasicConv2d: conv without bias (BN supplies the shift), BN with eps=1e-3, ReLU.
BasicConv2d = partial(ConvBNAct, eps=1e-3)

# Keras' conv2d_bn(): Conv2D(use_bias=False) -> BatchNormalization(scale=False) -> ReLU. The BN has no
# gamma because a ReLU follows (a scale would only rescale the next layer's weights). Keras' momentum
# 0.99 weighs the *old* running value; PyTorch's momentum weighs the new one: 1 - 0.99 = 0.01.
KerasConv2dBN = partial(ConvBNAct, eps=1e-3, momentum=0.01, bn_scale=False)

# Smallest H = W that goes through (tests/test_inception.py checks both sides of each limit):
# 75 -> 37 -> 35 -> 35 -> 17 (maxpool1) -> 17 -> 15 -> 7 (maxpool2) -> 3 (Mixed_6a) -> 1 (Mixed_7a).
# At 74 Mixed_7a gets a 2x2 map, too small for its 3x3 stride-2 convolutions. Keras says 75 too.
INCEPTION_V3_MIN_SIZE = 75
# The auxiliary head pools the 17x17 Mixed_6e map 5x5 / stride 3 down to 5x5 and then applies a
# 5x5 convolution without padding: Mixed_6e must be at least 17x17, i.e. the input at least 299x299.
# It only runs in training mode, so below 299 an aux_logits model can still be evaluated.
INCEPTION_V3_AUX_MIN_SIZE = 299

InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])
InceptionOutputs.__doc__ = (
    """What Inception v3 returns in training mode with ``aux_logits=True`` (torchvision's field order)."""
)


# --------------------------------------------------------------------------------------------------
# The table: the network after the stem (paper table 1: 3 x A, reduction, 4 x C, reduction, 2 x E)
# --------------------------------------------------------------------------------------------------


class BlockSpec(NamedTuple):
    torchvision_name: str
    keras_name: str  # the name of the block's output Concatenate layer in keras.applications
    kind: str  # "A" .. "E": the block type, InceptionA .. InceptionE
    in_channels: int
    options: dict[str, Any]

    @property
    def block(self) -> type[nn.Module]:
        return BLOCK_TYPES[self.kind]


INCEPTION_V3_BLOCKS: list[BlockSpec] = [
    # 35 x 35 grid (shapes at 299 x 299 input)
    BlockSpec("Mixed_5b", "mixed0", "A", 192, {"pool_features": 32}),  # -> 256 channels
    BlockSpec("Mixed_5c", "mixed1", "A", 256, {"pool_features": 64}),  # -> 288
    BlockSpec("Mixed_5d", "mixed2", "A", 288, {"pool_features": 64}),  # -> 288
    # 35 x 35 -> 17 x 17
    BlockSpec("Mixed_6a", "mixed3", "B", 288, {}),  # -> 768
    BlockSpec("Mixed_6b", "mixed4", "C", 768, {"channels_7x7": 128}),  # -> 768
    BlockSpec("Mixed_6c", "mixed5", "C", 768, {"channels_7x7": 160}),  # -> 768
    BlockSpec("Mixed_6d", "mixed6", "C", 768, {"channels_7x7": 160}),  # -> 768
    BlockSpec("Mixed_6e", "mixed7", "C", 768, {"channels_7x7": 192}),  # -> 768, the aux head taps here
    # 17 x 17 -> 8 x 8
    BlockSpec("Mixed_7a", "mixed8", "D", 768, {}),  # -> 1280
    BlockSpec("Mixed_7b", "mixed9", "E", 1280, {}),  # -> 2048
    BlockSpec("Mixed_7c", "mixed10", "E", 2048, {}),  # -> 2048
]
AUX_TAP = "Mixed_6e"
FEATURES = 2048  # channels of the last block, into the classifier


def inception_v3_feature_stages(keras: bool) -> list[FeatureStage]:
    """The stem's last conv before each max-pool, the last block of each grid (35, 17, 8), in either flavour's names."""
    blocks = INCEPTION_V3_BLOCKS
    name = (lambda i: blocks[i].keras_name) if keras else (lambda i: blocks[i].torchvision_name)
    return [
        FeatureStage("Conv2d_2b_3x3", 64, 2),
        FeatureStage("Conv2d_4a_3x3", 192, 4),
        FeatureStage(name(2), blocks[3].in_channels, 8),  # Mixed_5d / mixed2, before the 35 -> 17 reduction
        FeatureStage(name(7), blocks[8].in_channels, 16),  # Mixed_6e / mixed7, before the 17 -> 8 reduction
        FeatureStage(name(10), FEATURES, 32),  # Mixed_7c / mixed10
    ]


# --------------------------------------------------------------------------------------------------
# The five block types. Names and branch order follow torchvision (which follows the TF-slim
# original); Keras' inception_v3.py builds its branches in the same order, which keras_layer_names
# relies on. Convolutions with stride 1 pad by k // 2 (per axis for 1x7 / 7x1): that is exactly
# Keras' padding='same' for odd kernels at stride 1; every stride-2 layer is 'valid' in both.
# ``count_include_pad`` is the one functional difference between the flavours: torchvision averages
# the 3x3 pool over 9 values even at the border (zeros included), TensorFlow/Keras over the real ones.
# --------------------------------------------------------------------------------------------------


class InceptionA(nn.Module):
    """35x35 grid module (paper figure 5): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1.

    Output channels: 64 + 64 + 96 + ``pool_features``. (The paper replaces the 5x5 by two 3x3s; the
    released model, and so torchvision and Keras, keeps a 5x5 branch *and* adds the 3x3-3x3 one.)
    """

    def __init__(
        self, in_channels: int, pool_features: int, conv_block=BasicConv2d, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = conv_block(in_channels, 64, kernel_size=1)

        self.branch5x5_1 = conv_block(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = conv_block(48, 64, kernel_size=5, padding=2)

        self.branch3x3dbl_1 = conv_block(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv_block(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv_block(96, 96, kernel_size=3, padding=1)

        self.branch_pool = conv_block(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=self.count_include_pad)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (paper figure 10): stride-2 3x3 conv | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max-pool.

    Output channels: 384 + 96 + ``in_channels``.
    """

    def __init__(self, in_channels: int, conv_block=BasicConv2d, count_include_pad: bool = True) -> None:
        super().__init__()
        # count_include_pad is accepted for a uniform block signature; this block only max-pools.
        self.branch3x3 = conv_block(in_channels, 384, kernel_size=3, stride=2)

        self.branch3x3dbl_1 = conv_block(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv_block(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv_block(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """17x17 grid module (paper figure 6, n = 7): 7x7 convolutions factorised into 1x7 and 7x1.

    1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg-pool -> 1x1; 4 x 192 = 768 channels
    out. ``channels_7x7`` is the width inside the factorised branches (128, 160, 160, 192).
    """

    def __init__(
        self, in_channels: int, channels_7x7: int, conv_block=BasicConv2d, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self.count_include_pad = count_include_pad
        c7 = channels_7x7
        self.branch1x1 = conv_block(in_channels, 192, kernel_size=1)

        self.branch7x7_1 = conv_block(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = conv_block(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = conv_block(c7, 192, kernel_size=(7, 1), padding=(3, 0))

        self.branch7x7dbl_1 = conv_block(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = conv_block(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv_block(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv_block(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv_block(c7, 192, kernel_size=(1, 7), padding=(0, 3))

        self.branch_pool = conv_block(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=self.count_include_pad)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8: 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | stride-2 max-pool.

    Output channels: 320 + 192 + ``in_channels`` (768) = 1280.
    """

    def __init__(self, in_channels: int, conv_block=BasicConv2d, count_include_pad: bool = True) -> None:
        super().__init__()
        # count_include_pad is accepted for a uniform block signature; this block only max-pools.
        self.branch3x3_1 = conv_block(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = conv_block(192, 320, kernel_size=3, stride=2)

        self.branch7x7x3_1 = conv_block(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = conv_block(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv_block(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv_block(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """8x8 grid module (paper figure 7): the 1x3 and 3x1 run side by side, widening the output.

    1x1 (320) | 1x1 -> [1x3, 3x1] (2 x 384) | 1x1 -> 3x3 -> [1x3, 3x1] (2 x 384) | avg-pool -> 1x1 (192):
    2048 channels out.
    """

    def __init__(self, in_channels: int, conv_block=BasicConv2d, count_include_pad: bool = True) -> None:
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = conv_block(in_channels, 320, kernel_size=1)

        self.branch3x3_1 = conv_block(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = conv_block(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = conv_block(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch3x3dbl_1 = conv_block(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = conv_block(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = conv_block(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv_block(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch_pool = conv_block(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)

        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)

        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)

        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=self.count_include_pad)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid (paper section 4 and figure 8), as in torchvision.

    5x5 average pool with stride 3 (17x17 -> 5x5), 1x1 conv to 128, 5x5 conv to 768 (-> 1x1), linear.
    The paper found it acts as a regulariser rather than speeding up early training.
    """

    def __init__(self, in_channels: int, num_classes: int, conv_block=BasicConv2d) -> None:
        super().__init__()
        self.conv0 = conv_block(in_channels, 128, kernel_size=1)
        self.conv1 = conv_block(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, kernel_size=5, stride=3)  # N x 768 x 5 x 5
        x = self.conv0(x)  # N x 128 x 5 x 5
        x = self.conv1(x)  # N x 768 x 1 x 1
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)  # N x 768
        return self.fc(x)  # N x num_classes


BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "A": InceptionA,
    "B": InceptionB,
    "C": InceptionC,
    "D": InceptionD,
    "E": InceptionE,
}


# --------------------------------------------------------------------------------------------------
# The two networks
# --------------------------------------------------------------------------------------------------


def _stem(model: nn.Module, in_chans: int, conv_block) -> None:
    """The plain convolutional stem (paper table 1, up to the first Inception block), shared by both flavours.

    Keras' conv2d_bn pads 'same' by default and passes 'valid' explicitly: 1a, 2a, 3b, 4a are 'valid',
    2b is 'same' (padding 1). Both max-pools are 3x3 / stride 2, 'valid', floor rounding.
    """
    model.Conv2d_1a_3x3 = conv_block(in_chans, 32, kernel_size=3, stride=2)  # 299 -> 149
    model.Conv2d_2a_3x3 = conv_block(32, 32, kernel_size=3)  # -> 147
    model.Conv2d_2b_3x3 = conv_block(32, 64, kernel_size=3, padding=1)  # -> 147
    model.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)  # -> 73
    model.Conv2d_3b_1x1 = conv_block(64, 80, kernel_size=1)  # -> 73
    model.Conv2d_4a_3x3 = conv_block(80, 192, kernel_size=3)  # -> 71
    model.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)  # -> 35


def _run_stem(model: nn.Module, x: Tensor) -> Tensor:
    x = model.Conv2d_1a_3x3(x)  # N x 32 x 149 x 149
    x = model.Conv2d_2a_3x3(x)  # N x 32 x 147 x 147
    x = model.Conv2d_2b_3x3(x)  # N x 64 x 147 x 147
    x = model.maxpool1(x)  # N x 64 x 73 x 73
    x = model.Conv2d_3b_1x1(x)  # N x 80 x 73 x 73
    x = model.Conv2d_4a_3x3(x)  # N x 192 x 71 x 71
    return model.maxpool2(x)  # N x 192 x 35 x 35


class Inception3(ZooModel):
    """Inception v3 with torchvision's modules and names (``Inception3``), so its state dicts load as they are.

    Options: ``aux_logits`` (default True, as torchvision; the head adds 3,326,696 parameters) and
    ``dropout`` (0.5) before the classifier. In training mode with the auxiliary head the forward
    returns :data:`InceptionOutputs` ``(logits, aux_logits)``, otherwise the logits. The head needs
    at least 299x299 inputs (it only runs in training mode); without it, or in eval mode, 75x75 goes.

    torchvision's ``transform_input`` is not implemented. Its published weights were ported from
    Google's, which expect pixels mapped to [-1, 1]; torchvision feeds them ImageNet-normalised images
    and undoes that normalisation inside the model (``transform_input=True`` whenever weights are
    loaded). Here the model takes what it computes on: normalise with ``info.mean = info.std = 0.5``.
    """

    head_dropout = "dropout"
    aux_heads = ("AuxLogits",)

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        aux_logits: bool = True,
        dropout: float = 0.5,
        global_pool: str = "avg",
        model_name: str = "inception_v3",
        min_size: int = INCEPTION_V3_MIN_SIZE,
        native_size: int = 299,
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=min_size, native_size=native_size)
        if aux_logits and num_classes == 0:
            raise ValueError(
                f"{model_name}: aux_logits=True needs classes to predict; a headless network (num_classes=0) "
                "has no auxiliary head"
            )
        self.aux_logits = aux_logits
        _stem(self, in_chans, BasicConv2d)
        self.AuxLogits: InceptionAux | None = None
        for spec in INCEPTION_V3_BLOCKS:
            self.add_module(spec.torchvision_name, spec.block(spec.in_channels, conv_block=BasicConv2d, **spec.options))
            if spec.torchvision_name == AUX_TAP and aux_logits:  # registered here to keep torchvision's key order
                self.AuxLogits = InceptionAux(spec.in_channels, num_classes, conv_block=BasicConv2d)
        self.set_head(FEATURES, num_classes, global_pool)
        self.avgpool = self.new_pool()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = self.new_classifier()

        # torchvision's initialisation: normal, std 0.1 for every conv and linear layer, but 0.01 for the
        # aux head's 5x5 conv and 0.001 for its classifier; BN gamma 1, beta 0. (torchvision calls
        # trunc_normal_ with a=-2, b=2: absolute bounds, 20 or more standard deviations out, so nothing
        # is ever truncated and a plain normal_ draws from the same distribution, much faster.)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.AuxLogits is not None:
            nn.init.normal_(self.AuxLogits.conv1.conv.weight, mean=0.0, std=0.01)
            nn.init.normal_(self.AuxLogits.fc.weight, mean=0.0, std=0.001)

    def check_training_input(self, x: Tensor) -> None:
        self.check_input(x)
        self._check_aux_input(x)

    def _check_aux_input(self, x: Tensor) -> None:
        """The auxiliary head's own minimum, checked when it is about to run (training mode)."""
        if self.check_inputs and self.AuxLogits is not None and isinstance(x, Tensor) and x.dim() == 4:
            h, w = x.shape[-2:]
            if h < INCEPTION_V3_AUX_MIN_SIZE or w < INCEPTION_V3_AUX_MIN_SIZE:
                raise InputShapeError(
                    f"{self.model_name} with aux_logits=True needs an input of at least {INCEPTION_V3_AUX_MIN_SIZE}x"
                    f"{INCEPTION_V3_AUX_MIN_SIZE} pixels in training mode, where the auxiliary head runs "
                    f"(its 5x5 pool and 5x5 conv need a 17x17 {AUX_TAP} map); got {h}x{w} (input shape {tuple(x.shape)}). "
                    f"Resize the images, build the model with aux_logits=False, or call model.eval() "
                    f"(then {self.min_size}x{self.min_size} is enough)."
                )

    def forward_features(self, x: Tensor) -> Tensor:
        return self._run(x, with_aux=False)[0]

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        # The auxiliary head runs in training only: it is a regulariser, dropped at inference.
        x, aux = self._run(x, with_aux=self.training)
        x = self.forward_head(x)  # avgpool, flatten, dropout, fc: N x num_classes
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, Tensor | None]:
        """The main path up to Mixed_7c (N x 2048 x 8 x 8 at 299), and the auxiliary head's logits where it runs."""
        self.check_input(x)
        if with_aux:
            self._check_aux_input(x)
        x = _run_stem(self, x)
        aux = None
        for spec in INCEPTION_V3_BLOCKS:  # 35x35 -> 17x17 -> 8x8, see the table
            x = getattr(self, spec.torchvision_name)(x)
            if spec.torchvision_name == AUX_TAP and self.AuxLogits is not None and with_aux:
                aux = self.AuxLogits(x)
        return x, aux

    def feature_stages(self) -> list[FeatureStage]:
        return inception_v3_feature_stages(keras=False)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """As :meth:`ZooModel.reset_classifier`; the auxiliary head gets a new last layer too, or goes (0 classes)."""
        super().reset_classifier(num_classes, global_pool)
        if num_classes == 0:  # nothing left for it to train towards
            self.AuxLogits = None
            self.aux_logits = False
        if self.AuxLogits is not None:
            self.AuxLogits.fc = self._placed(nn.Linear(self.AuxLogits.fc.in_features, num_classes))


class InceptionV3Keras(ZooModel):
    """``keras.applications.InceptionV3`` (include_top=True), layer for layer.

    Differences from :class:`Inception3`, all Keras': BatchNorm without gamma
    (:class:`~cnnzoo.layers.BatchNorm2dNoScale`) and with Keras' momentum; 3x3 average pools that
    exclude the padding from the mean; no auxiliary head; no dropout; a global average pool and the
    Dense ``predictions`` (logits here: Keras' softmax is left to the loss or the caller). Blocks are
    named after Keras' concatenation layers, ``mixed0`` to ``mixed10``. Initialisation as Keras':
    Glorot-uniform kernels, zero biases, BN beta 0 (mean 0, variance 1).
    """

    head_pool = "avg_pool"
    head_classifier = "predictions"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        global_pool: str = "avg",
        model_name: str = "inception_v3_keras",
        min_size: int = INCEPTION_V3_MIN_SIZE,
        native_size: int = 299,
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=min_size, native_size=native_size)
        _stem(self, in_chans, KerasConv2dBN)
        for spec in INCEPTION_V3_BLOCKS:
            block = spec.block(spec.in_channels, conv_block=KerasConv2dBN, count_include_pad=False, **spec.options)
            self.add_module(spec.keras_name, block)
        self.set_head(FEATURES, num_classes, global_pool)
        self.avg_pool = self.new_pool()  # GlobalAveragePooling2D(name="avg_pool")
        self.predictions = self.new_classifier()

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # Keras' glorot_uniform: same fans for (out, in, kh, kw)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = _run_stem(self, x)
        for spec in INCEPTION_V3_BLOCKS:
            x = getattr(self, spec.keras_name)(x)
        return x  # N x 2048 x 8 x 8 at 299; the head: avg_pool, flatten, predictions (logits)

    def feature_stages(self) -> list[FeatureStage]:
        return inception_v3_feature_stages(keras=True)


# --------------------------------------------------------------------------------------------------
# Keras weights
# --------------------------------------------------------------------------------------------------


def keras_layer_names(model: InceptionV3Keras, keras_model) -> dict[str, str]:
    """Map the weighted layers of a ``keras.applications.InceptionV3`` onto ``model``'s module paths.

    The result is the ``name_map`` of :func:`cnnzoo.weights.keras.load_keras_model`::

        load_keras_model(model, keras_model, keras_layer_names(model, keras_model))

    Keras names InceptionV3's convolutions and batch norms automatically (``conv2d_17``,
    ``batch_normalization_17``) and the numbers depend on what the Keras session built before, so
    names cannot be matched. ``keras_model.layers`` cannot be used either: Keras sorts it by depth
    in the graph, which interleaves the branches. Instead the graph is walked from the output back
    to the input, each layer's inputs left to right, listing every layer after its inputs (a
    depth-first post-order). That is the order in which ``inception_v3.py`` creates the layers -- the
    branches of each ``mixed`` block one after the other, in the order they are concatenated -- and
    the order of ``model``'s :class:`~cnnzoo.layers.ConvBNAct` modules. The k-th Conv2D then goes to
    the k-th ``.conv``, the BatchNormalization it feeds to the matching ``.bn``, and the Dense layer to
    ``predictions``. Every pair is checked (kernel shape, conv -> BN wiring), so a model that does not
    fit raises :class:`~cnnzoo.errors.WeightsError` instead of loading scrambled weights.
    """
    producer = {id(layer.output): layer for layer in keras_model.layers}

    def inputs_of(layer) -> list:
        if type(layer).__name__ == "InputLayer":
            return []
        tensors = layer.input
        tensors = tensors if isinstance(tensors, (list, tuple)) else [tensors]
        return [producer[id(t)] for t in tensors]

    order: list = []
    seen: set[int] = set()

    def visit(layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for parent in inputs_of(layer):
            visit(parent)
        order.append(layer)

    for t in keras_model.outputs:
        visit(producer[id(t)])

    convs = [layer for layer in order if type(layer).__name__ == "Conv2D"]
    norms = [layer for layer in order if type(layer).__name__ == "BatchNormalization"]
    denses = [layer for layer in order if type(layer).__name__ == "Dense"]
    ours = [(name, m) for name, m in model.named_modules() if isinstance(m, ConvBNAct)]
    if not (len(convs) == len(norms) == len(ours)) or len(denses) != 1:
        raise WeightsError(
            f"{keras_model.name!r} has {len(convs)} Conv2D, {len(norms)} BatchNormalization and {len(denses)} Dense layers; "
            f"{model.model_name} needs {len(ours)}, {len(ours)} and 1 (keras.applications.InceptionV3 with include_top=True)"
        )

    name_map: dict[str, str] = {}
    for conv, norm, (path, unit) in zip(convs, norms, ours):
        kh, kw, cin, cout = tuple(conv.kernel.shape)
        want = tuple(unit.conv.weight.shape)
        if (cout, cin, kh, kw) != want:
            raise WeightsError(
                f"Keras layer {conv.name!r} has a {kh}x{kw} kernel from {cin} to {cout} channels where "
                f"{path}.conv of {model.model_name} has {want[2]}x{want[3]} from {want[1]} to {want[0]}"
            )
        if inputs_of(norm) != [conv]:
            raise WeightsError(
                f"Keras layer {norm.name!r} does not follow {conv.name!r}, as {path}.bn follows {path}.conv"
            )
        name_map[conv.name] = f"{path}.conv"
        name_map[norm.name] = f"{path}.bn"
    name_map[denses[0].name] = "predictions"
    return name_map


def _creation_index(name: str) -> tuple[str, int]:
    """``conv2d_17`` -> ('conv2d', 17), ``conv2d`` -> ('conv2d', 0): Keras numbers auto-named layers as it makes them."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    assert match is not None  # the pattern matches every string
    return match.group(1), int(match.group(2) or 0)


def creation_order_name_map(model: nn.Module, layers: Sequence[Any], source: str) -> dict[str, str]:
    """Place the auto-named layers of a Keras file (``conv2d_17``, ``batch_normalization_17``) on ``model`` by creation order.

    The registry's ``keras_names`` of :func:`inception_v3_keras`. ``layers`` are the file's weighted
    layers, each with a ``name``, a ``kind`` (``conv``, ``batchnorm``, ``dense``) and its ``arrays``.
    Keras numbers the layers it names in the order it creates them, from wherever the session's
    counter stood, so the numbers differ between files but their order does not. ``inception_v3.py``
    creates each conv with its BatchNormalization right after it, block by block and branch by branch
    in concatenation order: the order of ``model``'s :class:`~cnnzoo.layers.ConvBNAct` units (see
    :func:`keras_layer_names`, which walks a live Keras graph instead). The k-th Conv2D goes to the
    k-th unit's ``conv``, the k-th BatchNormalization to its ``bn``, the one Dense layer to
    ``predictions`` (a file without it, ``include_top=False``, fits a headless model). Every kernel shape
    and channel count is checked, so a file of another model raises instead of loading scrambled weights.

    The units are those of the full network, built on the meta device (nothing allocated), so that a
    feature extractor, which holds the first units only, gets every layer's place; the loader then
    skips the layers of the modules it lacks.
    """
    name = getattr(model, "model_name", type(model).__name__)
    convs = sorted((layer for layer in layers if layer.kind == "conv"), key=lambda layer: _creation_index(layer.name))
    norms = sorted(
        (layer for layer in layers if layer.kind == "batchnorm"), key=lambda layer: _creation_index(layer.name)
    )
    denses = [layer for layer in layers if layer.kind == "dense"]
    with torch.device("meta"):
        full = InceptionV3Keras(in_chans=getattr(model, "in_chans", 3), model_name=name)
    units = [(path, m) for path, m in full.named_modules() if isinstance(m, ConvBNAct)]
    if not (len(convs) == len(norms) == len(units)) or len(denses) > 1:
        raise WeightsError(
            f"{source} has {len(convs)} Conv2D, {len(norms)} BatchNormalization and {len(denses)} Dense layers; "
            f"{name} needs {len(units)}, {len(units)} and 1 (keras.applications.InceptionV3; 0 with include_top=False)"
        )
    name_map: dict[str, str] = {}
    for i, (conv, norm, (path, unit)) in enumerate(zip(convs, norms, units), start=1):
        kh, kw, cin, cout = conv.arrays["kernel"].shape
        want = tuple(unit.conv.weight.shape)
        if (cout, cin, kh, kw) != want:
            raise WeightsError(
                f"{source}: Keras layer {conv.name!r} (Conv2D number {i} in creation order) has a {kh}x{kw} kernel from "
                f"{cin} to {cout} channels where {path}.conv of {name} has {want[2]}x{want[3]} from {want[1]} to {want[0]}"
            )
        channels = norm.arrays["moving_mean"].shape[0]
        if channels != cout:
            raise WeightsError(
                f"{source}: Keras layer {norm.name!r} (BatchNormalization number {i}) has {channels} channels, "
                f"the conv before it ({conv.name!r}) {cout}: the file's layers are not in the order {name} needs"
            )
        name_map[conv.name] = f"{path}.conv"
        name_map[norm.name] = f"{path}.bn"
    name_map.update({dense.name: "predictions" for dense in denses})
    return name_map


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


_PAPER = 'Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision", arXiv 1512.00567'
_URL = "https://arxiv.org/abs/1512.00567"


def _build(name: str, num_classes: int, in_chans: int, **options) -> Inception3 | InceptionV3Keras:
    """torchvision's flavour (options ``aux_logits``, ``dropout``) or Keras' (no options of its own), by name.

    Both take ``global_pool``. A headless torchvision flavour (``num_classes=0``) is built without the
    auxiliary head unless ``aux_logits=True`` is asked for, which then fails: it has nothing to predict.
    """
    if name == "inception_v3_keras":
        check_options(name, options, ("global_pool",))
        return InceptionV3Keras(
            num_classes, in_chans, model_name=name, min_size=INCEPTION_V3_MIN_SIZE, native_size=299, **options
        )
    check_options(name, options, ("aux_logits", "dropout", "global_pool"))
    if num_classes == 0:
        options.setdefault("aux_logits", False)
    return Inception3(
        num_classes, in_chans, model_name=name, min_size=INCEPTION_V3_MIN_SIZE, native_size=299, **options
    )


@register_model(
    family="inception",
    paper=_PAPER,
    url=_URL,
    input_size=(3, 299, 299),
    min_size=INCEPTION_V3_MIN_SIZE,
    # torchvision's weights see (x - 0.5) / 0.5: its transforms normalise with ImageNet mean/std and
    # its transform_input (not implemented here) turns that back into [-1, 1].
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    torchvision="inception_v3",
    notes=(
        "torchvision's Inception3 (27,161,264 params with the aux head, the default). In training mode the aux "
        "head needs 299x299 inputs; in eval mode or with aux_logits=False 75x75 is the minimum. No transform_input: "
        "torchvision's weights expect pixels normalised with mean = std = 0.5."
    ),
)
def inception_v3(num_classes: int = 1000, in_chans: int = 3, **options) -> Inception3:
    """Inception v3 as torchvision's. Options: ``aux_logits`` (True), ``dropout`` (0.5)."""
    return _build("inception_v3", num_classes, in_chans, **options)


@register_model(
    family="inception",
    paper=_PAPER,
    url=_URL,
    input_size=(3, 299, 299),
    min_size=INCEPTION_V3_MIN_SIZE,
    mean=(0.5, 0.5, 0.5),  # keras.applications.inception_v3.preprocess_input: x / 127.5 - 1
    std=(0.5, 0.5, 0.5),
    keras="InceptionV3",
    keras_names=creation_order_name_map,
    notes=(
        "keras.applications.InceptionV3: BN without scale, padding-excluding average pools, no aux head, "
        "blocks mixed0..mixed10, Dense 'predictions' (logits). Keras count: 23,851,784 params, 34,432 of them "
        "BN statistics. Load Keras weights with load_keras_model(model, k, keras_layer_names(model, k))."
    ),
)
def inception_v3_keras(num_classes: int = 1000, in_chans: int = 3, **options) -> InceptionV3Keras:
    """Inception v3 exactly as ``keras.applications.InceptionV3`` (logits out; no options)."""
    return _build("inception_v3_keras", num_classes, in_chans, **options)
