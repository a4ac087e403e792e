"""Load torchvision state dicts into cnnzoo models.

Each family declares how a torchvision key becomes a cnnzoo key (``ModelInfo.torchvision_key``):
identity for the families whose names torchvision already takes from the papers (ResNet, GoogLeNet,
Inception v3), a renaming from indices to paper names for AlexNet and VGG.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import WeightsError
from ..registry import get_model_info
from .state_dict import load_state_dict_checked


def convert_torchvision_state_dict(model_name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a torchvision state dict for the cnnzoo model ``model_name``."""
    info = get_model_info(model_name)
    if info.torchvision is None:
        raise WeightsError(
            f"{model_name} has no torchvision counterpart, so torchvision weights cannot be loaded into it."
        )
    if info.torchvision_key is None:  # the same names as torchvision
        return dict(state_dict)
    return {info.torchvision_key(k): v for k, v in state_dict.items()}


def load_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a torchvision model's ``state_dict()`` into the cnnzoo twin ``model``, strictly.

    Missing and unexpected keys and shape mismatches are all listed by name in one error.
    """
    name = getattr(model, "model_name", type(model).__name__)
    converted = convert_torchvision_state_dict(name, state_dict)
    load_state_dict_checked(model, converted, source="torchvision state dict")
    return model
