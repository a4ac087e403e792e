"""Every command, every option, a careless user: a clear line, the right exit code, nothing written.

The table is built from the parser itself: every typed option of every command gets the bad values its
declaration says it refuses (zero, negative, too big, the wrong type, a made-up choice), and every option
that takes a path or a free text has its cases written below (a file that is not there, a file where a
folder is wanted and the reverse, a place under a file, a device, an output of another kind).
``test_every_option_is_probed`` fails when a new option has neither. Each case runs in a folder of its own
(the working directory too), and must leave that folder exactly as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnzoo.cli import build_parser, main
from cnnzoo.cli.options import parse_device, parse_input_size, parse_option, parse_padding, positive
from cnnzoo.errors import OptionError
from cnnzoo.model_options import model_options, parse_model_option
from cnnzoo.options import SHARED, Allowed, check_device_name, check_option
from cnnzoo.registry import list_models
from cnnzoo.train.config import TrainConfig, declared_options

PARSER = build_parser()

# A valid command line for each command (after its name), which a case extends with one bad option.
BASE = {
    "list": [],
    "info": ["lenet5"],
    "train": ["lenet5", "--out", "{new}/run", "--no-progress", "--device", "cpu"],
    "eval": ["{run}", "--device", "cpu"],
    "predict": ["{run}", "{img}", "--device", "cpu"],
    "weights list": [],
    "weights download": ["lenet5"],
    "convert": ["{weights}", "{new}/c.safetensors", "--model", "lenet5"],
    "export": ["lenet5", "--out", "{new}/m.onnx"],
    "summary": ["lenet5"],
    "shape": ["--size", "28", "--kernel", "5"],
    "visualize": ["lenet5", "--image", "{img}", "--out", "{new}/pics"],
    "cam": ["lenet5", "{img}", "--out", "{new}/cams", "--device", "cpu"],
    "diagram": ["lenet5", "--out", "{new}/d.svg"],
    "report": ["lenet5", "--image", "{img}", "--out", "{new}/r.html", "--device", "cpu"],
    "bench": ["lenet5", "--rounds", "1", "--iters", "1", "--warmup", "1", "--device", "cpu", "--batch-size", "2"],
}

# Options that take a path or a free text: (what is covered, the command line, a text the one line must hold).
# "what is covered" is "COMMAND FLAG" (a positional: its dest).
PATH_CASES = [
    ("list --family", ["list", "--family", "transformer"], "transformer"),
    ("info model", ["info", "resnt50"], "resnt50"),
    ("train model", ["train", "resnt50", "--out", "{new}/run"], "resnt50"),
    ("train --model", ["train", "--model", "resnt50", "--out", "{new}/run"], "resnt50"),
    ("train --model", ["train", "lenet5", "--model", "resnet18", "--out", "{new}/run"], "give the model once"),
    ("train --data-path", ["train", "lenet5", "--out", "{new}/run", "--data-path", "{missing}"], "missing"),
    (
        "train --data",
        ["train", "lenet5", "--out", "{new}/run", "--data", "folder:{missing}", "--device", "cpu"],
        "missing",
    ),
    ("train --data", ["train", "lenet5", "--out", "{new}/run", "--data", "bogus:spec", "--device", "cpu"], "bogus"),
    ("train --out", ["train", "lenet5", "--out", "{file}"], "{file}"),
    ("train --out", ["train", "lenet5", "--out", "{file}/run"], "{file}"),
    ("train --resume", ["train", "--resume", "{missing}"], "{missing}"),
    ("train --resume", ["train", "--resume", "{file}"], "{file}"),
    ("train --resume", ["train", "resnet18", "--resume", "{run}"], "MODEL: 'resnet18' conflicts"),
    ("train --resume", ["train", "--resume", "{run}", "--lr", "0.5"], "--lr: 0.5 conflicts"),
    ("train --resume", ["train", "--resume", "{run}", "--data", "synthetic"], "--data: 'synthetic' conflicts"),
    ("train --resume", ["train", "--resume", "{run}", "--out", "{new}/elsewhere"], "--out"),
    ("train --resume", ["train", "--resume", "{bad_run}"], "label_smoothing: 2.0 is not allowed"),
    (
        "train --weights",
        ["train", "lenet5", "--out", "{new}/run", "--weights", "{missing}.safetensors", "--device", "cpu"],
        "missing",
    ),
    ("train --weights", ["train", "lenet5", "--out", "{new}/run", "--weights", "{dir}", "--device", "cpu"], "dir"),
    (
        "train --sha256",
        ["train", "lenet5", "--out", "{new}/run", "--weights", "{weights}", "--sha256", "0000ffff", "--device", "cpu"],
        "0000ffff",
    ),
    (
        "train --freeze",
        ["train", "lenet5", "--out", "{new}/run", "--freeze", "no_such_module", "--device", "cpu"],
        "no_such_module",
    ),
    ("train --recipe", ["train", "lenet5", "--out", "{new}/run", "--recipe", "{missing}.json"], "missing"),
    ("train --recipe", ["train", "lenet5", "--out", "{new}/run", "--recipe", "no_such_preset"], "no_such_preset"),
    (
        "train --option",
        ["train", "googlenet", "--out", "{new}/run", "--option", "aux_logits=maybe"],
        "aux_logits=maybe",
    ),
    ("train --option", ["train", "vgg11", "--out", "{new}/run", "--option", "batch_norm=no"], "batch_norm=no"),
    ("train --option", ["train", "lenet5", "--out", "{new}/run", "--option", "no_equals_sign"], "no_equals_sign"),
    ("eval checkpoint", ["eval", "{missing}"], "missing"),
    ("eval checkpoint", ["eval", "{dir}"], "dir"),
    ("eval checkpoint", ["eval", "{file}"], "notes.txt"),
    ("eval --data", ["eval", "{weights}", "--data", "folder:{missing}", "--device", "cpu"], "missing"),
    ("predict checkpoint", ["predict", "{missing}", "{img}"], "missing"),
    ("predict images", ["predict", "{weights}", "{missing}.png", "--device", "cpu"], "missing.png"),
    ("predict images", ["predict", "{weights}", "{dir}", "--device", "cpu"], "dir"),
    ("predict images", ["predict", "{weights}", "{file}", "--device", "cpu"], "notes.txt"),
    ("weights list model", ["weights", "list", "resnt50"], "resnt50"),
    ("weights download names", ["weights", "download", "resnt50"], "resnt50"),
    ("convert source", ["convert", "{missing}.pth", "{new}/c.safetensors", "--model", "lenet5"], "missing.pth"),
    ("convert dest", ["convert", "{weights}", "{dir}", "--model", "lenet5"], ".safetensors"),
    ("convert dest", ["convert", "{weights}", "{dir_st}", "--model", "lenet5"], "is a folder"),
    ("convert dest", ["convert", "{weights}", "{file}/c.safetensors", "--model", "lenet5"], "{file}"),
    ("convert dest", ["convert", "{weights}", "{other_ckpt}", "--model", "lenet5"], "already exists"),
    ("convert dest", ["convert", "{weights}", "{photo_st}", "--model", "lenet5", "--force"], "holds a JPEG image"),
    ("convert --model", ["convert", "{weights}", "{new}/c.safetensors", "--model", "resnt50"], "resnt50"),
    (
        "convert --like",
        ["convert", "{weights}", "{new}/c.safetensors", "--model", "lenet5", "--like", "lenet5.NOPE"],
        "no published pretrained weights",
    ),
    (
        "convert --sha256",
        ["convert", "{weights}", "{new}/c.safetensors", "--model", "lenet5", "--sha256", "0000ffff"],
        "0000ffff",
    ),
    (
        "convert --option",
        ["convert", "{weights}", "{new}/c.safetensors", "--model", "lenet5", "--option", "dropout=0.1"],
        "dropout=0.1",
    ),
    ("export model", ["export", "resnt50"], "resnt50"),
    ("export model", ["export", "{missing}.safetensors"], "missing.safetensors"),
    ("export --out", ["export", "lenet5", "--out", "{dir}"], "is a folder"),
    ("export --out", ["export", "lenet5", "--out", "{file}/m.onnx"], "{file}"),
    ("export --out", ["export", "lenet5", "--out", "{other_ckpt}"], "already exists"),
    ("export --out", ["export", "lenet5", "--out", "{other_ckpt}", "--force"], "holds a safetensors file"),
    ("export --out", ["export", "lenet5", "--out", "{photo}", "--force"], "holds a JPEG image"),
    ("export --out", ["export", "lenet5", "--out", "{link_to_ckpt}", "--force"], "holds a safetensors file"),
    ("export --out", ["export", "lenet5", "--out", "{chardev}", "--force"], "character device"),
    (
        "export --out",
        ["export", "lenet5", "--format", "torchscript", "--out", "{photo}", "--force"],
        "holds a JPEG image",
    ),
    ("export --weights", ["export", "lenet5", "--out", "{new}/m.onnx", "--weights", "{missing}.pth"], "missing.pth"),
    ("export --sha256", ["export", "lenet5", "--out", "{new}/m.onnx", "--sha256", "0000ffff"], "--sha256"),
    ("export --option", ["export", "lenet5", "--out", "{new}/m.onnx", "--option", "in_chans=0"], "in_chans=0"),
    ("export --calibrate", ["export", "lenet5", "--out", "{new}/m.onnx", "--calibrate", "mnist5k"], "--quantize int8"),
    (
        "export --calibrate",
        ["export", "lenet5", "--out", "{new}/m.onnx", "--quantize", "int8", "--calibrate", "{dir}"],
        "neither a run folder",
    ),  # fmt: skip
    ("summary model", ["summary", "resnt50"], "resnt50"),
    ("shape model", ["shape", "resnt50"], "resnt50"),
    ("visualize model", ["visualize", "resnt50", "--image", "{img}", "--out", "{new}/pics"], "resnt50"),
    ("visualize --image", ["visualize", "lenet5", "--image", "{missing}.png", "--out", "{new}/pics"], "missing.png"),
    ("visualize --image", ["visualize", "lenet5", "--image", "{file}", "--out", "{new}/pics"], "notes.txt"),
    ("visualize --out", ["visualize", "lenet5", "--image", "{img}", "--out", "{file}"], "not a folder"),
    ("visualize --out", ["visualize", "lenet5", "--image", "{img}", "--out", "{file}/pics"], "{file}"),
    ("visualize --out", ["visualize", "lenet5", "--image", "{img}", "--out", "{pics}"], "already exists"),
    ("cam model", ["cam", "resnt50", "{img}", "--out", "{new}/cams"], "resnt50"),
    ("cam images", ["cam", "lenet5", "{missing}.png", "--out", "{new}/cams", "--device", "cpu"], "missing.png"),
    ("cam --out", ["cam", "lenet5", "{img}", "--out", "{file}/cams", "--device", "cpu"], "{file}"),
    (
        "cam --layer",
        ["cam", "lenet5", "{img}", "--out", "{new}/cams", "--layer", "no.such.layer", "--device", "cpu"],
        "no.such.layer",
    ),
    ("cam --class", ["cam", "lenet5", "{img}", "--out", "{new}/cams", "--class", "zebra", "--device", "cpu"], "zebra"),
    (
        "cam --weights",
        ["cam", "lenet5", "{img}", "--out", "{new}/cams", "--weights", "{missing}.pth", "--device", "cpu"],
        "missing.pth",
    ),
    ("diagram model", ["diagram", "resnt50", "--out", "{new}/d.svg"], "resnt50"),
    ("diagram --out", ["diagram", "lenet5", "--out", "{file}/d.svg"], "{file}"),
    ("diagram --weights", ["diagram", "lenet5", "--out", "{new}/d.svg", "--weights", "{missing}.pth"], "missing.pth"),
    ("report model", ["report", "resnt50", "--image", "{img}", "--out", "{new}/r.html"], "resnt50"),
    (
        "report --image",
        ["report", "lenet5", "--image", "{missing}.png", "--out", "{new}/r.html", "--device", "cpu"],
        "missing.png",
    ),
    ("report --out", ["report", "lenet5", "--image", "{img}", "--out", "{file}/r.html", "--device", "cpu"], "{file}"),
    (
        "report --layer",
        ["report", "lenet5", "--image", "{img}", "--out", "{new}/r.html", "--layer", "no.such", "--device", "cpu"],
        "no.such",
    ),
    (
        "report --weights",
        ["report", "lenet5", "--image", "{img}", "--out", "{new}/r.html", "--weights", "{missing}.pth"],
        "missing.pth",
    ),
    ("bench model", ["bench", "resnt50"], "resnt50"),
    ("bench --input", ["bench", "lenet5", "--input", "big"], "--input"),
    ("bench --input", ["bench", "lenet5", "--input", "0"], "--input"),
    ("bench --vs", ["bench", "lenet5", "--vs", "keras", "--device", "cpu"], "keras"),
    ("bench --data", ["bench", "--data", "folder:{missing}", "--device", "cpu"], "missing"),
    ("bench --option", ["bench", "lenet5", "--option", "dropout=x"], "dropout=x"),
]


# --- the place each case runs in ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    """A lenet5 cnnzoo checkpoint, as `cnnzoo train` writes one (with class names and preprocessing)."""
    import cnnzoo
    from cnnzoo.weights import save_weights

    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    model = cnnzoo.create_model("lenet5")
    info = dict(
        classes=[str(i) for i in range(10)], image_size=28, mean=[0.1307], std=[0.3081], data="mnist5k", epoch=1
    )
    save_weights(path, model, dict(name="lenet5", num_classes=10, in_chans=1), extra={"info": info})
    return path.read_bytes()


def _run_folder(path: Path, **changes) -> None:
    path.mkdir()
    config = dataclasses.asdict(TrainConfig(model="lenet5", progress=False).resolved())
    config.update(out=str(path), **changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.fixture
def place(tmp_path, monkeypatch, weights_bytes) -> dict[str, str]:
    """The files the cases name, in a fresh folder that is also the working directory."""
    monkeypatch.chdir(tmp_path)
    y, x = np.mgrid[0:40, 0:50]
    Image.fromarray(np.stack([x * 5, y * 6, (x + y) * 3], -1).astype(np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.jpg")
    (tmp_path / "photo.safetensors").write_bytes((tmp_path / "photo.jpg").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image, not weights\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "w.safetensors").write_bytes(weights_bytes)
    (tmp_path / "other.safetensors").write_bytes(weights_bytes)
    (tmp_path / "latest.onnx").symlink_to(tmp_path / "other.safetensors")
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "filters.png").write_bytes((tmp_path / "img.png").read_bytes())
    _run_folder(tmp_path / "run")
    _run_folder(tmp_path / "bad_run", label_smoothing=2.0)  # written before the range was checked
    chardev = tmp_path / "null"
    try:
        os.mknod(chardev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        chardev = None
    names = dict(
        new="new",
        run="run",
        bad_run="bad_run",
        img="img.png",
        photo="photo.jpg",
        photo_st="photo.safetensors",
        file="notes.txt",
        dir="dir",
        dir_st="dir.safetensors",
        weights="w.safetensors",
        other_ckpt="other.safetensors",
        link_to_ckpt="latest.onnx",
        pics="pics",
        missing="missing",
    )
    files = {k: str(tmp_path / v) for k, v in names.items()}
    files["chardev"] = str(chardev) if chardev else ""
    return files


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its kind, size and modification time: what a refused command must not change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            s = p.lstat()
            out[str(p.relative_to(root))] = (
                stat.S_IFMT(s.st_mode),
                s.st_size if not stat.S_ISDIR(s.st_mode) else 0,
                s.st_mtime_ns,
            )
    return out


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses while reading the command line
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _check_refused(argv: list[str], needle: str, place: dict[str, str], capsys) -> str:
    root = Path.cwd()
    before = _tree(root)
    code, out, err = _run(argv, capsys)
    assert code in (1, 2), f"exit code {code}: {argv}\n{out}{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:  # one line; a list of what is allowed may follow it, indented
        first, *rest = err.rstrip("\n").splitlines()
        assert first.startswith(f"cnnzoo {argv[0]}") and all(line.startswith(" ") for line in rest), (
            f"not one line:\n{err}"
        )
    assert needle in err, f"{needle!r} not in: {err}"
    assert _tree(root) == before, f"a refused command changed the disk: {argv}"
    return err


# --- the table: typed options, from their declarations --------------------------------------------------


def _commands(parser: argparse.ArgumentParser = PARSER, prefix: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), parser
    for a in subs:
        for name, sub in a.choices.items():
            yield from _commands(sub, (*prefix, name))


def _probed(action: argparse.Action) -> bool:
    return (
        not isinstance(action, (argparse._HelpAction, argparse._StoreConstAction, argparse.BooleanOptionalAction))
        and action.dest != "debug"
    )


def _bad_values(command: str, action: argparse.Action) -> list[str]:
    """What the option's declaration refuses: out of its range, the wrong type, a choice it does not have."""
    if action.choices is not None:
        return ["bogus-choice"]
    kind = action.type
    if kind is positive:
        return ["0", "-3", "abc"]
    if kind is parse_input_size:
        return ["0", "3x0x5", "abc"]
    if kind is parse_padding:
        return ["-1", "a,b"]
    if kind is parse_device:
        return ["tpu", "cuda:x"]
    allowed = getattr(kind, "allowed", None)
    if allowed is None and command == "train" and kind in (int, float):
        o = next(d for d in declared_options() if d.name == action.dest).option
        allowed = Allowed(kind, min=o.min, max=o.max, above=None)
        if o.below is not None:
            return [str(kind(o.below)), *_range_values(allowed)]
    return _range_values(allowed) if allowed is not None else []


def _range_values(allowed: Allowed) -> list[str]:
    values = ["abc"] + (["1.5"] if allowed.kind is int else ["nan"])
    if allowed.min is not None:
        values.append(str(allowed.kind(allowed.min) - 1))
    if allowed.max is not None:
        values.append(str(allowed.kind(allowed.max) + 1))
    if allowed.above is not None:
        values.append(str(allowed.kind(allowed.above)))
    return values


def _typed_cases():
    for command, parser in _commands():
        for action in parser._actions:
            if action.option_strings and _probed(action):
                for value in _bad_values(command, action):
                    flag = action.option_strings[0]
                    yield pytest.param(command, flag, value, id=f"{command} {flag} {value}")


@pytest.mark.parametrize("command, flag, value", list(_typed_cases()))
def test_a_typed_option_refuses_what_its_declaration_does_not_allow(command, flag, value, place, capsys):
    argv = [*command.split(), *(a.format(**place) for a in BASE[command]), flag, value]
    _check_refused(argv, flag, place, capsys)


@pytest.mark.parametrize(
    "covers, argv, needle", [pytest.param(*c, id=f"{c[0]}: {' '.join(c[1][1:])}") for c in PATH_CASES]
)
def test_a_path_or_text_option_refuses_with_one_line_and_writes_nothing(covers, argv, needle, place, capsys):
    if "{chardev}" in argv and not place["chardev"]:
        pytest.skip("creating a character device needs root")
    _check_refused([a.format(**place) for a in argv], needle.format(**place), place, capsys)


# Free-text options whose values their owners do not check yet (reported): a bad value is accepted, so no case can
# be written that is refused; listed here so that the coverage check below names every other option.
NOT_CHECKED_YET = {"train --scale-jitter": "MIN,MAX is read only for image folders; 'big' with in-memory data trains"}


def test_every_command_has_a_base_and_every_option_is_probed():
    covered = {c[0] for c in PATH_CASES} | set(NOT_CHECKED_YET)
    missing = []
    for command, parser in _commands():
        assert command in BASE, f"{command}: add a valid command line to BASE"
        for action in parser._actions:
            if not _probed(action) or _bad_values(command, action):
                continue
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._CountAction)):
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            if f"{command} {name}" not in covered:
                missing.append(f"{command} {name}")
    assert not missing, f"options with no bad-value case (add them to PATH_CASES): {missing}"


# --- the items of issue 14, one by one --------------------------------------------------------------------


def test_export_never_destroys_a_checkpoint_and_force_replaces_only_its_own_kind(place, capsys):
    checkpoint = Path(place["other_ckpt"])
    kept = checkpoint.read_bytes()
    for argv in (
        ["--out", str(checkpoint)],
        ["--out", str(checkpoint), "--force"],
        ["--out", place["link_to_ckpt"], "--force"],
    ):
        code, _, err = _run(["export", "lenet5", *argv], capsys)
        assert code == 2 and "Traceback" not in err
    assert checkpoint.read_bytes() == kept and Path(place["link_to_ckpt"]).is_symlink()
    out = Path(place["new"]) / "m.onnx"
    assert _run(["export", "lenet5", "--out", str(out)], capsys)[0] == 0
    code, _, err = _run(["export", "lenet5", "--out", str(out)], capsys)
    assert code == 2 and "already exists (an ONNX model); pass --force" in err
    first = out.stat().st_mtime_ns
    assert _run(["export", "lenet5", "--out", str(out), "--force"], capsys)[0] == 0
    assert out.stat().st_mtime_ns != first and stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_image_size_below_the_minimum_says_the_minimum(place, capsys):
    code, _, err = _run(["export", "lenet5", "--image-size", "5", "--out", str(Path(place["new"]) / "m.onnx")], capsys)
    want = "lenet5 takes inputs of at least 12x12 pixels; image_size 5 is smaller (use 12 or more)"
    assert code == 2 and err == f"cnnzoo export: error: {want}\n"
    assert "\x1b[" not in err


def test_opsets_the_exporter_cannot_write_are_refused_not_replaced(place, capsys):
    import onnx

    code, _, err = _run(["export", "lenet5", "--opset", "99", "--out", str(Path(place["new"]) / "m.onnx")], capsys)
    assert (
        code == 2
        and f"--opset: 99 is not allowed (must be an integer >= 18 and <= {onnx.defs.onnx_opset_version()}" in err
    )
    code, _, err = _run(["export", "lenet5", "--opset", "3", "--out", str(Path(place["new"]) / "m.onnx")], capsys)
    assert code == 2 and "argument --opset: 3 is not allowed (must be an integer >= 18)" in err


def test_resume_refuses_conflicting_options_naming_the_runs_value(place, capsys):
    err = _check_refused(["train", "--resume", place["run"], "--lr", "0.5"], "--lr", place, capsys)
    assert f"({place['run']} has 0.1)" in err
    err = _check_refused(["train", "resnet18", "--resume", place["run"]], "MODEL", place, capsys)
    assert "has 'lenet5'" in err


def test_the_model_of_a_resumed_run_comes_from_the_run(place, monkeypatch, capsys):
    from cnnzoo.cli import train as cli_train

    seen = {}
    monkeypatch.setattr("cnnzoo.train.train", lambda cfg: seen.setdefault("cfg", cfg))
    assert cli_train._model_of_run(place["run"]) == "lenet5"
    assert main(["train", "--resume", place["run"]]) == 0
    assert seen["cfg"].model == "lenet5" and seen["cfg"].resume == place["run"]


def test_an_unexpected_exception_is_a_short_report_request_and_debug_shows_the_traceback(monkeypatch, capsys):
    from cnnzoo.cli import models as cli_models

    def broken(args):
        return {}["no such key"]

    monkeypatch.setattr(cli_models, "cmd_list", broken)
    code, _, err = _run(["list"], capsys)
    assert (
        code == 1
        and err.startswith("cnnzoo list: internal error: KeyError: 'no such key'\n")
        and "please report it" in err
    )
    assert "Traceback" not in err
    code, _, err = _run(["list", "--debug"], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err and "internal error: KeyError" in err
    monkeypatch.setenv("CNNZOO_DEBUG", "1")
    assert "Traceback" in _run(["list"], capsys)[2]


def test_a_library_value_error_escaping_a_check_is_a_bug_not_a_user_error(monkeypatch, capsys):
    from cnnzoo.cli import models as cli_models

    def torch_refuses(args):
        import torch

        torch.nn.CrossEntropyLoss(label_smoothing=2.0)(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))

    monkeypatch.setattr(cli_models, "cmd_list", torch_refuses)
    code, _, err = _run(["list"], capsys)
    assert code == 1 and "internal error" in err and "please report it" in err


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    from cnnzoo.cli import models as cli_models

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_models, "cmd_list", interrupted)
    code, _, err = _run(["list"], capsys)
    assert code == 130 and err.strip() == "cnnzoo list: interrupted"


def _python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


def test_help_of_every_command_imports_no_torch():
    commands = [c for c, _ in _commands()]
    result = _python(
        "import contextlib, io, sys\n"
        "from cnnzoo.cli import main\n"
        "for command in [[]] + [c.split() for c in sys.argv[1:]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            main([*command, '--help'])\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, command\n"
        "    assert 'usage: cnnzoo' in out.getvalue(), command\n"
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib', 'PIL', 'rich', 'onnx') if m in sys.modules))\n",
        *commands,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_list_builds_on_the_meta_device_without_initialising():
    # A meta model's initialisers (normal_) import torch's compiler, seconds on the first call: the list skips them.
    result = _python(
        "import sys\nfrom cnnzoo.cli import main\nassert main(['list', '--json']) == 0\n"
        "print('torch._dynamo' in sys.modules, file=sys.stderr)\n"
    )
    assert result.returncode == 0 and result.stderr.strip() == "False", result.stderr
    rows = {r["name"]: r["params"] for r in json.loads(result.stdout)}
    assert rows["resnet50"] == 25_557_032 and rows["vgg16"] == 138_357_544  # torchvision's counts


def test_a_closed_pipe_is_not_a_traceback():
    """`cnnzoo summary resnet152 | head -1`: the reader goes away; the command stops quietly."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "summary", "resnet152"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # before anything is written: every write fails with EPIPE
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert b"Traceback" not in err and b"BrokenPipeError" not in err and b"Exception ignored" not in err, err


# --- property-based: the parsers and the checks ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=3))
def test_input_sizes_round_trip(sizes):
    parsed = parse_input_size("x".join(map(str, sizes)))
    assert parsed == (sizes[0] if len(sizes) == 1 else tuple(sizes))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=20))
def test_input_size_and_padding_parsers_refuse_in_their_own_words(text):
    for parse, words in ((parse_input_size, "expected CxHxW"), (parse_padding, "expected a padding")):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as e:
            assert words in str(e)
        else:
            values = value if isinstance(value, tuple) else (value,)
            assert value in ("same", "valid") or all(
                isinstance(v, int) and v >= (1 if parse is parse_input_size else 0) for v in values
            )


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=30))
def test_parse_option_never_fails_on_key_value_text(text):
    if "=" in text:
        key, _ = parse_option(text)
        assert key == text.split("=", 1)[0]
    else:
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            parse_option(text)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(SHARED)),
    value=st.one_of(
        st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans()
    ),
)
def test_a_shared_option_allows_exactly_its_range(name, value):
    a = SHARED[name].allowed
    inside = value is None or (
        (value in a.choices)
        if a.choices is not None
        else not isinstance(value, bool)
        and isinstance(value, (int, float) if a.kind is float else a.kind)
        and (a.kind is not float or value == value and abs(value) != float("inf"))
        and (a.min is None or value >= a.min)
        and (a.max is None or value <= a.max)
        and (a.above is None or value > a.above)
    )
    if inside:
        assert check_option(name, value) == value or value != value
    else:
        with pytest.raises(OptionError, match=rf"^{name}: .* is not allowed \(must be {re.escape(a.words())}\)$"):
            check_option(name, value)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(
        sorted(n for n, s in SHARED.items() if s.allowed.choices is None and s.allowed.kind is not str)
    ),
    text=st.text(max_size=8),
)
def test_a_shared_flag_parses_what_its_check_allows(name, text):
    a = SHARED[name].allowed
    try:
        value = a.parse(text)
    except ValueError as e:
        assert "is not allowed (must be" in str(e)
    else:
        assert a.allows(value) and value == a.kind(text.strip())


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=12))
def test_device_names_are_checked_by_spelling(text):
    try:
        assert check_device_name(text) == text
    except OptionError as e:
        assert str(e).startswith("device: ") and "cpu, cuda, cuda:N or mps" in str(e)
    else:
        assert text in ("cpu", "cuda", "mps", "auto") or (text.startswith("cuda:") and text[5:].isdigit())


# --- model options: typed from the model's own signature ---------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_every_listed_model_option_is_taken_by_the_builder_and_parses_its_default(name):
    import cnnzoo
    from cnnzoo.model_options import shapes_only

    for key, option in model_options(name).items():
        text = str(option.default).lower() if isinstance(option.default, bool) else str(option.default)
        assert parse_model_option(name, f"{key}={text}") == (key, option.default)
        with shapes_only():
            cnnzoo.create_model(name, **{key: option.default})  # the builder takes it (a TypeError would say not)


def test_options_a_builder_fixes_are_not_offered():
    import cnnzoo

    assert "batch_norm" not in model_options("vgg11")  # the name says it: vgg11_bn
    with pytest.raises(TypeError, match="batch_norm"):
        cnnzoo.create_model("vgg11", batch_norm=True)
    assert {"aux_logits", "branch3_kernel", "dropout", "dropout_aux"} <= set(model_options("googlenet"))
    assert (
        model_options("googlenet")["aux_logits"].kind is bool
        and model_options("resnet50")["stride_in_1x1"].default is False
    )


def test_batch_norm_no_is_false_and_a_word_that_is_not_a_bool_is_refused(monkeypatch, capsys):
    import cnnzoo

    seen = {}
    monkeypatch.setattr("cnnzoo.train.train", lambda cfg: seen.setdefault("cfg", cfg))
    assert main(["train", "googlenet", "--option", "aux_logits=no", "--option", "dropout=0.25"]) == 0
    assert seen["cfg"].model_options == {"aux_logits": False, "dropout": 0.25}
    code, _, err = _run(["train", "googlenet", "--option", "aux_logits=maybe"], capsys)
    assert code == 2 and "--option: 'aux_logits=maybe' is not allowed (must be aux_logits set to true or false" in err
    with pytest.raises(OptionError, match="googlenet option aux_logits: 'no' is not allowed"):
        cnnzoo.create_model("googlenet", aux_logits="no")  # the Python API: a string is not a bool either


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=8))
def test_a_bool_option_is_true_false_or_refused(text):
    option = model_options("googlenet")["aux_logits"]
    word = text.strip().lower()
    try:
        value = option.parse(text)
    except ValueError:
        assert word not in ("true", "yes", "on", "1", "false", "no", "off", "0")
    else:
        assert value is (word in ("true", "yes", "on", "1"))


@settings(max_examples=300, deadline=None)
@given(x=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)))
def test_a_number_option_keeps_its_range(x):
    option = model_options("googlenet")["dropout"]
    try:
        value = option.parse(repr(x))
    except ValueError as e:
        assert not (0 <= x <= 1) and "a number >= 0 and <= 1" in str(e)
    else:
        assert value == x and 0 <= value <= 1


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=24))
def test_model_option_texts_are_typed_or_refused_in_one_line(text):
    try:
        key, value = parse_model_option("googlenet", text)
    except OptionError as e:
        assert str(e).startswith("--option: ") and "\n" not in str(e)
    else:
        assert model_options("googlenet")[key].allows(value)


# --- the Python API checks what the command line checks ----------------------------------------------------


def test_the_api_refuses_the_same_values_in_its_own_names(tmp_path):
    import cnnzoo
    from cnnzoo.bench import benchmark, benchmark_data
    from cnnzoo.export import export_model
    from cnnzoo.predict import evaluate_checkpoint, predict_images

    model = cnnzoo.create_model("lenet5")
    cases = [
        (lambda: predict_images("run", ["x.png"], topk=0), "topk: 0 is not allowed (must be an integer >= 1)"),
        (
            lambda: predict_images("run", ["x.png"], which="middle"),
            "which: 'middle' is not allowed (must be one of best, last)",
        ),
        (lambda: evaluate_checkpoint("run", batch_size=0), "batch_size: 0 is not allowed"),
        (lambda: evaluate_checkpoint("run", workers=-1), "workers: -1 is not allowed (must be an integer >= 0)"),
        (lambda: evaluate_checkpoint("run", device="tpu"), "device: 'tpu' is not allowed"),
        (lambda: benchmark("lenet5", batch_size=0), "batch_size: 0 is not allowed"),  # was silently 32
        (lambda: benchmark("lenet5", round_seconds=float("nan")), "round_seconds: nan is not allowed"),
        (lambda: benchmark_data("mnist5k", batches=0), "batches: 0 is not allowed"),
        (
            lambda: export_model(model, tmp_path / "m.onnx", opset=3),
            "opset: 3 is not allowed (must be an integer >= 18)",
        ),
        (lambda: export_model(model, tmp_path / "m.onnx", image_size=0), "image_size: 0 is not allowed"),
    ]
    for call, message in cases:
        with pytest.raises(OptionError) as e:
            call()
        assert str(e.value).startswith(message), (str(e.value), message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_for_where_there_is_none_is_one_line(place, capsys):
    err = _check_refused(
        ["predict", place["weights"], place["img"], "--device", "cuda"], "--device: 'cuda'", place, capsys
    )
    assert "this machine has no CUDA GPU" in err
    err = _check_refused(["eval", place["weights"], "--device", "cuda:1"], "--device", place, capsys)
    assert "no CUDA GPU" in err


# --- the pixel limit on every command that reads images -------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{weights}", "{img}"],
        ["cam", "{weights}", "{img}", "--out", "{new}"],
        ["report", "{weights}", "--image", "{img}", "--out", "new.html"],
        ["visualize", "{weights}", "--image", "{img}", "--out", "{new}"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_image_command_takes_the_pixel_limit_its_refusal_names(argv, place, capsys):
    """img.png is 50x40 = 2,000 pixels: under a limit of 1,999 it is refused by its header, in one line that
    names the flag, with nothing written; at 2,000 or with 0 (no limit) it is read."""
    argv = [a.format(**place) for a in argv]
    err = _check_refused([*argv, "--max-image-pixels", "1999"], "over the limit of 1,999", place, capsys)
    assert "--max-image-pixels N" in err
    rewrite = [] if argv[0] == "predict" else ["--force"]  # the second run replaces the first one's pictures
    for limit in ("2000", "0"):
        code, out, err = _run([*argv, "--max-image-pixels", limit, *rewrite], capsys)
        assert code == 0, err


def test_eval_skips_images_over_the_limit_and_says_so_when_none_is_left(tmp_path, monkeypatch, capsys, weights_bytes):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(weights_bytes)
    for digit in ("3", "7"):
        (tmp_path / "val" / digit).mkdir(parents=True)
        Image.fromarray(np.full((40, 50), 80, np.uint8)).save(tmp_path / "val" / digit / "a.png")
    argv = ["eval", "w.safetensors", "--data", "folder:.", "--workers", "0"]
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*a\.png: 50x40 = 2,000 pixels, over the limit"):
        code, out, err = _run([*argv, "--max-image-pixels", "1999"], capsys)
    assert code == 2 and "none of its 2 images could be read" in err and "--max-image-pixels" in err
    code, out, err = _run([*argv, "--max-image-pixels", "2000"], capsys)
    assert code == 0 and "(2 images)" in out, err


def test_bench_on_data_whose_every_image_is_skipped_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """It used to wait for a batch forever; now one line says why no batch came, and the limit reads them."""
    monkeypatch.chdir(tmp_path)
    for split in ("train", "val"):
        for digit in ("3", "7"):
            (tmp_path / split / digit).mkdir(parents=True)
            Image.fromarray(np.full((40, 50, 3), 80, np.uint8)).save(tmp_path / split / digit / "a.png")
    argv = ["bench", "--data", "folder:.", "--batch-size", "2", "--batches", "1", "--workers", "0"]
    with pytest.warns(UserWarning, match=r"over the limit of 1,999"):
        code, out, err = _run([*argv, "--max-image-pixels", "1999"], capsys)
    assert code == 2 and "every image of the data was skipped" in err and "--max-image-pixels" in err
    code, out, err = _run([*argv, "--max-image-pixels", "2000"], capsys)
    assert code == 0 and "images/s" in out, err
