"""Training, laid out like torchvision's classification references.

* :mod:`.config`: :class:`TrainConfig`, every option declared once (help, flag, range), and the
  per-family defaults :data:`FAMILY_DEFAULTS`;
* :mod:`.distributed`: :class:`Dist` and the torchrun process group;
* :mod:`.engine`: :func:`train_one_epoch` and :func:`evaluate`, the loss, optimizer and schedule;
* :mod:`.freeze` (``--freeze-backbone``, ``--freeze``), :mod:`.ema` (``--model-ema``), :mod:`.augmentation`
  (what the options ask of the data), :mod:`.recipe` (``--recipe``: the presets in ``recipes/*.json``);
* :mod:`.run`: :func:`train`, the run from a config to a run folder (what it holds: see there).

The batchers that feed the loop are data, in :mod:`cnnzoo.data.batches`; they are re-exported here.

Every name below is imported from its module on first use, not with the package: the command line builds
its ``train`` flags from :mod:`.config` for every command (even ``cnnzoo list``), and the run's imports
(the data layer, torchvision) would add seconds to each start-up.
"""

from importlib import import_module

# name -> the module that defines it
_HOMES = {
    **dict.fromkeys(("ArrayBatches", "LoaderBatches", "channel_stats", "make_batches"), "cnnzoo.data.batches"),
    **dict.fromkeys(
        ("FAMILY_DEFAULTS", "Option", "TrainConfig", "TrainOptionError", "TrainingError", "defaults_for"), ".config"
    ),
    **dict.fromkeys(
        ("Dist", "all_reduce_sum", "gather_rng_states", "pick_device", "setup_distributed"), ".distributed"
    ),
    **dict.fromkeys(
        (
            "AUX_LOSS_WEIGHT",
            "Learner",
            "NonFiniteLoss",
            "_forward_loss",
            "base_lr",
            "evaluate",
            "make_optimizer",
            "make_scheduler",
            "param_groups",
            "steps_each_epoch",
            "train_one_epoch",
        ),
        ".engine",
    ),  # fmt: skip
    **dict.fromkeys(("EmaCheckpoints", "ExponentialMovingAverage", "adjusted_decay"), ".ema"),
    **dict.fromkeys(("Freezing", "classifier_name", "freeze_modules"), ".freeze"),
    **dict.fromkeys(("PRESET_NAMES", "RecipeError", "read_recipe"), ".recipe"),
    "train": ".run",
}

__all__ = sorted(name for name in _HOMES if not name.startswith("_"))


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cnnzoo.train' has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
