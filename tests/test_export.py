"""Export to ONNX (checked with onnxruntime) and TorchScript; ``cnnzoo export``; running ONNX files.

Which models are exported by default: one of every model class in the zoo, GoogLeNet and Inception
v3 with their auxiliary heads, vgg16 (the largest file) among them. The other zoo models repeat
these blocks at other depths or widths: ``CNNZOO_EXPORT_ALL=1`` exports them too (about five more minutes
on two cores: torch.onnx's dynamo exporter spends seconds on each, and the suite is held well under 15
minutes). :func:`test_the_default_exports_cover_every_model_class` fails when a model class appears without a
representative here.
"""

import os
import random

import onnx
import pytest
import torch

import cnnzoo
from cnnzoo.checkpoint import save_weights
from cnnzoo.cli import main
from cnnzoo.export import ExportError, OnnxModel, export_model

from .test_weights import randomize

# name -> (model options, input size, dynamic batch)
REPRESENTATIVES = {
    "lenet5": ({}, 28, True),
    "alexnet": ({}, 63, False),
    "vgg16": ({}, 32, False),
    "googlenet": ({"aux_logits": True}, 32, True),
    "inception_v3": ({}, 75, False),  # aux_logits=True by default, as torchvision
    "inception_v3_keras": ({}, 75, False),
    "resnet18": ({}, 32, True),
    "resnet20": ({}, 32, False),  # option A shortcuts: strided slicing and channel padding
    "resnet50_keras": ({}, 32, False),
}
EXPORT_ALL = os.environ.get("CNNZOO_EXPORT_ALL", "0") == "1"


def check_onnx_export(tmp_path, name, options, size, dynamic):
    """Export with export_model, which runs the file with onnxruntime and raises unless it matches PyTorch."""
    model = randomize(cnnzoo.create_model(name, **options))
    with torch.no_grad():
        assert model(torch.randn(1, model.in_chans, size, size)).abs().max() > 0.1  # a real signal to compare
    report = export_model(model, tmp_path / f"{name}.onnx", image_size=size, dynamic_batch=dynamic)
    assert report.checked_with.startswith("onnxruntime") and report.max_abs_diff <= report.tolerance
    batch = "N" if dynamic else 1
    assert report.input_shape == (batch, model.in_chans, size, size)
    assert report.output_shape == (
        batch,
        model.info.num_classes,
    )  # what onnxruntime returned: the logits, no aux outputs


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_onnx_export_matches_pytorch(tmp_path, name):
    check_onnx_export(tmp_path, name, *REPRESENTATIVES[name])


@pytest.mark.skipif(
    not EXPORT_ALL, reason="the representatives above export every model class; CNNZOO_EXPORT_ALL=1 exports every model"
)
@pytest.mark.parametrize("name", [n for n in cnnzoo.list_models() if n not in REPRESENTATIVES])
def test_onnx_export_of_every_other_zoo_model(tmp_path, name):
    info = cnnzoo.get_model_info(name)
    check_onnx_export(tmp_path, name, {}, max(info.min_size, 32), False)


class Drifting(torch.nn.Module):
    """Multiplies by a new random number at each call: the exported graph freezes one, PyTorch draws another."""

    model_name, in_chans, native_size = "drifting", 1, 8

    def forward(self, x):
        return x.flatten(1) * (1 + random.random())  # the random module's state: not copied or restored by the exporter


def test_an_export_that_computes_something_else_fails(tmp_path):
    random.seed(0)
    with pytest.raises(
        ExportError, match=r"drifting.onnx: the exported drifting differs from PyTorch by .* \(max abs\), more than"
    ):
        export_model(Drifting(), tmp_path / "drifting.onnx")


def test_the_default_exports_cover_every_model_class():
    def model_class(name):
        with torch.device("meta"):
            return type(cnnzoo.create_model(name))

    assert {model_class(n) for n in cnnzoo.list_models()} == {model_class(n) for n in REPRESENTATIVES}


def test_onnx_opset_is_the_one_asked_for(tmp_path):
    path = tmp_path / "lenet5.onnx"
    report = export_model(randomize(cnnzoo.create_model("lenet5")), path, opset=18)
    assert report.opset == 18
    assert {o.domain: o.version for o in onnx.load(str(path)).opset_import}[""] == 18


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_export_without_aux_heads(tmp_path):
    model = randomize(cnnzoo.create_model("googlenet", aux_logits=True))
    path = tmp_path / "googlenet.pt"
    report = export_model(model, path, format="torchscript", image_size=32, dynamic_batch=True)
    assert report.checked_with == "torch.jit.load" and report.max_abs_diff <= 1e-4
    extra = {"cnnzoo.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert b'"model": "googlenet"' in extra["cnnzoo.json"]
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        out = loaded(x)
        assert isinstance(out, torch.Tensor) and torch.allclose(out, model(x), atol=1e-5)


def test_onnx_model_refuses_a_wrong_input(tmp_path):
    path = tmp_path / "resnet20.onnx"
    export_model(cnnzoo.create_model("resnet20"), path)  # native 32x32, batch fixed to 1
    served = OnnxModel(path)
    with pytest.raises(
        cnnzoo.InputShapeError,
        match=r"resnet20.onnx: the ONNX model takes images of shape 1x3x32x32, got \(1, 3, 28, 28\)",
    ):
        served(torch.zeros(1, 3, 28, 28))
    with pytest.raises(cnnzoo.InputShapeError, match="fixed batch; export again with --dynamic-batch"):
        served(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ExportError, match="nope.onnx: no such ONNX file"):
        OnnxModel(tmp_path / "nope.onnx")


# --------------------------------------------------------------------------------------------------
# cnnzoo export
# --------------------------------------------------------------------------------------------------


def test_cli_exports_a_model_by_name_with_weights(tmp_path, capsys):
    model = randomize(cnnzoo.create_model("resnet20"))
    weights, out = tmp_path / "resnet20.pth", tmp_path / "resnet20.onnx"
    torch.save(model.state_dict(), weights)
    assert main(["export", "resnet20", "--weights", str(weights), "--out", str(out), "--dynamic-batch"]) == 0
    printed = capsys.readouterr().out
    assert f"read {weights}: PyTorch state dict, keys as stored" in printed
    assert f"exported resnet20 to {out} (ONNX opset" in printed and "images Nx3x32x32 -> logits Nx10" in printed
    assert "checked with onnxruntime" in printed and "against PyTorch: max abs diff" in printed

    served = OnnxModel(out)
    assert served.metadata["model_args"] == {"name": "resnet20", "num_classes": 10, "in_chans": 3}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (served(x) - model(x)).abs().max() <= 1e-4

    assert main(["export", "resnet20", "--sha256", "0" * 64]) == 2
    assert "--sha256 checks the --weights file" in capsys.readouterr().err


def test_cli_exports_a_trained_checkpoint_with_its_classes(tmp_path, capsys):
    model = randomize(cnnzoo.create_model("lenet5", num_classes=3))
    checkpoint = tmp_path / "lenet5.safetensors"
    info = {
        "classes": ["cat", "dog", "emu"],
        "mean": [0.13],
        "std": [0.31],
        "image_size": 28,
    }  # as cnnzoo train writes it
    save_weights(checkpoint, model, {"name": "lenet5", "num_classes": 3, "in_chans": 1}, extra={"info": info})
    assert main(["export", str(checkpoint)]) == 0
    served = OnnxModel(tmp_path / "lenet5.onnx")  # next to the checkpoint by default
    assert (served.classes, served.mean, served.std, served.image_size) == (["cat", "dog", "emu"], [0.13], [0.31], 28)


def test_cli_export_explains_a_foreign_weights_file(tmp_path, capsys):
    path = tmp_path / "resnet18.pth"
    torch.save(cnnzoo.create_model("resnet18").state_dict(), path)
    assert main(["export", str(path)]) == 2
    assert (
        "not a cnnzoo checkpoint: name the model and pass the file as weights, e.g. cnnzoo export MODEL --weights"
        in capsys.readouterr().err
    )
