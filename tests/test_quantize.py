"""INT8 quantization (cnnzoo.quantize): every family quantizes and follows fp32, a trained LeNet-5 keeps its accuracy.

How the per-family test can tell a working INT8 model from a broken one: the networks get He-scaled random
weights and BatchNorm statistics (tests.test_weights.randomize), which keep their outputs O(1) and stable:
an input perturbation as large as 8-bit input rounding moves their logits by a centred cosine of 0.999 or
more. (BatchNorm statistics measured on the inputs instead make GoogLeNet, Inception v3 and the Keras
ResNet chaotic, 0.73-0.94 for the same perturbation, and no quantization could follow them.) The inputs are
smooth random images (low-frequency noise plus a little pixel noise), calibration and test images drawn
apart. The INT8 logits must follow the fp32 ones from input to input (centred cosine, which is about 0 for
a model that ignores its input) and mostly pick the same class; :func:`test_the_check_fails_a_miscalibrated_model`
shows the same check failing when the calibration images are not normalised like the inputs, and
:func:`test_reduce_range_int8_kernels_compute_the_qdq_graph_exactly` holds the fused INT8 kernels to the
QDQ graph they implement.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

import cnnzoo
from cnnzoo import data as datalib
from cnnzoo import quantize as q
from cnnzoo.export import OnnxModel, export_metadata, export_model

from .data_fixtures import write_png
from .test_weights import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

# One model per family (per model class), at a small input: name -> (options, input size).
FAMILIES = {
    "lenet5": ({}, 28),
    "alexnet": ({}, 63),
    "vgg11": ({}, 32),
    "googlenet": ({}, 32),
    "inception_v3": ({"aux_logits": False}, 75),  # the aux head only runs in training and is not exported
    "resnet18": ({}, 32),
    "resnet20": ({}, 32),  # option A shortcuts: strided slicing and channel padding
    "resnet50_keras": ({}, 32),  # bottlenecks with the stride in the 1x1 conv, 'same' padding
}
# How closely INT8 logits follow fp32 (centred cosine). Random networks amplify quantization noise with depth,
# so the deepest get a lower bar; measured with these seeds (minmax on 16 images, 7-bit weights): lenet5 0.994,
# alexnet 0.993, vgg11 0.988, resnet18 0.987, resnet20 0.995, googlenet 0.969, inception_v3 0.961,
# resnet50_keras 0.932; a miscalibrated model scores below 0.5 (test_the_check_fails_a_miscalibrated_model).
MIN_LOGIT_COSINE = {"googlenet": 0.96, "inception_v3": 0.95, "resnet50_keras": 0.92}
DEFAULT_MIN_LOGIT_COSINE = 0.98
MIN_AGREEMENT = 0.75  # same top-1 class; random networks' logits are close together (alexnet: 86%)


def smooth_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Random images with structure at several scales: 4x4 noise upsampled, plus pixel noise (about N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(
        torch.randn(n, channels, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False
    )
    return low + 0.3 * torch.randn(n, channels, size, size, generator=g)


def narrow_classifier(model: nn.Module, width: int = 256) -> nn.Module:
    """Shrink the 4096-wide fully connected layers of AlexNet and VGG to ``width``: the same ops, 1/16th of the weights.

    Their 100-million-weight classifiers would spend most of this test's time writing files; the conv stacks,
    the family's own part, stay as they are.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and 4096 in (child.in_features, child.out_features):
                fit = lambda n: width if n == 4096 else n  # noqa: E731
                setattr(parent, name, nn.Linear(fit(child.in_features), fit(child.out_features)))
    return model


def family_model(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The family's randomized model, 16 calibration images and 64 test images."""
    options, size = FAMILIES[name]
    model = narrow_classifier(cnnzoo.create_model(name, **options))
    randomize(model)
    c = model.in_chans
    return model, smooth_images(16, c, size, seed=0), smooth_images(64, c, size, seed=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model, fp32 ONNX file, calibration images, test images); each family exported once per module.

    Exported with the batch fixed to 1, as ``cnnzoo export`` does by default (and twice as fast to export as
    a dynamic batch): calibration and checks then run one image at a time.
    """
    cache = {}

    def get(name: str):
        if name not in cache:
            model, calibration, test = family_model(name)
            path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
            export_model(model, path, image_size=test.shape[-1])
            cache[name] = model, path, calibration, test
        return cache[name]

    return get


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_quantizes_and_follows_fp32(tmp_path, exported, name):
    model, fp32, calibration, test = exported(name)
    report = q.quantize_onnx(fp32, tmp_path / f"{name}.int8.onnx", calibration)
    assert report.quantized_ops == report.weight_ops > 0  # every conv and fully connected layer runs in int8
    assert report.int8_bytes < report.fp32_bytes / 3 and report.calibration_images == 16

    check = q.compare_accuracy(model, report.path, test)  # the PyTorch model itself is the fp32 reference
    print(f"{name}: {check}")
    assert check.logit_cosine > MIN_LOGIT_COSINE.get(name, DEFAULT_MIN_LOGIT_COSINE), str(check)
    assert check.agreement >= MIN_AGREEMENT, str(check)


def test_the_check_fails_a_miscalibrated_model(tmp_path, exported):
    """Calibrated on images 30x too small (data not normalised as the model expects), the INT8 model clips.

    The centred cosine falls far below the bar. Top-1 agreement alone would not notice here: this random
    resnet20 gives most inputs the same class, clipped or not.
    """
    model, fp32, calibration, test = exported("resnet20")
    good = q.compare_accuracy(model, q.quantize_onnx(fp32, tmp_path / "good.onnx", calibration).path, test)
    bad = q.compare_accuracy(model, q.quantize_onnx(fp32, tmp_path / "bad.onnx", calibration / 30).path, test)
    assert good.logit_cosine > DEFAULT_MIN_LOGIT_COSINE, str(good)
    assert bad.logit_cosine < 0.5, str(bad)


# --------------------------------------------------------------------------------------------------
# A trained LeNet-5: held-out accuracy
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A LeNet-5 trained as `cnnzoo train lenet5` does (mnist5k, its defaults), for 12 epochs instead of 30."""
    from cnnzoo.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "lenet5"
    train(TrainConfig(model="lenet5", epochs=12, out=str(out), progress=False))
    return out


def test_trained_lenet5_loses_at_most_half_a_point(tmp_path, lenet_run):
    model = cnnzoo.load_model(lenet_run)
    calibration = q.calibration_batch(lenet_run, 256)  # from its own training images
    images, labels = q.held_out_batch(lenet_run)  # all 1,000 held-out digits
    fp32 = tmp_path / "lenet5.onnx"
    export_model(model, fp32, dynamic_batch=True)
    report = q.quantize_onnx(fp32, tmp_path / "lenet5.int8.onnx", calibration)
    check = q.compare_accuracy(fp32, report.path, images, labels)
    print(check)
    assert check.images == 1000 and check.fp32_top1 >= 0.97
    assert check.top1_drop <= 0.5 and check.agreement >= 0.99
    with torch.no_grad():  # the fp32 file's top-1 is the PyTorch model's (the export is checked to 1e-4)
        assert check.fp32_top1 == pytest.approx(float((model(images).argmax(1) == labels).double().mean()), abs=1e-3)
    assert f"top-1 fp32 {100 * check.fp32_top1:.2f}%, int8 {100 * check.int8_top1:.2f}%" in str(check)


# --------------------------------------------------------------------------------------------------
# The file: metadata, calibration ranges, fixed batch
# --------------------------------------------------------------------------------------------------


def activation_scales(path) -> dict[str, tuple[float, int]]:
    """{tensor: (scale, zero point)} of every QuantizeLinear in an ONNX file."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: (float(inits[n.input[1]]), int(inits[n.input[2]]))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


@pytest.fixture(scope="module")
def lenet_fixed_batch(tmp_path_factory):
    """A random LeNet-5 exported as `cnnzoo export` does by default (batch fixed to 1), with a run's metadata."""
    model = randomize(cnnzoo.create_model("lenet5", num_classes=3))
    path = tmp_path_factory.mktemp("lenet") / "lenet5.onnx"
    meta = export_metadata(model, classes=["cat", "dog", "emu"], mean=[0.13], std=[0.31], image_size=28)
    export_model(model, path, metadata=meta)
    return model, path


def test_quantized_file_keeps_the_metadata_and_says_how_it_was_made(tmp_path, lenet_fixed_batch):
    model, fp32 = lenet_fixed_batch
    calibration = smooth_images(20, 1, 28, seed=0)
    report = q.quantize_onnx(fp32, tmp_path / "int8.onnx", calibration, method="entropy")
    served = OnnxModel(report.path)
    before = OnnxModel(fp32).metadata
    assert {k: v for k, v in served.metadata.items() if k != "quantization"} == before
    assert (served.model_name, served.classes, served.mean, served.std) == (
        "lenet5",
        ["cat", "dog", "emu"],
        [0.13],
        [0.31],
    )
    quant = served.metadata["quantization"]
    assert quant["dtype"] == "int8" and quant["method"] == "entropy" and quant["calibration_images"] == 20
    assert (
        quant["activations"] == "uint8"
        and quant["weights"] == "int8"
        and quant["per_channel"]
        and quant["reduce_range"]
    )
    # Batch fixed to 1: calibrated one image at a time, and served one at a time.
    assert served.input_shape == [1, 1, 28, 28] and served(calibration[:1]).shape == (1, 3)
    assert "quantized lenet5 to" in str(report) and "entropy calibration on 20 images" in str(report)


def test_minmax_ranges_are_the_extremes_and_percentile_clips_inside_them(tmp_path, lenet_fixed_batch):
    _, fp32 = lenet_fixed_batch
    calibration = smooth_images(16, 1, 28, seed=3)
    minmax = activation_scales(q.quantize_onnx(fp32, tmp_path / "minmax.onnx", calibration).path)
    # The input's range is the calibration images' own: uint8 asymmetric over [min(x, 0), max(x, 0)] (NumPy).
    x = calibration.numpy()
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert minmax["images"][0] == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert minmax["images"][1] == round(-lo / ((hi - lo) / 255))
    percentile = activation_scales(
        q.quantize_onnx(fp32, tmp_path / "pct.onnx", calibration, method="percentile", percentile=99.0).path
    )
    assert percentile.keys() == minmax.keys()
    assert all(percentile[k][0] <= minmax[k][0] * (1 + 1e-6) for k in minmax)
    assert any(percentile[k][0] < 0.9 * minmax[k][0] for k in minmax)  # 1% of the values clipped: narrower ranges


def test_reduce_range_int8_kernels_compute_the_qdq_graph_exactly(tmp_path, lenet_fixed_batch):
    """The fused INT8 kernels (QLinearConv ...) against the same file's QuantizeLinear/DequantizeLinear graph in float.

    On x86 without VNNI, u8 x s8 byte pairs summed into int16 saturate with full 8-bit weights; with the
    default 7-bit weights the two must agree to float rounding on a network this small.
    """
    import onnxruntime as ort

    _, fp32 = lenet_fixed_batch
    path = q.quantize_onnx(fp32, tmp_path / "int8.onnx", smooth_images(16, 1, 28, seed=0)).path
    plain = ort.SessionOptions()
    plain.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )  # Q and DQ run as ops, the convs in float
    as_graph = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    fused = q.inference_session(path, threads=1)
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
    for image in smooth_images(8, 1, 28, seed=5).numpy():
        want = as_graph.run(None, {"images": image[None]})[0]
        got = fused.run(None, {"images": image[None]})[0]
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


# --------------------------------------------------------------------------------------------------
# Calibration images from data specs and run folders
# --------------------------------------------------------------------------------------------------


def test_calibration_batch_from_a_run_folder_is_its_training_data_normalised(tmp_path):
    spec = "synthetic:40:1x28x28:10"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"model": "lenet5", "data": spec, "image_size": None, "model_options": {}})
    )
    splits = datalib.load_data(spec)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(7))[:12]
    want = (splits.train.images[order].float() / 255 - 0.1307) / 0.3081  # lenet5's mean and std (registry)
    got = q.calibration_batch(run, 12, seed=7)
    torch.testing.assert_close(got, want)
    images, labels = q.held_out_batch(run)  # the whole test split, in a seeded order
    assert len(images) == len(splits.test) == 10
    assert sorted(labels.tolist()) == sorted(splits.test.labels.tolist())
    assert len(q.calibration_batch(run, 1000)) == 40  # no more than the split has


def test_calibration_from_an_image_folder_uses_the_evaluation_crop(tmp_path):
    """Images framed as at inference: short side resized to size / 0.875, centre crop (torchvision's transforms)."""
    from torchvision.transforms import v2

    files = []
    for split in ("train", "val"):
        for label, cls in enumerate(("a", "b")):
            for i in range(3):
                ramp = (
                    np.arange(60)[None, :, None] * (2 + i) + np.array([0, 40, 80]) * (1 + label)
                ) % 256  # 40 x 60 x 3
                image = np.broadcast_to(ramp, (40, 60, 3)).astype(np.uint8)
                files.append((split, write_png(tmp_path / split / cls / f"{i}.png", image), image))
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    evaluation = v2.Compose([v2.Resize(int(16 / 0.875), antialias=True), v2.CenterCrop(16)])
    normalise = lambda image: (
        (evaluation(torch.from_numpy(image).permute(2, 0, 1)).float() / 255 - torch.tensor(mean).view(3, 1, 1))
        / torch.tensor(std).view(3, 1, 1)
    )  # noqa: E731
    references = [normalise(image) for split, _, image in files if split == "train"]
    images = q.calibration_batch(f"folder:{tmp_path}", 4, image_size=16, mean=mean, std=std)
    assert images.shape == (4, 3, 16, 16)
    matches = [[i for i, ref in enumerate(references) if torch.allclose(img, ref, atol=1e-6)] for img in images]
    assert all(len(m) == 1 for m in matches) and len({m[0] for m in matches}) == 4  # four different training images


def test_bad_inputs_say_what_is_wrong(tmp_path, lenet_fixed_batch):
    _, fp32 = lenet_fixed_batch
    with pytest.raises(
        q.QuantizeError,
        match=r"calibration images of shape \(3, 32, 32\) \(C, H, W\), but the model takes \(1, 28, 28\)",
    ):
        q.quantize_onnx(fp32, tmp_path / "x.onnx", torch.zeros(4, 3, 32, 32))
    with pytest.raises(q.QuantizeError, match="calibration images must be float .N, C, H, W."):
        q.quantize_onnx(fp32, tmp_path / "x.onnx", torch.zeros(28, 28))
    with pytest.raises(q.QuantizeError, match="NaN or infinite"):
        q.quantize_onnx(fp32, tmp_path / "x.onnx", torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(q.QuantizeError, match="calibration_images is empty"):
        q.quantize_onnx(fp32, tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match="calibration method 'kl': expected one of minmax, entropy, percentile"):
        q.quantize_onnx(fp32, tmp_path / "x.onnx", torch.zeros(2, 1, 28, 28), method="kl")
    with pytest.raises(q.QuantizeError, match="nope.onnx: no such ONNX file"):
        q.quantize_onnx(tmp_path / "nope.onnx", tmp_path / "x.onnx", torch.zeros(2, 1, 28, 28))
    with pytest.raises(q.QuantizeError, match="give mean and std"):
        q.calibration_batch("synthetic:8:1x28x28:2", 4)
    with pytest.raises(q.QuantizeError, match="neither a run folder"):
        q.calibration_batch(tmp_path, 4)
    assert not (tmp_path / "x.onnx").exists()


def test_an_existing_output_is_replaced_only_with_force(tmp_path, lenet_fixed_batch):
    _, fp32 = lenet_fixed_batch
    images = smooth_images(4, 1, 28, seed=0)
    out = q.quantize_onnx(fp32, tmp_path / "int8.onnx", images).path
    with pytest.raises(cnnzoo.CnnzooError, match="already exists .*pass --force"):
        q.quantize_onnx(fp32, out, images)
    assert q.quantize_onnx(fp32, out, images, method="percentile", force=True).path == out
    assert OnnxModel(out).metadata["quantization"]["method"] == "percentile"
