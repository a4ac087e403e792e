"""GoogLeNet: the naive Inception block, torchvision parity, parameter counts, input limits."""

import copy
import functools
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import numpy as np
import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo import InputShapeError, create_model, load_torchvision_state_dict
from cnnzoo.counting import count_params
from cnnzoo.models.googlenet import GOOGLENET_CONFIGS, GoogLeNetOutputs, Inception, NaiveInception

from .anchors import TORCHVISION_PARAMS

MIN = cnnzoo.get_model_info("googlenet").min_size
GOOGLENET_INCEPTIONS = GOOGLENET_CONFIGS["googlenet"]  # the paper's table 1, one row per Inception module


@functools.cache
def _tv_googlenet_cached(aux_logits: bool, transform_input: bool) -> torch.nn.Module:
    torch.manual_seed(0)  # torchvision's init (trunc_normal_) takes seconds: build each variant once
    return torchvision.models.googlenet(
        weights=None, aux_logits=aux_logits, transform_input=transform_input, init_weights=True
    )


def _tv_googlenet(aux_logits: bool, transform_input: bool = False) -> torch.nn.Module:
    """A fresh copy of torchvision's GoogLeNet (tests change BN statistics and train it)."""
    return copy.deepcopy(_tv_googlenet_cached(aux_logits, transform_input))


def _randomise_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine terms, so eval-mode BN is actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


# --- the naive Inception module ------------------------------------------------------------------


def test_naive_inception_shape_channels_and_params():
    block = NaiveInception(192, 64, 128, 32)  # the seed's filters=[64, 128, 32]
    x = torch.randn(2, 192, 13, 14)  # odd and even sizes: 'same' keeps both
    y = block(x)
    assert y.shape == (2, 64 + 128 + 32 + 192, 13, 14)
    assert block.out_channels == 416
    # conv k x k from c_in to c_out: k*k*c_in*c_out weights + c_out biases; the pool has none.
    c = 192
    expected = (1 * c * 64 + 64) + (9 * c * 128 + 128) + (25 * c * 32 + 32)
    assert count_params(block).total == expected == 387_296
    # The pooling branch passes the input through a 3x3 / stride 1 max-pool, untouched otherwise.
    torch.testing.assert_close(y[:, 224:], torch.nn.functional.max_pool2d(x, 3, 1, 1), rtol=0, atol=0)
    # ReLU on the conv branches.
    assert (y[:, :224] >= 0).all()


def test_naive_inception_matches_the_seed_keras_block_done_right():
    """The seed's Keras block with the list fixed (concatenate([...])), same weights -> same output."""
    import keras

    assert keras.backend.backend() == "torch", "tests/conftest.py sets KERAS_BACKEND=torch before keras is imported"
    c, (f1, f3, f5) = 8, (4, 6, 3)
    inp = keras.Input((9, 9, c))
    conv1x1 = keras.layers.Conv2D(f1, (1, 1), padding="same", activation="relu")(inp)
    conv3x3 = keras.layers.Conv2D(f3, (3, 3), padding="same", activation="relu")(inp)
    conv5x5 = keras.layers.Conv2D(f5, (5, 5), padding="same", activation="relu")(inp)
    max_pool = keras.layers.MaxPooling2D((3, 3), strides=(1, 1), padding="same")(inp)
    out = keras.layers.concatenate([conv1x1, conv3x3, conv5x5, max_pool])
    kmodel = keras.Model(inp, out)

    block = NaiveInception(c, f1, f3, f5)
    rng = np.random.default_rng(0)
    convs = [layer for layer in kmodel.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, branch in zip(convs, (block.branch1, block.branch2, block.branch3)):
        kernel, bias = layer.get_weights()
        kernel = rng.standard_normal(kernel.shape).astype("float32")
        bias = rng.standard_normal(bias.shape).astype("float32")
        layer.set_weights([kernel, bias])
        branch[0].weight.data.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        branch[0].bias.data.copy_(torch.from_numpy(bias))

    x = rng.standard_normal((2, 9, 9, c)).astype("float32")
    expected = keras.ops.convert_to_numpy(kmodel(x))
    got = block(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# --- the Inception module and the network --------------------------------------------------------


def test_inception_module_channels():
    x = torch.randn(2, 192, 7, 7)
    for k in (3, 5):
        m = Inception(*GOOGLENET_INCEPTIONS["inception3a"], branch3_kernel=k)
        assert m(x).shape == (2, 64 + 128 + 32 + 32, 7, 7)
    with pytest.raises(ValueError, match="branch3_kernel"):
        Inception(*GOOGLENET_INCEPTIONS["inception3a"], branch3_kernel=4)


def test_table_chains_channels():
    """Each module's in_channels is the previous module's output (#1x1 + #3x3 + #5x5 + pool proj)."""
    rows = list(GOOGLENET_INCEPTIONS.values())
    for prev, row in zip(rows, rows[1:]):
        assert row[0] == prev[1] + prev[3] + prev[5] + prev[6]
    assert sum(rows[-1][i] for i in (1, 3, 5, 6)) == 1024


@pytest.mark.parametrize(
    "aux, expected", [(False, TORCHVISION_PARAMS["googlenet"]), (True, TORCHVISION_PARAMS["googlenet+aux"])]
)
def test_param_counts(aux, expected):
    assert expected == (13_004_888 if aux else 6_624_904)
    ours = create_model("googlenet", aux_logits=aux)
    assert count_params(ours).total == expected
    assert sum(p.numel() for p in _tv_googlenet(aux).parameters()) == expected


def test_branch3_kernel_5_is_the_paper_5x5():
    model = create_model("googlenet", branch3_kernel=5)
    assert model.inception3a.branch3[1].conv.kernel_size == (5, 5)
    # Only the "5x5" convs change: (25 - 9) * #5x5reduce * #5x5 more weights per module.
    extra = sum(16 * red * out for (_, _, _, _, red, out, _) in GOOGLENET_INCEPTIONS.values())
    assert extra == 380_928
    assert count_params(model).total == 6_624_904 + extra == 7_005_832
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize("size", [MIN, 77])
def test_same_outputs_as_torchvision(aux, size):
    tv = _tv_googlenet(aux)
    _randomise_bn(tv)
    ours = create_model("googlenet", aux_logits=aux)
    load_torchvision_state_dict(ours, tv.state_dict())
    assert list(ours.state_dict()) == list(tv.state_dict())  # identical keys, in the same order
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))

    tv.eval(), ours.eval()
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert isinstance(got, torch.Tensor)  # eval: logits only, even with aux heads
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    # Training mode: batch statistics, dropout (same seed -> same masks), aux heads. Each model
    # updates its own BN running statistics; they must come out equal too.
    tv.train(), ours.train()
    with torch.no_grad():
        torch.manual_seed(3)
        expected = tv(x)
        torch.manual_seed(3)
        got = ours(x)
    if aux:
        assert isinstance(got, GoogLeNetOutputs) and got._fields == ("logits", "aux_logits2", "aux_logits1")
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
        assert not torch.equal(got.aux_logits1, got.aux_logits2)
    else:
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    for (k, a), b in zip(ours.state_dict().items(), tv.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)


def test_dropout_is_active_in_training():
    ours = create_model("googlenet").train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)
        a = ours(x)
        torch.manual_seed(1)
        b = ours(x)
    assert not torch.allclose(a, b)


def test_mean_std_reproduce_torchvision_transform_input():
    """torchvision's weights run with transform_input=True on ImageNet-normalised images; our metadata
    (mean = std = 0.5, no transform_input) must feed the network the very same tensor."""
    info = cnnzoo.get_model_info("googlenet")
    tv = _tv_googlenet(False, transform_input=True).eval()
    ours = create_model("googlenet").eval()
    load_torchvision_state_dict(ours, tv.state_dict())
    pixels = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    imagenet = torchvision.transforms.Normalize(cnnzoo.registry.IMAGENET_MEAN, cnnzoo.registry.IMAGENET_STD)
    with torch.no_grad():
        expected = tv(imagenet(pixels))
        got = ours(torchvision.transforms.Normalize(info.mean, info.std)(pixels))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# --- input limits ---------------------------------------------------------------------------------


def test_min_size_is_the_true_minimum():
    assert MIN == 15
    for aux in (False, True):
        model = create_model("googlenet", aux_logits=aux)
        for training in (False, True):
            model.train(training)
            model.check_inputs = False
            with torch.no_grad():
                out = model(torch.randn(2, 3, MIN, MIN))
                logits = out.logits if isinstance(out, GoogLeNetOutputs) else out
                assert logits.shape == (2, 1000)
                with pytest.raises(RuntimeError):
                    model(torch.randn(2, 3, MIN - 1, MIN - 1))
                with pytest.raises(RuntimeError):  # one side too small is enough
                    model(torch.randn(2, 3, MIN, MIN - 1))
            model.check_inputs = True
            with pytest.raises(InputShapeError, match=r"googlenet needs an input of at least 15x15 .*got 14x14"):
                model(torch.randn(2, 3, MIN - 1, MIN - 1))


def test_bad_inputs_are_named():
    model = create_model("googlenet").eval()
    with pytest.raises(InputShapeError, match=r"googlenet expects 3 input channels, got 1"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(InputShapeError, match=r"permute"):  # channels-last by mistake
        model(torch.randn(2, 64, 64, 3))
    with pytest.raises(InputShapeError, match=r"got 10x64"):
        model(torch.randn(2, 3, 10, 64))
    with pytest.raises(InputShapeError, match=r"unsqueeze"):
        model(torch.randn(3, 64, 64))


def test_in_chans_and_num_classes():
    model = create_model("googlenet", num_classes=10, in_chans=1, aux_logits=True).train()
    out = model(torch.randn(2, 1, 32, 32))
    assert [t.shape for t in out] == [(2, 10)] * 3
    with pytest.raises(TypeError, match="googlenet"):
        create_model("googlenet", transform_input=True)  # deliberately not an option


def test_registry_metadata():
    info = cnnzoo.get_model_info("googlenet")
    assert info.input_size == (3, 224, 224) and info.torchvision == "googlenet"
    assert "1409.4842" in info.paper and info.torchvision_key is None  # same keys as torchvision
    model = create_model("googlenet")
    assert (model.model_name, model.min_size, model.native_size, model.in_chans) == ("googlenet", 15, 224, 3)
