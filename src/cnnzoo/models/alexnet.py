"""AlexNet, in torchvision's single-GPU form ("One weird trick", Krizhevsky 2014).

Krizhevsky, Sutskever and Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
Networks". The 2012 network was split over two GPUs (grouped convolutions, 96-256-384-384-256
filters, local response normalisation); torchvision and every other library ship the later one-GPU
variant (64-192-384-256-256, no LRN), which this reproduces layer for layer so torchvision weights
load. Layers are named as in the paper (conv1..conv5, fc6..fc8) instead of by index.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..compat.torchvision import renamer_from_sequences
from ..registry import register_model
from ._base import ZooModel


class AlexNet(ZooModel):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__(model_name="alexnet", in_chans=in_chans, min_size=63, native_size=224)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
                relu1=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(kernel_size=3, stride=2),  # overlapping pooling: 3x3 windows, stride 2
                conv2=nn.Conv2d(64, 192, kernel_size=5, padding=2),
                relu2=nn.ReLU(inplace=True),
                pool2=nn.MaxPool2d(kernel_size=3, stride=2),
                conv3=nn.Conv2d(192, 384, kernel_size=3, padding=1),
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(384, 256, kernel_size=3, padding=1),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(256, 256, kernel_size=3, padding=1),
                relu5=nn.ReLU(inplace=True),
                pool5=nn.MaxPool2d(kernel_size=3, stride=2),
            )
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            OrderedDict(
                drop6=nn.Dropout(p=dropout),
                fc6=nn.Linear(256 * 6 * 6, 4096),
                relu6=nn.ReLU(inplace=True),
                drop7=nn.Dropout(p=dropout),
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(inplace=True),
                fc8=nn.Linear(4096, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


_FEATURES = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5"]
_CLASSIFIER = ["drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"]


@register_model(
    family="alexnet",
    paper="Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks",
    url="https://arxiv.org/abs/1404.5997",
    input_size=(3, 224, 224),
    min_size=63,
    torchvision="alexnet",
    torchvision_key=renamer_from_sequences({"features": _FEATURES, "classifier": _CLASSIFIER}),
    notes="torchvision's one-GPU variant (Krizhevsky 2014)",
)
def alexnet(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    return AlexNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
