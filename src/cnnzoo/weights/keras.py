"""Copy Keras weights into cnnzoo models: from a live Keras 3 model or from the files Keras writes.

Keras stores a Conv2D kernel as (H, W, in, out) and a Dense kernel as (in, out); PyTorch wants
(out, in, H, W) and (out, in). BatchNormalization holds gamma (absent with ``scale=False``), beta,
moving mean and moving variance. A Dense layer that follows ``Flatten`` of an (H, W, C) map sees its
inputs in NHWC order, while PyTorch flattens NCHW: ``flatten_from`` reorders those rows. Keras'
momentum 0.99 weighs the old running value, PyTorch's momentum the new one: 1 - 0.99 = 0.01.

Files are read with h5py alone, so loading needs no Keras:

* legacy HDF5, ``model.save('m.h5')`` and the ``.h5`` files keras.applications downloads: one group
  per layer, listed in order by the attributes ``layer_names`` and ``weight_names`` (under
  ``model_weights`` in a full-model file, which also holds the model's configuration);
* Keras 3 ``model.save_weights('m.weights.h5')``: ``layers/<class>_<i>/vars/0 .. n``, the groups named
  after the layer's class and position, the layer's own name in the ``name`` attribute of ``vars``,
  the variables numbered in creation order (kernel, bias; gamma, beta, moving mean, moving variance);
* Keras 3 ``model.save('m.keras')``: a zip archive holding that ``model.weights.h5`` and ``config.json``.

Only arrays and JSON are read. A layer's configuration is parsed as JSON, never deserialized, so no
Lambda layer or custom object in a file can run.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from ..registry import get_model_info, list_models
from .state_dict import load_state_dict_checked

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"  # inside a .keras zip
SHORT_NAMES = {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}


@dataclass
class KerasLayer:
    """One Keras layer with weights: its name, its arrays by short name, its configuration if known."""

    name: str
    arrays: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``conv``, ``dense`` or ``batchnorm``, told by the arrays (weights-only files carry no class)."""
        if "kernel" in self.arrays:
            return "conv" if self.arrays["kernel"].ndim == 4 else "dense"
        return "batchnorm" if "moving_mean" in self.arrays else "other"


# --------------------------------------------------------------------------------------------------
# Reading: live Keras models and Keras files
# --------------------------------------------------------------------------------------------------


def keras_layer_arrays(keras_layer) -> dict[str, np.ndarray]:
    """The weights of one Keras layer by their short names: kernel, bias, gamma, beta, moving_mean, moving_variance."""
    return {
        w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        for w in keras_layer.weights
    }


def live_keras_layers(keras_model) -> list[KerasLayer]:
    """The weighted layers of a live Keras model, with the BatchNorm settings the loader checks."""
    layers = []
    for layer in keras_model.layers:
        if layer.weights:
            config = {"epsilon": layer.epsilon, "momentum": layer.momentum} if hasattr(layer, "moving_mean") else {}
            layers.append(KerasLayer(layer.name, keras_layer_arrays(layer), config))
    return layers


def is_keras_archive(path: str | Path) -> bool:
    """Whether ``path`` is a Keras 3 ``.keras`` zip archive (PyTorch's own files are zips too)."""
    try:
        with zipfile.ZipFile(path) as z:
            return KERAS_ARCHIVE_WEIGHTS in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def keras_file_kind(path: str | Path) -> str:
    """``keras`` (a .keras archive), ``keras-weights-h5`` (Keras 3 save_weights) or ``keras-h5`` (legacy HDF5)."""
    if is_keras_archive(path):
        return "keras"
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            if _has_attr_list(group, "layer_names"):
                return "keras-h5"
            if "layers" in f:
                return "keras-weights-h5"
    except OSError as e:
        raise WeightsError(f"{path}: a damaged HDF5 file ({e})") from None
    raise WeightsError(
        f"{path}: an HDF5 file, but not one Keras wrote: it has neither a 'layer_names' attribute (legacy .h5) "
        "nor a 'layers' group (Keras 3 .weights.h5)"
    )


def read_keras_file(path: str | Path) -> list[KerasLayer]:
    """The weighted layers stored in a Keras ``.h5``, ``.weights.h5`` or ``.keras`` file, in the file's order."""
    import h5py

    kind = keras_file_kind(path)
    if kind == "keras":
        with zipfile.ZipFile(path) as z:
            config = z.read("config.json").decode() if "config.json" in z.namelist() else None
            with h5py.File(io.BytesIO(z.read(KERAS_ARCHIVE_WEIGHTS)), "r") as f:
                layers = _read_keras3_layers(f, path)
    else:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
            layers = _read_legacy_layers(f, path) if kind == "keras-h5" else _read_keras3_layers(f, path)
    configs = _layer_configs(config)
    for layer in layers:
        layer.config = configs.get(layer.name, {})
    return layers


def _has_attr_list(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _attr_list(group, name: str) -> list[str]:
    """A list attribute as Keras writes it: whole, or split into ``name0``, ``name1`` ... past HDF5's 64 kB limit."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_array(dataset, where: str) -> np.ndarray:
    array = np.asarray(dataset[()])
    if array.dtype.kind != "f":
        raise WeightsError(f"{where}: holds {array.dtype} data where weights are floating point")
    return array


def _read_legacy_layers(f, path) -> list[KerasLayer]:
    group = f.get("model_weights", f)
    layers = []
    for name in _attr_list(group, "layer_names"):
        weight_names = _attr_list(group[name], "weight_names")
        if weight_names:
            arrays = [_read_array(group[name][w], f"{path}: layer {name!r}, weight {w!r}") for w in weight_names]
            layers.append(KerasLayer(name, _by_short_name(arrays, weight_names, f"{path}: layer {name!r}")))
    return layers


def _read_keras3_layers(f, path) -> list[KerasLayer]:
    layers = []
    for key, group in f["layers"].items():
        variables = group.get("vars")
        if variables is None or len(variables) == 0:
            continue
        name = variables.attrs.get("name")
        if name is None:
            raise WeightsError(
                f"{path}: layer group 'layers/{key}' does not store its layer's name (a .weights.h5 from an older "
                "Keras 3); the names are needed to place the weights. Load the file into the Keras model and save it "
                "again with a current Keras (model.save_weights('m.weights.h5')), or save it as model.save('m.h5')."
            )
        name = name.decode("utf8") if isinstance(name, bytes) else str(name)
        arrays = [
            _read_array(variables[i], f"{path}: layer {name!r}, variable {i}") for i in sorted(variables, key=int)
        ]
        layers.append(KerasLayer(name, _by_short_name(arrays, None, f"{path}: layer {name!r}")))
    return layers


def _by_short_name(arrays: list[np.ndarray], names: list[str] | None, where: str) -> dict[str, np.ndarray]:
    """Name a layer's arrays kernel / bias / gamma / beta / moving_mean / moving_variance.

    Files since Keras 2 name them (``conv2d_1/kernel:0``); Keras 3's .weights.h5 and Keras 1's files
    (``block1_conv1_W_1:0``) do not, and then the order decides, as it does for Keras' own loader.
    """
    short = [n.split("/")[-1].split(":")[0] for n in names or []]
    if short and set(short) <= SHORT_NAMES and len(set(short)) == len(short):
        return dict(zip(short, arrays))
    shapes = [a.shape for a in arrays]
    if arrays[0].ndim in (2, 4) and len(arrays) <= 2:  # Dense / Conv2D: kernel, then bias
        return dict(zip(["kernel", "bias"], arrays))
    if all(a.ndim == 1 for a in arrays) and len(arrays) in (3, 4):
        # BatchNormalization; three arrays are Keras' scale=False (InceptionV3's conv2d_bn), no gamma.
        order = ["gamma", "beta", "moving_mean", "moving_variance"][4 - len(arrays) :]
        return dict(zip(order, arrays))
    raise WeightsError(
        f"{where}: weights of shapes {shapes} are not those of a Conv2D, Dense or BatchNormalization layer"
    )


def _layer_configs(config_json: str | bytes | None) -> dict[str, dict[str, Any]]:
    """Layer name -> its Keras config (with ``class_name``), from a model's JSON configuration."""
    if not config_json:
        return {}
    config = json.loads(config_json)
    layers = config.get("config", {}).get("layers", []) if isinstance(config, dict) else []
    return {
        layer["config"]["name"]: {"class_name": layer.get("class_name"), **layer["config"]}
        for layer in layers
        if isinstance(layer, dict) and isinstance(layer.get("config"), dict) and "name" in layer["config"]
    }


# --------------------------------------------------------------------------------------------------
# Converting: Keras arrays -> cnnzoo state-dict tensors
# --------------------------------------------------------------------------------------------------


def keras_layer_tensors(
    module: nn.Module,
    arrays: Mapping[str, np.ndarray],
    *,
    where: str = "",
    flatten_from: tuple[int, int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """One Keras layer's ``arrays`` as the state-dict entries of ``module`` (Conv2d, Linear or BatchNorm2d).

    Keys are relative to the module (``weight``, ``bias``, ``running_mean`` ...). Shapes are checked
    by the caller, against the whole model. ``flatten_from=(C, H, W)`` marks a Dense layer fed by
    Flatten of an NHWC feature map.
    """

    def tensor(value: np.ndarray) -> torch.Tensor:
        # Views, not copies: the transposes happen in the one copy into the model (PyTorch's is parallel).
        return torch.from_numpy(np.asarray(value, dtype=np.float32))

    def bias_of(has_bias: bool) -> dict[str, torch.Tensor]:
        if has_bias and "bias" not in arrays:
            raise WeightsError(f"{where}: the cnnzoo layer has a bias, the Keras layer has none")
        if not has_bias and "bias" in arrays:
            raise WeightsError(
                f"{where}: the Keras layer has a bias of shape {arrays['bias'].shape}, the cnnzoo layer has none"
            )
        return {"bias": tensor(arrays["bias"])} if has_bias else {}

    if "kernel" not in arrays and not isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise WeightsError(
            f"{where}: the Keras layer has no kernel (it has {', '.join(arrays)}), {type(module).__name__} needs one"
        )
    if isinstance(module, nn.Conv2d):
        if arrays["kernel"].ndim != 4:
            raise WeightsError(
                f"{where}: a Conv2d needs a 4-d (H, W, in, out) kernel, the Keras layer has shape {arrays['kernel'].shape}"
            )
        return {"weight": tensor(arrays["kernel"]).permute(3, 2, 0, 1), **bias_of(module.bias is not None)}
    if isinstance(module, nn.Linear):
        kernel = tensor(arrays["kernel"])  # (in, out)
        if kernel.ndim != 2:
            raise WeightsError(
                f"{where}: a Linear layer needs a 2-d (in, out) kernel, the Keras layer has shape {tuple(kernel.shape)}"
            )
        weight = kernel.t()
        if flatten_from is not None:
            c, h, w = flatten_from
            if kernel.shape[0] != c * h * w:
                raise WeightsError(
                    f"{where}: the Keras Dense layer takes {kernel.shape[0]} inputs, cnnzoo flattens a {c}x{h}x{w} map "
                    f"into {c * h * w}. Was the Keras model built with include_top=True at its native input size?"
                )
            # Row (y, x, ch) of the Keras kernel is input ch * h * w + y * w + x of the PyTorch layer.
            weight = kernel.reshape(h, w, c, -1).permute(3, 2, 0, 1).reshape(-1, c * h * w)
        return {"weight": weight, **bias_of(module.bias is not None)}
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        missing = [n for n in ("moving_mean", "moving_variance") if n not in arrays]
        if missing:
            raise WeightsError(f"{where}: the Keras BatchNormalization lacks {', '.join(missing)}")
        out = {"running_mean": tensor(arrays["moving_mean"]), "running_var": tensor(arrays["moving_variance"])}
        if module.weight is not None and "gamma" not in arrays:
            raise WeightsError(f"{where}: the cnnzoo BatchNorm has a scale (gamma), the Keras one has none")
        if module.weight is None and "gamma" in arrays:
            raise WeightsError(
                f"{where}: the Keras BatchNormalization has a scale (gamma), the cnnzoo one has none (scale=False)"
            )
        if "gamma" in arrays:
            out["weight"] = tensor(arrays["gamma"])
        if module.bias is not None:
            if "beta" not in arrays:
                raise WeightsError(f"{where}: the cnnzoo BatchNorm has a shift (beta), the Keras one has none")
            out["bias"] = tensor(arrays["beta"])
        return out
    raise WeightsError(f"{where}: don't know how to copy Keras weights into {type(module).__name__}")


def copy_keras_layer(
    module: nn.Module,
    arrays: Mapping[str, np.ndarray],
    *,
    where: str = "",
    flatten_from: tuple[int, int, int] | None = None,
) -> None:
    """Copy one Keras layer's ``arrays`` into the matching PyTorch ``module``, checking every shape."""
    tensors = keras_layer_tensors(module, arrays, where=where, flatten_from=flatten_from)
    targets = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
    for key, value in tensors.items():
        if tuple(targets[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{where}: {key} has shape {tuple(targets[key].shape)} in cnnzoo, Keras gives {tuple(value.shape)}"
            )
    with torch.no_grad():
        for key, value in tensors.items():
            targets[key].copy_(value)


def keras_state_dict(
    model: nn.Module,
    layers: list[KerasLayer],
    name_map: Mapping[str, str],
    *,
    flatten_from: Mapping[str, tuple[int, int, int]] | None = None,
    source: str = "Keras model",
) -> dict[str, torch.Tensor]:
    """The Keras ``layers`` as a state dict with ``model``'s keys, for a checked ``load_state_dict``.

    ``name_map`` maps a Keras layer name to a cnnzoo module path. A BatchNorm epsilon stored with a
    layer must equal the module's: epsilon changes outputs, and cnnzoo checkpoints do not store it.
    """
    flatten_from = flatten_from or {}
    modules = dict(model.named_modules())
    name = getattr(model, "model_name", type(model).__name__)
    unplaced = [layer.name for layer in layers if layer.name not in name_map]
    if unplaced:
        raise WeightsError(
            f"{source}: {len(unplaced)} Keras layer{'s have' if len(unplaced) > 1 else ' has'} no place in {name}: "
            f"{', '.join(unplaced[:8])}{f' and {len(unplaced) - 8} more' if len(unplaced) > 8 else ''}. Is it a file of the Keras model {name} "
            f"mirrors ({_keras_twin(name)})?"
        )
    state: dict[str, torch.Tensor] = {}
    for layer in layers:
        path = name_map[layer.name]
        where = f"{source}: Keras layer {layer.name!r} -> {path}"
        if path not in modules:
            raise WeightsError(f"{where}: {name} has no module {path!r}")
        module = modules[path]
        eps = layer.config.get("epsilon")
        if (
            isinstance(module, nn.modules.batchnorm._BatchNorm)
            and eps is not None
            and not math.isclose(eps, module.eps, rel_tol=1e-6)
        ):
            raise WeightsError(
                f"{where}: the Keras BatchNormalization has epsilon {eps:g}, the cnnzoo one {module.eps:g}: "
                "the file is of another architecture than this model"
            )
        for key, value in keras_layer_tensors(
            module, layer.arrays, where=where, flatten_from=flatten_from.get(layer.name)
        ).items():
            state[f"{path}.{key}" if path else key] = value
    return state


def convert_bn_momentum(model: nn.Module, layers: list[KerasLayer], name_map: Mapping[str, str]) -> None:
    """Give ``model``'s BatchNorms the momentum stored with their Keras layers: Keras' m is PyTorch's 1 - m."""
    for layer in layers:
        if "momentum" in layer.config:
            model.get_submodule(name_map[layer.name]).momentum = 1 - layer.config["momentum"]


def _keras_twin(model_name: str) -> str:
    twin = get_model_info(model_name).keras if model_name in list_models() else None
    return f"keras.applications.{twin}" if twin else "none"


def load_keras_model(
    model: nn.Module,
    keras_model,
    name_map: Mapping[str, str],
    *,
    flatten_from: Mapping[str, tuple[int, int, int]] | None = None,
) -> nn.Module:
    """Copy every weighted layer of a live ``keras_model`` into ``model``.

    ``name_map`` maps a Keras layer name to a cnnzoo module path (``model.get_submodule(path)``).
    Every Keras layer with weights must be mapped, and every cnnzoo parameter must be written.
    """
    source = f"Keras model {keras_model.name!r}"
    layers = live_keras_layers(keras_model)
    load_state_dict_checked(
        model, keras_state_dict(model, layers, name_map, flatten_from=flatten_from, source=source), source=source
    )
    convert_bn_momentum(model, layers, name_map)
    return model


# --------------------------------------------------------------------------------------------------
# Which Keras layer goes where, for the zoo's Keras twins: the models declare it in the registry
# --------------------------------------------------------------------------------------------------


def zoo_keras_name_map(
    model: nn.Module, layers: list[KerasLayer], source: str
) -> tuple[dict[str, str], dict[str, tuple[int, int, int]]]:
    """``(name_map, flatten_from)`` for loading ``layers`` into a zoo model with a Keras twin.

    Each twin declares both in its registry entry (``ModelInfo.keras_names``, ``ModelInfo.keras_flatten``):
    VGG16/19 and the ResNets carry Keras' layer names, InceptionV3's names are made up by Keras, so its
    layers are placed by creation order (:func:`cnnzoo.models.inception.creation_order_name_map`).
    """
    name = getattr(model, "model_name", type(model).__name__)
    info = get_model_info(name) if name in list_models() else None
    if info is None or info.keras_names is None:
        twins = [n for n in list_models() if get_model_info(n).keras_names is not None]
        raise WeightsError(
            f"{source}: Keras weights load into {', '.join(twins)} only; {name} has no Keras counterpart"
        )
    return info.keras_names(model, layers, source), dict(info.keras_flatten or {})
