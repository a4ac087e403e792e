"""ResNet: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385.

The idea: instead of asking a stack of layers for a mapping ``H(x)``, ask it for the residual
``F(x) = H(x) - x`` and add ``x`` back through a shortcut, ``y = relu(F(x) + shortcut(x))``. An identity
is then the easy default (``F = 0``), and networks of 100+ layers train.

Three flavours live in this file, each with its configuration table as data:

* ``resnet18 ... resnet152`` (ImageNet, paper Table 1): torchvision's layout, key for key, so
  torchvision state dicts load unchanged. Bottleneck models downsample in the 3x3 conv ("ResNet v1.5",
  torchvision's choice) unless ``stride_in_1x1=True`` puts the stride in the first 1x1 conv as in the
  paper's Caffe models ("v1").
* ``resnet20 ... resnet110`` (CIFAR-10, paper section 4.2): 6n+2 layers, 16/32/64 filters, parameter-free
  "option A" shortcuts.
* ``resnet50_keras ... resnet152_keras``: exactly ``keras.applications.ResNet50/101/152`` (v1, every conv
  with a bias, BN eps 1.001e-5), with modules named after the Keras layers (see :func:`keras_name_map`).

What the residual unit must get right, and where a first attempt easily goes wrong:

* a stage halves the resolution ONCE, in its first block; the other blocks keep stride 1;
* inside a basic block only the first 3x3 conv carries that stride (the second must not, or the
  branch would shrink twice while the shortcut shrinks once);
* the shortcut is a projection (1x1 conv + BN, paper option B) or, for CIFAR, a subsampled zero-padded
  identity (option A) exactly where the shape changes (stride != 1 or channels change), and the plain
  identity everywhere else;
* the sum comes before the last ReLU: ``relu(F(x) + shortcut(x))``.

Smallest input: every conv and pool here pads so that a 1x1 map stays 1x1 (``out = ceil(in / 2)`` for
the stride-2 layers), and the head is a global average pool, so a 1x1 image goes through all three
flavours; a 0-pixel one does not (the 7x7 / 3x3 kernels no longer fit the padded input). So
``min_size`` is 1. (Keras' own ``ResNet50`` refuses inputs below 32x32; that is a policy, not a limit of
the network.) In training mode BatchNorm also needs more than one value per channel, i.e. a batch of at
least 2 when the last stage is 1x1 (any input up to 32x32 for the ImageNet models).

As a backbone (``forward_features``, ``num_classes=0``, ``features_only``): ``num_features`` is the
last stage's width (2048 for the bottleneck models, 512 for resnet18/34, 64 for CIFAR). The feature
stages are the stem's ReLU (``relu`` /2, ``conv1_relu`` in the Keras flavour) and every stage's
output: ``layer1`` .. ``layer4`` (/4 .. /32; the Keras flavour's last blocks ``conv2_block3`` ...),
and for CIFAR ``layer1`` .. ``layer3`` at /1, /2, /4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from ..layers import GlobalAvgPool2d, ShortcutA
from ..registry import register_model
from ._base import FeatureStage, ZooModel, check_options

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ShortcutA",
    "ResNet",
    "CifarResNet",
    "KerasBottleneck",
    "KerasResNet",
    "RESNET_CONFIGS",
    "CIFAR_RESNET_CONFIGS",
    "KERAS_RESNET_CONFIGS",
    "BLOCK_TYPES",
    "keras_name_map",
]

PAPER = "He, Zhang, Ren, Sun 2015: Deep Residual Learning for Image Recognition (CVPR 2016)"
URL = "https://arxiv.org/abs/1512.03385"
MIN_SIZE = 1  # see the module docstring: every flavour maps a 1x1 image to a 1x1 last stage

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Keras' ResNet preprocessing is "caffe" mode: RGB -> BGR, 0-255 pixels minus the BGR ImageNet mean
# [103.939, 116.779, 123.68], no division. For pixels p in [0, 1] that is (p - m / 255) / (1 / 255).
KERAS_CAFFE_MEAN = (103.939 / 255, 116.779 / 255, 123.68 / 255)  # B, G, R
KERAS_CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)


# --------------------------------------------------------------------------------------------------
# The configurations, keyed by model name
# --------------------------------------------------------------------------------------------------


class ResNetConfig(NamedTuple):
    block: str  # "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1): a key of BLOCK_TYPES
    layers: list[int]  # blocks in conv2_x, conv3_x, conv4_x, conv5_x


# Paper Table 1: the block type and the number of blocks in conv2_x, conv3_x, conv4_x, conv5_x.
RESNET_CONFIGS: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig("basic", [2, 2, 2, 2]),
    "resnet34": ResNetConfig("basic", [3, 4, 6, 3]),
    "resnet50": ResNetConfig("bottleneck", [3, 4, 6, 3]),
    "resnet101": ResNetConfig("bottleneck", [3, 4, 23, 3]),
    "resnet152": ResNetConfig("bottleneck", [3, 8, 36, 3]),
}
IMAGENET_PLANES = (64, 128, 256, 512)  # bottleneck width of each stage (output = x expansion)
IMAGENET_STRIDES = (1, 2, 2, 2)  # conv2_x follows the max pool, which already halved the map

# Section 4.2: n basic blocks per stage, 6n + 2 weighted layers (first conv + 3 stages x n x 2 + fc).
CIFAR_RESNET_CONFIGS: dict[str, int] = {
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
}
CIFAR_WIDTHS = (16, 32, 64)  # feature maps 32x32, 16x16, 8x8 at the native size
CIFAR_STRIDES = (1, 2, 2)

# keras.applications ResNet50 / 101 / 152 (ResNet v1): blocks per stage conv2 .. conv5
# (keras/src/applications/resnet.py, stack_fn of each model).
KERAS_RESNET_CONFIGS: dict[str, list[int]] = {
    "resnet50_keras": [3, 4, 6, 3],
    "resnet101_keras": [3, 4, 23, 3],
    "resnet152_keras": [3, 8, 36, 3],
}
KERAS_FILTERS = (64, 128, 256, 512)
KERAS_STRIDES = (1, 2, 2, 2)
KERAS_BN_EPS = 1.001e-5
# Keras keeps moving = 0.99 * moving + 0.01 * batch; PyTorch's momentum is the weight of the new batch.
KERAS_BN_MOMENTUM = 1 - 0.99


def resnet_feature_stages(block: type[BasicBlock] | type[Bottleneck]) -> list[FeatureStage]:
    """The stem's ReLU (/2), then layer1 .. layer4, behind the stem's max pool (/4) and each stage's stride."""
    stages, reduction = [FeatureStage("relu", 64, 2)], 4
    for i, (planes, stride) in enumerate(zip(IMAGENET_PLANES, IMAGENET_STRIDES, strict=True), start=1):
        reduction *= stride
        stages.append(FeatureStage(f"layer{i}", planes * block.expansion, reduction))
    return stages


def cifar_feature_stages() -> list[FeatureStage]:
    """layer1 .. layer3 (the stem keeps the resolution, so its map equals layer1's in size)."""
    stages, reduction = [], 1
    for i, (width, stride) in enumerate(zip(CIFAR_WIDTHS, CIFAR_STRIDES, strict=True), start=1):
        reduction *= stride
        stages.append(FeatureStage(f"layer{i}", width, reduction))
    return stages


def keras_feature_stages(layers: list[int]) -> list[FeatureStage]:
    """conv1_relu (/2), then each stage's last block (Keras' ``conv2_block3_out`` ... is that block's output)."""
    stages, reduction = [FeatureStage("conv1_relu", 64, 2)], 4
    for stage, (filters, num_blocks, stride) in enumerate(
        zip(KERAS_FILTERS, layers, KERAS_STRIDES, strict=True), start=2
    ):
        reduction *= stride
        stages.append(FeatureStage(f"conv{stage}_block{num_blocks}", 4 * filters, reduction))
    return stages


# --------------------------------------------------------------------------------------------------
# Residual blocks (the torchvision-layout ImageNet and the CIFAR networks share the first two)
# --------------------------------------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1 ("same" at stride 1; ceil(in / 2) at stride 2). No bias: a BN follows."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution. No bias: a BN follows."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (paper Fig. 2 left; ResNet-18/34 and the CIFAR nets).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. Only ``conv1`` carries the block's stride:
    the shortcut subsamples once, so the branch must too. ``downsample`` is the shortcut where the shape
    changes (``None`` means identity).
    """

    expansion = 1  # output channels = planes * expansion

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)  # stride 1, always
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) (paper Fig. 5 right; ResNet-50/101/152).

    Where the stride goes: the paper's (Caffe) models stride the first 1x1 conv, which throws away 3 of
    every 4 input positions before any 3x3 conv has seen them; torchvision strides the 3x3 conv instead
    ("ResNet v1.5", about +0.5% top-1 at a little more compute). ``stride_in_1x1`` picks; the weights have
    the same shapes either way, only what they compute differs.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCK_TYPES: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Paper option B: a strided 1x1 conv + BN (torchvision keys ``downsample.0`` / ``downsample.1``)."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    shortcut: Callable[[int, int, int], nn.Module],
    **block_options,
) -> nn.Sequential:
    """One stage ("conv2_x" ... in Table 1): ``num_blocks`` blocks, the first one changing the shape.

    The stride is applied once, in the first block. The shortcut there is ``shortcut(in, out, stride)``
    if the shape changes (stride != 1 or a different channel count), else the identity; all later blocks
    see their own output shape and use the identity.
    """
    out_channels = planes * block.expansion
    downsample = shortcut(in_channels, out_channels, stride) if stride != 1 or in_channels != out_channels else None
    blocks = [block(in_channels, planes, stride, downsample, **block_options)]
    blocks += [block(out_channels, planes, **block_options) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """He (Kaiming) normal init for convs, BN to (1, 0), as torchvision.

    ``zero_init_residual`` zeroes the last BN scale of every residual branch, so every block starts as
    its shortcut (Goyal et al. 2017, arXiv 1706.02677: helps large-batch training).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def keras_bn(channels: int) -> nn.BatchNorm2d:
    """Keras ``BatchNormalization(epsilon=1.001e-5)`` with its default momentum 0.99."""
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class KerasBottleneck(nn.Module):
    """Keras' ``residual_block_v1``: the bottleneck with the stride in the first 1x1 conv and biased convs.

    Children carry Keras' names without the block prefix (``0_conv``, ``1_conv``, ``1_bn`` ...), so the
    state-dict key ``conv2_block1.1_conv.weight`` belongs to the Keras layer ``conv2_block1_1_conv``.
    Such names are not Python identifiers, hence ``getattr`` in ``forward``.
    """

    def __init__(self, in_channels: int, filters: int, stride: int = 1, conv_shortcut: bool = True) -> None:
        super().__init__()
        out_channels = 4 * filters
        if conv_shortcut:
            self.add_module("0_conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride))
            self.add_module("0_bn", keras_bn(out_channels))
        self.add_module("1_conv", nn.Conv2d(in_channels, filters, 1, stride=stride))
        self.add_module("1_bn", keras_bn(filters))
        self.add_module("1_relu", nn.ReLU(inplace=True))
        # padding="same" at stride 1 with a 3x3 kernel is one pixel on each side.
        self.add_module("2_conv", nn.Conv2d(filters, filters, 3, padding=1))
        self.add_module("2_bn", keras_bn(filters))
        self.add_module("2_relu", nn.ReLU(inplace=True))
        self.add_module("3_conv", nn.Conv2d(filters, out_channels, 1))
        self.add_module("3_bn", keras_bn(out_channels))
        self.add_module("out", nn.ReLU(inplace=True))  # Keras: {name}_add, then {name}_out
        self.has_conv_shortcut = conv_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.get_submodule
        shortcut = layer("0_bn")(layer("0_conv")(x)) if self.has_conv_shortcut else x
        x = layer("1_relu")(layer("1_bn")(layer("1_conv")(x)))
        x = layer("2_relu")(layer("2_bn")(layer("2_conv")(x)))
        x = layer("3_bn")(layer("3_conv")(x))
        return layer("out")(shortcut + x)


# --------------------------------------------------------------------------------------------------
# The networks: ImageNet (paper Table 1, torchvision layout), CIFAR-10 (section 4.2), keras.applications
# --------------------------------------------------------------------------------------------------


class ResNet(ZooModel):
    """ImageNet ResNet: 7x7/2 conv, 3x3/2 max pool, four stages, global average pool, fc.

    Module names are torchvision's (``conv1, bn1, layer1..layer4, fc``; ``layerK.i.downsample.0/1``), so
    ``torchvision.models.resnet50().state_dict()`` loads key for key.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        zero_init_residual: bool = False,
        stride_in_1x1: bool = False,
        global_pool: str = "avg",
        model_name: str = "resnet",
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=MIN_SIZE, native_size=224)
        self.block = block
        if stride_in_1x1 and block is not Bottleneck:
            raise ValueError("stride_in_1x1 applies to bottleneck blocks (ResNet-50/101/152) only")
        block_options = {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {}
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for i, (planes, num_blocks, stride) in enumerate(zip(IMAGENET_PLANES, layers, IMAGENET_STRIDES), start=1):
            stage = make_stage(block, channels, planes, num_blocks, stride, projection_shortcut, **block_options)
            self.add_module(f"layer{i}", stage)
            channels = planes * block.expansion
        self.set_head(channels, num_classes, global_pool)
        self.avgpool = self.new_pool()  # global: any input size gives one vector
        self.fc = self.new_classifier()
        init_weights(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def feature_stages(self) -> list[FeatureStage]:
        return resnet_feature_stages(self.block)


class CifarResNet(ZooModel):
    """CIFAR ResNet: 3x3 conv (16), three stages of ``n`` basic blocks (16/32/64 filters), global average
    pool, fc. Shortcuts are option A (parameter free), as in the paper's CIFAR experiments.
    """

    def __init__(
        self,
        n: int,
        num_classes: int = 10,
        in_chans: int = 3,
        *,
        zero_init_residual: bool = False,
        global_pool: str = "avg",
        model_name: str = "cifar_resnet",
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=MIN_SIZE, native_size=32)
        self.conv1 = conv3x3(in_chans, CIFAR_WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(CIFAR_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        channels = CIFAR_WIDTHS[0]
        for i, (width, stride) in enumerate(zip(CIFAR_WIDTHS, CIFAR_STRIDES), start=1):
            self.add_module(f"layer{i}", make_stage(BasicBlock, channels, width, n, stride, ShortcutA))
            channels = width
        self.set_head(channels, num_classes, global_pool)
        self.avgpool = self.new_pool()
        self.fc = self.new_classifier()
        init_weights(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def feature_stages(self) -> list[FeatureStage]:
        return cifar_feature_stages()


class KerasResNet(ZooModel):
    """``keras.applications.ResNet50/101/152`` layer for layer, every module named as its Keras layer.

    Keras pads explicitly (``conv1_pad``, ``pool1_pad``) and then convolves / pools without padding; the
    same is done here. Zero padding before the max pool equals PyTorch's -inf padding only because the
    input is a ReLU output (>= 0); keeping Keras' form avoids relying on that. Modules are registered in
    Keras' layer order and ``forward`` chains them, as Keras' functional graph does.
    """

    head_pool = "avg_pool"
    head_classifier = "predictions"

    def __init__(
        self,
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        global_pool: str = "avg",
        model_name: str = "resnet_keras",
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=MIN_SIZE, native_size=224)
        self.blocks_per_stage = layers
        self.conv1_pad = nn.ZeroPad2d(3)
        self.conv1_conv = nn.Conv2d(in_chans, 64, 7, stride=2)
        self.conv1_bn = keras_bn(64)
        self.conv1_relu = nn.ReLU(inplace=True)
        self.pool1_pad = nn.ZeroPad2d(1)
        self.pool1_pool = nn.MaxPool2d(3, stride=2)
        channels = 64
        for stage, (filters, num_blocks, stride) in enumerate(zip(KERAS_FILTERS, layers, KERAS_STRIDES), start=2):
            for i in range(1, num_blocks + 1):
                # Keras gives the first block of every stage a conv shortcut. That is exactly where the shape
                # changes: stride 2 in conv3..conv5, 64 -> 256 channels in conv2.
                block = KerasBottleneck(channels, filters, stride if i == 1 else 1, conv_shortcut=i == 1)
                self.add_module(f"conv{stage}_block{i}", block)
                channels = 4 * filters
        self.set_head(channels, num_classes, global_pool)
        self.avg_pool = self.new_pool()
        self.predictions = self.new_classifier()
        # Keras' defaults: Glorot-uniform kernels, zero biases, BN gamma 1 / beta 0 (already PyTorch's).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def global_avg_pool(self) -> nn.Module:
        return GlobalAvgPool2d()  # Keras' GlobalAveragePooling2D: (N, C, H, W) -> (N, C)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for name, layer in self.named_children():  # Keras' graph is a chain of these, up to the head
            if name == self.head_pool:
                break
            x = layer(x)
        return x

    def feature_stages(self) -> list[FeatureStage]:
        return keras_feature_stages(self.blocks_per_stage)


# --------------------------------------------------------------------------------------------------
# Keras layer names
# --------------------------------------------------------------------------------------------------


def keras_name_map(model: nn.Module) -> dict[str, str]:
    """Keras layer name -> module path, for every weighted layer of a Keras-flavour ResNet.

    The Keras name is the module path with its first dot turned into an underscore
    (``conv2_block1.1_conv`` -> ``conv2_block1_1_conv``; ``conv1_conv`` and ``predictions`` stay). Use it
    with :func:`cnnzoo.weights.keras.load_keras_model` to load a ``keras.applications.ResNet50`` (or a
    user's ``.h5`` of it)::

        load_keras_model(model, keras_model, keras_name_map(model))
    """
    if not isinstance(model, KerasResNet):
        raise TypeError(
            f"keras_name_map needs a Keras-flavour ResNet ({', '.join(KERAS_RESNET_CONFIGS)}), got {type(model).__name__}"
        )
    return {
        path.replace(".", "_", 1): path
        for path, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }


def _keras_names(model: nn.Module, layers: Any, source: str) -> dict[str, str]:
    """The registry's ``keras_names``: the modules carry Keras' layer names, so the file's layers are not needed.

    Named on the full network (built on the meta device: nothing allocated), so that a headless model
    or a feature extractor also gets the places of the layers it lacks, which the loader then skips.
    """
    with torch.device("meta"):
        full = KerasResNet(KERAS_RESNET_CONFIGS[model.model_name], in_chans=model.in_chans, model_name=model.model_name)
    return keras_name_map(full)


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _imagenet_info(name: str, notes: str) -> dict:
    return dict(
        family="resnet",
        paper=PAPER,
        url=URL,
        input_size=(3, 224, 224),
        min_size=MIN_SIZE,
        torchvision=name,
        notes=notes,  # state-dict keys are torchvision's own: no torchvision_key needed
    )


def _cifar_info(name: str) -> dict:
    n = CIFAR_RESNET_CONFIGS[name]
    return dict(
        family="resnet",
        paper=PAPER,
        url=URL,
        input_size=(3, 32, 32),
        min_size=MIN_SIZE,
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        notes=f"CIFAR-10 net of section 4.2: n={n}, {6 * n + 2} layers, 16/32/64 filters, option A (parameter-free) shortcuts.",
    )


def _keras_info(name: str, keras_name: str) -> dict:
    return dict(
        family="resnet",
        paper=PAPER,
        url=URL,
        input_size=(3, 224, 224),
        min_size=MIN_SIZE,
        mean=KERAS_CAFFE_MEAN,
        std=KERAS_CAFFE_STD,
        channel_order="BGR",
        keras=keras_name,
        keras_names=_keras_names,
        notes=(
            f"keras.applications.{keras_name} (ResNet v1: stride in the first 1x1 conv, biased convs, BN eps 1.001e-5); "
            "module names are the Keras layer names (cnnzoo.models.resnet.keras_name_map). Preprocessing is Keras' "
            "'caffe' mode: BGR, 0-255 pixels minus [103.939, 116.779, 123.68], no scaling; mean/std here express "
            "that for [0, 1] pixels."
        ),
    )


def _build(name: str, num_classes: int, in_chans: int, **options) -> ResNet | CifarResNet | KerasResNet:
    """The network of any ResNet in this file, by the table its name is in."""
    if name in RESNET_CONFIGS:
        block = BLOCK_TYPES[RESNET_CONFIGS[name].block]
        taken = (
            ("zero_init_residual", "stride_in_1x1", "global_pool")
            if block is Bottleneck
            else ("zero_init_residual", "global_pool")
        )
        check_options(name, options, taken)  # stride_in_1x1 moves a bottleneck's stride: not for basic blocks
        return ResNet(block, RESNET_CONFIGS[name].layers, num_classes, in_chans, model_name=name, **options)
    if name in CIFAR_RESNET_CONFIGS:
        check_options(name, options, ("zero_init_residual", "global_pool"))
        return CifarResNet(CIFAR_RESNET_CONFIGS[name], num_classes, in_chans, model_name=name, **options)
    check_options(name, options, ("global_pool",))  # keras.applications' pooling=; no options of their own
    return KerasResNet(KERAS_RESNET_CONFIGS[name], num_classes, in_chans, model_name=name, **options)


_V15 = "ResNet v1.5 (stride in the 3x3 conv, as torchvision); stride_in_1x1=True gives the paper's v1."


@register_model(**_imagenet_info("resnet18", "Basic blocks [2, 2, 2, 2]."))
def resnet18(num_classes: int = 1000, in_chans: int = 3, **options) -> ResNet:
    """ResNet-18 (paper Table 1), 11,689,512 parameters."""
    return _build("resnet18", num_classes, in_chans, **options)


@register_model(**_imagenet_info("resnet34", "Basic blocks [3, 4, 6, 3]."))
def resnet34(num_classes: int = 1000, in_chans: int = 3, **options) -> ResNet:
    """ResNet-34 (paper Table 1), 21,797,672 parameters."""
    return _build("resnet34", num_classes, in_chans, **options)


@register_model(**_imagenet_info("resnet50", f"Bottlenecks [3, 4, 6, 3]. {_V15}"))
def resnet50(num_classes: int = 1000, in_chans: int = 3, **options) -> ResNet:
    """ResNet-50 (paper Table 1), 25,557,032 parameters."""
    return _build("resnet50", num_classes, in_chans, **options)


@register_model(**_imagenet_info("resnet101", f"Bottlenecks [3, 4, 23, 3]. {_V15}"))
def resnet101(num_classes: int = 1000, in_chans: int = 3, **options) -> ResNet:
    """ResNet-101 (paper Table 1), 44,549,160 parameters."""
    return _build("resnet101", num_classes, in_chans, **options)


@register_model(**_imagenet_info("resnet152", f"Bottlenecks [3, 8, 36, 3]. {_V15}"))
def resnet152(num_classes: int = 1000, in_chans: int = 3, **options) -> ResNet:
    """ResNet-152 (paper Table 1), 60,192,808 parameters."""
    return _build("resnet152", num_classes, in_chans, **options)


@register_model(**_cifar_info("resnet20"))
def resnet20(num_classes: int = 10, in_chans: int = 3, **options) -> CifarResNet:
    """ResNet-20 for CIFAR-10 (n=3), 0.27M parameters."""
    return _build("resnet20", num_classes, in_chans, **options)


@register_model(**_cifar_info("resnet32"))
def resnet32(num_classes: int = 10, in_chans: int = 3, **options) -> CifarResNet:
    """ResNet-32 for CIFAR-10 (n=5), 0.46M parameters."""
    return _build("resnet32", num_classes, in_chans, **options)


@register_model(**_cifar_info("resnet44"))
def resnet44(num_classes: int = 10, in_chans: int = 3, **options) -> CifarResNet:
    """ResNet-44 for CIFAR-10 (n=7), 0.66M parameters."""
    return _build("resnet44", num_classes, in_chans, **options)


@register_model(**_cifar_info("resnet56"))
def resnet56(num_classes: int = 10, in_chans: int = 3, **options) -> CifarResNet:
    """ResNet-56 for CIFAR-10 (n=9), 0.85M parameters."""
    return _build("resnet56", num_classes, in_chans, **options)


@register_model(**_cifar_info("resnet110"))
def resnet110(num_classes: int = 10, in_chans: int = 3, **options) -> CifarResNet:
    """ResNet-110 for CIFAR-10 (n=18), 1.7M parameters."""
    return _build("resnet110", num_classes, in_chans, **options)


@register_model(**_keras_info("resnet50_keras", "ResNet50"))
def resnet50_keras(num_classes: int = 1000, in_chans: int = 3, **options) -> KerasResNet:
    """``keras.applications.ResNet50``: 25,636,712 Keras params (25,583,592 trainable)."""
    return _build("resnet50_keras", num_classes, in_chans, **options)


@register_model(**_keras_info("resnet101_keras", "ResNet101"))
def resnet101_keras(num_classes: int = 1000, in_chans: int = 3, **options) -> KerasResNet:
    """``keras.applications.ResNet101``: 44,707,176 Keras params."""
    return _build("resnet101_keras", num_classes, in_chans, **options)


@register_model(**_keras_info("resnet152_keras", "ResNet152"))
def resnet152_keras(num_classes: int = 1000, in_chans: int = 3, **options) -> KerasResNet:
    """``keras.applications.ResNet152``: 60,419,944 Keras params."""
    return _build("resnet152_keras", num_classes, in_chans, **options)
