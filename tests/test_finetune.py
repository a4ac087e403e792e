"""Freezing and fine-tuning: frozen tensors (parameters and BatchNorm buffers) bitwise unchanged after training,
the optimizer holding only what trains, the head's own learning rate, and a fine-tune on real digits: a LeNet-5
trained on the digits 0-4 of one folder, fine-tuned on a few digits 5-9 of another, frozen and then unfrozen."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.train import TrainConfig, train
from cnnzoo.train.engine import base_lr, make_optimizer
from cnnzoo.train.freeze import classifier_name, freeze_modules

from .data_fixtures import write_png

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "synthetic:64:3x32x32:4"


def _start(tmp_path: Path, name: str = "resnet20", classes: int = 4) -> Path:
    """A checkpoint of fresh weights to start from, so the test knows every tensor's value before training."""
    model = cnnzoo.create_model(name, num_classes=classes)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so an update would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "start.safetensors"
    cnnzoo.checkpoint.save_weights(path, model, dict(name=name, num_classes=classes, in_chans=model.in_chans))
    return path


def _final(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / json.loads((run / "last.json").read_text())["weights"])


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("how", ["--freeze conv1,bn1,layer1", "--freeze-backbone"])
def test_frozen_tensors_are_bitwise_unchanged_after_training(how, tmp_path):
    start = _start(tmp_path)
    options = dict(freeze="conv1,bn1,layer1") if how.startswith("--freeze ") else dict(freeze_backbone=True)
    out = tmp_path / "run"
    train(TrainConfig(model="resnet20", data=DATA, epochs=2, batch_size=16, weights=str(start), out=str(out), progress=False,
                      weight_decay=0.05, **options))  # fmt: skip
    before, after = load_file(start), _final(out)
    frozen = (
        ("conv1", "bn1", "layer1")
        if "freeze" in options
        else tuple(k.split(".")[0] for k in before if not k.startswith("fc."))
    )
    assert before.keys() == after.keys()
    for key in before:
        if _under(key, frozen):  # weights, biases, running_mean, running_var, num_batches_tracked: untouched
            assert torch.equal(before[key], after[key]), key
    trained = [k for k in before if not _under(k, frozen)]
    assert trained and all(
        not torch.equal(before[k], after[k]) for k in trained if not k.endswith("num_batches_tracked")
    )
    tracked = [k for k in trained if k.endswith("num_batches_tracked")]
    assert all(int(after[k]) == int(before[k]) + 8 for k in tracked)  # 2 epochs of 4 batches: the unfrozen BNs counted


def test_the_optimizer_holds_only_what_trains_and_the_head_its_own_rate():
    model = cnnzoo.create_model("resnet20", num_classes=4)
    freezing = freeze_modules(model, backbone=True, prefixes=None)
    cfg = TrainConfig(model="resnet20", lr=0.1, lr_head_scale=10.0).resolved()
    opt = make_optimizer(model, cfg, torch.device("cpu"), head=model.fc)
    held = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(model.fc.weight), id(model.fc.bias)}
    assert all(g["lr"] == 1.0 for g in opt.param_groups) and base_lr(opt) == 0.1
    assert len(freezing.parameters) == sum(1 for n, _ in model.named_parameters() if not n.startswith("fc."))
    freezing.train_mode(model)  # what the loop calls at each epoch: the frozen BatchNorm layers back in eval mode
    assert model.training and not model.bn1.training and all(not m.training for m in freezing.norms)
    model = cnnzoo.create_model("resnet20", num_classes=4)  # body and head apart, not frozen
    opt = make_optimizer(
        model, TrainConfig(model="resnet20", lr=0.1, lr_head_scale=10.0).resolved(), torch.device("cpu"), head=model.fc
    )
    rates = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert rates[id(model.fc.weight)] == 1.0 and rates[id(model.conv1.weight)] == 0.1
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_an_unknown_module_name_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(["train", "resnet20", "--data", DATA, "--batch-size", "16", "--freeze", "layer9", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "--freeze: 'layer9' is not allowed (must be a module name of resnet20, e.g. one of conv1, bn1" in err
        and "layer1" in err
    )
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# fine-tuning on real digits


def _digit_folder(root: Path, digits: range, train_per_class: int, val_per_class: int) -> Path:
    """mnist5k's digits ``digits`` as an image folder: PNGs from its training split, and its held-out ones for val."""
    splits = cnnzoo.data.load_data("mnist5k")
    for split, data, n in (("train", splits.train, train_per_class), ("val", splits.test, val_per_class)):
        for d in digits:
            folder = root / split / f"digit{d}"
            folder.mkdir(parents=True)
            for i, index in enumerate(torch.nonzero(data.labels == d).flatten()[:n].tolist()):
                write_png(folder / f"{i}.png", data.images[index].numpy().transpose(1, 2, 0))
    return root


FOLDER = dict(
    scale_jitter="28,32", train_crop_size=28, workers=0, progress=False
)  # digits: shifts, no RandomResizedCrop


def test_fine_tuning_lenet5_from_digits_0_to_4_to_a_few_digits_5_to_9(tmp_path, capsys):
    first = _digit_folder(tmp_path / "d04", range(5), 150, 40)
    second = _digit_folder(tmp_path / "d59", range(5, 10), 20, 80)
    base = train(
        TrainConfig(
            model="lenet5",
            data=f"folder:{first}",
            epochs=5,
            batch_size=32,
            lr=0.03,
            out=str(tmp_path / "base"),
            **FOLDER,
        )
    )
    probe = train(TrainConfig(model="lenet5", data=f"folder:{second}", weights=str(tmp_path / "base"), freeze_backbone=True, epochs=8,
                              batch_size=20, lr=0.05, out=str(tmp_path / "probe"), **FOLDER))  # fmt: skip
    tuned = train(TrainConfig(model="lenet5", data=f"folder:{second}", weights=str(tmp_path / "probe"), epochs=8, batch_size=20,
                              lr=0.01, out=str(tmp_path / "tuned"), **FOLDER))  # fmt: skip
    with capsys.disabled():
        print(
            f"\n  digits 0-4 (750 images): {base['test_acc']:.1%}; digits 5-9 (100 images): frozen backbone {probe['test_acc']:.1%}, "
            f"then unfrozen at lr 0.01 {tuned['test_acc']:.1%} (benchmarks/finetune_example.py runs the README's longer version)"
        )
    assert base["test_acc"] > 0.8 and probe["test_acc"] > 0.5 and tuned["test_acc"] > 0.5  # chance: 20%
    before, after = _final(tmp_path / "base"), _final(tmp_path / "probe")
    head = classifier_name(cnnzoo.create_model("lenet5")) + "."  # the layer get_classifier() names
    assert all(
        torch.equal(before[k], after[k]) for k in before if not k.startswith(head)
    )  # the backbone as trained on 0-4
    assert not torch.equal(before[head + "weight"], after[head + "weight"])
    assert np.isfinite(tuned["test_loss"])
