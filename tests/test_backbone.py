"""The backbone API on every zoo model (timm's names): forward_features / forward_head, headless networks
(num_classes=0, global_pool), features_only with feature_info, weights of the full network loaded into
both, and the Keras-style trainable / non-trainable split of a frozen network.

References: torchvision's models and its create_feature_extractor, keras.applications.ResNet50, timm's
published feature_info (resnet50, inception_v3, vgg16), and plain tensor reductions for the pooling."""

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import cnnzoo
from cnnzoo.counting import count_params
from cnnzoo.models import FeatureExtractor
from cnnzoo.models.googlenet import GoogLeNetOutputs

from .anchors import KERAS_PARAMS, TORCHVISION_PARAMS

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = cnnzoo.list_models()
# Every layer of these pads so that a map is ceil(input / reduction); LeNet-5, AlexNet and Inception v3
# have unpadded layers, whose maps come out a little smaller.
SAME_PADDING = [n for n in ALL if cnnzoo.get_model_info(n).family in ("resnet", "vgg", "googlenet")]


def meta_model(name, **kw):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kw).eval()


def meta_input(name, size, batch=2):
    return torch.empty(batch, cnnzoo.get_model_info(name).input_size[0], size, size, device="meta")


def head_keys(model, keys):
    """The state-dict keys of the classifier and the auxiliary heads: what a headless network lacks."""
    heads = (model.head_classifier, *model.aux_heads)
    return {k for k in keys if k.split(".")[0] in heads}


def hooked_outputs(model, paths, x):
    """The outputs of the modules at ``paths`` during one forward pass of the network, and its result ("logits")."""
    seen = {}
    handles = [
        model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o.clone())) for p in paths
    ]
    try:
        seen["logits"] = model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


# --- forward, forward_head, reset_classifier: real numbers, small inputs -----------------------------


@pytest.mark.parametrize("name", ALL)
def test_forward_is_forward_head_of_forward_features_and_the_extractor_replays_it(name):
    info = cnnzoo.get_model_info(name)
    model = cnnzoo.create_model(name).eval()
    x = torch.randn(2, info.input_size[0], max(info.min_size, 32), max(info.min_size, 32))
    stages = model.feature_stages()
    with torch.no_grad():
        features = model.forward_features(x)
        seen = hooked_outputs(model, [s.module for s in stages], x)
        logits = seen.pop("logits")
        assert torch.equal(logits, model.forward_head(features))
        assert features.shape[:2] == (2, model.num_features)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        assert torch.equal(model.get_classifier()(pre), logits)

        # The extractor shares the network's modules: its maps are the network's own intermediate outputs.
        maps = FeatureExtractor(model)(x)
        assert len(maps) == len(stages)
        for stage, got in zip(stages, maps, strict=True):
            assert torch.equal(got, seen[stage.module]), stage.module
        assert torch.equal(maps[-1], features)  # the last stage is forward_features' map

        # A new classifier for 5 classes; for the MLP families the hidden layers stay.
        hidden = [m for m in getattr(model, model.head_classifier).modules() if isinstance(m, nn.Linear)][:-1]
        model.reset_classifier(5)
        assert model.forward_head(features).shape == (2, 5) and model.get_classifier().out_features == 5
        assert [m for m in getattr(model, model.head_classifier).modules() if isinstance(m, nn.Linear)][:-1] == hidden

        # Headless: the pooled features, computed here with plain tensor reductions.
        model.reset_classifier(0, global_pool="max")
        assert isinstance(model.get_classifier(), nn.Identity)
        assert torch.equal(model.forward_head(features), features.amax((2, 3)))
        model.reset_classifier(0, global_pool="")
        assert torch.equal(model.forward_head(features), features)
        model.reset_classifier(0, global_pool="avg")
        torch.testing.assert_close(model(x), features.mean((2, 3)))


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_aux_heads_keep_returning_in_training_and_follow_reset_classifier(name):
    size = 64 if name == "googlenet" else 299
    dropouts = dict(dropout=0.0, dropout_aux=0.0) if name == "googlenet" else dict(dropout=0.0)
    device = "cpu" if name == "googlenet" else "meta"  # Inception v3's aux head needs 299x299: shapes only
    with torch.device(device):
        model = cnnzoo.create_model(name, aux_logits=True, **dropouts).train()
    x = torch.randn(2, 3, size, size, device=device)
    out = model(x)
    assert len(out) == (3 if name == "googlenet" else 2) and all(o.shape == (2, 1000) for o in out)
    if device == "cpu":  # batch statistics and no dropout: deterministic, so the main path can be compared
        assert isinstance(out, GoogLeNetOutputs)
        assert torch.equal(out.logits, model.forward_head(model.forward_features(x)))
    model.reset_classifier(7)
    assert all(o.shape == (2, 7) for o in model(x))
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)  # no auxiliary heads left: one tensor, in training too
    assert not head_keys(model, model.state_dict())


# --- headless networks and features_only, every model: shapes on the meta device -------------------


@pytest.mark.parametrize("name", ALL)
def test_headless_and_features_only_networks_match_their_description(name):
    info = cnnzoo.get_model_info(name)
    full = meta_model(name)
    theirs = full.state_dict()
    without_head = set(theirs) - head_keys(full, theirs)
    small = max(info.min_size, 64)
    large = small + 64

    headless = meta_model(name, num_classes=0, global_pool="max")
    assert headless(meta_input(name, small)).shape == (2, full.num_features)
    assert isinstance(headless.get_classifier(), nn.Identity)
    own = headless.state_dict()
    assert set(own) == without_head and all(own[k].shape == theirs[k].shape for k in own)

    model = meta_model(name, features_only=True)
    fi = model.feature_info
    maps, larger = model(meta_input(name, small)), model(meta_input(name, large))
    assert [m.shape[1] for m in maps] == fi.channels() and fi.channels()[-1] == full.num_features
    for m, bigger, r in zip(maps, larger, fi.reduction(), strict=True):
        # The reduction is the map's stride: 64 more input pixels make 64 / r more positions.
        assert (bigger.shape[-1] - m.shape[-1]) * r == large - small, (fi.module_name(), r)
        if name in SAME_PADDING:
            assert m.shape[-2:] == (math.ceil(small / r),) * 2
    assert fi.reduction() == sorted(set(fi.reduction()))
    # The same modules under the same names: the full network's keys, less the head's.
    assert set(model.state_dict()) == without_head
    assert all(isinstance(full.get_submodule(m), nn.Module) for m in fi.module_name())


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "googlenet", "inception_v3", "resnet18", "resnet50"])
def test_num_features_is_what_torchvisions_classifier_reads(name):
    info = cnnzoo.get_model_info(name)
    no_init = dict(init_weights=False) if info.family in ("googlenet", "inception") else {}
    with torch.device("meta"):
        tv = getattr(torchvision.models, info.torchvision)(weights=None, **no_init)
    first = tv.fc if hasattr(tv, "fc") else tv.classifier[1 if info.family == "alexnet" else 0]
    per_channel = {"alexnet": 6 * 6, "vgg": 7 * 7}.get(info.family, 1)  # the MLPs read a pooled map, flattened
    assert meta_model(name).num_features == first.in_features // per_channel


def test_global_pool_at_build_time():
    model = cnnzoo.create_model("resnet18", num_classes=0, global_pool="").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_features(x))
    assert cnnzoo.models.lenet.lenet5(num_classes=0, global_pool="")(torch.randn(2, 1, 28, 28)).shape == (2, 16, 5, 5)


def test_vgg16_headless_is_keras_include_top_false():
    """Keras' VGG16(include_top=False, pooling="avg") returns 512 features: the whole MLP goes, as here."""
    import keras  # a test dependency: its absence must fail, not skip

    k = keras.applications.VGG16(weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3))
    assert tuple(k.output.shape) == (None, meta_model("vgg16").num_features) == (None, 512)
    assert meta_model("vgg16", num_classes=0)(meta_input("vgg16", 32)).shape == (2, 512)


def test_mlp_reset_classifier_rebuilds_the_head_like_a_fresh_build():
    model = cnnzoo.create_model("lenet5", num_classes=0)
    model.reset_classifier(4)
    fresh = cnnzoo.create_model("lenet5", num_classes=4)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)
    with torch.device("meta"):
        vgg = cnnzoo.create_model("vgg16")
    vgg.reset_classifier(3)  # built outside the meta context: the new layer still goes where the model is
    assert vgg.get_classifier().weight.device.type == "meta" and vgg.head_hidden_size == 4096


# --- features_only: reference figures and choices -----------------------------------------------------


def test_feature_info_is_timms_for_resnet50_inception_v3_and_vgg16():
    resnet = meta_model("resnet50", features_only=True).feature_info
    assert resnet.channels() == [64, 256, 512, 1024, 2048] and resnet.reduction() == [2, 4, 8, 16, 32]
    assert resnet.module_name() == ["relu", "layer1", "layer2", "layer3", "layer4"]  # timm: act1 for relu
    inception = meta_model("inception_v3", features_only=True).feature_info
    assert inception.get_dicts()[2:] == [
        dict(num_chs=288, reduction=8, module="Mixed_5d", index=2),
        dict(num_chs=768, reduction=16, module="Mixed_6e", index=3),
        dict(num_chs=2048, reduction=32, module="Mixed_7c", index=4),
    ]
    # timm's vgg16 taps torchvision's features.3, 8, 15, 22, 29 (the ReLU before each pool), then its
    # pre-logits at /32 (here block5_pool: cnnzoo's VGG has no conv-MLP).
    vgg = meta_model("vgg16", features_only=True).feature_info
    rename = cnnzoo.get_model_info("vgg16").torchvision_key
    assert vgg.module_name()[:5] == [rename(f"features.{i}.weight").removesuffix(".weight") for i in (3, 8, 15, 22, 29)]
    assert (vgg.channels(), vgg.reduction()) == ([64, 128, 256, 512, 512, 512], [1, 2, 4, 8, 16, 32])


def test_out_indices_choose_the_stages_and_cut_the_network():
    model = meta_model("resnet50", features_only=True, out_indices=(2, 0))
    assert model.feature_info.out_indices == (0, 2) and model.feature_info.module_name() == ["relu", "layer2"]
    assert not any(k.startswith(("layer3", "layer4", "fc")) for k in model.state_dict())
    assert [m.shape[1] for m in model(meta_input("resnet50", 64))] == [64, 512]
    last = meta_model("vgg11", features_only=True, out_indices=(-2,))
    assert last.feature_info.module_name() == ["features.block5_conv2_relu"] and last.feature_info.out_indices == (4,)
    assert not any("block5_pool" in k or k.startswith("classifier") for k in last.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(features_only=True, out_indices=(5,)), r"resnet50 has 5 feature stages, numbered 0\.\.4"),
        (dict(features_only=True, out_indices=(0, -5)), "names a stage twice"),
        (dict(features_only=True, out_indices=()), "give at least one"),
        (dict(features_only=True, out_indices=2), "must be a sequence of stage numbers"),
        (dict(out_indices=(1,)), "add features_only=True"),
        (dict(features_only=True, global_pool="max"), "global_pool applies without it"),
        (dict(global_pool="mean"), r"global_pool must be 'avg', 'max' or ''"),
        (dict(global_pool=""), r"global_pool='' returns the unpooled feature map, which needs num_classes=0"),
        (dict(num_classes=-1), "num_classes must be a non-negative integer"),
    ],
)
def test_bad_backbone_arguments_are_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        meta_model("resnet50", **kwargs)


def test_family_specific_refusals():
    with pytest.raises(ValueError, match=r"vgg16: its classifier reads the 7x7 average-pooled map, so global_pool="):
        meta_model("vgg16", global_pool="max")
    with pytest.raises(ValueError, match="googlenet: aux_logits=True needs classes to predict"):
        meta_model("googlenet", num_classes=0, aux_logits=True)
    assert meta_model("inception_v3", num_classes=0).AuxLogits is None  # headless: no aux head by default
    with pytest.raises(TypeError, match="needs a zoo network"):
        FeatureExtractor(nn.Linear(2, 2))


def test_summary_of_a_feature_extractor_counts_the_network_without_its_classifier():
    s = cnnzoo.summary(meta_model("resnet50", features_only=True))
    assert s.total_params == TORCHVISION_PARAMS["resnet50"] - (2048 * 1000 + 1000)


# --- weights of the full network into headless networks and feature extractors ------------------------


def test_torchvision_weights_load_into_features_only_and_match_its_feature_extractor(tmp_path):
    tv = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    ours = cnnzoo.create_model("resnet50", features_only=True, out_indices=(0, 2)).eval()
    report = cnnzoo.load_pretrained(ours, path)
    left_out = [k for k in tv.state_dict() if k.startswith(("layer3.", "layer4.", "fc."))]
    note = f"ignored {len(left_out)} tensors of the file's layer3, layer4, fc: resnet50 is built without them"
    assert note in report.notes
    reference = create_feature_extractor(tv, {"relu": "relu", "layer2": "layer2"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(ours(x), reference(x).values(), strict=True):
            torch.testing.assert_close(got, want)
        headless = cnnzoo.create_model("resnet50", num_classes=0, weights=path).eval()
        tv.fc = nn.Identity()
        torch.testing.assert_close(headless(x), tv(x))


def test_googlenet_features_only_with_weights_matches_torchvision(tmp_path):
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=False, init_weights=True).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(tv.state_dict(), path)
    ours = cnnzoo.create_model("googlenet", features_only=True, weights=path).eval()
    names = ours.feature_info.module_name()
    assert names == ["conv1", "conv3", "inception3b", "inception4e", "inception5b"]
    reference = create_feature_extractor(tv, {n: n for n in names})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(ours(x), reference(x).values(), strict=True):
            torch.testing.assert_close(got, want)


@pytest.fixture(scope="module")
def keras_resnet50():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BN statistics, so that wrongly placed ones would show
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(0.1 * rng.standard_normal(c).astype("float32"))
            layer.moving_variance.assign((0.5 + rng.random(c)).astype("float32"))
    return model


def test_frozen_backbone_split_is_keras(keras_resnet50):
    """Keras: layer.trainable=False on all but predictions; cnnzoo: requires_grad=False likewise."""
    k = keras_resnet50
    for layer in k.layers:
        layer.trainable = layer.name == "predictions"
    try:
        trainable = sum(int(np.prod(w.shape)) for w in k.trainable_weights)
        frozen = sum(int(np.prod(w.shape)) for w in k.non_trainable_weights)
    finally:
        for layer in k.layers:
            layer.trainable = True
    assert trainable + frozen == KERAS_PARAMS["resnet50_keras"][0] and trainable == 2048 * 1000 + 1000
    ours = meta_model("resnet50_keras")
    for p in ours.parameters():
        p.requires_grad = False
    for p in ours.get_classifier().parameters():
        p.requires_grad = True
    counted = count_params(ours, style="keras")
    assert (counted.trainable, counted.non_trainable) == (trainable, frozen)
    s = cnnzoo.summary(ours, style="keras")
    assert (s.trainable_params, s.non_trainable_params) == (trainable, frozen)
    assert f"Trainable params: {trainable:,}" in str(s) and f"Non-trainable params: {frozen:,}" in str(s)
    rows = {r.name: r for r in s.rows}
    assert [rows[n].trainable for n in ("predictions", "conv1_conv", "conv1_bn")] == [trainable, 0, 0]
    # torch style: the BN statistics are buffers, not parameters (53,120 of them in ResNet50)
    bn_statistics = KERAS_PARAMS["resnet50_keras"][2]
    assert count_params(ours).non_trainable == frozen - bn_statistics


def test_keras_weights_load_into_features_only_and_headless(keras_resnet50, tmp_path):
    import keras

    k = keras_resnet50
    path = tmp_path / "resnet50.weights.h5"
    k.save_weights(str(path))
    ours = cnnzoo.create_model("resnet50_keras", features_only=True, out_indices=(0, 2)).eval()
    report = cnnzoo.load_pretrained(ours, path)
    assert any(n.startswith("ignored") and "conv4_block1" in n and "predictions" in n for n in report.notes)
    # Keras names a block's output {block}_out: conv3_block4 -> conv3_block4_out
    taps = [f"{m}_out" if "block" in m else m for m in ours.feature_info.module_name()]
    assert taps == ["conv1_relu", "conv3_block4_out"]
    image = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    outputs = keras.Model(k.input, [k.get_layer(t).output for t in taps + ["avg_pool"]])(image)
    want = [torch.as_tensor(keras.ops.convert_to_numpy(o)) for o in outputs]
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    with torch.no_grad():
        for got, expected in zip(ours(x), want[:2], strict=True):
            torch.testing.assert_close(got.permute(0, 2, 3, 1), expected, rtol=1e-4, atol=1e-4)
        headless = cnnzoo.create_model("resnet50_keras", num_classes=0, weights=path).eval()
        torch.testing.assert_close(headless(x), want[2], rtol=1e-4, atol=1e-4)
