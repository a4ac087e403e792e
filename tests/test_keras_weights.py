"""Keras weight files into cnnzoo: parity with keras.applications (Keras 3, torch backend, random weights).

Each Keras model is built once per session and saved in the formats users hold: the legacy ``.h5``
that keras.applications downloads (weights only) or ``model.save('m.h5')`` writes (with the model's
configuration), Keras 3's ``.weights.h5`` and ``.keras``. Loading reads them with h5py alone.
"""

import json
import shutil
import sys

import h5py
import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.checkpoint import read_metadata
from cnnzoo.cli import main
from cnnzoo.export import OnnxModel
from cnnzoo.weights import detect_format, load_pretrained


@pytest.fixture(scope="module")
def keras():
    import keras  # a test dependency: its absence must fail these tests, not skip them

    assert keras.backend.backend() == "torch", "keras was imported before tests/conftest.py set KERAS_BACKEND=torch"
    return keras


def randomise(keras, model, seed=0, he=False):
    """Weights that make every conversion show in the outputs.

    Biases, BN statistics, scales and shifts (Keras starts them at 0 and 1) get random values, so a
    bias or a moving variance put in the wrong place shows. ``he`` scales kernels from Glorot's
    variance, 2 / (fan_in + fan_out), to He's, 2 / fan_in: without BN (VGG) Glorot's signal fades to
    almost nothing over 16 layers, too little to compare.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            shape = layer.kernel.shape
            if he:
                fan_in, fan_out = int(np.prod(shape[:-1])), int(np.prod(shape[:-2])) * shape[-1]
                layer.kernel.assign(layer.kernel * np.sqrt((fan_in + fan_out) / fan_in))
            if layer.bias is not None:
                layer.bias.assign(0.1 * rng.standard_normal(shape[-1]).astype("float32"))
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(0.1 * rng.standard_normal(c).astype("float32"))
            layer.moving_variance.assign((0.5 + rng.random(c)).astype("float32"))
            layer.beta.assign(0.1 * rng.standard_normal(c).astype("float32"))
            if layer.gamma is not None:
                layer.gamma.assign((0.5 + rng.random(c)).astype("float32"))


def save(keras, model, folder, formats):
    """Write ``model`` in each of ``formats``; returns {format: path}."""
    from keras.src.legacy.saving import legacy_h5_format

    files = {}
    for fmt in formats:
        path = folder / f"{model.name}.{fmt}"
        if fmt == "download.h5":  # the keras.applications download layout: Keras 2's save_weights('x.h5')
            with h5py.File(path, "w") as f:
                legacy_h5_format.save_weights_to_hdf5_group(f, model)
        elif fmt == "weights.h5":
            model.save_weights(path)
        else:  # "h5" (legacy, with the model's configuration) or "keras"
            model.save(path)
        files[fmt] = path
    return files


def reference(keras, model, size, seed=1):
    """Random NCHW images and the Keras model's inference-mode logits for them."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x, keras.ops.convert_to_numpy(model(x.permute(0, 2, 3, 1).numpy(), training=False))


def assert_same(model, x, want):
    with torch.no_grad():
        got = model.eval()(x).numpy()
    assert np.abs(want).max() > 0.1  # a real signal, so the comparison means something
    diff = np.abs(got - want).max()
    assert diff <= 1e-4, f"max abs diff {diff}"


@pytest.fixture  # one test uses it: its 553 MB file goes when that test passes, not at the module's end
def vgg16_files(keras, tmp_path):
    keras.utils.set_random_seed(0)
    k = keras.applications.VGG16(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    randomise(keras, k, he=True)
    x, want = reference(keras, k, 224)
    return save(keras, k, tmp_path, ["download.h5"]), x, want


@pytest.fixture(scope="module")
def resnet50_files(keras, tmp_path_factory):
    keras.utils.set_random_seed(0)
    k = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    randomise(keras, k)
    x, want = reference(keras, k, 64)
    return save(keras, k, tmp_path_factory.mktemp("resnet50"), ["weights.h5", "h5", "keras"]), x, want


@pytest.fixture(scope="module")
def inception_files(keras, tmp_path_factory):
    keras.backend.clear_session()  # restart Keras' automatic names, whatever other tests built before
    keras.utils.set_random_seed(0)
    # Layers made before shift Keras' automatic names: the file's convs are conv2d_1 ... conv2d_94, say,
    # where a fresh session would write conv2d ... conv2d_93. Placement must not depend on that.
    keras.layers.Conv2D(1, 1), keras.layers.BatchNormalization()
    k = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classifier_activation=None)
    assert [layer.name for layer in k.layers if layer.weights][:2] == ["conv2d_1", "batch_normalization_1"]
    randomise(keras, k)
    x, want = reference(keras, k, 75)
    return save(keras, k, tmp_path_factory.mktemp("inception"), ["weights.h5", "keras", "download.h5"]), x, want


# --------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------


def test_vgg16_from_the_keras_applications_download_layout(vgg16_files):
    """Kernels HWIO -> OIHW, and fc1's rows from Flatten's (H, W, C) order to PyTorch's (C, H, W)."""
    files, x, want = vgg16_files
    assert detect_format(files["download.h5"]) == "keras-h5"
    model = cnnzoo.create_model("vgg16")
    report = load_pretrained(model, files["download.h5"])
    assert report.names == "16 Keras layers placed on vgg16"
    assert_same(model, x, want)


@pytest.mark.parametrize("fmt, detected", [("weights.h5", "keras-weights-h5"), ("h5", "keras-h5"), ("keras", "keras")])
def test_resnet50_in_every_keras_format(resnet50_files, fmt, detected):
    files, x, want = resnet50_files
    assert detect_format(files[fmt]) == detected
    model = cnnzoo.create_model("resnet50_keras")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.5
    load_pretrained(model, files[fmt])
    assert_same(model, x, want)
    # A file with the model's configuration (.h5 from model.save, .keras) converts Keras' momentum 0.99.
    momenta = {round(m.momentum, 6) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == ({0.5} if fmt == "weights.h5" else {0.01})


@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "download.h5"])
def test_inception_v3_by_creation_order(inception_files, fmt):
    files, x, want = inception_files
    assert_same(cnnzoo.create_model("inception_v3_keras", weights=files[fmt]), x, want)


def test_loading_needs_no_keras(resnet50_files, monkeypatch):
    files, x, want = resnet50_files
    monkeypatch.setitem(sys.modules, "keras", None)  # any `import keras` now fails
    assert_same(cnnzoo.create_model("resnet50_keras", weights=files["keras"]), x, want)


# --------------------------------------------------------------------------------------------------
# Files that do not fit
# --------------------------------------------------------------------------------------------------


def test_a_file_of_another_model(resnet50_files):
    path = resnet50_files[0]["weights.h5"]
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"106 Keras layers have no place in vgg16: conv1_bn, .*Is it a file of the Keras model vgg16 mirrors \(keras.applications.VGG16\)",
    ):
        cnnzoo.create_model("vgg16", weights=path)
    with pytest.raises(cnnzoo.WeightsError, match=r"does not fit resnet101_keras: missing keys \(\d+\): conv4_block7"):
        cnnzoo.create_model("resnet101_keras", weights=path)
    with pytest.raises(
        cnnzoo.WeightsError,
        match="Keras weights load into vgg16, vgg19, inception_v3_keras, resnet50_keras, .* resnet50 has no Keras counterpart",
    ):
        cnnzoo.create_model("resnet50", weights=path)
    inception = cnnzoo.create_model("inception_v3_keras")
    with pytest.raises(
        cnnzoo.WeightsError,
        match="has 53 Conv2D, 53 BatchNormalization and 1 Dense layers; inception_v3_keras needs 94, 94 and 1",
    ):
        load_pretrained(inception, path)


def test_another_number_of_classes(resnet50_files):
    files, x, want = resnet50_files
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"classifier of resnet50_keras has 10 outputs, the file's has 1000 \(predictions.weight, predictions.bias\)",
    ):
        cnnzoo.create_model("resnet50_keras", num_classes=10, weights=files["h5"])
    model = cnnzoo.create_model("resnet50_keras", num_classes=10)
    report = load_pretrained(model, files["h5"], reset_head=True)
    assert report.notes == [
        "reset the head: predictions.weight, predictions.bias keep their fresh initialisation for 10 classes (the file's head has 1000)"
    ]


def test_another_batchnorm_epsilon_is_refused(resnet50_files, tmp_path):
    path = tmp_path / "eps.h5"
    shutil.copy(resnet50_files[0]["h5"], path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["config"]["name"] == "conv1_bn":
                layer["config"]["epsilon"] = 1e-3
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"eps.h5: Keras layer 'conv1_bn' -> conv1_bn: the Keras BatchNormalization has epsilon 0.001, the cnnzoo one 1.001e-05",
    ):
        cnnzoo.create_model("resnet50_keras", weights=path)


def _vars_by_name(f):
    return {g["vars"].attrs["name"]: g["vars"] for g in f["layers"].values() if "name" in g["vars"].attrs}


def test_inception_layers_out_of_creation_order_are_refused(inception_files, tmp_path):
    path = tmp_path / "swapped.weights.h5"
    shutil.copy(inception_files[0]["weights.h5"], path)
    with h5py.File(path, "r+") as f:  # swap the names of the first two convs: 3 -> 32 and 32 -> 32 channels
        first, second = _vars_by_name(f)["conv2d_1"], _vars_by_name(f)["conv2d_2"]
        first.attrs["name"], second.attrs["name"] = "conv2d_2", "conv2d_1"
    with pytest.raises(
        cnnzoo.WeightsError,
        match=r"Keras layer 'conv2d_1' \(Conv2D number 1 in creation order\) has a 3x3 kernel from 32 to 32 channels "
        r"where Conv2d_1a_3x3.conv of inception_v3_keras has 3x3 from 3 to 32",
    ):
        cnnzoo.create_model("inception_v3_keras", weights=path)


def test_a_weights_h5_without_layer_names_is_refused(resnet50_files, tmp_path):
    path = tmp_path / "old.weights.h5"
    shutil.copy(resnet50_files[0]["weights.h5"], path)
    with h5py.File(path, "r+") as f:  # as older Keras 3 releases wrote them
        for group in f["layers"].values():
            group["vars"].attrs.pop("name", None)
    with pytest.raises(
        cnnzoo.WeightsError, match="does not store its layer's name .* save it again with a current Keras"
    ):
        cnnzoo.create_model("resnet50_keras", weights=path)


# --------------------------------------------------------------------------------------------------
# From a Keras .h5 file to ONNX, as the README walks through it
# --------------------------------------------------------------------------------------------------


def test_keras_h5_to_cnnzoo_checkpoint_to_onnx(resnet50_files, tmp_path, capsys):
    files, x, want = resnet50_files
    checkpoint, onnx_file = tmp_path / "resnet50.safetensors", tmp_path / "resnet50.onnx"
    assert main(["convert", str(files["h5"]), str(checkpoint), "--model", "resnet50_keras"]) == 0
    assert read_metadata(checkpoint)["converted_from"]["format"] == "keras-h5"
    assert main(["export", str(checkpoint), "--out", str(onnx_file), "--image-size", "64", "--dynamic-batch"]) == 0
    assert "checked with onnxruntime" in capsys.readouterr().out

    served = OnnxModel(onnx_file)
    assert served.model_name == "resnet50_keras" and served.image_size == 64
    got = served(x).numpy()
    assert np.abs(got - want).max() <= 1e-4
