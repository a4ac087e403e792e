"""AlexNet, in torchvision's single-GPU form ("One weird trick", Krizhevsky 2014).

Krizhevsky, Sutskever and Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
Networks". The 2012 network was split over two GPUs (grouped convolutions, 96-256-384-384-256
filters, local response normalisation); torchvision and every other library ship the later one-GPU
variant (64-192-384-256-256, no LRN), which this reproduces layer for layer so torchvision weights
load. Layers are named as in the paper (conv1..conv5, fc6..fc8) instead of by index.

As a backbone: the features are conv1..pool5, the classifier the MLP fc6, fc7, fc8. ``num_features``
is 256, the channels of pool5's map; headless (``num_classes=0``) the network returns them pooled by
``global_pool``, and ``forward_head(x, pre_logits=True)`` of the full network gives fc7's 4096.
``features_only`` offers the ReLU before each pool (relu1 /4, relu2 /8, relu5 /16) and pool5 (/32).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from ..registry import register_model
from ._base import FeatureStage, ZooModel, check_options
from ._keys import renamer_from_sequences


class AlexNetConv(NamedTuple):
    filters: int
    kernel: int
    stride: int
    padding: int
    pool: bool  # a 3x3 max-pool of stride 2 follows (overlapping pooling, section 3.4)


class AlexNetConfig(NamedTuple):
    convs: list[AlexNetConv]  # conv1 .. conv5
    fc: tuple[int, int]  # widths of fc6 and fc7


# The one-GPU variant's layers (torchvision's), conv1 .. conv5 and the two hidden dense layers.
ALEXNET_CONFIGS: dict[str, AlexNetConfig] = {
    "alexnet": AlexNetConfig(
        convs=[
            AlexNetConv(64, kernel=11, stride=4, padding=2, pool=True),
            AlexNetConv(192, kernel=5, stride=1, padding=2, pool=True),
            AlexNetConv(384, kernel=3, stride=1, padding=1, pool=False),
            AlexNetConv(256, kernel=3, stride=1, padding=1, pool=False),
            AlexNetConv(256, kernel=3, stride=1, padding=1, pool=True),
        ],
        fc=(4096, 4096),
    ),
}
ALEXNET_MIN_SIZE = 63
POOLED = 6  # side of the map before the classifier (adaptive average pool; 6x6 already at 224x224)


def alexnet_feature_stages(config: AlexNetConfig) -> list[FeatureStage]:
    """The ReLU before each max-pool, then the last pool (forward_features' map)."""
    stages, reduction = [], 1
    for i, conv in enumerate(config.convs, start=1):
        reduction *= conv.stride
        if conv.pool:
            stages.append(FeatureStage(f"relu{i}", conv.filters, reduction))
            reduction *= 2  # the 3x3 / 2 max-pool
    last = len(config.convs)
    return [FeatureStage(f"features.{s.module}", s.channels, s.reduction) for s in stages] + [
        FeatureStage(f"features.pool{last}", config.convs[-1].filters, reduction)
    ]


def make_features(config: AlexNetConfig, in_chans: int = 3) -> nn.Sequential:
    """conv1 .. conv5, each with its ReLU (``relu<i>``) and, where the table says so, its max-pool (``pool<i>``)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = in_chans
    for i, conv in enumerate(config.convs, start=1):
        layers[f"conv{i}"] = nn.Conv2d(channels, conv.filters, conv.kernel, stride=conv.stride, padding=conv.padding)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        if conv.pool:
            layers[f"pool{i}"] = nn.MaxPool2d(kernel_size=3, stride=2)
        channels = conv.filters
    return nn.Sequential(layers)


def make_classifier(config: AlexNetConfig, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """fc6, fc7 (dropout before each, as torchvision) and fc8, numbered after the five convs."""
    fc6, fc7 = config.fc
    return nn.Sequential(
        OrderedDict(
            drop6=nn.Dropout(p=dropout),
            fc6=nn.Linear(config.convs[-1].filters * POOLED * POOLED, fc6),
            relu6=nn.ReLU(inplace=True),
            drop7=nn.Dropout(p=dropout),
            fc7=nn.Linear(fc6, fc7),
            relu7=nn.ReLU(inplace=True),
            fc8=nn.Linear(fc7, num_classes),
        )
    )


class AlexNet(ZooModel):
    head_classifier = "classifier"
    head_map_size = POOLED

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        *,
        global_pool: str = "avg",
        config: AlexNetConfig = ALEXNET_CONFIGS["alexnet"],
        model_name: str = "alexnet",
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=ALEXNET_MIN_SIZE, native_size=224)
        self.config, self.dropout_rate = config, dropout
        self.features = make_features(config, in_chans)
        self.set_head(config.convs[-1].filters, num_classes, global_pool)
        self.avgpool = self.new_pool()  # the classifier's 6x6 map, or (headless) the global pool
        self.classifier = self.new_classifier()

    def build_classifier(self, num_classes: int) -> nn.Sequential:
        return make_classifier(self.config, num_classes, self.dropout_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def feature_stages(self) -> list[FeatureStage]:
        return alexnet_feature_stages(self.config)


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _torchvision_key(name: str):
    """torchvision's index keys (``features.3.weight``) -> ours (``features.conv2.weight``)."""
    config = ALEXNET_CONFIGS[name]
    with torch.device("meta"):  # only the child names are needed: allocate nothing
        features, classifier = make_features(config), make_classifier(config, num_classes=1)
    return renamer_from_sequences({"features": list(features._modules), "classifier": list(classifier._modules)})


def _build(name: str, num_classes: int, in_chans: int, **options) -> AlexNet:
    check_options(name, options, ("dropout", "global_pool"))
    return AlexNet(num_classes, in_chans, config=ALEXNET_CONFIGS[name], model_name=name, **options)


@register_model(
    family="alexnet",
    paper="Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks",
    url="https://arxiv.org/abs/1404.5997",
    input_size=(3, 224, 224),
    min_size=ALEXNET_MIN_SIZE,
    torchvision="alexnet",
    torchvision_key=_torchvision_key("alexnet"),
    notes="torchvision's one-GPU variant (Krizhevsky 2014)",
)
def alexnet(num_classes: int = 1000, in_chans: int = 3, **options) -> AlexNet:
    return _build("alexnet", num_classes, in_chans, **options)
