"""Recipes as data: the presets in ``train/recipes/*.json``, and a user's own ``.json`` / ``.yaml`` file.

A recipe file is a mapping. Its ``options`` are :class:`~cnnzoo.train.config.TrainConfig` fields by their
snake_case names (what ``cnnzoo train --print-config`` prints); the other keys describe it:

* ``description``, ``source``: what it is and where its numbers come from (shown in the README);
* ``model``: the model it was written for, trained when the command names none;
* ``processes``: the number of processes its batch size and learning rate assume (``--batch-size`` is per
  process, as in torchvision's references); a run with another number says so;
* ``extends``: a recipe this one starts from (its options, then these on top): a preset's name, or a file's
  path, relative to this file's folder.

A file without ``options`` is read as options alone (``{"lr": 0.05, "epochs": 10}``). Where cnnzoo's name of
an option differs from torchvision's reference flag, the latter's snake_case works too (:data:`TORCHVISION_KEYS`:
``lr_scheduler``, ``lr_warmup_epochs``, ``wd``), so a recipe can be written from ``train.py``'s flags. Only the
reading is here; which keys are allowed and what they may hold is checked by :meth:`TrainConfig.resolved`,
which knows the options. YAML needs PyYAML (``pip install pyyaml``); JSON needs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CnnzooError

__all__ = ["METADATA_KEYS", "PRESETS_DIR", "PRESET_NAMES", "TORCHVISION_KEYS", "RecipeError", "read_recipe"]

PRESETS_DIR = Path(__file__).parent / "recipes"
PRESET_NAMES = tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.json")))
METADATA_KEYS = ("description", "source", "model", "processes", "extends", "notes")
# torchvision's reference flags, snake_case, where TrainConfig's field has cnnzoo's older name; the same aliases as
# the flags declared in train/config.py (--lr-scheduler, --lr-warmup-epochs, --wd), which a test holds them to.
TORCHVISION_KEYS = {"lr_scheduler": "schedule", "lr_warmup_epochs": "warmup", "wd": "weight_decay"}


class RecipeError(CnnzooError, ValueError):
    """A recipe that cannot be found or read; the message names the file and what is wrong."""


def read_recipe(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe ``name`` (a preset's name or a file's path), ``extends`` followed: ``{"name", "options",
    and the metadata keys it has}``. ``options`` holds the merged settings of the chain, nearest last."""
    path = _find(name)
    if str(path.resolve()) in _seen:  # resolved: "../r/a.json" and "a.json" are one file
        raise RecipeError(f"recipe {name}: 'extends' goes round in a circle ({' -> '.join(_seen)} -> {path.resolve()})")
    raw = _load(path)
    options = raw.get("options", {k: v for k, v in raw.items() if k not in METADATA_KEYS})
    if not isinstance(options, dict):
        raise RecipeError(
            f"recipe {path}: 'options' must be a mapping of option names to values, not {type(options).__name__}"
        )
    options = _field_names(path, options)
    recipe = {"name": name, **{k: raw[k] for k in METADATA_KEYS if k in raw and k != "extends"}}
    if "extends" in raw:
        base = read_recipe(_beside(path, str(raw["extends"])), (*_seen, str(path.resolve())))
        recipe = {**{k: v for k, v in base.items() if k != "name"}, **recipe}
        options = {**base["options"], **options}
    recipe["options"] = options
    return recipe


def _field_names(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with torchvision's names (:data:`TORCHVISION_KEYS`) turned into TrainConfig's; both names of
    one option in one file is refused, as the two would contradict each other."""
    out = {}
    for key, value in options.items():
        field = TORCHVISION_KEYS.get(key, key)
        if field in out:
            alias = next(k for k, f in TORCHVISION_KEYS.items() if f == field)
            raise RecipeError(
                f"recipe {path}: {field} and {alias} are one option (torchvision's name and cnnzoo's): keep one"
            )
        out[field] = value
    return out


def _beside(path: Path, extends: str) -> str:
    """``extends`` as a file's path is read from the folder of the recipe that names it (as an include is), not
    from wherever the command runs; a preset's name stays a name."""
    if extends in PRESET_NAMES or Path(extends).expanduser().is_absolute():
        return extends
    return str(path.parent / extends)


def _find(name: str) -> Path:
    if name in PRESET_NAMES:
        return PRESETS_DIR / f"{name}.json"
    path = Path(name).expanduser()
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise RecipeError(f"--recipe {name}: no such file")
        return path
    raise RecipeError(f"--recipe {name!r}: not a preset ({', '.join(PRESET_NAMES)}) nor a .json / .yaml file")


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecipeError(f"recipe {path}: not valid JSON ({e})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise RecipeError(
                f"recipe {path}: reading YAML needs PyYAML (pip install pyyaml); or write the recipe as .json"
            ) from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:  # its message spans lines (the problem, then where): one line here
            raise RecipeError(f"recipe {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if raw is None:
        raise RecipeError(f"recipe {path}: empty (or null); write a mapping of option names to values")
    if not isinstance(raw, dict):
        raise RecipeError(
            f"recipe {path}: expected a mapping of option names to values at the top, found {type(raw).__name__}"
        )
    return raw
