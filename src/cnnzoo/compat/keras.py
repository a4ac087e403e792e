"""Old import path of :mod:`cnnzoo.weights.keras`."""

from ..models.inception import creation_order_name_map
from ..weights.keras import (
    HDF5_MAGIC,
    KerasLayer,
    convert_bn_momentum,
    copy_keras_layer,
    is_keras_archive,
    keras_file_kind,
    keras_layer_arrays,
    keras_layer_tensors,
    keras_state_dict,
    live_keras_layers,
    load_keras_model,
    read_keras_file,
    zoo_keras_name_map,
)

__all__ = [
    "HDF5_MAGIC",
    "KerasLayer",
    "convert_bn_momentum",
    "copy_keras_layer",
    "creation_order_name_map",
    "is_keras_archive",
    "keras_file_kind",
    "keras_layer_arrays",
    "keras_layer_tensors",
    "keras_state_dict",
    "live_keras_layers",
    "load_keras_model",
    "read_keras_file",
    "zoo_keras_name_map",
]
