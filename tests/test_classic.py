"""LeNet-5, AlexNet and VGG against their references: torchvision (same weights, same outputs),
Keras' VGG16 (same weights, same outputs), and the seed's figures."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
import cnnzoo.weights.keras
import cnnzoo.weights.torchvision
from cnnzoo.counting import count_params
from cnnzoo.models import vgg


def assert_same_outputs(ours, theirs, x):
    """Eval mode, then train mode with the same dropout masks (same seed) and BN batch statistics.

    Eval runs first: the train-mode pass updates BN running statistics, which eval would read."""
    for train_mode in (False, True):
        ours.train(train_mode), theirs.train(train_mode)
        torch.manual_seed(1)
        a = ours(x)
        torch.manual_seed(1)
        b = theirs(x)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5, f"train={train_mode}"


def test_lenet5_is_the_seeds_network():
    from cnnzoo import shapes

    m = cnnzoo.create_model("lenet5")
    # conv1 6@5x5 'same', pool, conv2 16@5x5 'valid', pool, 120, 84, 10, each count from its formula
    expected = [
        shapes.conv2d_params(1, 6, 5),
        shapes.conv2d_params(6, 16, 5),
        shapes.linear_params(16 * 5 * 5, 120),
        shapes.linear_params(120, 84),
        shapes.linear_params(84, 10),
    ]
    assert count_params(m).total == sum(expected) == 61_706
    x = torch.randn(4, 1, 28, 28)
    feats = m.features(x)
    assert feats.shape == (4, 16, 5, 5)  # 28 -same-> 28 -pool-> 14 -valid 5x5-> 10 -pool-> 5
    assert m.features.conv1(x).shape == (4, 6, 28, 28)
    assert m(x).shape == (4, 10)


def test_lenet5_adaptive_pool_is_a_no_op_at_native_size():
    m = cnnzoo.create_model("lenet5").eval()
    x = torch.randn(2, 1, 28, 28)
    f = m.features(x)
    assert torch.equal(m.avgpool(f), f)


@pytest.mark.parametrize("name", ["alexnet"] + cnnzoo.list_models("vgg"))
def test_same_weights_same_outputs_as_torchvision(name):
    theirs = getattr(torchvision.models, name)(weights=None, num_classes=10)
    ours = cnnzoo.create_model(name, num_classes=10)
    cnnzoo.load_torchvision_state_dict(ours, theirs.state_dict())
    size = cnnzoo.get_model_info(name).min_size + 1
    assert_same_outputs(ours, theirs, torch.randn(2, 3, size, size))


def test_vgg_layers_carry_keras_names():
    m = cnnzoo.create_model("vgg16")
    convs = [n for n, mod in m.features.named_children() if isinstance(mod, nn.Conv2d)]
    assert convs[:3] == ["block1_conv1", "block1_conv2", "block2_conv1"] and convs[-1] == "block5_conv3"
    assert [n for n, mod in m.features.named_children() if isinstance(mod, nn.MaxPool2d)] == [
        f"block{i}_pool" for i in range(1, 6)
    ]
    assert [n for n, mod in m.classifier.named_children() if isinstance(mod, nn.Linear)] == [
        "fc1",
        "fc2",
        "predictions",
    ]
    # the seed's summary table, layer by layer
    seed_counts = {"block1_conv1": 1792, "block1_conv2": 36928, "block3_conv1": 295168, "block5_conv3": 2359808}
    for layer, n in seed_counts.items():
        assert sum(p.numel() for p in getattr(m.features, layer).parameters()) == n
    assert sum(p.numel() for p in m.classifier.fc1.parameters()) == 102_764_544
    assert sum(p.numel() for p in m.classifier.predictions.parameters()) == 4_097_000


def test_torchvision_keys_are_renamed_to_paper_names():
    sd = torchvision.models.vgg11_bn(weights=None).state_dict()
    renamed = cnnzoo.weights.torchvision.convert_torchvision_state_dict("vgg11_bn", sd)
    assert "features.block1_conv1.weight" in renamed and "features.block1_conv1_bn.running_var" in renamed
    assert "classifier.predictions.bias" in renamed
    assert set(renamed) == set(cnnzoo.create_model("vgg11_bn").state_dict())


def test_wrong_checkpoint_lists_problems_by_name():
    sd = torchvision.models.vgg16(weights=None).state_dict()
    with pytest.raises(
        cnnzoo.WeightsError, match=r"vgg19.*missing keys \(12\).*block3_conv4.weight.*shape mismatches"
    ) as e:
        cnnzoo.load_torchvision_state_dict(cnnzoo.create_model("vgg19"), sd)
    assert "Check that the model name" in str(e.value)
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"predictions.weight: model has \(10, 4096\), torchvision state dict has \(1000, 4096\)",
    ):
        cnnzoo.load_torchvision_state_dict(cnnzoo.create_model("vgg16", num_classes=10), sd)
    with pytest.raises(cnnzoo.WeightsError, match="lenet5 has no torchvision counterpart"):
        cnnzoo.load_torchvision_state_dict(cnnzoo.create_model("lenet5"), sd)


def test_vgg16_same_weights_same_outputs_as_keras():
    """Keras' VGG16 with random weights, copied into ours (HWIO -> OIHW kernels, fc1 rows reordered
    from Flatten's NHWC to NCHW), gives the same logits at 224x224, where Keras' Flatten and our
    adaptive pool + flatten see the same 7x7 map."""
    import keras

    keras.utils.set_random_seed(0)
    k = keras.applications.VGG16(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    assert k.count_params() == 138_357_544
    ours = cnnzoo.create_model("vgg16").eval()
    cnnzoo.weights.keras.load_keras_model(ours, k, vgg.keras_name_map(ours), flatten_from=vgg.KERAS_FLATTEN)
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype("float32")
    want = np.asarray(k(x, training=False).detach().cpu())
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
