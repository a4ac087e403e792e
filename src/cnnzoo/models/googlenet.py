"""GoogLeNet (Inception v1) and the Inception module it is made of.

Szegedy et al. 2014, "Going Deeper with Convolutions", arXiv 1409.4842 (ILSVRC 2014 winner).

The idea: instead of choosing one filter size per layer, run 1x1, 3x3 and 5x5 convolutions and a
3x3 max-pool side by side on the same input and stack their outputs along the channel axis. Done
naively (:class:`NaiveInception`, the paper's figure 2a) the channel count only ever grows and the
5x5 convolutions become very expensive; the real module (:class:`Inception`, figure 2b) first
squeezes the input through cheap 1x1 convolutions ("reductions") and projects the pooled branch
with a 1x1 convolution too.

:class:`GoogLeNet` follows torchvision's ``models/googlenet.py`` module for module, so torchvision
state dicts load with the same keys. That includes torchvision's batch normalisation (the 2014 paper
predates BN) and one known deviation from the paper, see ``branch3_kernel`` below.

As a backbone: ``num_features`` is 1024 (inception5b); ``features_only`` offers the map before each
max-pool: conv1 (/2), conv3 (/4), inception3b (/8), inception4e (/16) and inception5b (/32). The
auxiliary heads are not on that path; a headless network (``num_classes=0``) has none.
"""

from __future__ import annotations

from collections import namedtuple
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ConvBNAct
from ..registry import register_model
from ._base import FeatureStage, ZooModel, check_options

__all__ = [
    "NaiveInception",
    "Inception",
    "InceptionAux",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "googlenet",
    "GOOGLENET_CONFIGS",
]


# The paper's table 1, keyed by model name, one row per Inception module:
#   (in_channels, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
# Each module outputs #1x1 + #3x3 + #5x5 + pool proj channels, the next one's in_channels.
# The max-pools between stages 3, 4 and 5 halve the map: 28x28 -> 14x14 -> 7x7 at 224x224 input.
GOOGLENET_CONFIGS: dict[str, dict[str, tuple[int, int, int, int, int, int, int]]] = {
    "googlenet": {
        "inception3a": (192, 64, 96, 128, 16, 32, 32),  # -> 256 channels, 28x28
        "inception3b": (256, 128, 128, 192, 32, 96, 64),  # -> 480
        # maxpool3
        "inception4a": (480, 192, 96, 208, 16, 48, 64),  # -> 512, 14x14 (aux1 taps here)
        "inception4b": (512, 160, 112, 224, 24, 64, 64),  # -> 512
        "inception4c": (512, 128, 128, 256, 24, 64, 64),  # -> 512
        "inception4d": (512, 112, 144, 288, 32, 64, 64),  # -> 528 (aux2 taps here)
        "inception4e": (528, 256, 160, 320, 32, 128, 128),  # -> 832
        # maxpool4
        "inception5a": (832, 256, 160, 320, 32, 128, 128),  # -> 832, 7x7
        "inception5b": (832, 384, 192, 384, 48, 128, 128),  # -> 1024
    },
}

# Smallest H = W the network accepts, found by running it (tests/test_googlenet.py checks it):
# 15 -> 8 (conv1) -> 4 (maxpool1) -> 2 (maxpool2) -> 1 (maxpool3) -> 1 (maxpool4). At 14 the
# ceil-mode maxpool3 would be asked to pool a 1x1 map with a 3x3 window starting at 0 and fails.
GOOGLENET_MIN_SIZE = 15

# torchvision's BasicConv2d: conv without bias (BN supplies the shift), BN with eps=1e-3, ReLU.
BasicConv2d = partial(ConvBNAct, eps=1e-3)


def googlenet_feature_stages(config: dict[str, tuple[int, int, int, int, int, int, int]]) -> list[FeatureStage]:
    """The map before each max-pool (the stem's conv1 and conv3, inception3b, 4e) and inception5b."""
    return [
        FeatureStage("conv1", 64, 2),
        FeatureStage("conv3", 192, 4),
        FeatureStage("inception3b", _out_channels(config["inception3b"]), 8),
        FeatureStage("inception4e", _out_channels(config["inception4e"]), 16),
        FeatureStage("inception5b", _out_channels(config["inception5b"]), 32),
    ]


GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])
GoogLeNetOutputs.__doc__ = """What GoogLeNet returns in training mode with ``aux_logits=True``.

Field order as torchvision's: the main logits, then the head on inception4d (aux2), then the head on
inception4a (aux1). The paper adds the auxiliary losses with weight 0.3 each.
"""


class NaiveInception(nn.Module):
    """The naive Inception module (paper figure 2a): 1x1, 3x3, 5x5 convolutions and a 3x3 max-pool in parallel.

    Every branch keeps the spatial size (convs: 'same' padding; pool: stride 1, padding 1) so the four
    outputs can be stacked on the channel axis. The pooling branch passes all ``in_channels`` through,
    so the output has ``ch1x1 + ch3x3 + ch5x5 + in_channels`` channels: stacking these modules makes
    the width grow with every module, which is why the paper adds 1x1 reductions (:class:`Inception`).

    The seed's Keras version, ``naive_inception_block(prev_layer, filter=[64, 128, 32])``, had two bugs:
    it called ``concatenate(conv1x1, conv3x3, conv5x5, max_pool)`` where Keras wants one *list*
    (``concatenate([a, b, c, d])``; the second positional argument is the axis), and it named its
    argument ``filter`` but read ``filters``. This is that block done right, in PyTorch.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, ch5x5: int) -> None:
        super().__init__()
        # Plain conv + bias + ReLU as in the seed (no BN): that is the 2014 design.
        self.branch1 = nn.Sequential(nn.Conv2d(in_channels, ch1x1, kernel_size=1), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels, ch3x3, kernel_size=3, padding="same"), nn.ReLU(inplace=True)
        )
        self.branch3 = nn.Sequential(
            nn.Conv2d(in_channels, ch5x5, kernel_size=5, padding="same"), nn.ReLU(inplace=True)
        )
        # Keras' MaxPooling2D(padding='same') pads with -inf, as PyTorch's max-pool padding does.
        self.branch4 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        # One list of tensors, concatenated on dim 1 (channels in NCHW).
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class Inception(nn.Module):
    """The Inception module with dimension reductions (paper figure 2b), as in torchvision.

    Four branches on the same input, concatenated on the channel axis:

    1. 1x1 conv (``ch1x1``);
    2. 1x1 conv down to ``ch3x3red``, then 3x3 conv (``ch3x3``);
    3. 1x1 conv down to ``ch5x5red``, then the "5x5" conv (``ch5x5``);
    4. 3x3 max-pool (stride 1), then 1x1 conv (``pool_proj``).

    ``branch3_kernel``: torchvision's branch 3 uses a **3x3** kernel where the paper has 5x5 (a known
    bug, pytorch/vision#906, kept because its ImageNet weights were trained that way). The default 3
    reproduces torchvision, so its weights load; ``branch3_kernel=5`` gives the paper's 5x5.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel: int = 3,
        conv_block=BasicConv2d,
    ) -> None:
        super().__init__()
        if branch3_kernel not in (3, 5):
            raise ValueError(f"branch3_kernel must be 3 (torchvision) or 5 (paper), got {branch3_kernel!r}")
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, ch3x3red, kernel_size=1),
            conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_channels, ch5x5red, kernel_size=1),
            conv_block(ch5x5red, ch5x5, kernel_size=branch3_kernel, padding=branch3_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (paper section 5), on top of inception4a and inception4d during training.

    The paper: 5x5 average pool with stride 3 (4x4 at 14x14), 1x1 conv to 128, FC 1024 + ReLU,
    dropout 0.7, linear classifier. torchvision uses an adaptive 4x4 average pool instead of the fixed
    one (the same at 224x224, and it works at any input size) and adds BN to the 1x1 conv.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7, conv_block=BasicConv2d) -> None:
        super().__init__()
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))  # N x C x 4 x 4
        x = self.conv(x)  # N x 128 x 4 x 4
        x = torch.flatten(x, 1)  # N x 2048
        x = F.relu(self.fc1(x), inplace=True)  # N x 1024
        x = self.dropout(x)
        return self.fc2(x)  # N x num_classes


class GoogLeNet(ZooModel):
    """GoogLeNet, the 22-layer network of the paper's table 1, with torchvision's module names.

    Options:

    * ``aux_logits`` (default False): add the two auxiliary classifiers (``aux1``, ``aux2``). In
      training mode the forward pass then returns :data:`GoogLeNetOutputs` ``(logits, aux_logits2,
      aux_logits1)``; in eval mode it always returns the logits alone.
    * ``branch3_kernel`` (default 3, torchvision; 5 for the paper), see :class:`Inception`.
    * ``dropout`` (0.2, torchvision; the paper used 0.4) before the classifier, ``dropout_aux`` (0.7).
    * ``config``: the Inception modules' widths, a table of :data:`GOOGLENET_CONFIGS`.

    torchvision's ``transform_input`` is deliberately not implemented. torchvision's published weights
    were trained on pixels mapped to [-1, 1]; torchvision feeds them ImageNet-normalised images and
    undoes that normalisation inside the model (``transform_input=True`` whenever weights are loaded).
    Here the model takes what it computes on: normalise with ``info.mean = info.std = 0.5``.
    """

    head_dropout = "dropout"
    aux_heads = ("aux1", "aux2")

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        aux_logits: bool = False,
        branch3_kernel: int = 3,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        global_pool: str = "avg",
        model_name: str = "googlenet",
        min_size: int = GOOGLENET_MIN_SIZE,
        native_size: int = 224,
        config: dict[str, tuple[int, int, int, int, int, int, int]] = GOOGLENET_CONFIGS["googlenet"],
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=min_size, native_size=native_size)
        if aux_logits and num_classes == 0:
            raise ValueError(
                f"{model_name}: aux_logits=True needs classes to predict; a headless network (num_classes=0) "
                "has no auxiliary heads"
            )
        self.aux_logits = aux_logits
        self.config = config
        conv_block = BasicConv2d

        # Stem: the "traditional" convolutional start of table 1. Ceil-mode pools as torchvision
        # (Caffe's pooling rounded up), which is what keeps 224 -> 112 -> 56 -> 28 -> 14 -> 7 exact.
        self.conv1 = conv_block(in_chans, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = conv_block(64, 64, kernel_size=1)
        self.conv3 = conv_block(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        inception = partial(Inception, branch3_kernel=branch3_kernel, conv_block=conv_block)
        t = config
        self.inception3a = inception(*t["inception3a"])
        self.inception3b = inception(*t["inception3b"])
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception(*t["inception4a"])
        self.inception4b = inception(*t["inception4b"])
        self.inception4c = inception(*t["inception4c"])
        self.inception4d = inception(*t["inception4d"])
        self.inception4e = inception(*t["inception4e"])
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception(*t["inception5a"])
        self.inception5b = inception(*t["inception5b"])

        # Registered as None when absent, as torchvision does, so the keys and module order match.
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1 = InceptionAux(
                _out_channels(t["inception4a"]), num_classes, dropout=dropout_aux, conv_block=conv_block
            )
            self.aux2 = InceptionAux(
                _out_channels(t["inception4d"]), num_classes, dropout=dropout_aux, conv_block=conv_block
            )

        self.set_head(_out_channels(t["inception5b"]), num_classes, global_pool)
        self.avgpool = self.new_pool()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = self.new_classifier()

        # torchvision's initialisation: normal, std 0.01, for every conv and linear layer. torchvision
        # calls trunc_normal_(std=0.01, a=-2, b=2), but a and b are absolute bounds, 200 standard
        # deviations out: nothing is ever truncated, and normal_ draws from the same distribution, faster.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self._run(x, with_aux=False)[0]

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        x, aux1, aux2 = self._run(x, with_aux=self.training)
        x = self.forward_head(x)  # avgpool, flatten, dropout, fc: N x num_classes
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The main path up to inception5b, and the auxiliary heads' logits where they run (else None)."""
        self.check_input(x)
        # Shapes at the native 224x224.
        x = self.conv1(x)  # N x 64 x 112 x 112
        x = self.maxpool1(x)  # N x 64 x 56 x 56
        x = self.conv2(x)  # N x 64 x 56 x 56
        x = self.conv3(x)  # N x 192 x 56 x 56
        x = self.maxpool2(x)  # N x 192 x 28 x 28

        x = self.inception3a(x)  # N x 256 x 28 x 28
        x = self.inception3b(x)  # N x 480 x 28 x 28
        x = self.maxpool3(x)  # N x 480 x 14 x 14

        x = self.inception4a(x)  # N x 512 x 14 x 14
        # The auxiliary heads only run while training: they exist to push gradient into the middle
        # of the network, and are discarded at inference.
        aux1 = self.aux1(x) if self.aux1 is not None and with_aux else None
        x = self.inception4b(x)  # N x 512 x 14 x 14
        x = self.inception4c(x)  # N x 512 x 14 x 14
        x = self.inception4d(x)  # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None and with_aux else None
        x = self.inception4e(x)  # N x 832 x 14 x 14
        x = self.maxpool4(x)  # N x 832 x 7 x 7

        x = self.inception5a(x)  # N x 832 x 7 x 7
        return self.inception5b(x), aux1, aux2  # N x 1024 x 7 x 7

    def feature_stages(self) -> list[FeatureStage]:
        return googlenet_feature_stages(self.config)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """As :meth:`ZooModel.reset_classifier`; the auxiliary heads get new last layers too, or go (0 classes)."""
        super().reset_classifier(num_classes, global_pool)
        if num_classes == 0:  # nothing left for them to train towards
            self.aux1 = self.aux2 = None
            self.aux_logits = False
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = self._placed(nn.Linear(aux.fc2.in_features, num_classes))


def _out_channels(row: tuple[int, ...]) -> int:
    """Output channels of an Inception module from its table row: #1x1 + #3x3 + #5x5 + pool proj."""
    _, ch1x1, _, ch3x3, _, ch5x5, pool_proj = row
    return ch1x1 + ch3x3 + ch5x5 + pool_proj


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _build(name: str, num_classes: int, in_chans: int, **options) -> GoogLeNet:
    check_options(name, options, ("aux_logits", "branch3_kernel", "dropout", "dropout_aux", "global_pool"))
    config = GOOGLENET_CONFIGS[name]
    return GoogLeNet(num_classes, in_chans, model_name=name, min_size=GOOGLENET_MIN_SIZE, config=config, **options)


@register_model(
    family="googlenet",
    paper='Szegedy et al. 2014, "Going Deeper with Convolutions", arXiv 1409.4842',
    url="https://arxiv.org/abs/1409.4842",
    input_size=(3, 224, 224),
    min_size=GOOGLENET_MIN_SIZE,
    # torchvision's weights see (x - 0.5) / 0.5: its transforms normalise with ImageNet mean/std and
    # its transform_input (not implemented here) turns that back into [-1, 1].
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    torchvision="googlenet",
    notes=(
        "torchvision's structure (with BN); its '5x5' branch uses a 3x3 kernel, branch3_kernel=5 gives the "
        "paper's 5x5. aux_logits=True adds the two auxiliary heads (13,004,888 params instead of 6,624,904). "
        "No transform_input: torchvision's weights expect pixels normalised with mean = std = 0.5."
    ),
)
def googlenet(num_classes: int = 1000, in_chans: int = 3, **options) -> GoogLeNet:
    """GoogLeNet (Inception v1). Options: ``aux_logits`` (False), ``branch3_kernel`` (3), ``dropout``, ``dropout_aux``."""
    return _build("googlenet", num_classes, in_chans, **options)
