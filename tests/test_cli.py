"""`cnnzoo list` and `cnnzoo info`: the zoo as the command line shows it."""

import json

import pytest

import cnnzoo
from cnnzoo.cli import main

from .anchors import KERAS_PARAMS, TORCHVISION_PARAMS


def test_list_shows_every_model_with_its_counts(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in cnnzoo.list_models():
        assert f" {name} " in out
    assert "138,357,544" in out and "25,636,712" in out and "23,851,784" in out


def test_list_json_has_exact_counts(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(cnnzoo.list_models())
    for name, n in TORCHVISION_PARAMS.items():
        if "+" not in name:
            assert rows[name]["params"] == n, name
    for name, (total, _, _) in KERAS_PARAMS.items():
        assert rows[name]["keras_params"] == total, name
    assert rows["inception_v3"]["input"] == "3x299x299" and rows["lenet5"]["input"] == "1x28x28"


def test_list_by_family(capsys):
    assert main(["list", "--family", "vgg", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == cnnzoo.list_models("vgg")


def test_info_json(capsys):
    assert main(["info", "resnet50_keras", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_keras"] == {"total": 25_636_712, "trainable": 25_583_592, "non_trainable": 53_120}
    assert info["keras"] == "ResNet50" and info["channel_order"] == "BGR"


def test_info_text_names_paper_and_counts(capsys):
    assert main(["info", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "Simonyan and Zisserman" in out and "138,357,544" in out and "keras.applications.VGG16" in out


@pytest.mark.parametrize("argv", [["info", "resnt50"], ["list", "--family", "transformer"]])
def test_bad_names_exit_2_with_a_clear_message(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    if argv[0] == "info":
        assert code == 2 and "unknown model 'resnt50'" in err and "resnet50" in err
    else:
        assert code == 2 and "no models in family 'transformer'" in err and "resnet" in err
