"""A corpus of hostile files (tests/hostile.py) fed to every command that reads files.

Truncated, bit-flipped and mis-named images and weights, a decompression bomb, huge dimensions in a
tiny file, an empty file, a FIFO, symlink loops, a character device, a folder named like an image.
Each command must answer with a clear one-line message naming the file and exit status 2 (training
and evaluation on a folder: skip such images and count them), never a traceback, a crash or a hang.

The commands run in this process (``cnnzoo.cli.main``), each under a 60-second alarm, since their
readers cannot take the process down (cnnzoo.data.images does not hand files to decoders that abort,
and tests/test_fuzz_readers.py proves the weight readers in child processes). The file of the issue,
a truncated PNG that used to segfault ``predict`` and folder training, is also run in child processes.

Also here, the other careless-user cases about files: run folders used from elsewhere or moved,
checkpoints without class names, file permissions, one-class folders, bad inputs to the models.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import InputShapeError, WeightsError

from . import hostile as H

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning"),  # torchvision 0.29's codecs
    pytest.mark.filterwarnings("ignore::UserWarning"),  # skipped images warn; the tests check the counts
]

IMAGES = sorted((
    "short_rows.png", "cut.png", "bad_crc.png", "bad_data.png", "cut.jpg", "bad_header.jpg", "bomb.png", "huge.jpg",
    "empty.jpg", "weights.jpg", "notes.png", "fifo.jpg", "loop_a.jpg", "dangling.png", "zero.png", "folder.png",
))  # fmt: skip
WEIGHTS = sorted((
    "cut.safetensors", "bad_header.safetensors", "huge_header.safetensors", "cut.h5", "bad.h5", "cut.pth",
    "bad_zip.pth", "cut_pickle.pth", "empty.safetensors", "image.safetensors", "notes.pth", "torchscript.pt",
    "fifo.safetensors", "loop_a.pth",
))  # fmt: skip
LIMIT_S = 60  # per command: none of them needs more than a few seconds


class Hang(Exception):
    """A command that ran past its time limit."""


def cli(*argv) -> tuple[int, str, str]:
    """``cnnzoo ARGV`` in this process, under an alarm: (exit status, stdout, stderr)."""

    def alarm(*_):
        raise Hang(f"cnnzoo {' '.join(map(str, argv))} ran past {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(LIMIT_S)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def train_args(data: str, out: Path, *extra: str, workers: int = 0) -> list[str]:
    """``cnnzoo train lenet5`` for one epoch of 28x28 images, in batches of 4: the arguments."""
    tiny = ["--epochs", "1", "--image-size", "28", "--batch-size", "4", "--workers", str(workers), "--no-progress"]
    return ["train", "lenet5", "--data", data, "--out", str(out), *tiny, *extra]


def assert_refused(result: tuple[int, str, str], path: Path) -> str:
    """Exit status 2, and one error line that names ``path``; no traceback. The line."""
    code, out, err = result
    assert "Traceback" not in err + out, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and len(errors) == 1, (code, out, err)
    assert str(path) in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return H.image_corpus(root / "images"), H.weights_corpus(root / "weights")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A lenet5 run (one epoch on 64 synthetic images of 2 classes): a checkpoint to predict and evaluate with."""
    out = tmp_path_factory.mktemp("run") / "lenet5"
    code, _, err = cli(
        "train", "lenet5", "--data", "synthetic:64:1x28x28:2", "--epochs", "1", "--out", out, "--no-progress"
    )
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def good_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 30), dtype=np.uint8)).save(path)
    return path


# --- images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_predict_refuses_each_hostile_image(name, corpus, run_dir, good_png):
    images, _ = corpus
    line = assert_refused(cli("predict", run_dir, good_png, images[name]), images[name])
    assert "cannot decode image: " in line


@pytest.mark.parametrize("name", IMAGES)
def test_visualize_refuses_each_hostile_image(name, corpus, tmp_path):
    images, _ = corpus
    assert_refused(cli("visualize", "lenet5", "--image", images[name], "--out", tmp_path / "pictures"), images[name])
    assert not (tmp_path / "pictures").exists() or not any((tmp_path / "pictures").iterdir())


def _folder_with(root: Path, images: dict[str, Path]) -> Path:
    """An image folder of 2 classes, 4 good digits each in train/ and val/, plus every hostile image in train/a/ and
    val/b/ (links to the corpus files, so the FIFO, the loops and the device stay what they are)."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    for name, path in images.items():
        for where in (root / "train" / "a", root / "val" / "b"):
            if path.is_symlink():  # a loop, a dangling link, a link to a device: made again here, as they are
                os.symlink(os.readlink(path), where / name)
                if name == "loop_a.jpg":
                    os.symlink("loop_a.jpg", where / "loop_b.jpg")
            elif path.is_dir():
                (where / name).mkdir()
            else:  # the FIFO stays a FIFO behind the link
                os.symlink(path, where / name)
    return root


HOSTILE_IN_A_FOLDER = len(IMAGES) - 1  # folder.png is a folder: the scan walks into it and finds nothing


def test_training_skips_and_counts_hostile_images(corpus, tmp_path):
    images, _ = corpus
    folder = _folder_with(tmp_path / "data", images)
    out = tmp_path / "run"
    code, stdout, err = cli(*train_args(f"folder:{folder}", out))
    assert code == 0 and "Traceback" not in err, err
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["skipped_images"] == HOSTILE_IN_A_FOLDER + 1  # train/a's, and loop_b.jpg beside loop_a.jpg
    assert history[-1]["test_count"] == 8  # val/b's hostile files skipped too; the 8 digits counted once each
    strict = cli(*train_args(f"folder:{folder}", tmp_path / "strict", "--strict"))
    line = assert_refused(strict, folder / "train" / "a")
    assert "cannot decode image: " in line


def test_eval_on_a_folder_skips_hostile_images(corpus, tmp_path):
    images, _ = corpus
    folder = _folder_with(tmp_path / "data", images)
    code, stdout, err = cli(*train_args(f"folder:{folder}", tmp_path / "run"))
    assert code == 0, err
    code, stdout, err = cli("eval", tmp_path / "run", "--workers", "0", "--json")
    assert code == 0 and "Traceback" not in err, err
    assert json.loads(stdout)["count"] == 8


@pytest.mark.parametrize("workers", [0, 2])
def test_the_issues_truncated_png_in_child_processes(tmp_path, run_dir, workers):
    """The file that segfaulted predict (exit 139) and training with --workers 0, and killed DataLoader workers."""
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONUNBUFFERED": "1"}
    bad = tmp_path / "short.png"
    bad.write_bytes(H.short_png())
    if workers == 0:
        p = subprocess.run([sys.executable, "-m", "cnnzoo", "predict", str(run_dir), str(bad)],
                           capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
        assert p.returncode == 2 and f"{bad}: cannot decode image: a truncated PNG" in p.stderr, p.stderr
    folder = _folder_with(tmp_path / "data", {"short.png": bad})
    command = [sys.executable, "-m", "cnnzoo", *train_args(f"folder:{folder}", tmp_path / "run", workers=workers)]
    p = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert "short.png: a truncated PNG" in p.stderr  # the warning names the file, even from a worker process
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["skipped_images"] == 1


# --- weights -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEIGHTS)
def test_checkpoint_readers_refuse_each_hostile_file(name, corpus, good_png, tmp_path):
    _, weights = corpus
    path = weights[name]
    assert_refused(cli("predict", path, good_png), path)
    assert_refused(cli("eval", path, "--data", "synthetic:16:1x28x28:2"), path)
    assert_refused(cli("visualize", path, "--image", good_png, "--out", tmp_path / "pictures"), path)
    assert_refused(cli("export", path, "--out", tmp_path / "model.onnx"), path)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("name", WEIGHTS)
def test_weight_readers_refuse_each_hostile_file(name, corpus, tmp_path):
    _, weights = corpus
    path = weights[name]
    assert_refused(cli("convert", path, tmp_path / "out.safetensors", "--model", "lenet5"), path)
    assert_refused(cli("export", "lenet5", "--weights", path, "--out", tmp_path / "model.onnx"), path)
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "model.onnx").exists()
    with pytest.raises(WeightsError, match=str(path)):
        cnnzoo.load_pretrained(cnnzoo.create_model("lenet5"), path)


def test_files_of_the_wrong_kind_are_named_for_what_they_are(corpus, tmp_path, good_png):
    """A torchvision .pth, a text .pth, a TorchScript file given where a checkpoint goes: what it is, and what to do."""
    _, weights = corpus
    state = tmp_path / "lenet5.pth"
    torch.save(cnnzoo.create_model("lenet5").state_dict(), state)
    cases = {
        state: "a PyTorch file (torch.save: a state dict or a training checkpoint), not a cnnzoo checkpoint. eval, "
        "predict and visualize read cnnzoo checkpoints, which carry the model's name and classes. Convert it "
        f"first: cnnzoo convert {state} OUT.safetensors --model MODEL",
        weights["notes.pth"]: "a text file (it starts 'these are notes, not weights\\n'), not a cnnzoo checkpoint",
        weights["torchscript.pt"]: "a TorchScript archive (torch.jit.save), not a cnnzoo checkpoint. It holds code",
        weights["image.safetensors"]: "a PNG image, not a cnnzoo checkpoint",
        weights["empty.safetensors"]: "an empty file (0 bytes), not a cnnzoo checkpoint",
    }
    for path, what in cases.items():
        for argv in (("predict", path, good_png), ("eval", path, "--data", "synthetic:16:1x28x28:10"),
                     ("visualize", path, "--image", good_png, "--out", tmp_path / "v")):  # fmt: skip
            line = assert_refused(cli(*argv), path)
            assert f"{path}: {what}" in line, line
            assert "header too large" not in line


# --- run folders, checkpoints and permissions --------------------------------------------------------


def test_run_folders_store_absolute_paths_and_are_found_when_moved(tmp_path, monkeypatch):
    project = tmp_path / "project"
    folder = _folder_with(project / "digits", {})
    monkeypatch.chdir(project)
    code, _, err = cli(*train_args("folder:digits", Path("runs/one")))
    assert code == 0, err
    config = json.loads((project / "runs/one/config.json").read_text())
    assert config["data"] == f"folder:{folder}" and config["out"] == str(project / "runs/one")
    monkeypatch.chdir(tmp_path)  # eval RUN from another directory
    code, out, err = cli("eval", project / "runs/one", "--workers", "0", "--json")
    assert code == 0 and json.loads(out)["count"] == 8, err
    moved = tmp_path / "elsewhere"
    shutil.move(project, moved)  # the run folder and its data, moved together: found relative to the run folder
    code, out, err = cli("eval", moved / "runs/one", "--workers", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["data"] == f"folder:{moved / 'digits'}" and json.loads(out)["count"] == 8


def test_checkpoints_without_class_names_show_indices(tmp_path, good_png):
    """A state dict converted without class names: eval and predict work, name classes by index, and say so."""
    state = tmp_path / "lenet5.pth"
    torch.save(cnnzoo.create_model("lenet5").state_dict(), state)
    ckpt = tmp_path / "lenet5.safetensors"
    assert cli("convert", state, ckpt, "--model", "lenet5")[0] == 0
    code, out, err = cli("predict", ckpt, good_png, "--topk", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"note: {ckpt} holds no class names: classes are shown as indices 0-9")
    assert lines[1] == str(good_png) and len(lines) == 5  # the note, the image, its top 3
    assert all(line.split()[-1] in {str(i) for i in range(10)} for line in lines[2:])
    code, out, err = cli("eval", ckpt, "--data", "synthetic:40:1x28x28:10", "--workers", "0")
    assert code == 0 and out.startswith(f"note: {ckpt} holds no class names"), err


def test_weights_files_get_the_umasks_permissions(tmp_path):
    from cnnzoo.checkpoint import save_weights

    model = cnnzoo.create_model("lenet5")
    old = os.umask(0o022)
    try:
        save_weights(tmp_path / "a.safetensors", model, {"name": "lenet5"})
        os.umask(0o077)
        save_weights(tmp_path / "b.safetensors", model, {"name": "lenet5"})
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644  # as every other artefact under umask 022
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o600


# --- one class, no images, bad model inputs ----------------------------------------------------------


def test_one_class_is_refused_and_classes_without_images_are_said_so(tmp_path):
    folder = _folder_with(tmp_path / "data", {})
    shutil.rmtree(folder / "train" / "b")
    shutil.rmtree(folder / "val" / "b")
    line = assert_refused(cli(*train_args(f"folder:{folder}", tmp_path / "one")), folder)
    assert "has 1 class (a): a classifier needs at least 2" in line
    assert not (tmp_path / "one").exists()
    folder = _folder_with(tmp_path / "data2", {})
    code, _, err = cli(*train_args(f"folder:{folder}", tmp_path / "two"))
    assert code == 0, err
    shutil.rmtree(folder / "val" / "b")
    code, out, err = cli("eval", tmp_path / "two", "--workers", "0")
    assert code == 0, err
    assert "no images in the data for 1 class: b (no accuracy)" in out and " b 0.0%" not in out
    code, out, _ = cli("eval", tmp_path / "two", "--workers", "0", "--json")
    assert json.loads(out)["per_class"][1] is None


def test_create_model_and_inputs_of_the_wrong_kind():
    for name in (None, 123, ["resnet18"]):
        with pytest.raises(TypeError, match=r"the model name must be a string such as 'resnet50'"):
            cnnzoo.create_model(name)
    model = cnnzoo.create_model("resnet18").eval()
    with pytest.raises(
        InputShapeError, match=r"resnet18 expects torch.float32 input .* got torch.float64 .* x\.float\(\)$"
    ):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(InputShapeError, match=r"got torch.uint8 .* x\.float\(\) / 255 \(pixels 0..255 to 0..1\)"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast the float dtypes mix as autocast decides
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert model.double()(torch.zeros(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
