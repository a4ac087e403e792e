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


def convert_torchvision_state_dict(model_name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a torchvision state dict for the cnnzoo model ``model_name``."""
    from ..registry import get_model_info

    info = get_model_info(model_name)
    if info.torchvision is None:
        raise WeightsError(f"{model_name} has no torchvision counterpart, so torchvision weights cannot be loaded into it.")
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


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists every problem by name.

    BatchNorm's ``num_batches_tracked`` counters that the source lacks keep the model's own value:
    Keras has no such counter, and neither have torchvision's files from before PyTorch 0.4.1.
    """
    name = getattr(model, "model_name", type(model).__name__)
    own = model.state_dict()
    counters = {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state_dict}
    state_dict = {**state_dict, **counters}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: model has {tuple(own[k].shape)}, {source} has {tuple(state_dict[k].shape)}"
        for k in own
        if k in state_dict and own[k].shape != state_dict[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:10])}{' ...' if len(mismatched) > 10 else ''}")
        raise WeightsError(
            f"the {source} does not fit {name}: " + " | ".join(parts)
            + ". Check that the model name, num_classes and in_chans match the checkpoint."
        )
    model.load_state_dict(state_dict, strict=True)


def renamer_from_sequences(sections: Mapping[str, list[str]]):
    """A key renamer for torchvision models built from indexed ``nn.Sequential`` blocks.

    torchvision's AlexNet and VGG name layers by position (``features.3.weight``); cnnzoo names the
    same layers as the paper and Keras do (``features.block2_conv1.weight``). ``sections`` maps each
    Sequential's name to our child names in order.
    """

    def rename(key: str) -> str:
        parts = key.split(".", 2)
        names = sections.get(parts[0]) if len(parts) == 3 else None
        if names is None or not parts[1].isdigit() or int(parts[1]) >= len(names):
            return key  # leave it: load_state_dict_checked reports it as unexpected
        return f"{parts[0]}.{names[int(parts[1])]}.{parts[2]}"

    return rename
