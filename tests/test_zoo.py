"""Properties every zoo model must have: exact counts, any num_classes / in_chans, a tight declared
minimum input size, and clear errors for bad input before the forward pass."""

import pytest
import torch

import cnnzoo
from cnnzoo.counting import count_params
from cnnzoo.registry import register_model

from .anchors import KERAS_PARAMS, TORCHVISION_PARAMS

ALL = cnnzoo.list_models()


def meta_model(name, **kw):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kw)


def test_the_zoo_has_every_model_the_seed_names():
    expected = {
        "lenet5", "alexnet",
        "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
        "googlenet", "inception_v3",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "resnet50_keras", "resnet101_keras", "resnet152_keras", "inception_v3_keras",
    }  # fmt: skip
    assert expected <= set(ALL), sorted(expected - set(ALL))


@pytest.mark.parametrize("name", sorted(k for k in TORCHVISION_PARAMS if "+" not in k))
def test_torchvision_style_counts_match_anchors(name):
    assert count_params(meta_model(name)).total == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(KERAS_PARAMS))
def test_keras_style_counts_match_anchors(name):
    total, trainable, frozen = KERAS_PARAMS[name]
    c = count_params(meta_model(name), style="keras")
    assert c.total == total
    if trainable is not None:
        assert (c.trainable, c.non_trainable) == (trainable, frozen)


@pytest.mark.parametrize("name", ALL)
def test_metadata_is_complete(name):
    info = cnnzoo.get_model_info(name)
    c, h, w = info.input_size
    assert info.paper and info.url.startswith("http")
    assert len(info.mean) == len(info.std) == c
    assert 1 <= info.min_size <= min(h, w)
    assert info.family in name or info.family in {"resnet", "inception"}


@pytest.mark.parametrize("name", ALL)
def test_any_num_classes_and_in_chans(name):
    m = meta_model(name, num_classes=7, in_chans=5).eval()
    size = cnnzoo.get_model_info(name).input_size[1]
    assert m(torch.empty(2, 5, size, size, device="meta")).shape == (2, 7)


@pytest.mark.parametrize("name", ALL)
def test_declared_minimum_input_size_is_exact(name):
    """min_size works, and min_size - 1 really fails inside the network (checks off) -- so the declared
    minimum is the true one -- and is refused up front with a clear message (checks on)."""
    info = cnnzoo.get_model_info(name)
    c, n = info.input_size[0], info.min_size
    m = meta_model(name).eval()
    assert m(torch.empty(1, c, n, n, device="meta")).shape == (1, info.num_classes)
    m.check_inputs = False
    with pytest.raises(RuntimeError):
        m(torch.empty(1, c, n - 1, n - 1, device="meta"))
    m.check_inputs = True
    with pytest.raises(
        cnnzoo.InputShapeError, match=rf"{name} needs an input of at least {n}x{n}.*got {n - 1}x{n - 1}"
    ):
        m(torch.empty(1, c, n - 1, n - 1, device="meta"))


@pytest.mark.parametrize("name", ALL)
def test_bad_input_is_refused_with_a_clear_message(name):
    info = cnnzoo.get_model_info(name)
    c, h, w = info.input_size
    m = meta_model(name).eval()
    wrong_c = 3 if c == 1 else 1
    with pytest.raises(
        cnnzoo.InputShapeError, match=rf"{name} expects {c} input channels?, got {wrong_c}.*in_chans={wrong_c}"
    ):
        m(torch.empty(1, wrong_c, h, w, device="meta"))
    with pytest.raises(cnnzoo.InputShapeError, match=rf"{name} expects .*3-d tensor.*unsqueeze\(0\)"):
        m(torch.empty(c, h, w, device="meta"))
    with pytest.raises(cnnzoo.InputShapeError, match=rf"{name} expects .*5-d tensor"):
        m(torch.empty(1, 1, c, h, w, device="meta"))
    if c != 1:  # channels-last data gets a hint to permute
        with pytest.raises(cnnzoo.InputShapeError, match=r"permute\(0, 3, 1, 2\)"):
            m(torch.empty(1, h, w, c, device="meta"))
    with pytest.raises(cnnzoo.InputShapeError, match="expects a torch.Tensor"):
        m([[1.0]])


def test_one_size_too_small_names_the_sizes_that_work():
    m = meta_model("inception_v3")
    with pytest.raises(cnnzoo.InputShapeError) as e:
        m(torch.empty(1, 3, 32, 32, device="meta"))
    msg = str(e.value)
    assert "inception_v3" in msg and "32x32" in msg and f"{m.min_size}x{m.min_size}" in msg and "299x299" in msg


def test_unknown_model_lists_close_matches():
    with pytest.raises(cnnzoo.UnknownModelError, match=r"unknown model 'resnet05'.*Did you mean.*resnet50"):
        cnnzoo.create_model("resnet05")
    with pytest.raises(KeyError):  # still a KeyError for code that catches that
        cnnzoo.get_model_info("vgg61")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_num_classes_and_in_chans_must_be_positive_integers(bad):
    if bad != 0:  # num_classes=0 is the headless network (tests/test_backbone.py)
        with pytest.raises(ValueError, match="lenet5: num_classes must be a non-negative integer"):
            cnnzoo.create_model("lenet5", num_classes=bad)
    with pytest.raises(ValueError, match="lenet5: in_chans must be a positive integer"):
        cnnzoo.create_model("lenet5", in_chans=bad)


def test_unknown_option_names_the_model():
    with pytest.raises(TypeError, match="vgg16: .*'colour'"):
        cnnzoo.create_model("vgg16", colour="red")


@pytest.mark.parametrize("name", ALL)
def test_every_builder_refuses_an_unknown_option_by_its_name(name):
    """One builder signature for all, ``name(num_classes, in_chans, **options)``, yet as strict as explicit keywords."""
    with pytest.raises(TypeError, match=rf"^{name}: {name}\(\) got an unexpected keyword argument 'no_such_option'$"):
        meta_model(name, no_such_option=1)


def test_keras_twins_declare_where_their_layers_go():
    """The Keras reader asks the registry, so every model with a Keras counterpart declares its layer names."""
    twins = [n for n in ALL if cnnzoo.get_model_info(n).keras]
    assert twins == ["vgg16", "vgg19", "inception_v3_keras", "resnet50_keras", "resnet101_keras", "resnet152_keras"]
    assert [n for n in ALL if cnnzoo.get_model_info(n).keras_names is not None] == twins
    assert cnnzoo.get_model_info("vgg16").keras_flatten == {"fc1": (512, 7, 7)}
    with pytest.raises(RuntimeError, match="needs keras_names"):
        register_model(family="x", paper="p", url="http://x", input_size=(3, 8, 8), min_size=1, keras="X")(lambda: None)
