"""The study note's low-level conv layers (cnnzoo.study) and the note's Keras layer calls with their PyTorch twins.

References: ``nn.Conv2d`` + ``nn.ReLU`` (forward values and gradients), ``torch.autograd.gradcheck`` (float64),
Keras 3 on the torch backend (``Conv2D``, ``AvgPool2D``, ``MaxPool2D`` and the ``glorot_uniform`` /
``random_normal`` initialisers), ``cnnzoo.shapes`` for the output sizes, and real MNIST digits for training.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

import cnnzoo
from cnnzoo import data, shapes
from cnnzoo.errors import InputShapeError, ShapeError
from cnnzoo.layers import SamePad2d
from cnnzoo.study import (
    KERAS_RANDOM_NORMAL_STDDEV,
    SimpleCNN,
    SimpleCNNIm2col,
    conv_layer,
    conv_layer_im2col,
    keras_kernel_to_torch,
    replace_first_conv,
    torch_kernel_to_keras,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = [SimpleCNN, SimpleCNNIm2col]
FUNCTIONS = [conv_layer, conv_layer_im2col]

# (kernel_size, stride, padding, input H x W): the note's 'valid' 3x3/1, strides that leave pixels over,
# non-square kernels and strides, explicit padding, and TensorFlow's asymmetric 'same' at stride 2.
GEOMETRIES = [
    ((3, 3), 1, "valid", (9, 9)),
    ((5, 5), 2, "valid", (12, 11)),
    ((3, 2), (2, 1), "valid", (8, 7)),
    ((5, 5), 1, 2, (7, 7)),
    ((3, 3), 1, "same", (6, 7)),
    ((3, 3), 2, "same", (8, 7)),
    ((4, 4), 2, "same", (9, 10)),
]


@pytest.fixture(scope="module")
def keras():
    import keras  # a test dependency: its absence must fail these tests, not skip them

    assert keras.backend.backend() == "torch", "keras was imported before tests/conftest.py set KERAS_BACKEND=torch"
    return keras


def torch_twin(layer: SimpleCNN) -> nn.Sequential:
    """nn.Conv2d + nn.ReLU computing what ``layer`` should, with its weights; SamePad2d for 'same'."""
    padding = layer.padding
    parts = []
    if padding == "same":
        parts.append(SamePad2d(layer.kernel_size, layer.stride))
        padding = 0
    elif padding == "valid":
        padding = 0
    conv = nn.Conv2d(layer.in_channels, layer.num_kernels, layer.kernel_size, layer.stride, padding)
    with torch.no_grad():
        conv.weight.copy_(layer.kernels)
        conv.bias.copy_(layer.bias)
    return nn.Sequential(*parts, conv, nn.ReLU())


def expected_hw(kernel_size, stride, padding, hw):
    return shapes.conv2d_output_shape(hw, kernel_size, stride, padding)


# --- the lazy build ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS)
def test_weights_are_built_from_the_first_input(cls):
    layer = cls(num_kernels=32, kernel_size=(3, 3), stride=1)
    assert isinstance(layer.kernels, UninitializedParameter) and isinstance(layer.bias, UninitializedParameter)
    assert layer.in_channels is None and layer.has_uninitialized_params()
    y = layer(torch.randn(2, 5, 10, 10))
    assert not layer.has_uninitialized_params()
    assert layer.in_channels == 5
    assert layer.kernels.shape == (32, 5, 3, 3) and layer.bias.shape == (32,)
    assert cnnzoo.count_params(layer).total == shapes.conv2d_params(5, 32, 3)
    assert y.shape == (2, 32, *expected_hw((3, 3), 1, "valid", (10, 10)))
    assert type(layer) is cls  # stays itself, unlike nn.LazyConv2d which becomes nn.Conv2d


def test_an_unbuilt_layer_builds_from_a_state_dict():
    built = SimpleCNN(4, (3, 3))
    x = torch.randn(1, 2, 6, 6)
    y = built(x)
    fresh = SimpleCNN(4, (3, 3))
    fresh.load_state_dict(built.state_dict())
    assert fresh.in_channels == 2
    torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)


def test_the_defaults_are_the_notes():
    layer = SimpleCNN()
    assert (layer.num_kernels, layer.kernel_size, layer.stride, layer.padding) == (32, (3, 3), 1, "valid")


# --- initialisers against Keras' --------------------------------------------------------------


def test_kernels_are_glorot_uniform_as_in_keras(keras):
    """Same limit sqrt(6 / (fan_in + fan_out)) with Keras' fans (k*k*in, k*k*out): compare with a Keras sample."""
    in_channels, out_channels, k = 48, 96, 3
    layer = SimpleCNN(out_channels, (k, k))
    layer(torch.zeros(1, in_channels, k, k))
    ours = layer.kernels.detach().numpy().ravel()
    theirs = keras.ops.convert_to_numpy(
        keras.initializers.GlorotUniform(seed=0)(shape=(k, k, in_channels, out_channels))
    ).ravel()
    limit = math.sqrt(6 / (k * k * in_channels + k * k * out_channels))
    # 41,472 draws each: the max of a uniform sample lies within 0.1% of its bound, the std within 1%
    assert abs(theirs).max() == pytest.approx(limit, rel=1e-3)  # the formula is Keras' ...
    assert abs(ours).max() <= limit and abs(ours).max() == pytest.approx(abs(theirs).max(), rel=2e-3)  # ... and ours
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    assert abs(ours.mean()) < 0.01 * limit


def test_bias_is_random_normal_as_in_keras(keras):
    layer = SimpleCNN(num_kernels=100_000, kernel_size=(1, 1))
    layer(torch.zeros(1, 1, 1, 1))
    ours = layer.bias.detach().numpy()
    theirs = keras.ops.convert_to_numpy(keras.initializers.get("random_normal")(shape=(100_000,)))
    assert keras.initializers.get("random_normal").get_config()["stddev"] == KERAS_RANDOM_NORMAL_STDDEV
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    assert abs(ours.mean() - theirs.mean()) < 0.002
    # normal, not truncated: about 0.27% of draws lie beyond 3 standard deviations in both
    assert (abs(ours) > 3 * theirs.std()).mean() == pytest.approx((abs(theirs) > 3 * theirs.std()).mean(), abs=0.001)


# --- equal to nn.Conv2d + ReLU ----------------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("kernel_size, stride, padding, hw", GEOMETRIES)
def test_forward_and_gradients_equal_conv2d_relu(cls, kernel_size, stride, padding, hw):
    layer = cls(6, kernel_size, stride, padding)
    x = torch.randn(3, 4, *hw)
    layer(x)
    twin = torch_twin(layer)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = layer(x1), twin(x2)
    assert y1.shape == (3, 6, *expected_hw(kernel_size, stride, padding, hw))
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    assert (y1 == 0).any() and (y1 > 0).any()  # the ReLU did cut something, and let something through
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    conv = twin[-2]
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.kernels.grad, conv.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("kernel_size, stride, padding, hw", GEOMETRIES[:2] + GEOMETRIES[-2:])
def test_gradcheck_float64(function, kernel_size, stride, padding, hw):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, *hw, dtype=torch.float64, generator=generator, requires_grad=True)
    kernels = torch.randn(3, 2, *kernel_size, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, k, b: function(x, k, b, stride, padding), (x, kernels, bias))


def test_the_two_computations_agree_in_float64():
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    kernels, bias = torch.randn(5, 3, 3, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(conv_layer(x, kernels, bias, 2, "same"), conv_layer_im2col(x, kernels, bias, 2, "same"))


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS)
def test_bad_inputs_say_what_is_wrong(cls):
    layer = cls(4, (5, 5))
    with pytest.raises(InputShapeError, match=r"\(N, C, H, W\) input, got shape \(3, 8, 8\)"):
        layer(torch.zeros(3, 8, 8))
    layer(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputShapeError, match="built for 3 input channels.*got shape \\(1, 1, 8, 8\\)"):
        layer(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ShapeError, match="too small for kernel 5"):
        layer(torch.zeros(1, 3, 4, 8))


def test_kernel_layouts_convert_both_ways():
    keras_kernel = torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)  # (kh, kw, in, out)
    weight = keras_kernel_to_torch(keras_kernel)
    assert weight.shape == (5, 4, 2, 3)
    assert weight[4, 3, 1, 2] == keras_kernel[1, 2, 3, 4]  # [o, i, h, w] == [h, w, i, o]
    assert torch.equal(torch_kernel_to_keras(weight), keras_kernel)


# --- against Keras: the note's SimpleCNN is Conv2D(activation='relu'); its pool and conv calls --------


def keras_apply(keras, layer, x_nchw: torch.Tensor) -> torch.Tensor:
    """Run a Keras layer (channels-last) on an NCHW tensor; NCHW out."""
    y = layer(x_nchw.permute(0, 2, 3, 1).numpy())
    return torch.from_numpy(np.asarray(keras.ops.convert_to_numpy(y))).permute(0, 3, 1, 2)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize(
    "kernel_size, stride, padding", [((3, 3), 1, "valid"), ((5, 5), 2, "valid"), ((3, 3), 2, "same")]
)
def test_simple_cnn_equals_keras_conv2d_relu(keras, cls, kernel_size, stride, padding):
    x = torch.randn(2, 3, 13, 12)
    layer = cls(8, kernel_size, stride, padding)
    y = layer(x)
    conv = keras.layers.Conv2D(filters=8, kernel_size=kernel_size, strides=stride, padding=padding, activation="relu")
    conv.build((None, 13, 12, 3))
    conv.kernel.assign(torch_kernel_to_keras(layer.kernels.detach()).numpy())
    conv.bias.assign(layer.bias.detach().numpy())
    torch.testing.assert_close(keras_apply(keras, conv, x), y.detach(), rtol=1e-5, atol=1e-5)


def pool_pairs(keras):
    """(Keras layer, its PyTorch twin, the output (OH, OW) from cnnzoo.shapes for an input of 9x8)."""
    k, s = 3, 1  # the note's AvgPool2D(pool_size=k, strides=[s, s], padding='valid')
    valid = shapes.pool2d_output_shape((9, 8), k, s)
    same = shapes.pool2d_output_shape((9, 8), k, s, padding="same")
    # Keras' 'same' pooling ignores the padding: max pools as if padded with -inf (PyTorch's implicit
    # padding), average pools divide by the pixels inside (count_include_pad=False). 2x2/2 'same' on an odd
    # size pads one pixel at the end only: ceil_mode's partial last window is exactly that.
    halved = shapes.pool2d_output_shape((9, 8), 2, 2, padding="same")
    layers = keras.layers
    return [
        (layers.AvgPool2D(pool_size=k, strides=[s, s], padding="valid"), nn.AvgPool2d(k, s), valid),
        (layers.MaxPool2D(pool_size=k, strides=[s, s], padding="valid"), nn.MaxPool2d(k, s), valid),
        (layers.AvgPool2D(k, [s, s], padding="same"), nn.AvgPool2d(k, s, padding=1, count_include_pad=False), same),
        (layers.MaxPool2D(k, [s, s], padding="same"), nn.MaxPool2d(k, s, padding=1), same),
        (layers.MaxPool2D(2, 2, padding="same"), nn.MaxPool2d(2, 2, ceil_mode=True), halved),
    ]


def test_the_notes_pooling_calls_equal_their_torch_twins(keras):
    x = torch.randn(2, 3, 9, 8)  # negative values too: a zero-padded max pool would show
    for keras_layer, torch_layer, hw in pool_pairs(keras):
        ours = torch_layer(x)
        assert ours.shape == (2, 3, *hw), (keras_layer.get_config(), torch_layer)
        torch.testing.assert_close(keras_apply(keras, keras_layer, x), ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "n, k, s, padding", [(16, 3, 1, "valid"), (16, 5, 2, "valid"), (16, 3, 2, "same"), (16, 4, 2, "same")]
)
def test_the_notes_conv2d_call_equals_its_torch_twin(keras, n, k, s, padding):
    x = torch.randn(2, 3, 11, 10)
    conv = keras.layers.Conv2D(filters=n, kernel_size=(k, k), strides=s, padding=padding, activation="relu")
    conv.build((None, 11, 10, 3))
    conv.bias.assign(np.random.default_rng(0).standard_normal(n).astype("float32"))  # Keras starts biases at 0
    torch_conv = nn.Conv2d(3, n, k, s)
    twin = nn.Sequential(*([SamePad2d(k, s)] if padding == "same" else []), torch_conv, nn.ReLU())
    with torch.no_grad():
        torch_conv.weight.copy_(keras_kernel_to_torch(torch.from_numpy(keras.ops.convert_to_numpy(conv.kernel))))
        torch_conv.bias.copy_(torch.from_numpy(keras.ops.convert_to_numpy(conv.bias)))
    ours = twin(x)
    assert ours.shape == (2, n, *shapes.conv2d_output_shape((11, 10), k, s, padding))
    torch.testing.assert_close(keras_apply(keras, conv, x), ours, rtol=1e-5, atol=1e-5)


# --- in LeNet-5's place of its first convolution --------------------------------------------------


def test_swapped_lenet_computes_what_lenet_computes():
    lenet = cnnzoo.create_model("lenet5").eval()
    x = torch.randn(4, 1, 28, 28)
    expected = lenet(x)
    name, conv = replace_first_conv(lenet, SimpleCNN(6, (5, 5), padding="same"))
    assert name == "features.conv1" and conv.padding == (2, 2)
    assert isinstance(lenet.features.relu1, nn.Identity)
    lenet.features.conv1.load_state_dict({"kernels": conv.weight, "bias": conv.bias})
    torch.testing.assert_close(lenet(x), expected, rtol=1e-5, atol=1e-6)


def normalised(split):
    info = cnnzoo.get_model_info("lenet5")
    return (split.images.float() / 255 - info.mean[0]) / info.std[0], split.labels


@pytest.mark.parametrize("cls", LAYERS)
def test_lenet_trains_with_the_notes_layer_in_its_first_conv(cls):
    """Two epochs of Adam on the 4,000 mnist5k training digits: held-out accuracy far above chance (10%)."""
    splits = data.load_data("mnist5k")
    (x_train, y_train), (x_test, y_test) = normalised(splits.train), normalised(splits.test)
    model = cnnzoo.create_model("lenet5")
    replace_first_conv(model, cls(6, (5, 5), padding="same"))
    model(x_train[:1])  # builds the lazy layer before the optimizer takes the parameters
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(2):
        model.train()
        for batch in torch.randperm(len(x_train)).split(64):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.90
    assert model.features.conv1.kernels.grad is not None  # the note's layer itself learned
