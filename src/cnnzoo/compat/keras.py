"""Copy weights of a Keras 3 model into a cnnzoo model, layer by layer.

Keras stores a Conv2D kernel as (H, W, in, out) and a Dense kernel as (in, out); PyTorch wants
(out, in, H, W) and (out, in). BatchNormalization holds gamma (absent with ``scale=False``), beta,
moving mean and moving variance. A Dense layer that follows ``Flatten`` of an (H, W, C) map sees its
inputs in NHWC order, while PyTorch flattens NCHW: ``flatten_from`` reorders those rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError


def keras_layer_arrays(keras_layer) -> dict[str, np.ndarray]:
    """The weights of one Keras layer by their short names: kernel, bias, gamma, beta, moving_mean, moving_variance."""
    return {w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in keras_layer.weights}


def copy_keras_layer(
    module: nn.Module,
    arrays: Mapping[str, np.ndarray],
    *,
    where: str = "",
    flatten_from: tuple[int, int, int] | None = None,
) -> None:
    """Copy one Keras layer's ``arrays`` into the matching PyTorch ``module`` (Conv2d, Linear or BatchNorm2d).

    ``flatten_from=(C, H, W)`` marks a Dense layer fed by Flatten of an NHWC feature map.
    """

    def put(param: torch.Tensor | None, value: np.ndarray, what: str) -> None:
        if param is None:
            raise WeightsError(f"{where}: the cnnzoo layer has no {what}, the Keras layer has one of shape {value.shape}")
        t = torch.as_tensor(np.ascontiguousarray(value), dtype=param.dtype)
        if tuple(t.shape) != tuple(param.shape):
            raise WeightsError(f"{where}: {what} has shape {tuple(param.shape)} in cnnzoo, Keras gives {tuple(t.shape)}")
        with torch.no_grad():
            param.copy_(t)

    def check_bias(module_bias: torch.Tensor | None) -> None:
        if module_bias is not None and "bias" not in arrays:
            raise WeightsError(f"{where}: the cnnzoo layer has a bias, the Keras layer has none")

    if isinstance(module, nn.Conv2d):
        put(module.weight, np.transpose(arrays["kernel"], (3, 2, 0, 1)), "kernel")
        check_bias(module.bias)
        if "bias" in arrays:
            put(module.bias, arrays["bias"], "bias")
    elif isinstance(module, nn.Linear):
        kernel = arrays["kernel"]  # (in, out)
        if flatten_from is not None:
            c, h, w = flatten_from
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        put(module.weight, kernel.T, "kernel")
        check_bias(module.bias)
        if "bias" in arrays:
            put(module.bias, arrays["bias"], "bias")
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if "gamma" in arrays:
            put(module.weight, arrays["gamma"], "gamma (scale)")
        elif module.weight is not None:
            raise WeightsError(f"{where}: the cnnzoo BatchNorm has a scale (gamma), the Keras one has none")
        if "beta" in arrays:
            put(module.bias, arrays["beta"], "beta (shift)")
        put(module.running_mean, arrays["moving_mean"], "moving mean")
        put(module.running_var, arrays["moving_variance"], "moving variance")
    else:
        raise WeightsError(f"{where}: don't know how to copy Keras weights into {type(module).__name__}")


def load_keras_model(
    model: nn.Module,
    keras_model,
    name_map: Mapping[str, str],
    *,
    flatten_from: Mapping[str, tuple[int, int, int]] | None = None,
) -> nn.Module:
    """Copy every weighted layer of ``keras_model`` into ``model``.

    ``name_map`` maps a Keras layer name to a cnnzoo module path (``model.get_submodule(path)``).
    Every Keras layer with weights must be mapped, and every cnnzoo parameter must be written.
    """
    flatten_from = flatten_from or {}
    written: set[str] = set()
    modules = dict(model.named_modules())
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        if layer.name not in name_map:
            raise WeightsError(f"Keras layer {layer.name!r} ({type(layer).__name__}) has no place in {type(model).__name__}")
        path = name_map[layer.name]
        if path not in modules:
            raise WeightsError(f"Keras layer {layer.name!r} maps to {path!r}, which {type(model).__name__} does not have")
        copy_keras_layer(modules[path], keras_layer_arrays(layer), where=f"{layer.name} -> {path}", flatten_from=flatten_from.get(layer.name))
        written.update(f"{path}.{n}" if path else n for n, _ in modules[path].named_parameters(recurse=False))
    left = [n for n, _ in model.named_parameters() if n not in written]
    if left:
        raise WeightsError(f"{len(left)} cnnzoo parameters got no Keras weights: {', '.join(left[:10])}")
    return model
