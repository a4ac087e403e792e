"""Training end to end: accuracy on real digits, the run folder, kill-and-resume, DDP, faults.

Runs that must survive SIGKILL are real child processes (python -m cnnzoo train ...)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnzoo
from cnnzoo import checkpoint as ckpt
from cnnzoo import data as datalib
from cnnzoo.train import TrainConfig, TrainingError, train

from .cli_runs import cli
from .data_fixtures import make_cifar10_dir, make_mnist_dir, solid, write_jpeg, write_png

# ---------------------------------------------------------------------------------------------
# the main job: `make run`


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """The `make run` job with its defaults: LeNet-5, mnist5k, 30 epochs (about 10 s on 2 cores)."""
    out = tmp_path_factory.mktemp("runs") / "lenet5"
    p = cli("train", "lenet5", "--out", out, "--no-progress")
    return out, p.stdout


def test_lenet5_on_mnist5k_reaches_98_5_percent(lenet_run):
    out, stdout = lenet_run
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 30
    assert history[-1]["test_count"] == 1000  # the 1,000 held-out digits, each counted once
    assert history[-1]["test_acc"] >= 0.985, history[-1]
    assert "done: test accuracy" in stdout


def test_run_folder_holds_everything(lenet_run):
    out, _ = lenet_run
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "lenet5" and config["data"] == "mnist5k" and config["epochs"] == 30
    for name in ("summary.txt", "curves.png", "confusion_matrix.png", "last.json", "best.json"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "tb").glob("events.out.tfevents.*")), "TensorBoard event file"
    for png in ("curves.png", "confusion_matrix.png"):
        from torchvision.io import decode_png, read_file

        img = decode_png(read_file(str(out / png)))
        assert img.shape[1] > 200 and img.shape[2] > 200 and img.float().std() > 10  # a real picture, not blank
    # only the last and the best pair are kept, each pair complete
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    best, last = (json.loads((out / f"{w}.json").read_text()) for w in ("best", "last"))
    assert set(files) == {
        Path(best["weights"]).name,
        Path(best["state"]).name,
        Path(last["weights"]).name,
        Path(last["state"]).name,
    }
    # the training state loads with weights_only=True; the weights hold no "module." prefix
    state = torch.load(out / last["state"], weights_only=True)
    assert state["epoch"] == 30 and len(state["history"]) == 30 and state["classes"] == [str(i) for i in range(10)]
    assert not any(k.startswith("module.") for k in load_file(out / last["weights"]))


def test_eval_and_predict_from_the_run(lenet_run, tmp_path):
    out, _ = lenet_run
    result = json.loads(cli("eval", out, "--json").stdout)
    assert result["count"] == 1000 and len(result["per_class"]) == 10 and result["top1"] >= 0.985
    assert sum(map(sum, result["confusion"])) == 1000
    assert abs(sum(result["confusion"][i][i] for i in range(10)) / 1000 - result["top1"]) < 1e-9
    # predict: held-out digits written as a gray PNG, an RGB JPEG and an RGBA PNG all classify right
    test = datalib.load_data("mnist5k").test
    imgs = test.images[:3].numpy()
    labels = test.labels[:3].tolist()
    gray = write_png(tmp_path / "gray.png", imgs[0].transpose(1, 2, 0))
    rgb = write_jpeg(tmp_path / "rgb.jpg", imgs[1].transpose(1, 2, 0).repeat(3, axis=2), quality=100)
    rgba = imgs[2].transpose(1, 2, 0).repeat(4, axis=2).copy()
    rgba[..., 3] = 255
    rgba = write_png(tmp_path / "rgba.png", rgba)
    results = json.loads(cli("predict", out, gray, rgb, rgba, "--topk", "3", "--json").stdout)
    assert [r["top"][0][0] for r in results] == [str(c) for c in labels]
    assert all(len(r["top"]) == 3 and abs(sum(p for _, p in r["top"]) - 1) < 0.05 for r in results)


def test_predict_with_the_exported_onnx_file(lenet_run, tmp_path):
    out, _ = lenet_run
    onnx_file = tmp_path / "lenet5.onnx"
    p = cli("export", out, "--format", "onnx", "--out", onnx_file, "--dynamic-batch")
    assert "checked with onnxruntime" in p.stdout
    test = datalib.load_data("mnist5k").test
    files = [write_png(tmp_path / f"{i}.png", test.images[i].numpy().transpose(1, 2, 0)) for i in range(4)]
    from_onnx = json.loads(cli("predict", onnx_file, *files, "--json").stdout)
    from_ckpt = json.loads(cli("predict", out, *files, "--json").stdout)
    assert (
        [r["top"][0][0] for r in from_onnx]
        == [r["top"][0][0] for r in from_ckpt]
        == [str(int(c)) for c in test.labels[:4]]
    )
    for a, b in zip(from_onnx, from_ckpt):
        assert abs(a["top"][0][1] - b["top"][0][1]) < 1e-4


def test_fine_tune_from_torchvision_weights_needs_reset_head(tmp_path):
    import torchvision

    pth = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), pth)
    base = [
        "train",
        "resnet18",
        "--data",
        "synthetic:16:3x32x32:4",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--weights",
        pth,
        "--no-progress",
    ]
    p = cli(*base, "--out", tmp_path / "a", check=False)
    assert p.returncode == 2 and "--reset-head" in p.stderr and "1000" in p.stderr
    p = cli(*base, "--out", tmp_path / "b", "--reset-head")
    assert "resnet18.pth" in p.stdout  # the load report
    model = cnnzoo.load_model(tmp_path / "b", which="last")
    assert model.fc.out_features == 4


# ---------------------------------------------------------------------------------------------
# other data formats through the same command


def test_train_on_mnist_idx_files(tmp_path):
    make_mnist_dir(tmp_path / "mnist", gz=True, n_train=64, n_test=20)
    out = tmp_path / "run"
    cli(
        "train",
        "lenet5",
        "--data",
        f"mnist:{tmp_path / 'mnist'}",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        out,
        "--no-progress",
    )
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["test_count"] == 20


def test_train_on_cifar10_batches(tmp_path):
    folder, _, _ = make_cifar10_dir(tmp_path, n=8)
    out = tmp_path / "run"
    cli(
        "train",
        "resnet20",
        "--data",
        f"cifar10:{folder}",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        out,
        "--no-progress",
    )
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_count"] == 8
    assert (
        ckpt.read_metadata(out / json.loads((out / "last.json").read_text())["weights"])["info"]["classes"][0]
        == "airplane"
    )


def _image_folder(root: Path, *, corrupt: bool) -> Path:
    colors = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for split, n in (("train", 6), ("val", 2)):
        for name, color in colors.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                write_png(folder / f"{i}.png", solid(40, 48, color))
    if corrupt:
        good = (root / "train" / "red" / "0.png").read_bytes()
        (root / "train" / "red" / "broken.png").write_bytes(good[: len(good) // 2])
    return root


def test_train_on_an_image_folder_skips_and_names_a_corrupt_file(tmp_path):
    root = _image_folder(tmp_path / "imgs", corrupt=True)
    out = tmp_path / "run"
    args = ["train", "resnet18", "--data", f"folder:{root}", "--image-size", "32", "--epochs", "1",
            "--batch-size", "13", "--workers", "0", "--no-progress"]  # fmt: skip
    p = cli(*args, "--out", out)
    assert "broken.png" in p.stderr
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped_images"] == 1 and last["test_count"] == 4
    p = cli(*args, "--out", tmp_path / "strict", "--strict", check=False)
    assert p.returncode != 0 and "broken.png" in p.stderr


# ---------------------------------------------------------------------------------------------
# faults: clear errors, nothing lost


def test_input_too_small_is_refused_before_training(tmp_path):
    p = cli("train", "inception_v3", "--data", "synthetic:16:3x32x32:4", "--out", tmp_path / "r", check=False)
    assert p.returncode == 2
    assert "inception_v3 needs images of at least 75x75" in p.stderr and "--image-size 75" in p.stderr
    assert not (tmp_path / "r").exists()


def test_unknown_model_and_data_spec_list_the_valid_ones(tmp_path):
    p = cli("train", "lenet7", check=False)
    assert p.returncode == 2 and "lenet5" in p.stderr
    p = cli("train", "lenet5", "--data", "imagenet:/x", "--out", tmp_path / "r", check=False)
    assert p.returncode == 2
    for kind in ("mnist5k", "mnist:", "cifar10:", "cifar100:", "folder:", "synthetic"):
        assert kind in p.stderr, kind


def _tiny_config(out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        model="lenet5", data="synthetic:64:1x28x28:10", epochs=3, batch_size=16, out=str(out), progress=False, **kw
    )


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = datalib.normalize_batch

    def poisoned(x, mean, std):
        calls["n"] += 1
        y = real(x, mean, std)
        return y * float("nan") if calls["n"] > 5 else y  # epoch 1: 4 train + 1 test batches are clean

    monkeypatch.setattr(datalib, "normalize_batch", poisoned)
    with pytest.raises(TrainingError, match=r"NaN or infinite in epoch 2.*last good checkpoint \(epoch 1\) is intact"):
        train(_tiny_config(tmp_path / "run"))
    model = cnnzoo.load_model(tmp_path / "run", which="last")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((tmp_path / "run" / "last.json").read_text())["epoch"] == 1


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real = ckpt.save_training_state
    calls = {"n": 0}

    def full_disk(path, state):
        calls["n"] += 1
        if calls["n"] == 2:

            def write(tmp):
                with open(tmp, "wb") as f:
                    f.write(b"partial")
                raise OSError(28, "No space left on device")

            return ckpt.atomic_write(path, write)
        return real(path, state)

    monkeypatch.setattr(ckpt, "save_training_state", full_disk)
    with pytest.raises(
        TrainingError, match=r"No space left on device; the previous checkpoint \(epoch 1\) is intact.*--resume"
    ):
        train(_tiny_config(tmp_path / "run"))
    run = tmp_path / "run"
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    cnnzoo.load_model(run, which="last")
    assert not [f for f in (run / "checkpoints").iterdir() if f.name.endswith(".tmp")]
    monkeypatch.setattr(ckpt, "save_training_state", real)
    result = train(TrainConfig(model="lenet5", resume=str(run), progress=False))  # and it resumes
    assert result["epoch"] == 3


def test_auxiliary_heads_are_trained_with_their_loss_weight(tmp_path, monkeypatch):
    """GoogLeNet with aux heads returns (logits, aux2, aux1) in training; the loop trains on all three."""
    from cnnzoo.train import engine as trainlib  # where the training loop looks _forward_loss up

    seen = []
    real = trainlib._forward_loss

    def spy(net, x, y, criterion, aux_weight):
        logits, loss = real(net, x, y, criterion, aux_weight)
        seen.append((aux_weight, tuple(logits.shape)))
        return logits, loss

    monkeypatch.setattr(trainlib, "_forward_loss", spy)
    result = train(
        TrainConfig(
            model="googlenet",
            data="synthetic:16:3x32x32:4",
            epochs=1,
            batch_size=8,
            out=str(tmp_path / "g"),
            progress=False,
            model_options={"aux_logits": True},
        )
    )
    assert seen == [(0.3, (8, 4))] * 2  # 16 images, 2 batches; the aux outputs went into the loss, not the logits
    assert result["test_count"] == 4


def test_aux_loss_combines_main_and_auxiliary_losses():
    from cnnzoo.train import _forward_loss

    y = torch.tensor([0, 1])
    main, aux1, aux2 = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.zeros(2, 2)
    ce = torch.nn.CrossEntropyLoss()
    logits, loss = _forward_loss(lambda x: (main, aux2, aux1), None, y, ce, 0.3)
    assert torch.equal(logits, main)
    assert torch.allclose(loss, ce(main, y) + 0.3 * (ce(aux1, y) + ce(aux2, y)))
    logits, loss = _forward_loss(lambda x: main, None, y, ce, 0.3)
    assert torch.allclose(loss, ce(main, y))


def test_inception_v3_aux_head_size_is_refused_before_training(tmp_path):
    with pytest.raises(TrainingError, match=r"aux_logits=True needs an input of at least 299x299.*--image-size"):
        train(
            TrainConfig(
                model="inception_v3",
                data="synthetic:16:3x75x75:4",
                epochs=1,
                batch_size=8,
                out=str(tmp_path / "i"),
                progress=False,
            )
        )
    assert not (tmp_path / "i").exists()


# ---------------------------------------------------------------------------------------------
# options: declared once in TrainConfig, checked alike from Python and from the command line


def test_out_of_range_options_are_refused_before_anything_is_written(tmp_path, capsys):
    from cnnzoo.cli import main
    from cnnzoo.train import TrainOptionError

    out = tmp_path / "r"
    for flags, line in [
        (["--batch-size", "0"], "--batch-size: 0 is not allowed (must be >= 1)"),
        (["--epochs", "-3"], "--epochs: -3 is not allowed (must be >= 1)"),
        (["--workers", "-1"], "--workers: -1 is not allowed (must be >= 0)"),
        (["--label-smoothing", "1"], "--label-smoothing: 1.0 is not allowed (must be >= 0 and < 1)"),
    ]:
        assert main(["train", "lenet5", *flags, "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"cnnzoo train: error: {line}\n"
    for kwargs, message in [
        (dict(batch_size=0), "batch_size: 0 is not allowed (must be >= 1)"),
        (dict(warmup=-1), "warmup: -1 is not allowed (must be >= 0)"),
        (dict(epochs=2.5), "epochs: 2.5 is not allowed (must be an integer)"),
        (dict(opt="adam"), "opt: 'adam' is not allowed (must be one of sgd, sgd_nesterov, rmsprop, adamw)"),
        (dict(decode="gpu"), "decode: 'gpu' is not allowed (must be one of auto, workers, device)"),
    ]:
        with pytest.raises(TrainOptionError) as e:
            train(TrainConfig(model="lenet5", out=str(out), progress=False, **kwargs))
        assert str(e.value) == message
    assert not out.exists()


def test_train_flags_are_generated_from_the_config_fields():
    import dataclasses

    from cnnzoo.cli import build_parser
    from cnnzoo.cli.options import train_config_values

    parser = build_parser()
    defaults = train_config_values(parser.parse_args(["train", "lenet5"]))
    assert TrainConfig(**defaults) == TrainConfig(model="lenet5")  # every flag's default is the field's
    cli_fields = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["option"].cli]
    assert sorted(defaults) == sorted(cli_fields)
    given = train_config_values(parser.parse_args([
        "train", "resnet20", "--batch-size", "8", "--lr", "0.05", "--label-smoothing", "0.1", "--no-compile", "--channels-last",
        "--no-progress", "--reset-head", "--decode", "workers", "--option", "zero_init_residual=true", "--option", "width=2",
    ]))  # fmt: skip
    assert TrainConfig(**given) == TrainConfig(
        model="resnet20", batch_size=8, lr=0.05, label_smoothing=0.1, compile=False, channels_last=True, progress=False,
        reset_head=True, decode="workers", model_options={"zero_init_residual": True, "width": 2},
    )  # fmt: skip
