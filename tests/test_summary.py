"""cnnzoo.summary: the seed's Keras tables to the parameter, MACs against torchvision's published
figures and torchinfo, receptive fields, memory, and the table's own bookkeeping."""

import json
import math

import pytest
import torch
import torchinfo
from torch import nn

from cnnzoo import list_models
from cnnzoo.summary import Summary, summary
from cnnzoo.trace import resolve_model, trace

from .anchors import KERAS_PARAMS, TORCHVISION_PARAMS

# The seed's `tf.keras.applications.VGG16().summary()`: every row, as Keras printed it.
SEED_VGG16 = [
    ("block1_conv1", "Conv2D", "(None, 224, 224, 64)", 1792),
    ("block1_conv2", "Conv2D", "(None, 224, 224, 64)", 36928),
    ("block1_pool", "MaxPooling2D", "(None, 112, 112, 64)", 0),
    ("block2_conv1", "Conv2D", "(None, 112, 112, 128)", 73856),
    ("block2_conv2", "Conv2D", "(None, 112, 112, 128)", 147584),
    ("block2_pool", "MaxPooling2D", "(None, 56, 56, 128)", 0),
    ("block3_conv1", "Conv2D", "(None, 56, 56, 256)", 295168),
    ("block3_conv2", "Conv2D", "(None, 56, 56, 256)", 590080),
    ("block3_conv3", "Conv2D", "(None, 56, 56, 256)", 590080),
    ("block3_pool", "MaxPooling2D", "(None, 28, 28, 256)", 0),
    ("block4_conv1", "Conv2D", "(None, 28, 28, 512)", 1180160),
    ("block4_conv2", "Conv2D", "(None, 28, 28, 512)", 2359808),
    ("block4_conv3", "Conv2D", "(None, 28, 28, 512)", 2359808),
    ("block4_pool", "MaxPooling2D", "(None, 14, 14, 512)", 0),
    ("block5_conv1", "Conv2D", "(None, 14, 14, 512)", 2359808),
    ("block5_conv2", "Conv2D", "(None, 14, 14, 512)", 2359808),
    ("block5_conv3", "Conv2D", "(None, 14, 14, 512)", 2359808),
    ("block5_pool", "MaxPooling2D", "(None, 7, 7, 512)", 0),
    ("flatten", "Flatten", "(None, 25088)", 0),
    ("fc1", "Dense", "(None, 4096)", 102764544),
    ("fc2", "Dense", "(None, 4096)", 16781312),
    ("predictions", "Dense", "(None, 1000)", 4097000),
]

# The seed's ResNet50 table, its first rows (Keras names the layers of keras.applications.ResNet50).
SEED_RESNET50_HEAD = [
    ("conv1_pad", "ZeroPadding2D", "(None, 230, 230, 3)", 0, ["input"]),
    ("conv1_conv", "Conv2D", "(None, 112, 112, 64)", 9472, ["conv1_pad"]),
    ("conv1_bn", "BatchNormalization", "(None, 112, 112, 64)", 256, ["conv1_conv"]),
    ("conv1_relu", "Activation", "(None, 112, 112, 64)", 0, ["conv1_bn"]),
    ("pool1_pad", "ZeroPadding2D", "(None, 114, 114, 64)", 0, ["conv1_relu"]),
    ("pool1_pool", "MaxPooling2D", "(None, 56, 56, 64)", 0, ["pool1_pad"]),
    ("conv2_block1_1_conv", "Conv2D", "(None, 56, 56, 64)", 4160, ["pool1_pool"]),
]

# The seed's InceptionV3 table: the stem's Conv2D / BatchNormalization params and mixed0's output.
SEED_INCEPTION_STEM_CONVS = [864, 9216, 18432, 5120, 138240]
SEED_INCEPTION_STEM_BNS = [96, 96, 192, 240, 576]  # Keras: beta + moving mean + moving variance

# torchvision's weights metadata "GFLOPS" (MACs), ANCHORS.md.
ANCHOR_GMACS = {
    "resnet18": (1.81, 224),
    "resnet50": (4.09, 224),
    "vgg16": (15.47, 224),
    "googlenet": (1.50, 224),
    "inception_v3": (5.71, 299),
}


def keras_shape(row) -> str:
    """A row's output shape as Keras prints it: batch None, channels last."""
    s = row.output_shape
    dims = (s[2:] + s[1:2]) if len(s) >= 3 else s[1:]
    return "(" + ", ".join(["None", *map(str, dims)]) + ")"


# --- the seed's tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["vgg16", "resnet50_keras", "inception_v3_keras", "resnet101_keras", "resnet152_keras", "vgg19"]
)
def test_keras_totals_are_the_seeds_and_keras_applications(name):
    s = summary(name, style="keras")
    total, trainable, frozen = KERAS_PARAMS[name]
    assert s.total_params == total
    if trainable is not None:
        assert (s.trainable_params, s.non_trainable_params) == (trainable, frozen)
    assert f"Total params: {total:,}" in str(s)


def test_vgg16_keras_rows_are_the_seeds_table():
    s = summary("vgg16", style="keras")
    # Keras folds the ReLU into Conv2D/Dense and has no dropout or adaptive pool: those rows are ours alone.
    ours = [
        (r.name, r.type, keras_shape(r), r.params)
        for r in s.rows
        if r.type in ("Conv2D", "MaxPooling2D", "Flatten", "Dense")
    ]
    assert ours == SEED_VGG16
    assert s.rows[0].name == "input" and keras_shape(s.rows[0]) == "(None, 224, 224, 3)"
    assert "(None, 224, 224, 64)" in str(s) and "block1_conv1 (Conv2D)" in str(s)


def test_resnet50_keras_rows_are_the_seeds_table():
    s = summary("resnet50_keras", style="keras")
    # Rows come in execution order; Keras sorts its table by depth in the graph, so it lists
    # conv2_block1_1_conv before the shortcut conv2_block1_0_conv that runs first here.
    rows = {r.name: r for r in s.rows}
    ours = [
        (n, rows[n].type, keras_shape(rows[n]), rows[n].params, rows[n].connected_to) for n, *_ in SEED_RESNET50_HEAD
    ]
    assert ours == SEED_RESNET50_HEAD
    assert [r.name for r in s.rows[1:7]] == [n for n, *_ in SEED_RESNET50_HEAD[:6]]
    add = next(r for r in s.rows if r.name == "conv2_block1_add")
    assert add.type == "Add" and add.connected_to == ["conv2_block1_0_bn", "conv2_block1_3_bn"]
    assert next(r for r in s.rows if r.name == "conv2_block1_out").connected_to == ["conv2_block1_add"]
    assert "Connected to" in str(s)


def test_inception_v3_keras_rows_are_the_seeds_table():
    s = summary("inception_v3_keras", style="keras")
    convs = [r.params for r in s.rows if r.type == "Conv2D"][:5]
    bns = [r.params for r in s.rows if r.type == "BatchNormalization"][:5]
    assert (convs, bns) == (SEED_INCEPTION_STEM_CONVS, SEED_INCEPTION_STEM_BNS)
    mixed0 = next(r for r in s.rows if r.name == "mixed0")
    assert mixed0.type == "Concatenate" and keras_shape(mixed0) == "(None, 35, 35, 256)"
    assert mixed0.connected_to == [
        f"mixed0_{b}_act" for b in ("branch1x1", "branch5x5_2", "branch3x3dbl_3", "branch_pool")
    ]
    assert [r.name for r in s.rows if r.type == "Concatenate" and r.name.startswith("mixed") and "_" not in r.name] == [
        f"mixed{i}" for i in range(11)
    ]


# --- totals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in TORCHVISION_PARAMS if "+" not in n))
def test_torch_totals_are_torchvisions(name):
    assert summary(name).total_params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("style", ["torch", "keras"])
def test_rows_add_up_to_the_totals(name, style):
    s = summary(name, style=style)
    assert sum(r.params for r in s.rows) + sum(n for _, n in s.unused) == s.total_params
    if not s.unused:
        assert sum(r.trainable for r in s.rows) == s.trainable_params
    assert s.macs == sum(r.macs for r in s.rows)


def test_layers_that_did_not_run_are_listed_and_counted():
    s = summary("googlenet", aux_logits=True)
    assert s.total_params == TORCHVISION_PARAMS["googlenet+aux"]
    assert [path for path, _ in s.unused] == ["aux1", "aux2"]
    assert sum(r.params for r in s.rows) == TORCHVISION_PARAMS["googlenet"]
    assert "Did not run in eval mode" in str(s) and "aux1 (" in str(s)
    trained = summary("googlenet", (3, 224, 224), aux_logits=True, mode="train", batch_size=2)
    assert trained.unused == [] and trained.macs > s.macs * 2  # two images, and the heads ran


@pytest.mark.parametrize("name", list_models())
def test_totals_agree_with_torchinfo_and_macs_differ_only_by_what_are_not_macs(name):
    """torchinfo's parameter totals are ours. Its "mult-adds" are ours plus, for every conv and linear
    layer with a bias, one per output element (an addition, no multiplication), plus each BatchNorm's
    parameter count once per image (though BatchNorm touches every element). Ours, conv and linear
    weights only, are the convention of torchvision's published figures (test_macs_match_...)."""
    model, _ = resolve_model(name)
    size = model.info.input_size
    s = summary(model)
    ti = torchinfo.summary(model, input_size=(1, *size), device="meta", mode="eval", verbose=0)
    assert (ti.total_params, ti.trainable_params) == (s.total_params, s.trainable_params)
    t = trace(model, size)
    bias_adds = sum(
        math.prod(n.out_shape)
        for n in t.nodes
        if isinstance(n.module, (nn.Conv2d, nn.Linear)) and n.module.bias is not None
    )
    bn_once = sum(
        p.numel()
        for n in t.nodes
        if isinstance(n.module, nn.modules.batchnorm._BatchNorm)
        for p in n.module.parameters()
    )
    assert ti.total_mult_adds == s.macs + bias_adds + bn_once


@pytest.mark.parametrize("name", sorted(ANCHOR_GMACS))
def test_macs_match_torchvisions_published_figures(name):
    gmacs, size = ANCHOR_GMACS[name]
    s = summary(name, size)
    assert s.macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert round(s.macs / 1e9, 2) == gmacs  # in fact to the printed digit
    assert s.flops == 2 * s.macs
    assert f"({gmacs:.2f} GMACs)" in str(s)


def test_macs_are_the_formula():
    # One conv: out_elements x (in/groups) x kh x kw; one linear: in x out per sample; nothing else counted.
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 10)
    )
    s = summary(model, (4, 5, 5), batch_size=3)
    assert [r.macs for r in s.rows] == [0, 3 * 8 * 5 * 5 * (4 // 2) * 3 * 3, 0, 0, 0, 3 * 200 * 10]


# --- receptive fields -------------------------------------------------------------------------------


def test_vgg16_receptive_fields():
    rows = {r.name: r for r in summary("vgg16", style="keras").rows}
    assert rows["block1_conv1"].receptive_field == (3, 3)
    assert rows["block1_conv2"].receptive_field == (5, 5)  # two stacked 3x3 convs see 5x5
    assert rows["block5_conv3"].receptive_field == (196, 196) and rows["block5_conv3"].jump == (16, 16)
    assert rows["block5_pool"].receptive_field == (212, 212) and rows["block5_pool"].jump == (32, 32)
    # fc1 combines all 7x7 positions of block5_pool: 212 + 6 * 32.
    assert rows["fc1"].receptive_field == (404, 404) and rows["fc1"].jump is None


def test_stacked_3x3_convs():
    three = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)))
    assert [r.receptive_field for r in summary(three, (1, 16, 16)).rows] == [(1, 1), (3, 3), (5, 5), (7, 7)]


def _true_receptive_field(model: nn.Module, size: int, output_of: nn.Module) -> int:
    """Rows of the input that the centre pixel of ``output_of``'s output depends on, by autograd. With
    positive weights and a positive input no ReLU cuts a path off."""
    model = model.eval()
    for p in model.parameters():
        p.data.fill_(0.01)
    outputs = []
    handle = output_of.register_forward_hook(lambda module, args, out: outputs.append(out))
    x = torch.ones(1, 3 if hasattr(model, "layer1") else 1, size, size, requires_grad=True)
    model(x)
    handle.remove()
    out = outputs[0]
    out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    touched = (x.grad[0, 0].abs() > 0).any(dim=1).nonzero()
    return int(touched.max() - touched.min() + 1)


def test_receptive_field_through_residual_adds_is_the_true_one():
    model, _ = resolve_model("resnet20", device="cpu")
    s = summary(model, (3, 64, 64))  # 32x32 after layer2: the centre pixel's field lies inside the input
    assert next(r for r in reversed(s.rows) if r.path == "layer2.2.relu").receptive_field == (37, 37)
    assert _true_receptive_field(model, 64, model.layer2) == 37


class TwoBranches(nn.Module):
    """An Inception-like block: a 1x1 branch and a 3x3-3x3 branch, concatenated."""

    in_chans = 1

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.b1 = nn.Conv2d(1, 2, 3, padding=1)
        self.b2 = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b2(torch.relu(self.b1(x)))], 1)


def test_receptive_field_through_a_concatenation_is_the_largest_branch():
    s = summary(TwoBranches(), (1, 15, 15))
    cat = s.rows[-1]
    assert (cat.name, cat.type, cat.connected_to) == ("cat", "cat", ["a", "b2"])
    assert cat.receptive_field == (5, 5)
    model = TwoBranches()
    assert _true_receptive_field(model, 15, model) == 5


# --- sharing, modes, weights, memory ------------------------------------------------------------------


class SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.other = nn.Conv2d(3, 3, 3, padding=1)
        self.other.weight = self.conv.weight  # tied: one tensor, two modules

    def forward(self, x):
        return self.other(self.conv(self.conv(x)))


def test_shared_parameters_are_counted_once():
    s = summary(SharedConv(), (3, 8, 8))
    assert [(r.name, r.params) for r in s.rows] == [("input", 0), ("conv", 84), ("conv[1]", 0), ("other", 3)]
    assert s.total_params == sum(p.numel() for p in SharedConv().parameters()) == 87


def test_train_and_eval_modes_are_restored_and_weights_untouched():
    model = resolve_model("resnet20", device="cpu")[0].train()
    model.layer2.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary(model, mode="eval")
    summary(model, mode="train", batch_size=2)
    assert model.training and not model.layer2.training and model.layer3.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_memory():
    inplace = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True))
    copying = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    a, b = summary(inplace, (3, 10, 10)), summary(copying, (3, 10, 10))
    assert a.activation_bytes == 8 * 10 * 10 * 4  # the in-place ReLU allocates nothing
    assert b.activation_bytes == 2 * a.activation_bytes
    assert a.input_bytes == 3 * 10 * 10 * 4
    assert a.param_bytes == (8 * 3 * 9 + 8) * 4
    s = summary("resnet50")
    assert s.param_bytes == 4 * TORCHVISION_PARAMS["resnet50"]
    assert s.buffer_bytes == 4 * 53_120 + 8 * 53  # running mean/var (float32), num_batches_tracked (int64)


def test_resnet152_is_summarised_on_meta_without_weights():
    # What makes a summary of resnet152 take well under a second (timed in benchmarks, not here): the model
    # is built on the meta device, so no weight is allocated or initialised, and the counts still come out.
    from cnnzoo.trace import resolve_model

    model, _ = resolve_model("resnet152")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert summary("resnet152").total_params == TORCHVISION_PARAMS["resnet152"]


# --- depth, styles, formats, errors -----------------------------------------------------------------


def test_depth_folds_blocks_into_rows():
    full, folded = summary("resnet50"), summary("resnet50", depth=1)
    assert [r.name for r in folded.rows] == [
        "input",
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "flatten",
        "fc",
    ]
    assert folded.rows[5].type == "Sequential" and folded.rows[5].output_shape == (1, 256, 56, 56)
    assert sum(r.params for r in folded.rows) == full.total_params and folded.macs == full.macs
    assert (
        folded.rows[8].receptive_field
        == next(r for r in reversed(full.rows) if r.name.startswith("layer4")).receptive_field
    )
    blocks = summary("resnet50", depth=2)
    assert [r.name for r in blocks.rows[5:8]] == ["layer1.0", "layer1.1", "layer1.2"]
    assert blocks.rows[6].connected_to == ["layer1.0"]


def test_torch_style_uses_module_paths_and_nchw():
    s = summary("resnet50")
    row = next(r for r in s.rows if r.name == "layer1.0.conv1")
    assert (row.type, row.output_shape, row.window) == ("Conv2d", (1, 64, 56, 56), "1x1/1")
    assert [r.name for r in s.rows if r.path == "layer1.0.relu"] == [
        "layer1.0.relu",
        "layer1.0.relu[1]",
        "layer1.0.relu[2]",
    ]
    assert "[1, 64, 56, 56]" in str(s)
    assert "sum(p.numel()" in str(s)


def test_json_and_csv():
    s = summary("resnet20")
    data = json.loads(s.to_json())
    assert data["totals"]["total_params"] == s.total_params and data["totals"]["macs"] == s.macs
    assert len(data["rows"]) == len(s.rows) and data["rows"][1]["receptive_field"] == [3, 3]
    lines = s.to_csv().splitlines()
    assert lines[0].startswith("layer,type,output_shape,params") and len(lines) == len(s.rows) + 1
    assert lines[2].startswith("conv1,Conv2d,1x16x32x32,432,")


def test_errors_name_what_to_change():
    with pytest.raises(ValueError, match="style must be one of torch, keras"):
        summary("vgg16", style="tf")
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        summary("vgg16", depth=0)
    with pytest.raises(ValueError, match="give its input_size"):
        summary(nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="at least 75x75"):
        summary("inception_v3", 32)
    with pytest.raises(ValueError, match=r"\(C, H, W\), \(H, W\) or one int"):
        summary("vgg16", (3, 0, 224))
    with pytest.raises(KeyError, match="Did you mean vgg19, vgg16"):
        summary("vgg61")
    with pytest.raises(ValueError, match=r"layer bn1 \(BatchNorm2d\) .* use batch_size=2 or more"):
        summary("resnet20", 1, mode="train")


def test_summary_of_a_plain_module_names_the_layer_that_fails():
    model = nn.Sequential(nn.Conv2d(3, 8, 5), nn.MaxPool2d(2), nn.Conv2d(8, 8, 5))
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2d\) cannot take its 8x2x2 input"):
        summary(model, (3, 8, 8))
    assert isinstance(summary(model, (3, 16, 16)), Summary)
