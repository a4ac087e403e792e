"""ResNet: parameter counts, torchvision and Keras parity, shortcut placement, input sizes.

Everything runs on CPU in fp32 with small inputs (32x32 / 64x64, batch 2) and fixed seeds.
"""

from __future__ import annotations

import copy
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this module

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.counting import count_params
from cnnzoo.models.resnet import (
    BLOCK_TYPES,
    CIFAR_RESNET_CONFIGS,
    KERAS_RESNET_CONFIGS,
    RESNET_CONFIGS,
    BasicBlock,
    Bottleneck,
    ShortcutA,
    keras_name_map,
)
from cnnzoo.weights.keras import load_keras_model
from cnnzoo.weights.torchvision import convert_torchvision_state_dict

IMAGENET_NAMES = list(RESNET_CONFIGS)
CIFAR_NAMES = list(CIFAR_RESNET_CONFIGS)
KERAS_NAMES = list(KERAS_RESNET_CONFIGS)
ALL_NAMES = IMAGENET_NAMES + CIFAR_NAMES + KERAS_NAMES

# Keras 3 with torch tensors under numpy 2 warns on every weight read; it is noise for these tests.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return cnnzoo.create_model(name, **kwargs)


def images(n: int = 2, size: int = 64, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def randomise_bn(model: nn.Module, seed: int = 2) -> None:
    """Give every BN non-trivial statistics and affine parameters, so that eval mode really uses them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


def keras_module():
    import keras  # a test dependency: its absence must fail, not skip, these tests

    assert keras.backend.backend() == "torch", (
        f"keras runs on {keras.backend.backend()!r}: it was imported before this module set KERAS_BACKEND=torch"
    )
    return keras


# ------------------------------------------------------------------------------------------------
# ImageNet ResNets vs torchvision
# ------------------------------------------------------------------------------------------------

IMAGENET_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("name", IMAGENET_NAMES)
def test_imagenet_resnet_matches_torchvision(name):
    ours = build(name)
    torch.manual_seed(3)
    theirs = getattr(torchvision.models, name)()
    randomise_bn(theirs)

    # Same parameter count, the published figure, and the very same state-dict keys and shapes.
    assert count_params(ours).total == IMAGENET_COUNTS[name] == count_params(theirs).total
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]

    cnnzoo.load_torchvision_state_dict(ours, theirs.state_dict())
    x = images(size=64)

    # Train mode first, on copies: BN uses batch statistics and updates its running ones identically.
    ours_t, theirs_t = copy.deepcopy(ours).train(), copy.deepcopy(theirs).train()
    with torch.no_grad():
        diff = (ours_t(x) - theirs_t(x)).abs().max().item()
    assert diff <= 1e-5, f"train mode: max abs diff {diff}"
    for (k, a), (_, b) in zip(ours_t.state_dict().items(), theirs_t.state_dict().items()):
        if "running" in k:
            assert torch.allclose(a, b, atol=1e-6), k

    # Eval mode on the originals, whose running statistics the train-mode pass did not touch.
    ours.eval(), theirs.eval()
    with torch.no_grad():
        out = ours(x)
        diff = (out - theirs(x)).abs().max().item()
    assert out.shape == (2, 1000)
    assert diff <= 1e-5, f"eval mode: max abs diff {diff}"


def _stride(conv: nn.Conv2d) -> int:
    assert conv.stride[0] == conv.stride[1]
    return conv.stride[0]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_stride_once_per_stage_and_projection_exactly_where_shape_changes(name):
    model = build(name)
    block, layers = RESNET_CONFIGS[name]
    block_type = BLOCK_TYPES[block]
    for s, num_blocks in enumerate(layers, start=1):
        stage = getattr(model, f"layer{s}")
        assert len(stage) == num_blocks
        for i, block in enumerate(stage):
            assert isinstance(block, block_type)
            branch_convs = [m for n, m in block.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n]
            strides = [_stride(c) for c in branch_convs]
            expected_stride = 2 if (s > 1 and i == 0) else 1
            # One stride-2 conv in the branch of the first block of stages 2-4, none anywhere else.
            assert sorted(strides) == sorted([expected_stride] + [1] * (len(strides) - 1)), (s, i, strides)
            in_c = branch_convs[0].in_channels
            out_c = branch_convs[-1].out_channels
            shape_changes = expected_stride != 1 or in_c != out_c
            assert (block.downsample is not None) == shape_changes, (s, i)
            if shape_changes:
                conv, bn = block.downsample[0], block.downsample[1]
                assert (conv.kernel_size, _stride(conv), conv.in_channels, conv.out_channels) == (
                    (1, 1),
                    expected_stride,
                    in_c,
                    out_c,
                )
                assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == out_c
    # The basic block strides its first 3x3 conv, never the second (the seed's bug strided both).
    if block_type is BasicBlock:
        assert _stride(model.layer2[0].conv1) == 2 and _stride(model.layer2[0].conv2) == 1
    # ResNet-50's first block changes channels (64 -> 256) at stride 1: a projection without stride.
    if block_type is Bottleneck:
        assert model.layer1[0].downsample is not None and _stride(model.layer1[0].downsample[0]) == 1


def test_stride_in_1x1_moves_the_stride_and_keeps_the_weights():
    v15 = build("resnet50")
    v1 = build("resnet50", stride_in_1x1=True)
    for s in (2, 3, 4):
        a, b = getattr(v15, f"layer{s}")[0], getattr(v1, f"layer{s}")[0]
        assert (_stride(a.conv1), _stride(a.conv2)) == (1, 2)  # v1.5: torchvision
        assert (_stride(b.conv1), _stride(b.conv2)) == (2, 1)  # v1: paper / Caffe / Keras
        assert _stride(b.downsample[0]) == 2
        for block in list(getattr(v1, f"layer{s}"))[1:]:
            assert {_stride(c) for c in (block.conv1, block.conv2, block.conv3)} == {1}
    # Same tensors by name and shape, so torchvision weights load into the v1 variant as well ...
    assert {k: v.shape for k, v in v1.state_dict().items()} == {k: v.shape for k, v in v15.state_dict().items()}
    v1.load_state_dict(v15.state_dict())
    v1.eval(), v15.eval()
    # ... and every stage has the same output shape (also for odd sizes), but the computation differs.
    x = images(size=57)
    with torch.no_grad():
        fa, fb = x, x
        fa = v15.maxpool(v15.relu(v15.bn1(v15.conv1(fa))))
        fb = v1.maxpool(v1.relu(v1.bn1(v1.conv1(fb))))
        for s in (1, 2, 3, 4):
            fa, fb = getattr(v15, f"layer{s}")(fa), getattr(v1, f"layer{s}")(fb)
            assert fa.shape == fb.shape
        assert fa.shape == (2, 2048, 2, 2)
        assert not torch.allclose(v15(x), v1(x), atol=1e-3)


def test_stride_in_1x1_is_only_for_bottleneck_models():
    with pytest.raises(TypeError, match="stride_in_1x1"):
        cnnzoo.create_model("resnet18", stride_in_1x1=True)


@pytest.mark.parametrize("name, last_bn", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_makes_blocks_start_as_identity(name, last_bn):
    model = build(name, zero_init_residual=True).eval()
    blocks = [b for s in (1, 2, 3, 4) for b in getattr(model, f"layer{s}")]
    assert all(torch.all(getattr(b, last_bn).weight == 0) for b in blocks)
    assert not torch.all(build(name).layer1[0].get_submodule(last_bn).weight == 0)
    # A block without projection then returns relu(x) = x for the non-negative input it gets.
    x = torch.rand(2, model.layer1[-1].conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.layer1[-1](x), x)


# ------------------------------------------------------------------------------------------------
# CIFAR ResNets (paper section 4.2)
# ------------------------------------------------------------------------------------------------

PAPER_CIFAR_PARAMS = {
    "resnet20": "0.27M",
    "resnet32": "0.46M",
    "resnet44": "0.66M",
    "resnet56": "0.85M",
    "resnet110": "1.7M",
}


def cifar_param_formula(n: int, num_classes: int = 10) -> int:
    """Parameters from the description of section 4.2, counted layer by layer (no model involved).

    3x3 conv 3 -> 16 (no bias) + BN; three stages of n basic blocks (two 3x3 convs + two BNs each) with
    16, 32, 64 filters; option A shortcuts have no parameters; global average pool; fc 64 -> classes.
    """
    conv = lambda c_in, c_out: 9 * c_in * c_out  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 16) + bn(16)
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += conv(c_in, width) + bn(width) + conv(width, width) + bn(width)
            c_in = width
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_resnet_counts_depth_and_metadata(name):
    n = CIFAR_RESNET_CONFIGS[name]
    model = build(name)
    total = count_params(model).total
    assert total == cifar_param_formula(n)
    # The paper's Table 6 rounds: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    paper = PAPER_CIFAR_PARAMS[name]
    assert f"{total / 1e6:.{len(paper) - 3}f}M" == paper
    # 6n + 2 weighted layers: the first conv, 2 convs in each of the 3n blocks, and the fc.
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 6 * n + 2
    assert int(name.removeprefix("resnet")) == 6 * n + 2
    # Option A: the shortcuts carry no parameters at all.
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2 and sum(p.numel() for s in shortcuts for p in s.parameters()) == 0
    info = cnnzoo.get_model_info(name)
    assert (info.input_size, info.num_classes) == ((3, 32, 32), 10)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)
    model.eval()
    with torch.no_grad():
        assert model(images(size=32)).shape == (2, 10)


def test_cifar_option_a_shortcut_is_subsampled_identity_with_zero_channels():
    model = build("resnet20").eval()
    # Identity everywhere except where the shape changes (first block of stages 2 and 3).
    assert [b.downsample is None for s in (1, 2, 3) for b in getattr(model, f"layer{s}")] == [
        True,
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    block = model.layer2[0]
    assert isinstance(block.downsample, ShortcutA)
    x = images(size=9, channels=16)  # odd size: the subsampling must keep ceil(9/2) = 5 rows, as the conv
    with torch.no_grad():
        short = block.downsample(x)
        assert short.shape == (2, 32, 5, 5)
        assert torch.equal(short[:, :16], x[:, :, ::2, ::2])
        assert torch.equal(short[:, 16:], torch.zeros(2, 16, 5, 5))
        # The whole block: relu(residual branch + shortcut), the branch strided once.
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        assert branch.shape == (2, 32, 5, 5)
        assert torch.allclose(block(x), torch.relu(branch + short))
    assert _stride(model.layer3[0].conv1) == 2 and _stride(model.layer3[0].conv2) == 1


# ------------------------------------------------------------------------------------------------
# Keras flavours vs keras.applications
# ------------------------------------------------------------------------------------------------

KERAS_COUNTS = {  # keras model.count_params(): total, trainable, non-trainable (BN moving statistics)
    "resnet50_keras": (25_636_712, 25_583_592, 53_120),
    "resnet101_keras": (44_707_176, 44_601_832, 105_344),
    "resnet152_keras": (60_419_944, 60_268_520, 151_424),
}


@pytest.fixture(scope="module")
def keras_resnet50():
    keras = keras_module()
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BN statistics and scales, so inference-mode BN is exercised
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(0.1 * rng.standard_normal(c).astype("float32"))
            layer.moving_variance.assign((0.5 + rng.random(c)).astype("float32"))
            layer.gamma.assign((0.5 + rng.random(c)).astype("float32"))
            layer.beta.assign(0.1 * rng.standard_normal(c).astype("float32"))
    return model


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_flavour_counts(name):
    total, trainable, frozen = KERAS_COUNTS[name]
    with torch.device("meta"):  # shapes only, as the command line counts: no memory, no init
        model = cnnzoo.create_model(name)
    count = count_params(model, style="keras")
    assert (count.total, count.trainable, count.non_trainable) == (total, trainable, frozen)


def test_keras_resnet50_counts_and_names_match_keras(keras_resnet50):
    keras = keras_module()
    ours = build("resnet50_keras")
    count = count_params(ours, style="keras")
    keras_trainable = sum(int(np.prod(w.shape)) for w in keras_resnet50.trainable_weights)
    assert (count.total, count.trainable) == (keras_resnet50.count_params(), keras_trainable)
    # Every weighted Keras layer has a module of the same name, of the matching kind, and nothing else.
    modules = dict(ours.named_modules())
    name_map = keras_name_map(ours)
    weighted = {layer.name: layer for layer in keras_resnet50.layers if layer.weights}
    assert set(name_map) == set(weighted)
    kinds = {
        keras.layers.Conv2D: nn.Conv2d,
        keras.layers.BatchNormalization: nn.BatchNorm2d,
        keras.layers.Dense: nn.Linear,
    }
    for kname, layer in weighted.items():
        module = modules[name_map[kname]]
        assert isinstance(module, kinds[type(layer)]), kname
        if isinstance(layer, keras.layers.Conv2D):
            assert module.stride == tuple(layer.strides) and module.bias is not None, kname
        if isinstance(layer, keras.layers.BatchNormalization):
            assert module.eps == pytest.approx(layer.epsilon) and module.momentum == pytest.approx(
                1 - layer.momentum
            ), kname
    # v1: the stride sits in the first 1x1 conv of a stage's first block; only that block has a conv shortcut.
    assert (
        _stride(ours.conv3_block1.get_submodule("1_conv")) == 2
        and _stride(ours.conv3_block1.get_submodule("2_conv")) == 1
    )
    assert hasattr(ours.conv3_block1, "0_conv") and not hasattr(ours.conv3_block2, "0_conv")
    with pytest.raises(TypeError, match="Keras-flavour"):
        keras_name_map(build("resnet50"))


def test_keras_resnet50_same_weights_same_outputs(keras_resnet50):
    keras = keras_module()
    ours = build("resnet50_keras").eval()
    load_keras_model(ours, keras_resnet50, keras_name_map(ours))
    x = images(size=64, seed=5)
    with torch.no_grad():
        out = ours(x)
        ref = keras.ops.convert_to_numpy(keras_resnet50(x.permute(0, 2, 3, 1), training=False))
    assert out.shape == (2, 1000) and ref.shape == (2, 1000)
    assert np.abs(ref).max() > 1e-2  # a non-degenerate output, so the comparison means something
    diff = np.abs(out.numpy() - ref).max()
    assert diff <= 1e-4, f"max abs diff {diff}"


def test_keras_flavour_normalisation_is_keras_caffe_preprocessing():
    keras = keras_module()
    from keras.applications.resnet import preprocess_input

    info = cnnzoo.get_model_info("resnet50_keras")
    assert info.channel_order == "BGR" and info.keras == "ResNet50" and info.torchvision is None
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3)).astype("float32")  # NHWC, 0-255
    expected = keras.ops.convert_to_numpy(preprocess_input(rgb.copy()))
    # Our recipe: pixels in [0, 1], reorder to channel_order, then (x - mean) / std.
    bgr01 = rgb[..., ::-1] / 255.0
    ours = (bgr01 - np.array(info.mean)) / np.array(info.std)
    assert np.abs(ours - expected).max() < 1e-3


# ------------------------------------------------------------------------------------------------
# Inputs: any size >= min_size, and clear errors below it
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_min_size_is_the_true_minimum(name):
    model = build(name)
    info = cnnzoo.get_model_info(name)
    assert model.min_size == info.min_size == 1
    model.check_inputs = False
    s = info.min_size
    with torch.no_grad():
        assert model.eval()(images(size=s)).shape == (2, info.num_classes)
        assert model.train()(images(size=s)).shape == (2, info.num_classes)  # batch 2: BN has 2 values
        with pytest.raises(RuntimeError):
            model.eval()(images(size=s - 1))
    model.check_inputs = True
    with pytest.raises(cnnzoo.InputShapeError, match=name):
        model(images(size=s - 1))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "resnet50_keras"])
def test_any_size_above_the_minimum_works(name):
    model = build(name, num_classes=7).eval()
    with torch.no_grad():
        for h, w in [(2, 2), (3, 5), (17, 17), (33, 31), (64, 64)]:
            assert model(torch.randn(2, 3, h, w)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "resnet50_keras"])
def test_bad_input_raises_input_shape_error_naming_the_model(name):
    model = build(name).eval()
    with pytest.raises(cnnzoo.InputShapeError, match=rf"{name} expects 3 input channels, got 1"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(cnnzoo.InputShapeError, match=rf"{name} .*permute"):
        model(torch.randn(2, 32, 32, 3))  # channels-last
    with pytest.raises(cnnzoo.InputShapeError, match=name):
        model(torch.randn(3, 32, 32))
    gray = build(name, in_chans=1).eval()
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 32, 32)).shape[0] == 2


def test_registry_metadata():
    assert set(cnnzoo.list_models("resnet")) == set(ALL_NAMES)
    for name in ALL_NAMES:
        info = cnnzoo.get_model_info(name)
        assert info.family == "resnet" and "1512.03385" in info.url and "Deep Residual Learning" in info.paper
    for name in IMAGENET_NAMES:
        info = cnnzoo.get_model_info(name)
        assert info.torchvision == name and info.torchvision_key is None  # same keys as torchvision
        assert info.input_size == (3, 224, 224) and info.channel_order == "RGB"
    for name in CIFAR_NAMES + KERAS_NAMES:
        assert cnnzoo.get_model_info(name).torchvision is None
        with pytest.raises(cnnzoo.WeightsError, match="no torchvision counterpart"):
            convert_torchvision_state_dict(name, {})
