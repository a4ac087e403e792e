"""The pretrained table against its sources, and the lookup / registration / fetch API.

- torchvision: every zoo twin has one entry per weights enum member the installed torchvision
  publishes, each field equal to the enum's (URL, the SHA-256 prefix as torch.hub reads it from the
  file name, categories, transforms, metrics, size), and published accuracies equal ANCHORS.md.
- Keras: the table equals what Keras' own sources pin (read with ``ast``, no Keras import needed), and
  the preprocessing reproduces ``keras.applications.*.preprocess_input`` on real arrays.
- Fetching goes through tests/loopback.py: a registered LeNet-5 file is downloaded, verified and loaded.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import io
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.hub
import torchvision.models as tvm
from torchvision.models._meta import _IMAGENET_CATEGORIES

import cnnzoo
from cnnzoo import pretrained as P
from cnnzoo.errors import UnknownModelError, WeightsError
from cnnzoo.hub import OfflineError
from cnnzoo.pretrained_keras import KERAS_FILES
from tests.loopback import LoopbackServer


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private caches, and registrations undone after each test."""
    for var, sub in (("CNNZOO_HOME", "cnnzoo"), ("TORCH_HOME", "torch"), ("KERAS_HOME", "keras")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("CNNZOO_OFFLINE", raising=False)
    saved = copy.deepcopy(P._USER), dict(P._USER_DEFAULT)
    yield tmp_path
    P._USER.clear()
    P._USER.update(saved[0])
    P._USER_DEFAULT.clear()
    P._USER_DEFAULT.update(saved[1])


def twins() -> list[tuple[str, str]]:
    """(zoo name, torchvision name) of every zoo model that has a torchvision counterpart."""
    return [
        (name, cnnzoo.get_model_info(name).torchvision)
        for name in cnnzoo.list_models()
        if cnnzoo.get_model_info(name).torchvision
    ]


def file_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------------
# The torchvision part of the table
# --------------------------------------------------------------------------------------------------


def test_every_torchvision_twin_has_every_weights_enum_member():
    assert {tv for _, tv in twins()} == {
        "alexnet",
        "googlenet",
        "inception_v3",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    }
    for name, tv_name in twins():
        enum = tvm.get_model_weights(tv_name)
        entries = {e.tag: e for e in map(P.get_pretrained, P.list_pretrained(name)) if e.source == "torchvision"}
        assert set(entries) == {w.name for w in enum}, name
        assert P.get_pretrained(name).tag == enum.DEFAULT.name
        for weights in enum:
            check_torchvision_entry(entries[weights.name], weights)


def check_torchvision_entry(entry: P.PretrainedEntry, weights) -> None:
    assert entry.url == weights.url
    assert entry.digest == "sha256:" + torch.hub.HASH_REGEX.search(file_name(weights.url)).group(1)
    assert len(entry.pinned.hexdigest) >= 8
    categories = weights.meta["categories"]
    assert entry.categories == (tuple(categories) if categories else None)
    assert entry.num_classes == (len(categories) if categories else None) and entry.has_classifier == bool(categories)
    scores = weights.meta["_metrics"]["ImageNet-1K"]
    for ours, theirs in ((entry.top1, scores["acc@1"]), (entry.top5, scores["acc@5"])):
        assert ours == theirs or (ours is None and math.isnan(theirs))
    assert (entry.file_size_mb, entry.num_params, entry.recipe) == (
        weights.meta["_file_size"],
        weights.meta["num_params"],
        weights.meta["recipe"],
    )
    transform = weights.transforms()
    pre = entry.preprocessing
    assert (pre.resize, pre.crop, pre.interpolation, pre.antialias) == (
        transform.resize_size[0],
        transform.crop_size[0],
        transform.interpolation.value,
        transform.antialias,
    )
    assert (pre.channel_order, pre.resize_mode, entry.source) == ("RGB", "shorter", "torchvision")
    if entry.model not in ("googlenet", "inception_v3"):  # see the transform_input test
        assert (pre.mean, pre.std) == (tuple(transform.mean), tuple(transform.std))


def test_published_accuracies_and_files_match_the_anchors():
    top1 = {  # ANCHORS.md "Accuracy"
        "vgg16.IMAGENET1K_V1": 71.592,
        "googlenet.IMAGENET1K_V1": 69.778,
        "inception_v3.IMAGENET1K_V1": 77.294,
        "resnet18.IMAGENET1K_V1": 69.758,
        "resnet50.IMAGENET1K_V1": 76.13,
        "resnet50.IMAGENET1K_V2": 80.858,
    }
    assert {name: P.get_pretrained(name).top1 for name in top1} == top1
    v2 = P.get_pretrained("resnet50")  # ANCHORS.md "Published pretrained weights": the default is V2
    assert (v2.tag, v2.file_name, v2.digest) == ("IMAGENET1K_V2", "resnet50-11ad3fa6.pth", "sha256:11ad3fa6")
    assert P.list_pretrained("resnet50") == ["resnet50.IMAGENET1K_V2", "resnet50.IMAGENET1K_V1"]
    assert (
        P.get_pretrained("inception_v3").preprocessing.resize,
        P.get_pretrained("inception_v3").preprocessing.crop,
    ) == (342, 299)


@pytest.mark.parametrize("name, network", [("googlenet", tvm.GoogLeNet), ("inception_v3", tvm.Inception3)])
def test_googlenet_and_inception_entries_give_the_normalisation_transform_input_produces(name, network):
    """torchvision normalises with the ImageNet mean/std, then the model's transform_input re-maps the
    channels; cnnzoo's models have no transform_input, so the entry must give the composite directly."""
    entry = P.get_pretrained(name)
    transform = tvm.get_model_weights(name).DEFAULT.transforms()
    pixels = torch.rand(2, 3, 8, 8)
    mean_tv, std_tv = (torch.tensor(v).view(1, 3, 1, 1) for v in (transform.mean, transform.std))
    torchvision_input = network._transform_input(
        types.SimpleNamespace(transform_input=True), (pixels - mean_tv) / std_tv
    )
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (entry.preprocessing.mean, entry.preprocessing.std))
    torch.testing.assert_close((pixels - mean) / std, torchvision_input)
    info = cnnzoo.get_model_info(name)
    assert (entry.preprocessing.mean, entry.preprocessing.std) == (tuple(info.mean), tuple(info.std))


def test_every_entry_feeds_the_model_its_native_size():
    for name in P.list_pretrained():
        entry = P.get_pretrained(name)
        assert entry.preprocessing.input_size == cnnzoo.get_model_info(entry.model).input_size[1], name


# --------------------------------------------------------------------------------------------------
# The Keras part: against Keras' sources and its preprocess_input
# --------------------------------------------------------------------------------------------------


def keras_applications_dir() -> Path:
    spec = importlib.util.find_spec("keras")  # finds the package without importing it
    return Path(spec.submodule_search_locations[0]) / "src" / "applications"


def module_constants(tree: ast.Module) -> dict:
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
    }


def get_file_calls(tree: ast.Module) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "get_file"]


def evaluate(node: ast.expr, names: dict) -> object:
    return eval(compile(ast.Expression(node), "<keras source>", "eval"), {"__builtins__": {}}, names)  # noqa: S307


def keras_pins() -> dict[str, str]:
    """URL -> file_hash of every file Keras' VGG16/19, ResNet50/101/152 and InceptionV3 sources pin."""
    pins = {}
    for module in ("vgg16", "vgg19", "inception_v3"):  # get_file("name", WEIGHTS_PATH..., file_hash="...")
        tree = ast.parse((keras_applications_dir() / f"{module}.py").read_text())
        constants = module_constants(tree)
        for call in get_file_calls(tree):
            file_hash = next(k.value for k in call.keywords if k.arg == "file_hash")
            pins[evaluate(call.args[1], constants)] = evaluate(file_hash, constants)
    # resnet.py: `if include_top: file_name = f"..."; file_hash = WEIGHTS_HASHES[weights_name][0] else: ...`,
    # then get_file(file_name, f"{BASE_WEIGHTS_PATH}{file_name}", file_hash=file_hash)
    tree = ast.parse((keras_applications_dir() / "resnet.py").read_text())
    constants = module_constants(tree)
    (call,) = get_file_calls(tree)
    branches = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.If)
        and getattr(n.test, "id", None) == "include_top"
        and any(isinstance(s, ast.Assign) and getattr(s.targets[0], "id", None) == "file_name" for s in n.body)
    ]
    for weights_name in ("resnet50", "resnet101", "resnet152"):
        for body in (branches[0].body, branches[0].orelse):
            names = {**constants, "weights_name": weights_name}
            for statement in body:
                names[statement.targets[0].id] = evaluate(statement.value, names)
            pins[evaluate(call.args[1], names)] = names["file_hash"]
    return pins


def test_keras_table_is_what_keras_sources_pin():
    assert {spec.url: spec.md5 for spec in KERAS_FILES} == keras_pins()
    for spec in KERAS_FILES:
        assert spec.include_top == ("_notop" not in spec.url)
        assert f"def {spec.keras_name}(" in (keras_applications_dir() / f"{spec.module}.py").read_text()
        assert cnnzoo.get_model_info(spec.model).keras == spec.keras_name
        entry = P.get_pretrained(spec.model, spec.tag)
        assert (entry.url, entry.digest, entry.source) == (spec.url, f"md5:{spec.md5}", "keras")
        assert entry.pinned.algorithm == "md5"  # 32 digits: keras.utils.get_file checks them with MD5
    assert {s.keras_name for s in KERAS_FILES} == {
        "VGG16",
        "VGG19",
        "ResNet50",
        "ResNet101",
        "ResNet152",
        "InceptionV3",
    }


def test_keras_entries_classes_and_defaults():
    for spec in KERAS_FILES:
        entry = P.get_pretrained(spec.model, spec.tag)
        if spec.include_top:
            assert (
                entry.categories == tuple(_IMAGENET_CATEGORIES) and entry.num_classes == 1000 and entry.has_classifier
            )
            assert entry.top1 is not None and entry.top5 is not None
        else:
            assert (entry.categories, entry.num_classes, entry.has_classifier, entry.metrics) == (None, None, False, {})
    for model in ("resnet50_keras", "resnet101_keras", "resnet152_keras", "inception_v3_keras"):
        assert P.get_pretrained(model).tag == "imagenet"
    assert P.get_pretrained("vgg16").source == "torchvision"  # vgg16/vgg19 keep torchvision's default


def test_keras_preprocessing_reproduces_preprocess_input():
    from keras.src.applications import inception_v3, resnet, vgg16, vgg19

    modules = {"vgg16": vgg16, "vgg19": vgg19, "resnet": resnet, "inception_v3": inception_v3}
    image = np.random.default_rng(0).uniform(0, 255, size=(2, 7, 7, 3)).astype(np.float32)  # RGB, channels last
    for spec in KERAS_FILES:
        expected = np.asarray(modules[spec.module].preprocess_input(image.copy(), data_format="channels_last"))
        pre = P.get_pretrained(spec.model, spec.tag).preprocessing
        pixels = image / 255.0
        if pre.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        ours = (pixels - np.array(pre.mean)) / np.array(pre.std)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-3, err_msg=spec.keras_name)
        assert (pre.resize_mode, pre.crop) == ("exact", None)  # preprocess_input neither resizes nor crops


def test_keras_flavours_entries_agree_with_their_model_info():
    for model in ("resnet50_keras", "resnet101_keras", "resnet152_keras", "inception_v3_keras"):
        info, pre = cnnzoo.get_model_info(model), P.get_pretrained(model).preprocessing
        np.testing.assert_allclose(pre.mean, info.mean, rtol=1e-12)
        np.testing.assert_allclose(pre.std, info.std, rtol=1e-12)
        assert pre.channel_order == info.channel_order


# --------------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------------


def test_names_are_unique_model_dot_tag_in_zoo_order():
    names = P.list_pretrained()
    assert len(names) == len(set(names))
    models = [n.split(".")[0] for n in names]
    zoo = cnnzoo.list_models()
    assert models == sorted(models, key=zoo.index)
    assert {m for m in zoo if P.list_pretrained(m)} == {
        m for m in zoo if cnnzoo.get_model_info(m).torchvision or cnnzoo.get_model_info(m).keras
    }
    assert P.list_pretrained("lenet5") == []
    with pytest.raises(UnknownModelError, match="resnet50"):
        P.list_pretrained("resnet5")


def test_get_pretrained_by_name_tag_default_and_case():
    entry = P.get_pretrained("resnet50", "IMAGENET1K_V1")
    assert P.get_pretrained("resnet50.IMAGENET1K_V1") is entry
    assert P.get_pretrained("resnet50", "imagenet1k_v1") is entry
    assert (
        P.get_pretrained("resnet50", "DEFAULT") is P.get_pretrained("resnet50") is P.get_pretrained("resnet50.default")
    )
    assert entry.name == "resnet50.IMAGENET1K_V1" and entry.metrics == {"top1": 76.13, "top5": 92.862}
    with pytest.raises(
        P.UnknownPretrainedError,
        match=r"tagged 'IMAGENET1K_V3'\. Did you mean .*Its tags: IMAGENET1K_V1, IMAGENET1K_V2 \(default\)",
    ):
        P.get_pretrained("resnet50", "IMAGENET1K_V3")
    with pytest.raises(P.UnknownPretrainedError, match="lenet5 has no published pretrained weights"):
        P.get_pretrained("lenet5")
    with pytest.raises(UnknownModelError, match="Did you mean"):
        P.get_pretrained("resnet51.IMAGENET1K_V1")


def test_entries_report_json_and_cache_state():
    entry = P.get_pretrained("vgg16.imagenet_notop")
    data = json.loads(json.dumps(entry.as_dict()))
    assert (
        data["name"] == "vgg16.imagenet_notop"
        and data["cached"] is False
        and data["preprocessing"]["channel_order"] == "BGR"
    )
    assert entry.cache_path == P.hub.weights_dir() / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_offline_fetch_of_a_published_entry_names_its_url_and_path(monkeypatch):
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    entry = P.get_pretrained("resnet18")
    with pytest.raises(OfflineError) as failure:
        P.fetch_pretrained("resnet18")
    assert entry.url in str(failure.value) and f"put it at {P.hub.weights_dir() / 'resnet18-f37072fd.pth'} " in str(
        failure.value
    )


# --------------------------------------------------------------------------------------------------
# Registering your own file
# --------------------------------------------------------------------------------------------------


def lenet5_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    state = cnnzoo.create_model("lenet5").state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def test_register_fetch_and_load_a_hosted_file():
    data, state = lenet5_file()
    with LoopbackServer() as server:
        url = server.add("/lenet5-mnist.pth", data)
        entry = P.register_pretrained(
            "lenet5", "mnist", url=url, sha256=hashlib.sha256(data).hexdigest(), categories=[str(d) for d in range(10)]
        )
        assert P.list_pretrained("lenet5") == ["lenet5.mnist"] and P.get_pretrained("lenet5") is entry
        assert (entry.source, entry.num_classes, entry.cached) == ("user", 10, False)
        path = P.fetch_pretrained("lenet5.mnist", progress=False)
        assert entry.cached and entry.cached_path() == path == entry.cache_path
        assert len(server.served("/lenet5-mnist.pth")) == 1
    model = cnnzoo.create_model("lenet5")
    cnnzoo.load_pretrained(model, path)  # the existing loader reads the fetched file by its content
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    info = cnnzoo.get_model_info("lenet5")
    assert (entry.preprocessing.mean, entry.preprocessing.crop) == (info.mean, info.input_size[1])


def test_a_mirror_of_a_published_file_inherits_its_pin_and_replacing_is_undone():
    mirror = "https://mirror.example.com/weights/resnet18-f37072fd.pth"
    published = P.get_pretrained("resnet18.IMAGENET1K_V1")
    copy_entry = P.register_pretrained("resnet18", "corp", url=mirror, like="resnet18.IMAGENET1K_V1")
    assert (copy_entry.digest, copy_entry.categories, copy_entry.preprocessing, copy_entry.top1) == (
        published.digest,
        published.categories,
        published.preprocessing,
        published.top1,
    )
    assert copy_entry.source == "user" and P.get_pretrained("resnet18").tag == "IMAGENET1K_V1"
    P.register_pretrained("resnet18", "IMAGENET1K_V1", url=mirror, like=published, replace_existing=True)
    assert P.get_pretrained("resnet18").url == mirror
    P.unregister_pretrained("resnet18", "IMAGENET1K_V1")
    assert P.get_pretrained("resnet18").url == published.url


@pytest.mark.parametrize(
    "tag, options, error",
    [
        ("bad.tag", {"sha256": "0676ba61"}, "pretrained tag"),
        ("DEFAULT", {"sha256": "0676ba61"}, "pretrained tag"),
        ("mine", {}, "pinned digest"),
        ("mine", {"sha256": "0676ba61", "md5": "0" * 32}, "not both"),
        ("mine", {"sha256": "xyz"}, "hex digits"),
        ("IMAGENET1K_V1", {"sha256": "0676ba61"}, "already exists"),
        (
            "mine",
            {"sha256": "0676ba61", "categories": ["a", "b"], "num_classes": 1000},
            "2 categories for num_classes=1000",
        ),
    ],
)
def test_register_refuses_bad_input_in_one_line(tag, options, error):
    with pytest.raises(WeightsError, match=error) as failure:
        P.register_pretrained("resnet18", tag, url="https://example.org/r18.pth", **options)
    assert "\n" not in str(failure.value)


def test_register_refuses_unknown_fields_models_and_schemes():
    with pytest.raises(TypeError, match="unexpected keyword arguments colour"):
        P.register_pretrained("resnet18", "x", url="https://example.org/r.pth", sha256="0676ba61", colour="red")
    with pytest.raises(UnknownModelError):
        P.register_pretrained("resnet19", "x", url="https://example.org/r.pth", sha256="0676ba61")
    with pytest.raises(WeightsError, match="only http"):
        P.register_pretrained("resnet18", "x", url="file:///tmp/r.pth", sha256="0676ba61")


# --------------------------------------------------------------------------------------------------
# What create_model(pretrained=...), predict and eval take from an entry
# --------------------------------------------------------------------------------------------------


def test_names_with_a_tag_and_what_pretrained_accepts():
    assert P.split_name("resnet50.IMAGENET1K_V1") == ("resnet50", "IMAGENET1K_V1")
    assert P.split_name("resnet50") == ("resnet50", None)
    with pytest.raises(P.UnknownPretrainedError, match="nothing after the dot"):
        P.split_name("resnet50.")
    v1 = P.get_pretrained("resnet50.IMAGENET1K_V1")
    assert P.resolve_pretrained("resnet50", False) is None and P.resolve_pretrained("resnet50", None) is None
    assert P.resolve_pretrained("resnet50", True) is P.get_pretrained("resnet50")
    assert P.resolve_pretrained("resnet50", "imagenet1k_v1") is v1
    assert (
        P.resolve_pretrained("resnet50", "resnet50.IMAGENET1K_V1") is v1 and P.resolve_pretrained("resnet50", v1) is v1
    )
    with pytest.raises(P.UnknownPretrainedError, match="weights of resnet18, not of resnet50"):
        P.resolve_pretrained("resnet50", "resnet18.IMAGENET1K_V1")
    with pytest.raises(P.UnknownPretrainedError, match="expected True"):
        P.resolve_pretrained("resnet50", 3)


def test_preprocessing_round_trips_through_plain_data():
    for name in ("resnet50.IMAGENET1K_V2", "vgg16.imagenet", "inception_v3_keras.imagenet"):
        pre = P.get_pretrained(name).preprocessing
        data = json.loads(json.dumps(pre.as_dict()))
        assert data["image_size"] == pre.input_size and P.Preprocessing.from_dict(data) == pre


@pytest.mark.parametrize("name", ["resnet50.IMAGENET1K_V2", "resnet50.IMAGENET1K_V1", "inception_v3.IMAGENET1K_V1"])
def test_the_eval_crop_of_a_torchvision_entry_is_its_transforms_preset(name):
    """EvalCrop.of(entry) resizes and crops as torchvision's weights.transforms() does (before normalising)."""
    from torchvision.transforms.v2 import functional as F2

    from cnnzoo.data import EvalCrop

    model, tag = name.split(".")
    preset = tvm.get_model_weights(cnnzoo.get_model_info(model).torchvision)[tag].transforms()
    crop = EvalCrop.of(P.get_pretrained(name).preprocessing)
    assert (crop.resize, crop.crop, crop.interpolation) == (
        preset.resize_size[0],
        preset.crop_size[0],
        preset.interpolation.value,
    )
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 301, 407), dtype=np.uint8))
    ours = crop.transform()(image)
    theirs = F2.center_crop(
        F2.resize(image, preset.resize_size, preset.interpolation, antialias=True), preset.crop_size
    )
    assert ours.shape == (3, crop.crop, crop.crop)
    assert (ours.int() - theirs.int()).abs().max() <= 1  # uint8 resampling rounds alike, up to one level


def test_the_eval_crop_of_a_keras_entry_is_load_img_nearest():
    """keras.utils.load_img(target_size=...) resizes the whole image with PIL's nearest neighbour."""
    from PIL import Image

    from cnnzoo.data import EvalCrop

    crop = EvalCrop.of(P.get_pretrained("resnet50_keras").preprocessing)
    assert (crop.mode, crop.crop, crop.interpolation) == ("exact", 224, "nearest")
    pixels = np.random.default_rng(1).integers(0, 256, (333, 500, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.NEAREST))
    ours = crop.transform()(torch.from_numpy(pixels).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, pil)


def test_bgr_batches_are_the_flipped_image_normalised_in_bgr():
    from cnnzoo.data import ArrayData
    from cnnzoo.data.batches import ChannelsReversed, make_batches

    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    split = ArrayData(images, torch.arange(4), ["a", "b", "c", "d"])
    pre = P.get_pretrained("resnet50_keras").preprocessing
    shard = types.SimpleNamespace(rank=0, world=1)
    batches = make_batches(split, 4, torch.device("cpu"), pre.mean, pre.std, shard, train=False, channel_order="BGR")
    assert isinstance(batches, ChannelsReversed) and len(batches) == 1
    ((x, _),) = list(batches.epoch(0, 0))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (pre.mean, pre.std))
    want = (images.flip(1).float() / 255 - mean) / std  # keras' caffe mode: BGR, minus the mean in 0..255
    torch.testing.assert_close(x, want)


def test_a_file_is_matched_to_its_entry_by_digest(tmp_path):
    data, _ = lenet5_file()
    path = tmp_path / "any-name.pth"
    path.write_bytes(data)
    assert P.match_file("lenet5", path) is None
    by_sha = P.register_pretrained(
        "lenet5", "a", url="https://example.org/a.pth", sha256=hashlib.sha256(data).hexdigest()[:10]
    )
    assert P.match_file("lenet5", path) is by_sha
    P.unregister_pretrained("lenet5", "a")
    by_md5 = P.register_pretrained("lenet5", "b", url="https://example.org/b.h5", md5=hashlib.md5(data).hexdigest())
    assert P.match_file("lenet5", path) is by_md5


def test_adapt_input_conv_against_the_convolution_it_replaces():
    from cnnzoo.weights.adapt import adapt_input_conv

    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    gray = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        torch.nn.functional.conv2d(gray, adapt_input_conv(weight, 1)),
        torch.nn.functional.conv2d(gray.expand(-1, 3, -1, -1), weight),
    )
    four = adapt_input_conv(weight, 4)  # R, G, B, R, scaled by 3/4 (timm's adapt_input_conv)
    torch.testing.assert_close(four, torch.cat([weight, weight[:, :1]], 1) * 0.75)
    assert adapt_input_conv(weight.half(), 1).dtype == torch.float16
    assert adapt_input_conv(weight, 3) is weight
    with pytest.raises(WeightsError, match="only 3-channel kernels are repeated"):
        adapt_input_conv(torch.randn(8, 4, 3, 3), 2)


def test_keras_notop_files_load_the_backbone_and_keep_a_fresh_head(tmp_path):
    """A file like keras.applications' vgg16_..._notop.h5 (no fc1, fc2, predictions): the features match Keras',
    the MLP classifier keeps its initialisation; without backbone_only the refusal says what to do."""
    import keras

    from cnnzoo.weights import load_pretrained
    from tests.test_keras_weights import randomise, save

    keras.utils.set_random_seed(0)
    k = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomise(keras, k, he=True)
    path = save(keras, k, tmp_path, ["download.h5"])["download.h5"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    want = keras.ops.convert_to_numpy(k(x.permute(0, 2, 3, 1).numpy(), training=False))
    torch.manual_seed(3)
    model = cnnzoo.create_model("vgg16")
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("classifier.")}
    with pytest.raises(WeightsError, match=r"the file has no classifier .*backbone_only=True"):
        load_pretrained(model, path)
    report = load_pretrained(model, path, backbone_only=True)
    assert report.notes == [
        "backbone only: the file has no classifier; classifier keeps its fresh initialisation (6 tensors)"
    ]
    with torch.no_grad():
        got = model.eval().forward_features(x).permute(0, 2, 3, 1).numpy()
    assert np.abs(want).max() > 0.1 and np.abs(got - want).max() <= 1e-4
    for key, value in fresh.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_solution_csv_and_flat_folder_errors(tmp_path):
    from cnnzoo.data import DataError, EvalCrop, load_eval_folder, read_solution_csv

    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000002,n01751748 1 2 3 4 n01751748 5 6 7 8\n")
    assert read_solution_csv(csv_path) == {"ILSVRC2012_val_00000002": "n01751748"}
    csv_path.write_text("id,label\nx,n1\n")
    with pytest.raises(DataError, match="expected the header ImageId,PredictionString"):
        read_solution_csv(csv_path)
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000002,\n")
    with pytest.raises(DataError, match="line 2: expected IMAGE_ID,SYNSET"):
        read_solution_csv(csv_path)
    (tmp_path / "ILSVRC2012_val_00000009.JPEG").write_bytes(b"\xff\xd8")
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000002,n01751748 1 2 3 4\n")
    with pytest.raises(DataError, match="1 images have no row in .*LOC_val_solution.csv"):
        load_eval_folder(tmp_path, eval_crop=EvalCrop(224))
    csv_path.unlink()
    with pytest.raises(DataError, match="no LOC_val_solution.csv in it or up to 4 folders above"):
        load_eval_folder(tmp_path, eval_crop=EvalCrop(224))
