"""cnnzoo: the landmark convolutional networks, exact and verified, on PyTorch."""

from .errors import CnnzooError, InputShapeError, ShapeError, UnknownModelError, WeightsError
from .registry import ModelInfo, create_model, get_model_info, list_models
from .compat.torchvision import load_torchvision_state_dict

__version__ = "0.1.0"

__all__ = [
    "CnnzooError",
    "InputShapeError",
    "ModelInfo",
    "ShapeError",
    "UnknownModelError",
    "WeightsError",
    "create_model",
    "get_model_info",
    "list_models",
    "load_torchvision_state_dict",
]
