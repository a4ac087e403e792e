"""Recipes as data: the presets against their published sources, --recipe and --print-config, a user's own
recipe file, and torchvision's reference flags (schedules, weight-decay groups) against torchvision's own code."""

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from cnnzoo.cli import build_parser, main
from cnnzoo.cli.options import train_config_values
from cnnzoo.train import FAMILY_DEFAULTS, TrainConfig, TrainingError, train
from cnnzoo.train.config import declared_options
from cnnzoo.train.engine import make_scheduler, param_groups
from cnnzoo.train.recipe import PRESET_NAMES, PRESETS_DIR, TORCHVISION_KEYS, read_recipe

from .anchors import TORCHVISION_V2_COMMAND

ANCHORS_MD = Path(__file__).resolve().parents[2] / "shared" / "ANCHORS.md"


def resolved(argv: list[str]) -> dict:
    """The configuration ``cnnzoo train ARGV`` would run, as --print-config prints it (names aside)."""
    values = train_config_values(build_parser().parse_args(["train", *argv]))
    model = values["model"] or read_recipe(values["recipe"])["model"]
    cfg = TrainConfig(**{**values, "model": model}).validate().resolved()
    return {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("recipe", "recipe_content", "out", "print_config")
    }


def test_the_presets_are_data_files_shipped_with_the_package():
    assert set(PRESET_NAMES) == {"torchvision-v1", "torchvision-v2", "vgg-paper", "resnet-cifar", "lenet5"}
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'"cnnzoo\.train"\s*=\s*\[\s*"recipes/\*\.json"', pyproject)  # package data: in a wheel too
    for name in PRESET_NAMES:
        raw = json.loads((PRESETS_DIR / f"{name}.json").read_text())
        assert raw["description"] and raw["source"] and raw["model"], name
        TrainConfig(model=raw["model"], recipe=name).resolved()  # every option known and within its range


def test_torchvision_v2_is_the_published_command_on_torchvisions_defaults():
    """The preset equals the README's command parsed by cnnzoo's own parser, the flags the command leaves out at
    torchvision's defaults (the torchvision-v1 preset: references/classification/train.py's argument defaults)."""
    if ANCHORS_MD.exists():  # the copy in tests/anchors.py is the command ANCHORS.md quotes
        text = " ".join(ANCHORS_MD.read_text().split())
        assert TORCHVISION_V2_COMMAND in text
    flags = TORCHVISION_V2_COMMAND.split()
    model = flags[flags.index("--model") + 1]
    flags = [f for i, f in enumerate(flags) if f != "--model" and (i == 0 or flags[i - 1] != "--model")]
    documented = resolved([model, "--recipe", "torchvision-v1", *flags])
    preset = resolved(["--recipe", "torchvision-v2"])
    assert preset == documented
    # and what the issue lists, one by one
    expect = dict(epochs=600, batch_size=128, lr=0.5, schedule="cosineannealinglr", warmup=5, lr_warmup_method="linear",
                  auto_augment="ta_wide", random_erase=0.1, weight_decay=2e-5, norm_weight_decay=0.0, label_smoothing=0.1,
                  mixup_alpha=0.2, cutmix_alpha=1.0, train_crop_size=176, val_resize_size=232, model_ema=True,
                  ra_sampler=True, ra_reps=4, opt="sgd", momentum=0.9)  # fmt: skip
    assert {k: preset[k] for k in expect} == expect


def test_the_classic_presets_hold_their_papers_numbers():
    v1 = resolved(["--recipe", "torchvision-v1"])
    assert (v1["epochs"], v1["batch_size"], v1["lr"], v1["schedule"], v1["lr_step_size"], v1["lr_gamma"], v1["weight_decay"]) == (
        90, 32, 0.1, "steplr", 30, 0.1, 1e-4)  # fmt: skip
    assert v1["norm_weight_decay"] == 1e-4 and v1["bias_weight_decay"] is None  # the reference decays every parameter
    vgg = resolved(["--recipe", "vgg-paper"])
    assert (vgg["model"], vgg["lr"], vgg["momentum"], vgg["weight_decay"], vgg["batch_size"], vgg["schedule"], vgg["scale_jitter"]) == (
        "vgg16", 0.01, 0.9, 5e-4, 256, "plateau", "256,512")  # fmt: skip
    cifar = resolved(["--recipe", "resnet-cifar"])
    assert (cifar["lr"], cifar["batch_size"], cifar["weight_decay"], cifar["iterations"], cifar["aug_pad"], cifar["aug_flip"]) == (
        0.1, 128, 1e-4, 64_000, 4, True)  # fmt: skip
    assert cifar["epochs"] is None  # counted by the run from the data: 64k iterations
    assert read_recipe("lenet5")["options"] == FAMILY_DEFAULTS["lenet"]  # the `make run` recipe
    assert resolved(["lenet5", "--recipe", "lenet5"]) == resolved(["lenet5"])


def test_resnet_cifar_divides_the_rate_at_32k_and_48k_iterations():
    cfg = TrainConfig(model="resnet20", recipe="resnet-cifar").resolved()
    cfg.epochs = math.ceil(64_000 / 390)  # CIFAR-10: 50,000 / 128 = 390 steps an epoch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    factor = make_scheduler(opt, cfg, 390, total_steps=cfg.iterations).lr_lambdas[0]
    assert [factor(s) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)] == [1.0, 1.0, 0.1, 0.1, 0.1**2, 0.1**2]


@pytest.mark.parametrize("schedule", ["steplr", "cosineannealinglr", "exponentiallr"])
@pytest.mark.parametrize("method", ["linear", "constant"])
def test_torchvisions_schedules_equal_torchs_schedulers_stepped_once_an_epoch(schedule, method):
    """train.py's SequentialLR([LinearLR | ConstantLR (lr_warmup_decay, warm-up epochs), StepLR | CosineAnnealingLR
    | ExponentialLR]), stepped after each epoch; cnnzoo steps per step and the rate holds within an epoch."""
    cfg = TrainConfig(model="resnet50", epochs=12, lr=0.4, schedule=schedule, warmup=3, lr_warmup_method=method,
                      lr_step_size=4, lr_gamma=0.5, lr_min=0.01).resolved()  # fmt: skip
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, steps = make_scheduler(ours, cfg, 5), 5
    lrs = torch.optim.lr_scheduler
    main_sched = {
        "steplr": lambda: lrs.StepLR(theirs, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma),
        "cosineannealinglr": lambda: lrs.CosineAnnealingLR(theirs, T_max=cfg.epochs - cfg.warmup, eta_min=cfg.lr_min),
        "exponentiallr": lambda: lrs.ExponentialLR(theirs, gamma=cfg.lr_gamma),
    }[schedule]()
    warm = (lrs.LinearLR(theirs, start_factor=cfg.lr_warmup_decay, total_iters=cfg.warmup) if method == "linear"
            else lrs.ConstantLR(theirs, factor=cfg.lr_warmup_decay, total_iters=cfg.warmup))  # fmt: skip
    reference = lrs.SequentialLR(theirs, [warm, main_sched], milestones=[cfg.warmup])
    assert cfg.lr_warmup_decay == 0.01  # torchvision's default start
    for epoch in range(cfg.epochs):
        for _ in range(steps):
            assert math.isclose(
                ours.param_groups[0]["lr"], theirs.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12
            ), epoch
            ours.step()
            sched.step()
        theirs.step()
        reference.step()


def test_weight_decay_groups_are_torchvisions():
    """--norm-weight-decay alone: normalisation layers' parameters take it, every other parameter (conv and
    fc biases too) the weight decay, as torchvision's split_normalization_params / set_weight_decay split them."""
    import torchvision
    from torchvision.ops._utils import split_normalization_params

    model = torchvision.models.resnet18()
    norm, other = split_normalization_params(model)
    cfg = TrainConfig(model="resnet18", weight_decay=2e-5, norm_weight_decay=0.0).resolved()  # torchvision-v2's
    assert cfg.bias_weight_decay is None  # no rule of their own: a BatchNorm bias stays with its layer
    groups = param_groups(
        model, cfg.weight_decay, norm_weight_decay=cfg.norm_weight_decay, bias_weight_decay=cfg.bias_weight_decay
    )
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert by_decay == {0.0: {id(p) for p in norm}, 2e-5: {id(p) for p in other}}
    # --bias-weight-decay: every parameter named bias, BatchNorm's included (set_weight_decay's custom key comes first)
    groups = param_groups(model, 2e-5, norm_weight_decay=0.0, bias_weight_decay=1e-3)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert by_decay[1e-3] == biases and by_decay[0.0] == {id(p) for p in norm} - biases
    # cnnzoo's default (neither given): no decay on any 1-d parameter, biases and BatchNorm, as before
    groups = param_groups(model, 1e-4)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.ndim > 1}


def test_explicit_flags_win_over_the_recipe():
    cfg = resolved(
        [
            "resnet50",
            "--recipe",
            "torchvision-v2",
            "--lr",
            "0.2",
            "--no-model-ema",
            "--auto-augment",
            "none",
            "--lr-scheduler",
            "steplr",
        ]
    )
    assert (cfg["lr"], cfg["model_ema"], cfg["auto_augment"], cfg["schedule"]) == (0.2, False, "none", "steplr")
    assert cfg["mixup_alpha"] == 0.2 and cfg["epochs"] == 600  # the rest stays the recipe's


def test_torchvisions_command_runs_as_written_with_its_model_data_path_and_amp_spellings(capsys, tmp_path):
    """``--model``, ``--data-path DIR`` and a bare ``--amp`` (torchvision's train.py) are MODEL, ``--data folder:DIR``
    and fp16 autocast; on torchvision's defaults (the torchvision-v1 preset) the command is the v2 preset."""
    command = [*TORCHVISION_V2_COMMAND.split(), "--data-path", str(tmp_path), "--amp"]
    assert main(["train", "--recipe", "torchvision-v1", *command, "--print-config"]) == 0
    as_written = json.loads(capsys.readouterr().out)
    assert main(["train", "resnet50", "--recipe", "torchvision-v2", "--data", f"folder:{tmp_path}", "--amp", "fp16",
                 "--print-config"]) == 0  # fmt: skip
    preset = json.loads(capsys.readouterr().out)
    assert as_written.pop("recipe") == "torchvision-v1" and preset.pop("recipe") == "torchvision-v2"
    assert as_written == preset and preset["amp"] == "fp16" and preset["data"] == f"folder:{tmp_path}"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_print_config_prints_the_resolved_configuration_and_trains_nothing(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--recipe", name, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in printed.items() if k not in ("recipe", "out")} == resolved(["--recipe", name])
    assert printed["recipe"] == name and printed["out"] is None
    assert not list(tmp_path.iterdir())  # no run folder, nothing written


def test_a_users_recipe_file_works_and_is_saved_into_config_json(tmp_path, capsys):
    recipe = tmp_path / "mine.json"
    recipe.write_text(
        json.dumps({"description": "LeNet, shorter", "extends": "lenet5", "options": {"epochs": 1, "mixup_alpha": 0.1}})
    )
    out = tmp_path / "run"
    result = train(TrainConfig(model="lenet5", recipe=str(recipe), out=str(out), progress=False))
    saved = json.loads((out / "config.json").read_text())
    assert (
        saved["epochs"] == 1
        and saved["mixup_alpha"] == 0.1
        and saved["data"].endswith("mnist5k")
        and result["epoch"] == 1
    )
    assert saved["recipe_content"]["options"] == {**FAMILY_DEFAULTS["lenet"], "epochs": 1, "mixup_alpha": 0.1}
    assert saved["recipe_content"]["description"] == "LeNet, shorter"
    recipe.unlink()  # the run folder holds the recipe: resuming needs no file
    assert train(TrainConfig(model="lenet5", resume=str(out), progress=False))["epoch"] == 1
    yaml_recipe = tmp_path / "mine.yaml"
    yaml_recipe.write_text("extends: lenet5\noptions:\n  epochs: 2\n  cutmix_alpha: 1.0\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert main(["train", "lenet5", "--recipe", str(yaml_recipe), "--print-config"]) == 2
        assert "PyYAML (pip install pyyaml)" in capsys.readouterr().err
    else:
        assert resolved(["lenet5", "--recipe", str(yaml_recipe)])["cutmix_alpha"] == 1.0


def test_extends_reads_a_file_from_the_recipes_own_folder(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.json").write_text(json.dumps({"extends": "lenet5", "options": {"epochs": 3}}))
    (tmp_path / "recipes" / "mine.json").write_text(json.dumps({"extends": "base.json", "lr": 0.02}))
    monkeypatch.chdir(tmp_path)  # not the recipes' folder: base.json is found beside mine.json all the same
    options = read_recipe("recipes/mine.json")["options"]
    assert options == {**FAMILY_DEFAULTS["lenet"], "epochs": 3, "lr": 0.02}


# The recipe flags the issue names, as torchvision's references/classification/train.py spells them.
TORCHVISION_FLAGS = (
    "--mixup-alpha", "--cutmix-alpha", "--auto-augment", "--ra-magnitude", "--augmix-severity", "--random-erase",
    "--model-ema", "--model-ema-steps", "--model-ema-decay", "--clip-grad-norm", "--accum-steps", "--ra-sampler",
    "--ra-reps", "--train-crop-size", "--val-resize-size", "--val-crop-size", "--interpolation",
    "--norm-weight-decay", "--bias-weight-decay", "--lr-scheduler", "--lr-warmup-epochs", "--lr-warmup-method",
    "--lr-warmup-decay", "--lr-step-size", "--lr-gamma", "--lr-min", "--opt", "--momentum", "--weight-decay",
    "--wd", "--label-smoothing",
)  # fmt: skip


def test_torchvisions_flags_are_train_flags_and_their_snake_case_recipe_keys(tmp_path, capsys):
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    accepted = {s for a in train_parser._actions for s in a.option_strings}
    assert not [f for f in TORCHVISION_FLAGS if f not in accepted]
    # the recipe's torchvision keys are exactly the flags' aliases, each naming its field
    aliases = {
        flag[2:].replace("-", "_"): d.name
        for d in declared_options()
        if d.optional
        for flag in d.option.flags
        if flag != "--" + d.name.replace("_", "-")
    }
    assert aliases == TORCHVISION_KEYS
    ours = {"schedule": "steplr", "warmup": 2, "weight_decay": 1e-3}
    theirs = {"lr_scheduler": "steplr", "lr_warmup_epochs": 2, "wd": 1e-3}
    (tmp_path / "theirs.json").write_text(json.dumps({"extends": "lenet5", "options": theirs}))
    cfg = resolved(["--recipe", str(tmp_path / "theirs.json")])
    assert {k: cfg[k] for k in ours} == ours and cfg == resolved(
        ["lenet5", *["--schedule", "steplr", "--warmup", "2", "--wd", "1e-3"]]
    )
    (tmp_path / "both.json").write_text(json.dumps({"model": "lenet5", "schedule": "cosine", "lr_scheduler": "steplr"}))
    assert main(["train", "--recipe", str(tmp_path / "both.json"), "--print-config"]) == 2
    assert "schedule and lr_scheduler are one option" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,message",
    [
        ({"options": {"lr_sheduler": "steplr"}}, "unknown option 'lr_sheduler'"),
        ({"options": {"epochs": "ten"}}, "epochs: 'ten' is not allowed (must be an integer)"),
        (
            {"options": {"auto_augment": "rand"}},
            "auto_augment: 'rand' is not allowed (must be one of none, ta_wide, ra, augmix, imagenet)",
        ),
        ({"options": {"seed": 3}}, "seed cannot be set by a recipe"),
        ({"extends": "SELF", "options": {}}, "'extends' goes round in a circle"),
        ([1, 2], "expected a mapping of option names to values"),
    ],
)
def test_a_bad_recipe_is_one_clear_line(content, message, tmp_path, capsys):
    path = tmp_path / "bad.json"
    if isinstance(content, dict) and content.get("extends") == "SELF":
        content["extends"] = str(path)
    path.write_text(json.dumps(content))
    assert main(["train", "lenet5", "--recipe", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and str(path) in err


def test_unknown_recipe_names_the_presets(capsys):
    assert main(["train", "lenet5", "--recipe", "torchvision-v3", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in PRESET_NAMES)


def test_iterations_and_epochs_must_agree(tmp_path):
    cfg = TrainConfig(model="lenet5", iterations=100, epochs=1, out=str(tmp_path / "r"), progress=False)
    with pytest.raises(TrainingError, match=r"--iterations 100 at 62 steps an epoch takes 2 epochs, not --epochs 1"):
        train(cfg)


def test_runs_saved_before_recipes_keep_nesterov(tmp_path):
    """config.json written before "sgd" meant torchvision's plain momentum: such a run resumes with Nesterov."""
    from cnnzoo.train.run import _settle_config

    old = {k: v for k, v in dataclasses.asdict(TrainConfig(model="lenet5", opt="sgd", epochs=2)).items()
           if k in ("model", "data", "epochs", "batch_size", "lr", "opt", "momentum", "schedule", "warmup", "seed")}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg, _, _ = _settle_config(TrainConfig(model="lenet5", resume=str(tmp_path)))
    assert cfg.opt == "sgd_nesterov"
