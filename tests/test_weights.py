"""Weights in: torchvision, timm and cnnzoo files, mismatches, heads, safety, checksums, ``cnnzoo convert``.

Every file here is written by the test itself from models with random weights: nothing is downloaded.
"""

import argparse
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import cnnzoo
from cnnzoo.checkpoint import RunCheckpoints, read_metadata, save_weights
from cnnzoo.cli import main
from cnnzoo.factory import load_model
from cnnzoo.weights import detect_format, file_sha256, load_pretrained


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-scaled random weights and non-trivial BatchNorm statistics, so outputs are O(1) and eval-mode BN matters.

    (Several default inits, GoogLeNet's std 0.01 for instance, shrink the signal to nearly nothing,
    and a comparison of nothings proves nothing.)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                if m.weight is not None:
                    m.weight.copy_(0.5 + torch.rand(c, generator=g))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model.eval()


def images(size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        want = a.eval()(x)
        assert want.abs().max() > 0.1  # a real signal, so the comparison means something
        return (b.eval()(x) - want).abs().max().item()


# --------------------------------------------------------------------------------------------------
# torchvision and timm files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, tv_options, size, legacy",
    [
        ("resnet50", {}, 64, False),
        ("vgg16", {}, 32, True),  # torchvision's vgg16 file (2017) predates torch.save's zip format
        ("googlenet", {"aux_logits": True, "init_weights": False}, 32, False),  # published with its aux heads
        ("inception_v3", {"aux_logits": True, "init_weights": False}, 75, False),
    ],
)
def test_torchvision_files_give_identical_outputs(tmp_path, name, tv_options, size, legacy):
    theirs = randomize(getattr(torchvision.models, name)(**tv_options))
    path = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    assert detect_format(path) == "torch"

    ours = cnnzoo.create_model(name)
    report = load_pretrained(ours, path)
    assert max_diff(theirs, ours, images(size)) <= 1e-5
    assert report.format == "torch"
    if name == "vgg16":  # torchvision numbers VGG's layers, cnnzoo names them as Keras does
        assert report.names == "keys renamed from torchvision's"
    if name == "googlenet":  # built without aux heads (the default): the file's are left out, and it says so
        assert report.notes == [
            "ignored the file's auxiliary classifiers aux1, aux2: googlenet was built without (aux_logits=False)"
        ]
        with_aux = cnnzoo.create_model("googlenet", aux_logits=True, weights=path)
        assert torch.equal(with_aux.aux1.fc2.weight, theirs.aux1.fc2.weight)


def test_timm_training_checkpoint_of_a_ddp_model(tmp_path):
    """timm's train.py saves {'state_dict', 'state_dict_ema', 'args' (an argparse.Namespace), 'optimizer', ...};
    timm's ResNets use torchvision's key names. Saved from a DistributedDataParallel model, every key
    starts with 'module.'."""
    theirs = randomize(torchvision.models.resnet18())
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    checkpoint = {
        "epoch": 12,
        "arch": "resnet18",
        "state_dict": state,
        "state_dict_ema": {k: v + 1 for k, v in state.items()},
        "optimizer": torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9).state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="resnet18", lr=0.1, epochs=100),
        "metric": 71.3,
    }
    path = tmp_path / "checkpoint-12.pth.tar"
    torch.save(checkpoint, path)

    ours = cnnzoo.create_model("resnet18")
    report = load_pretrained(ours, path)
    assert report.notes == [
        "took the weights under 'state_dict' (the file also has 'state_dict_ema')",
        "stripped the 'module.' prefix from every key",
    ]
    assert max_diff(theirs, ours, images(32)) <= 1e-5


def test_timm_resnet_from_a_safetensors_file(tmp_path):
    timm = pytest.importorskip("timm")  # optional: timm's key names are checked against torchvision's without it
    theirs = randomize(timm.create_model("resnet50", pretrained=False))
    path = tmp_path / "model.safetensors"  # the file timm's models on the Hugging Face hub come in
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, path)
    assert detect_format(path) == "safetensors"
    ours = cnnzoo.create_model("resnet50", weights=path)
    assert max_diff(theirs, ours, images(64)) <= 1e-5


def test_timm_and_torchvision_resnets_share_key_names():
    with torch.device("meta"):
        tv = torchvision.models.resnet152().state_dict()
        ours = cnnzoo.create_model("resnet152").state_dict()
    assert [(k, v.shape) for k, v in tv.items()] == [(k, v.shape) for k, v in ours.items()]


# --------------------------------------------------------------------------------------------------
# cnnzoo's own checkpoints
# --------------------------------------------------------------------------------------------------


def test_cnnzoo_checkpoint_round_trip_and_model_check(tmp_path):
    theirs = randomize(cnnzoo.create_model("resnet20"))
    path = tmp_path / "resnet20.safetensors"
    save_weights(path, theirs, {"name": "resnet20", "num_classes": 10, "in_chans": 3})
    assert detect_format(path) == "cnnzoo"
    assert max_diff(theirs, cnnzoo.create_model("resnet20", weights=path), images(32)) == 0

    with pytest.raises(cnnzoo.WeightsError, match="a cnnzoo checkpoint of resnet20, not of resnet32.*load_model"):
        cnnzoo.create_model("resnet32", weights=path)

    run = tmp_path / "run"  # a run folder stands for its best checkpoint
    RunCheckpoints(run).save(
        "epoch-0001", theirs, {"name": "resnet20", "num_classes": 10, "in_chans": 3}, {}, best=True, info={"epoch": 1}
    )
    assert max_diff(theirs, cnnzoo.create_model("resnet20", weights=run), images(32)) == 0


# --------------------------------------------------------------------------------------------------
# Mismatches and the classifier head
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    theirs = randomize(torchvision.models.resnet18())
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(theirs.state_dict(), path)
    return theirs, path


def test_mismatches_are_listed_by_name(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(cnnzoo.WeightsError) as e:
        cnnzoo.create_model("resnet34", weights=path)
    message = str(e.value)
    assert str(path) in message and "does not fit resnet34" in message
    assert "missing keys (" in message and "layer1.2.conv1.weight" in message
    # Another input channel count: a shape mismatch on conv1, listed with both shapes, and not taken for a head.
    with pytest.raises(cnnzoo.WeightsError, match=r"conv1.weight: model has \(64, 1, 7, 7\), .* has \(64, 3, 7, 7\)"):
        cnnzoo.create_model("resnet18", in_chans=1, weights=path, reset_head=True)


def test_another_number_of_classes_needs_reset_head(resnet18_file):
    theirs, path = resnet18_file
    torch.manual_seed(5)
    ours = cnnzoo.create_model("resnet18", num_classes=10)
    fresh_head = ours.fc.weight.detach().clone()
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"classifier of resnet18 has 10 outputs, the file's has 1000 \(fc.weight, fc.bias\).*num_classes=1000.*--reset-head",
    ):
        load_pretrained(ours, path)
    assert torch.equal(ours.fc.weight, fresh_head)  # a refused load leaves the model alone

    report = load_pretrained(ours, path, reset_head=True)
    assert report.notes == [
        "reset the head: fc.weight, fc.bias keep their fresh initialisation for 10 classes (the file's head has 1000)"
    ]
    assert torch.equal(ours.fc.weight, fresh_head)
    assert torch.equal(ours.layer4[1].conv2.weight, theirs.layer4[1].conv2.weight)
    assert torch.equal(ours.bn1.running_var, theirs.bn1.running_var)


# --------------------------------------------------------------------------------------------------
# Safety: nothing in a file runs; checksums
# --------------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this calls open(marker, 'w'): it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_with_a_code_payload_is_refused_and_nothing_runs(tmp_path, writer):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "resnet18.pth"
    if writer == "torch.save":  # hidden among real tensors
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "x": Payload(marker)}, path)
    else:  # a bare pickle stream, the oldest .pth layout
        with open(path, "wb") as f:
            pickle.dump({"x": Payload(marker)}, f, protocol=2)
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"resnet18.pth: refused. This pickle asks for the Python object io.open.*nothing in the file was run",
    ):
        cnnzoo.create_model("resnet18", weights=path)
    assert not marker.exists()
    # The command line refuses it too, with the same message and exit status 2.
    assert main(["convert", str(path), str(tmp_path / "out.safetensors"), "--model", "resnet18"]) == 2
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_a_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torchvision.models.resnet18(), path)
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"asks for the Python object torchvision.models.resnet.ResNet.*save model.state_dict\(\)",
    ):
        cnnzoo.create_model("resnet18", weights=path)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "lenet5.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)
    with pytest.raises(cnnzoo.WeightsError, match="a TorchScript archive .* holds code"):
        cnnzoo.create_model("lenet5", weights=path)


def test_sha256_is_checked_before_loading(resnet18_file):
    theirs, path = resnet18_file
    digest = file_sha256(path)
    assert load_pretrained(cnnzoo.create_model("resnet18"), path, sha256=digest.upper()).sha256 == digest
    load_pretrained(cnnzoo.create_model("resnet18"), path, sha256=digest[:8])  # torchvision's file-name prefix

    ours = cnnzoo.create_model("resnet18")
    before = ours.conv1.weight.detach().clone()
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(cnnzoo.WeightsError, match=f"SHA-256 is {digest}, expected {wrong}.*nothing was loaded"):
        load_pretrained(ours, path, sha256=wrong)
    assert torch.equal(ours.conv1.weight, before)
    with pytest.raises(cnnzoo.WeightsError, match="expected 8 to 64 hexadecimal digits"):
        load_pretrained(ours, path, sha256="abc")


def test_unknown_and_missing_files(tmp_path):
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(cnnzoo.WeightsError, match=r"weights.bin: a GIF image: not a weights file cnnzoo reads"):
        detect_format(junk)
    junk.write_bytes(b"\x00\x01junk" + bytes(100))
    with pytest.raises(
        cnnzoo.WeightsError, match=r"weights.bin: an unrecognised file \(it starts with b'\\x00\\x01junk"
    ):
        detect_format(junk)
    with pytest.raises(cnnzoo.WeightsError, match="nope.pth: no such file"):
        cnnzoo.create_model("lenet5", weights=tmp_path / "nope.pth")


# --------------------------------------------------------------------------------------------------
# cnnzoo convert
# --------------------------------------------------------------------------------------------------


def test_convert_writes_a_cnnzoo_checkpoint(tmp_path, resnet18_file, capsys):
    theirs, path = resnet18_file
    dest = tmp_path / "resnet18.safetensors"
    assert main(["convert", str(path), str(dest), "--model", "resnet18", "--sha256", file_sha256(path)[:12]]) == 0
    out = capsys.readouterr().out
    assert f"read {path}: PyTorch state dict, keys as stored, sha256" in out and f"wrote {dest}" in out

    meta = read_metadata(dest)
    assert meta["model_args"] == {"name": "resnet18", "num_classes": 1000, "in_chans": 3}
    assert meta["converted_from"] == {
        "file": "resnet18.pth",
        "format": "torch",
        "sha256": file_sha256(path),
        "notes": [],
    }
    assert meta["preprocessing"]["image_size"] == 224
    assert max_diff(theirs, load_model(dest), images(32)) <= 1e-5

    dest10 = tmp_path / "resnet18-10.safetensors"
    assert main(["convert", str(path), str(dest10), "--model", "resnet18", "--num-classes", "10", "--reset-head"]) == 0
    assert "reset the head: fc.weight, fc.bias" in capsys.readouterr().out
    assert read_metadata(dest10)["model_args"]["num_classes"] == 10
    assert load_model(dest10).fc.out_features == 10

    assert main(["convert", str(path), str(tmp_path / "x.pth"), "--model", "resnet18"]) == 2
    assert "a cnnzoo checkpoint is a .safetensors file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Import paths from before the weights/ package
# --------------------------------------------------------------------------------------------------


def test_old_import_paths_name_the_same_functions():
    """cnnzoo.compat.* and the weights-file names in cnnzoo.checkpoint re-export weights/ (pointing down)."""
    import cnnzoo.checkpoint
    import cnnzoo.compat.keras
    import cnnzoo.compat.torchvision
    import cnnzoo.weights.cnnzoo_format
    import cnnzoo.weights.keras
    import cnnzoo.weights.state_dict
    import cnnzoo.weights.torchvision

    old_and_new = [
        (cnnzoo.compat.keras, cnnzoo.weights.keras, ["load_keras_model", "read_keras_file", "keras_state_dict"]),
        (
            cnnzoo.compat.torchvision,
            cnnzoo.weights.torchvision,
            ["convert_torchvision_state_dict", "load_torchvision_state_dict"],
        ),
        (cnnzoo.compat.torchvision, cnnzoo.weights.state_dict, ["load_state_dict_checked"]),
        (
            cnnzoo.checkpoint,
            cnnzoo.weights.cnnzoo_format,
            ["save_weights", "read_metadata", "load_weights", "resolve_checkpoint"],
        ),
        (cnnzoo.checkpoint, cnnzoo.weights.state_dict, ["unwrap"]),
    ]
    for old, new, names in old_and_new:
        for name in names:
            assert getattr(old, name) is getattr(new, name), f"{old.__name__}.{name}"
    assert cnnzoo.load_pretrained is cnnzoo.weights.load_pretrained
    assert cnnzoo.load_torchvision_state_dict is cnnzoo.weights.torchvision.load_torchvision_state_dict
