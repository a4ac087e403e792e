"""State dicts and weight formats: every file users hold, read into zoo models without running code.

* :mod:`.state_dict`: the model inside DDP / compile wrappers, and the one checked, strict load;
* :mod:`.torchvision`: torchvision's state dicts, keys renamed by each model's ``torchvision_key``;
* :mod:`.keras`: Keras' ``.h5`` / ``.weights.h5`` / ``.keras`` files read with h5py, and live Keras models;
* :mod:`.cnnzoo_format`: cnnzoo's own safetensors files with the model's arguments in the metadata;
* :mod:`.load`: the format told from the bytes, and :func:`load_pretrained` for any of them;
* :mod:`.adapt`: a 3-channel first convolution fitted to another ``in_chans`` (timm's ``adapt_input_conv``).

Which Keras layer or torchvision key goes where is declared by each model in its registry entry;
nothing here imports a model file. Building a model and filling it (``create_model(weights=...)``,
``convert``) is :mod:`cnnzoo.factory`'s, one floor up.
"""

from .adapt import adapt_input_conv, adapt_input_convs
from .cnnzoo_format import load_weights, read_metadata, resolve_checkpoint, save_weights
from .keras import load_keras_model
from .load import (
    FORMATS,
    LoadReport,
    detect_format,
    file_sha256,
    load_pretrained,
    read_state_dict,
    torch_load_safely,
    verify_sha256,
)
from .state_dict import load_state_dict_checked, unwrap
from .torchvision import convert_torchvision_state_dict, load_torchvision_state_dict

__all__ = [
    "adapt_input_conv",
    "adapt_input_convs",
    "FORMATS",
    "LoadReport",
    "convert_torchvision_state_dict",
    "detect_format",
    "file_sha256",
    "load_keras_model",
    "load_pretrained",
    "load_state_dict_checked",
    "load_torchvision_state_dict",
    "load_weights",
    "read_metadata",
    "read_state_dict",
    "resolve_checkpoint",
    "save_weights",
    "torch_load_safely",
    "unwrap",
    "verify_sha256",
]
