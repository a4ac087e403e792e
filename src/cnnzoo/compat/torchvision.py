"""Old import path of :mod:`cnnzoo.weights.torchvision` (and of the checked load, now :mod:`cnnzoo.weights.state_dict`)."""

from ..models._keys import renamer_from_sequences
from ..weights.state_dict import load_state_dict_checked
from ..weights.torchvision import convert_torchvision_state_dict, load_torchvision_state_dict

__all__ = [
    "convert_torchvision_state_dict",
    "load_state_dict_checked",
    "load_torchvision_state_dict",
    "renamer_from_sequences",
]
