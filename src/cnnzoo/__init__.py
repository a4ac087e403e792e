"""cnnzoo: the landmark convolutional networks, exact and verified, on PyTorch."""

from .counting import ParamCount, count_params
from .errors import CnnzooError, InputShapeError, ShapeError, UnknownModelError, WeightsError
from .factory import create_model, load_model
from .registry import ModelInfo, get_model_info, list_models
from .summary import Summary, summary
from .walk import walk
from .weights import load_pretrained, load_torchvision_state_dict

__version__ = "0.1.0"

__all__ = [
    "CnnzooError",
    "InputShapeError",
    "ModelInfo",
    "ParamCount",
    "ShapeError",
    "Summary",
    "UnknownModelError",
    "WeightsError",
    "count_params",
    "create_model",
    "get_model_info",
    "list_models",
    "load_model",
    "load_pretrained",
    "load_torchvision_state_dict",
    "summary",
    "visualize",
    "walk",
]


def __getattr__(name: str):
    # visualize pulls in matplotlib: imported on first use, not with the package
    if name == "visualize":
        from .visualize import visualize

        return visualize
    raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")
