"""Inception v3: torchvision parity, Keras parity (counts and outputs), blocks, input limits."""

import functools
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import keras
import numpy as np
import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo import InputShapeError, WeightsError, create_model, load_torchvision_state_dict
from cnnzoo.counting import count_params
from cnnzoo.layers import ConvBNAct
from cnnzoo.models.inception import (
    INCEPTION_V3_AUX_MIN_SIZE,
    INCEPTION_V3_BLOCKS,
    InceptionA,
    InceptionC,
    InceptionE,
    InceptionOutputs,
    keras_layer_names,
)
from cnnzoo.weights.keras import load_keras_model

from .anchors import KERAS_PARAMS, TORCHVISION_PARAMS

MIN = cnnzoo.get_model_info("inception_v3").min_size
KERAS_SIZE_2 = (139, 118)  # a second, non-square input size for the Keras comparisons (the grids: 3x2 at 8x8)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _tv_inception(aux_logits: bool, transform_input: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.inception_v3(
        weights=None, aux_logits=aux_logits, transform_input=transform_input, init_weights=False
    )


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


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- blocks and table -----------------------------------------------------------------------------


def test_table_chains_channels_and_grids():
    """Each block's output feeds the next block's in_channels; grids go 35 -> 17 -> 8 (here 7 -> 3 -> 1)."""
    x = torch.randn(1, 192, 7, 7)
    sizes = []
    with torch.no_grad():
        for spec, _nxt in zip(INCEPTION_V3_BLOCKS, INCEPTION_V3_BLOCKS[1:] + [None]):
            assert x.shape[1] == spec.in_channels, spec.torchvision_name
            x = spec.block(spec.in_channels, **spec.options).eval()(x)
            sizes.append(x.shape[-1])
    assert x.shape[1] == 2048
    assert sizes == [7, 7, 7, 3, 3, 3, 3, 3, 1, 1, 1]
    assert [s.keras_name for s in INCEPTION_V3_BLOCKS] == [f"mixed{i}" for i in range(11)]


def test_count_include_pad_is_the_border_average():
    """torchvision averages the border 3x3 pool over 9 (zeros counted); Keras over the real values."""
    x = torch.ones(1, 4, 3, 3)
    for cls, opts in ((InceptionA, {"pool_features": 2}), (InceptionC, {"channels_7x7": 2}), (InceptionE, {})):
        tv_like = cls(4, **opts).eval()
        keras_like = cls(4, **opts, count_include_pad=False).eval()
        keras_like.load_state_dict(tv_like.state_dict())
        pooled = {}
        for name, block in (("tv", tv_like), ("keras", keras_like)):
            block.branch_pool.register_forward_hook(lambda m, i, o, name=name: pooled.__setitem__(name, i[0]))
            with torch.no_grad():
                block(x)
        assert pooled["keras"].eq(1).all()  # the mean of ones is one
        assert pooled["tv"][0, 0, 0, 0] == pytest.approx(4 / 9) and pooled["tv"][0, 0, 1, 1] == 1


# --- parameter counts -----------------------------------------------------------------------------


# With the aux head: the anchor. Without: the same minus the head (conv0 98,304 + BN 256, conv1
# 2,457,600 + BN 1,536, fc 769,000 = 3,326,696).
@pytest.mark.parametrize("aux, expected", [(True, TORCHVISION_PARAMS["inception_v3"]), (False, 27_161_264 - 3_326_696)])
def test_param_counts_torch(aux, expected):
    assert count_params(create_model("inception_v3", aux_logits=aux)).total == expected
    assert sum(p.numel() for p in _tv_inception(aux).parameters()) == expected


def test_param_counts_keras(keras_model_75):
    ours = count_params(create_model("inception_v3_keras"), style="keras")
    assert (
        (ours.total, ours.trainable, ours.non_trainable)
        == KERAS_PARAMS["inception_v3_keras"]
        == (23_851_784, 23_817_352, 34_432)
    )
    assert keras_model_75.count_params() == ours.total
    size = lambda ws: sum(int(np.prod(w.shape)) for w in ws)  # noqa: E731
    assert size(keras_model_75.trainable_weights) == ours.trainable
    assert size(keras_model_75.non_trainable_weights) == ours.non_trainable
    # torch-style, the BN statistics are buffers, not parameters.
    assert count_params(create_model("inception_v3_keras")).total == 23_817_352


# --- torchvision parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("aux", [True, False])
def test_same_outputs_as_torchvision(aux):
    tv = _tv_inception(aux)
    _randomise_bn(tv)
    ours = create_model("inception_v3", aux_logits=aux)
    load_torchvision_state_dict(ours, tv.state_dict())
    assert list(ours.state_dict()) == list(tv.state_dict())  # identical keys, in the same order

    tv.eval(), ours.eval()
    x = _images(2, MIN, MIN, seed=2)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert isinstance(got, torch.Tensor)  # eval: logits only, even with the aux head
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    # Training mode: batch statistics, dropout (same seed -> same mask), the aux head (which needs
    # 299x299). Each model updates its own BN running statistics; they must come out equal too.
    tv.train(), ours.train()
    size = INCEPTION_V3_AUX_MIN_SIZE if aux else MIN
    x = _images(2, size, size, seed=3)
    with torch.no_grad():
        torch.manual_seed(4)
        expected = tv(x)
        torch.manual_seed(4)
        got = ours(x)
    if aux:
        assert isinstance(got, InceptionOutputs) and got._fields == ("logits", "aux_logits")
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.aux_logits, expected.aux_logits, rtol=0, atol=1e-5)
    else:
        assert isinstance(got, torch.Tensor)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    for (k, a), b in zip(ours.state_dict().items(), tv.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=k)


def test_mean_std_reproduce_torchvision_transform_input():
    """torchvision's weights run with transform_input=True on ImageNet-normalised images; our metadata
    (mean = std = 0.5, no transform_input) must feed the network the very same tensor."""
    info = cnnzoo.get_model_info("inception_v3")
    tv = _tv_inception(False, transform_input=True).eval()
    ours = create_model("inception_v3", aux_logits=False).eval()
    load_torchvision_state_dict(ours, tv.state_dict())
    pixels = torch.rand(2, 3, 80, 80, generator=torch.Generator().manual_seed(5))
    imagenet = torchvision.transforms.Normalize(cnnzoo.registry.IMAGENET_MEAN, cnnzoo.registry.IMAGENET_STD)
    with torch.no_grad():
        expected = tv(imagenet(pixels))
        got = ours(torchvision.transforms.Normalize(info.mean, info.std)(pixels))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# --- Keras parity ---------------------------------------------------------------------------------


@functools.cache
def _keras_inception(h: int, w: int):
    """keras.applications.InceptionV3 with random weights *and* random BN statistics, logits out."""
    assert keras.backend.backend() == "torch", "keras was imported with another backend"
    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(weights=None, input_shape=(h, w, 3), classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            beta, mean, var = layer.get_weights()  # no gamma: scale=False
            layer.set_weights(
                [
                    rng.normal(0, 0.2, beta.shape).astype("float32"),
                    rng.normal(0, 0.2, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, var.shape).astype("float32"),
                ]
            )
    return model


@pytest.fixture(scope="module")
def keras_model_75():
    return _keras_inception(MIN, MIN)


def _keras_predict(kmodel, x_nchw: torch.Tensor, training: bool = False) -> torch.Tensor:
    out = kmodel(x_nchw.permute(0, 2, 3, 1).numpy(), training=training)  # Keras wants NHWC
    return torch.from_numpy(np.asarray(keras.ops.convert_to_numpy(out)))


def _ours_from_keras(kmodel):
    ours = create_model("inception_v3_keras")
    name_map = keras_layer_names(ours, kmodel)
    assert len(name_map) == 94 + 94 + 1  # every conv, every BN, the classifier
    return load_keras_model(ours, kmodel, name_map)


@pytest.mark.parametrize("hw", [(MIN, MIN), KERAS_SIZE_2])
def test_same_outputs_as_keras(hw, keras_model_75):
    kmodel = keras_model_75 if hw == (MIN, MIN) else _keras_inception(*hw)
    ours = _ours_from_keras(kmodel).eval()
    x = _images(2, *hw, seed=6)
    expected = _keras_predict(kmodel, x)
    with torch.no_grad():
        got = ours(x)
    assert expected.abs().max() > 0.1  # a real signal, not a collapsed one
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)

    # The comparison is sharp enough to see the average pools' border rule: counting the padding in
    # (torchvision's way) is visibly wrong for the Keras model.
    for m in ours.modules():
        if hasattr(m, "count_include_pad"):
            m.count_include_pad = True
    with torch.no_grad():
        assert (ours(x) - expected).abs().max() > 1e-2


def test_training_mode_matches_keras():
    """Training mode: batch statistics, and the running-statistics update (Keras momentum 0.99 ==
    torch momentum 0.01).

    Training-mode BN divides by the spread of the batch, which magnifies float32 rounding layer after
    layer: here our own float32 and float64 logits differ by about 2e-4, and Keras' (whose torch
    backend takes the variance as E[x^2] - E[x]^2) by about 4e-4 from ours. Hence atol 2e-3 on the
    logits, far below what any structural difference gives (eval-mode parity above is 1e-4). At 75x75,
    batch 2 the 1x1 maps leave two values per channel and the noise reaches 5e-2: not a size to test at.
    """
    kmodel = _keras_inception(*KERAS_SIZE_2)
    saved = kmodel.get_weights()
    try:
        ours = _ours_from_keras(kmodel).train()
        before = {k: v.clone() for k, v in ours.state_dict().items()}
        seen = {}  # values per channel each BN normalises over, N * H * W
        for name, m in ours.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.register_forward_hook(
                    lambda m, i, o, name=name: seen.__setitem__(name, i[0].numel() // i[0].shape[1])
                )
        x = _images(4, *KERAS_SIZE_2, seed=7)
        expected = _keras_predict(kmodel, x, training=True)  # updates Keras' moving statistics once
        with torch.no_grad():
            got = ours(x)  # and ours
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)

        name_map = keras_layer_names(ours, kmodel)
        state = ours.state_dict()
        for layer in kmodel.layers:
            if not isinstance(layer, keras.layers.BatchNormalization):
                continue
            path = name_map[layer.name]
            _, k_mean, k_var = (torch.from_numpy(np.asarray(a)) for a in layer.get_weights())
            torch.testing.assert_close(state[f"{path}.running_mean"], k_mean, rtol=1e-4, atol=1e-5)
            # Keras moves towards the biased batch variance, PyTorch towards the unbiased one
            # (times n / (n - 1)): a difference left in the shared BN layer, largest on small maps.
            n, old = seen[path], before[f"{path}.running_var"]
            expected_var = 0.99 * old + (k_var - 0.99 * old) * n / (n - 1)
            torch.testing.assert_close(state[f"{path}.running_var"], expected_var, rtol=1e-4, atol=1e-5)
        assert len(seen) == 94
    finally:
        kmodel.set_weights(saved)


def test_keras_layer_names_maps_by_structure(keras_model_75):
    ours = create_model("inception_v3_keras")
    name_map = keras_layer_names(ours, keras_model_75)
    convs = [layer for layer in keras_model_75.layers if isinstance(layer, keras.layers.Conv2D)]
    # One to one onto our modules: every conv and BN of every ConvBNAct, and the classifier.
    units = [n for n, m in ours.named_modules() if isinstance(m, ConvBNAct)]
    assert sorted(name_map.values()) == sorted(
        [f"{u}.conv" for u in units] + [f"{u}.bn" for u in units] + ["predictions"]
    )
    assert name_map["predictions"] == "predictions"
    for layer in convs:
        kh, kw, cin, cout = layer.kernel.shape
        conv = ours.get_submodule(name_map[layer.name])
        assert tuple(conv.weight.shape) == (cout, cin, kh, kw)
        assert conv.stride == tuple(layer.strides)
        # Keras' 'same' appears only at stride 1 with odd kernels (3x3, 5x5, 1x7, 7x1, 1x3, 3x1),
        # where it pads k // 2 on each side, as our explicit paddings do; 'valid' is no padding.
        if layer.padding == "same":
            assert tuple(layer.strides) == (1, 1) and kh % 2 == 1 and kw % 2 == 1
            assert conv.padding == (kh // 2, kw // 2)
        else:
            assert layer.padding == "valid" and conv.padding == (0, 0)
    # The pools: nine 3x3 / stride 1 'same' average pools (one per A, C, E block, excluding the
    # padding there), and the stride-2 'valid' max-pools (two in the stem, one each in B and D).
    avg = [layer for layer in keras_model_75.layers if isinstance(layer, keras.layers.AveragePooling2D)]
    assert {(tuple(p.pool_size), tuple(p.strides), p.padding) for p in avg} == {((3, 3), (1, 1), "same")}
    assert len(avg) == sum(getattr(m, "count_include_pad", None) is False for m in ours.modules()) == 9
    pools = [layer for layer in keras_model_75.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert {(tuple(p.pool_size), tuple(p.strides), p.padding) for p in pools} == {((3, 3), (2, 2), "valid")}
    assert len(pools) == 4
    assert {p.split(".")[0] for p in name_map.values()} >= {f"mixed{i}" for i in range(11)}


def test_keras_layer_names_refuses_another_model():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inp)
    x = keras.layers.BatchNormalization(scale=False)(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(WeightsError, match="1 Conv2D, 1 BatchNormalization and 1 Dense"):
        keras_layer_names(create_model("inception_v3_keras"), keras.Model(inp, out))


# --- input limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, opts", [("inception_v3", {}), ("inception_v3", {"aux_logits": False}), ("inception_v3_keras", {})]
)
def test_min_size_is_the_true_minimum(name, opts):
    assert cnnzoo.get_model_info(name).min_size == MIN == 75
    model = create_model(name, **opts)
    # Eval mode for all; training mode too where no aux head runs.
    modes = [False] if opts.get("aux_logits", name == "inception_v3") else [False, True]
    for training in modes:
        model.train(training)
        model.check_inputs = False
        with torch.no_grad():
            assert model(torch.randn(2, 3, MIN, MIN)).shape == (2, 1000)
            with pytest.raises(RuntimeError):
                model(torch.randn(2, 3, MIN - 1, MIN - 1))
            with pytest.raises(RuntimeError):  # one side too small is enough
                model(torch.randn(2, 3, MIN - 1, MIN + 20))
        model.check_inputs = True
        with pytest.raises(InputShapeError, match=rf"{name} needs an input of at least 75x75 .*got 74x74"):
            model(torch.randn(2, 3, MIN - 1, MIN - 1))


def test_aux_head_needs_299_in_training():
    """The aux head's 5x5/3 pool and unpadded 5x5 conv need a 17x17 Mixed_6e map: 299x299 input.
    (299 itself is shown to work, in training mode, by test_same_outputs_as_torchvision.)"""
    model = create_model("inception_v3").train()
    x = torch.randn(2, 3, INCEPTION_V3_AUX_MIN_SIZE - 1, INCEPTION_V3_AUX_MIN_SIZE - 1)
    with pytest.raises(InputShapeError, match=r"aux_logits=True needs an input of at least 299x299 .*got 298x298"):
        model(x)
    model.check_inputs = False
    with pytest.raises(RuntimeError), torch.no_grad():
        model(x)
    model.eval().check_inputs = True
    with torch.no_grad():
        assert model(x[:, :, :MIN, :MIN]).shape == (2, 1000)  # in eval mode the head does not run


def test_bad_inputs_are_named():
    model = create_model("inception_v3").eval()
    with pytest.raises(InputShapeError, match=r"inception_v3 needs an input of at least 75x75 .*got 32x32"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(InputShapeError, match=r"inception_v3 expects 3 input channels, got 1"):
        model(torch.randn(2, 1, 80, 80))
    keras_flavour = create_model("inception_v3_keras").eval()
    with pytest.raises(
        InputShapeError, match=r"inception_v3_keras expects 3 input channels in dim 1, got 299.*channels-last.*permute"
    ):
        keras_flavour(torch.randn(1, 299, 299, 3))


def test_outputs_and_options():
    model = create_model("inception_v3", num_classes=10, in_chans=1, aux_logits=False).train()
    out = model(torch.randn(2, 1, MIN, MIN))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    keras_flavour = create_model("inception_v3_keras", num_classes=7).train()
    assert keras_flavour(torch.randn(2, 3, MIN, MIN)).shape == (2, 7)  # no aux head, no tuple
    with pytest.raises(TypeError, match="inception_v3_keras"):
        create_model("inception_v3_keras", aux_logits=True)


def test_registry_metadata():
    tv_info, k_info = cnnzoo.get_model_info("inception_v3"), cnnzoo.get_model_info("inception_v3_keras")
    for info in (tv_info, k_info):
        assert info.input_size == (3, 299, 299) and "1512.00567" in info.paper
        assert info.mean == info.std == (0.5, 0.5, 0.5)  # Keras preprocess_input: x / 127.5 - 1
    assert tv_info.torchvision == "inception_v3" and tv_info.torchvision_key is None  # same keys
    assert k_info.keras == "InceptionV3" and k_info.torchvision is None
    model = create_model("inception_v3_keras")
    assert (model.model_name, model.min_size, model.native_size) == ("inception_v3_keras", 75, 299)
