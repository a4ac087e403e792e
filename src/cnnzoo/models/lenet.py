"""LeNet-5, as the seed study note builds it.

LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition". The seed's version is
the modern reading: ReLU instead of scaled tanh, max-pooling instead of trainable subsampling, a
plain dense layer instead of the partially connected C3 and the RBF output:

    conv1  6@5x5 'same' + ReLU   28x28x1 -> 28x28x6      156 params
    pool1  2x2 max                       -> 14x14x6
    conv2 16@5x5 'valid' + ReLU          -> 10x10x16    2,416
    pool2  2x2 max                       -> 5x5x16
    fc1   400 -> 120 + ReLU                            48,120
    fc2   120 -> 84  + ReLU                            10,164
    fc3    84 -> classes                                  850   (61,706 in all for 10 classes)

The seed ends with a softmax; we return logits, since ``nn.CrossEntropyLoss`` applies log-softmax
itself (apply ``softmax`` for probabilities).

As a backbone: the "features" are the two conv stages, the classifier is the FC stack (fc1, fc2,
fc3). ``num_features`` is 16, the channels of pool2's map; headless (``num_classes=0``) the network
returns those 16 channels pooled by ``global_pool``, and ``forward_head(x, pre_logits=True)`` of the
full network gives fc2's 84 (the paper's F6). ``features_only`` offers relu1 (6 channels, full
resolution), relu2 (16, /2: the 10x10 map before pool2) and pool2 (16, /4).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from ..registry import register_model
from ._base import FeatureStage, ZooModel, check_options

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class LeNetConfig(NamedTuple):
    conv1: int  # filters of C1 (5x5, 'same')
    conv2: int  # filters of C3 (5x5, 'valid')
    fc1: int  # width of the first dense layer (C5 of the paper)
    fc2: int  # width of the second (F6)


# The seed's table, above: 6 and 16 filters, 120 and 84 units.
LENET_CONFIGS: dict[str, LeNetConfig] = {
    "lenet5": LeNetConfig(conv1=6, conv2=16, fc1=120, fc2=84),
}
LENET_MIN_SIZE = 12  # pool2 needs a 2x2 map, so conv2 needs 4+4, pool1 10+2 -> 12x12
POOLED = 5  # side of the map before the classifier at the native 28x28


def lenet_feature_stages(config: LeNetConfig) -> list[FeatureStage]:
    """The ReLU before each pool, and the last pool (forward_features' map); reductions 1, 2, 4."""
    return [
        FeatureStage("features.relu1", config.conv1, 1),
        FeatureStage("features.relu2", config.conv2, 2),
        FeatureStage("features.pool2", config.conv2, 4),
    ]


class LeNet5(ZooModel):
    head_classifier = "classifier"
    head_map_size = POOLED

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        *,
        global_pool: str = "avg",
        config: LeNetConfig = LENET_CONFIGS["lenet5"],
        model_name: str = "lenet5",
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=LENET_MIN_SIZE, native_size=28)
        self.config = config
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_chans, config.conv1, kernel_size=5, padding=2),  # 'same' for 5x5, stride 1
                relu1=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(kernel_size=2, stride=2),
                conv2=nn.Conv2d(config.conv1, config.conv2, kernel_size=5),  # 'valid'
                relu2=nn.ReLU(inplace=True),
                pool2=nn.MaxPool2d(kernel_size=2, stride=2),
            )
        )
        self.set_head(config.conv2, num_classes, global_pool)
        # With the classifier: a no-op at the native 28x28 (the map is already 5x5); lets other sizes
        # reach the same head. Headless: the global pool of global_pool.
        self.avgpool = self.new_pool()
        self.classifier = self.new_classifier()

    def build_classifier(self, num_classes: int) -> nn.Sequential:
        config = self.config
        return nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(config.conv2 * POOLED * POOLED, config.fc1),
                relu3=nn.ReLU(inplace=True),
                fc2=nn.Linear(config.fc1, config.fc2),
                relu4=nn.ReLU(inplace=True),
                fc3=nn.Linear(config.fc2, num_classes),
            )
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def feature_stages(self) -> list[FeatureStage]:
        return lenet_feature_stages(self.config)


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _build(name: str, num_classes: int, in_chans: int, **options) -> LeNet5:
    check_options(name, options, ("global_pool",))  # the seed's network has no options of its own
    return LeNet5(num_classes, in_chans, config=LENET_CONFIGS[name], model_name=name, **options)


@register_model(
    family="lenet",
    paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
    url="http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf",
    input_size=(1, 28, 28),
    min_size=LENET_MIN_SIZE,
    num_classes=10,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    notes="the seed's LeNet-5: ReLU, max-pooling, 'same' first conv",
)
def lenet5(num_classes: int = 10, in_chans: int = 1, **options) -> LeNet5:
    return _build("lenet5", num_classes, in_chans, **options)
