"""cnnzoo.visualize: PNGs for every zoo model, opened and checked; stages; image loading."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnzoo import create_model, get_model_info, list_models
from cnnzoo.errors import CnnzooError, InputShapeError
from cnnzoo.trace import resolve_model, trace
from cnnzoo.visualize import (
    DPI,
    FILTERS_INCHES,
    INPUT_INCHES,
    MAPS_ROW,
    MAPS_TITLE,
    MAPS_WIDTH,
    STATS_INCHES,
    load_image,
    stages,
    visualize,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 120x90 picture with edges and colours: stripes, a disc, a gradient."""
    y, x = np.mgrid[0:90, 0:120]
    picture = np.stack([(x * 2) % 256, np.where((x - 60) ** 2 + (y - 45) ** 2 < 600, 255, 40), (y * 3) % 256], axis=-1)
    path = tmp_path_factory.mktemp("images") / "test.png"
    Image.fromarray(picture.astype(np.uint8)).save(path)
    return path


def _pixels(path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"), dtype=np.float32) / 255


def _not_blank(pixels: np.ndarray) -> bool:
    """Spread-out values and many distinct colours (a blank or flat picture has a handful)."""
    rgb = np.round(pixels.reshape(-1, 3) * 255).astype(np.int64)
    colours = np.unique(rgb @ np.array([1 << 16, 1 << 8, 1]))
    return pixels.std() > 0.05 and len(colours) > 50


def _size(info) -> int:
    """A small input that still has a few stages: the native size up to 64, never below the minimum."""
    return max(info.min_size, min(info.input_size[1], 48))


def quick_model(name: str) -> nn.Module:
    """A zoo model with weights set quickly: built on meta, materialised, convolutions drawn as PyTorch's
    default, fully connected weights zero (VGG's 120M classifier weights take seconds to draw and are in
    none of the pictures), BatchNorm the identity."""
    with torch.device("meta"):
        model = create_model(name)
    model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            if m.weight is not None:
                nn.init.ones_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return model


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_gets_its_pictures(name, image, tmp_path):
    info = get_model_info(name)
    pictures = visualize(quick_model(name), image, tmp_path / "out", size=_size(info), channels=4)
    expected = {
        pictures.input: INPUT_INCHES,
        pictures.filters: FILTERS_INCHES,
        pictures.feature_maps: (MAPS_WIDTH, MAPS_ROW * len(pictures.stages) + MAPS_TITLE),
        pictures.activation_stats: STATS_INCHES,
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "activation_stats.png",
        "feature_maps.png",
        "filters.png",
        "input.png",
    ]
    assert len(pictures.stages) >= 2
    for path, (width, height) in expected.items():
        pixels = _pixels(path)
        assert pixels.shape[:2] == (round(height * DPI), round(width * DPI)), path.name
        assert _not_blank(pixels), path.name


@pytest.mark.parametrize("name", ["lenet5", "resnet50_keras"])
def test_a_model_by_name(name, image, tmp_path):
    pictures = visualize(name, image, tmp_path, size=max(get_model_info(name).min_size, 28))
    assert pictures.first_conv in ("features.conv1", "conv1_conv")
    assert all(_not_blank(_pixels(p)) for p in pictures.paths)


def test_stages_are_block_outputs():
    def names(model_name):
        model, _ = resolve_model(model_name)
        return [n.name for n in stages(trace(model, model.info.input_size))]

    assert names("resnet50") == ["relu", "layer1.2.relu[2]", "layer2.3.relu[2]", "layer3.5.relu[2]", "layer4.2.relu[2]"]
    assert names("inception_v3_keras")[-3:] == ["mixed2", "mixed7", "mixed10"]
    assert names("googlenet")[-3:] == ["inception3b", "inception4e", "inception5b"]
    assert names("vgg16")[:2] == ["features.block1_conv2_relu", "features.block2_conv2_relu"]
    # The auxiliary heads are side branches: never stages, even when they run.
    model, _ = resolve_model("googlenet", aux_logits=True)
    assert not any(n.path.startswith("aux") for n in stages(trace(model, (3, 224, 224), mode="train", batch_size=2)))


def test_image_is_prepared_as_the_model_wants(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    rgb, _ = resolve_model("resnet18", device="cpu")
    x = load_image(path, rgb, 32)
    assert x.shape == (1, 3, 32, 32)
    mean, std = torch.tensor(rgb.info.mean).view(3, 1, 1), torch.tensor(rgb.info.std).view(3, 1, 1)
    assert torch.allclose((x[0] * std + mean)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    bgr, _ = resolve_model("resnet50_keras", device="cpu")  # Keras' caffe mode: BGR, minus the mean
    x = load_image(path, bgr, 32)
    mean, std = torch.tensor(bgr.info.mean).view(3, 1, 1), torch.tensor(bgr.info.std).view(3, 1, 1)
    assert torch.allclose((x[0] * std + mean)[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    gray, _ = resolve_model("lenet5", device="cpu")
    assert load_image(path, gray, 28).shape == (1, 1, 28, 28)


def test_errors(image, tmp_path):
    with pytest.raises(CnnzooError, match="image file .*missing.png' not found"):
        visualize("resnet20", tmp_path / "missing.png", tmp_path)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    with pytest.raises(CnnzooError, match="cannot read .* as an image"):
        visualize("resnet20", not_an_image, tmp_path)
    with pytest.raises(KeyError, match="Did you mean resnet32, resnet20"):
        visualize("resnet21", image, tmp_path)
    with pytest.raises(InputShapeError, match="inception_v3 needs an input of at least 75x75 pixels; got size=64"):
        visualize("inception_v3", image, tmp_path, size=64)
