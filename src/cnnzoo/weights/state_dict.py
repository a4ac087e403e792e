"""State dicts: the model inside its wrappers, and the one checked load every weight format ends in.

Every reader in this package turns its file into a state dict keyed like the model; the load is
then :func:`load_state_dict_checked`, strict, with every missing key, unexpected key and shape
mismatch listed by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import WeightsError


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers, so saved keys carry no ``module.`` / ``_orig_mod.`` prefix."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, *, assign: bool = False
) -> None:
    """``load_state_dict(strict=True)`` with an error that lists every problem by name.

    BatchNorm's ``num_batches_tracked`` counters that the source lacks keep the model's own value:
    Keras has no such counter, and neither have torchvision's files from before PyTorch 0.4.1.
    ``assign=True`` (for a model just built, whose parameters nothing holds yet, as in ``create_model``)
    makes the file's tensors the model's instead of copying them, when every one has the dtype, device
    and contiguous layout of the one it replaces (what torch.load and safetensors give); the copy of a
    ResNet-50 is otherwise a sizeable part of its load time.
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
            parts.append(
                f"missing keys ({len(missing)}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
            )
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}"
            )
        if mismatched:
            parts.append(
                f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:10])}{' ...' if len(mismatched) > 10 else ''}"
            )
        raise WeightsError(
            f"the {source} does not fit {name}: "
            + " | ".join(parts)
            + ". Check that the model name, num_classes and in_chans match the checkpoint."
        )
    model.load_state_dict(state_dict, strict=True, assign=assign and _assignable(own, state_dict))


def _assignable(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the model may take ``state_dict``'s tensors as they are: same dtype and device, contiguous."""
    return all(
        v.dtype == own[k].dtype and v.device == own[k].device and v.is_contiguous() and not v.requires_grad
        for k, v in state_dict.items()
    )
