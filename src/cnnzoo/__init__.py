"""cnnzoo: the landmark convolutional networks, exact and verified, on PyTorch.

Every public name is imported from its module on first use (PEP 562), not with the package: ``import
cnnzoo`` and ``cnnzoo --help`` stay free of torch, and ``cnnzoo.create_model`` imports what it needs when
it is first touched. ``_HOMES`` says where each name lives; ``__all__`` is its keys (and the errors).
"""

import sys
import types
from importlib import import_module
from importlib.util import find_spec

from . import registry as _registry
from .errors import CnnzooError, InputShapeError, ShapeError, UnknownModelError, WeightsError  # noqa: F401  (public)

__version__ = "0.1.0"

# name -> the module that defines it
_HOMES = {
    "cam": ".cam",
    **dict.fromkeys(("ParamCount", "count_params"), ".counting"),
    **dict.fromkeys(("create_model", "load_model"), ".factory"),
    **dict.fromkeys(
        (
            "PretrainedEntry",
            "fetch_pretrained",
            "get_pretrained",
            "list_pretrained",
            "register_pretrained",
            "unregister_pretrained",
        ),
        ".pretrained",
    ),
    **dict.fromkeys(("ModelInfo", "get_model_info", "list_models"), ".registry"),
    **dict.fromkeys(("Summary", "summary"), ".summary"),
    "visualize": ".visualize",
    "walk": ".walk",
    **dict.fromkeys(("load_pretrained", "load_torchvision_state_dict"), ".weights"),
}

__all__ = sorted(["CnnzooError", "InputShapeError", "ShapeError", "UnknownModelError", "WeightsError", *_HOMES])

# The families register themselves when cnnzoo.models is imported: done on the registry's first lookup.
_registry.set_loader(lambda: import_module(".models", __name__))


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
            return import_module(
                f".{name}", __name__
            )  # cnnzoo.data, cnnzoo.checkpoint ...: as an eager package had them
        raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


class _Package(types.ModuleType):
    """The package module, keeping ``cnnzoo.summary`` (and ``cam``, ``visualize``, ``walk``) the function of that
    name when its submodule is imported: the import system binds a submodule to its package's attribute."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _HOMES and isinstance(value, types.ModuleType) and _HOMES[name] == "." + name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
