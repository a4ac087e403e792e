"""cnnzoo.cam: class activation maps that point at the evidence.

The proof is in four parts: (1) a small CNN trained on images whose class evidence sits at a known,
random place gets maps that peak there (and not on an equally bright distractor); (2) deleting the
pixels the map ranks first kills the class score faster than deleting random pixels; (3) on a tiny
conv -> ReLU -> GAP -> linear network every method equals its formula worked in NumPy (Grad-CAM is
then Zhou et al.'s class activation map); (4) every zoo model gets a map at the expected layer, and
batching changes nothing. Then: the model is left as it was, the errors, the files.
"""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnzoo import create_model, get_model_info, list_models
from cnnzoo.cam import METHODS, cam, default_layer, list_layers, save_overlay, to_json
from cnnzoo.errors import CnnzooError, InputShapeError
from cnnzoo.reference import conv2d as np_conv2d

pytestmark = pytest.mark.usefixtures("one_thread")

# --- a task whose evidence is at a known place -------------------------------------------------------------

SIZE, PATTERN = 24, 5


def _pattern(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows], dtype=np.float32)


CLASS_PATTERNS = [  # plus, X, ring: the class is the shape, wherever it is
    _pattern(["..#..", "..#..", "#####", "..#..", "..#.."]),
    _pattern(["#...#", ".#.#.", "..#..", ".#.#.", "#...#"]),
    _pattern(["#####", "#...#", "#...#", "#...#", "#####"]),
]
# In every image, of every class: as bright as a class pattern (9 pixels), so a map that only follows
# brightness would land on it as often as on the evidence.
DISTRACTOR = _pattern([".....", ".###.", ".###.", ".###.", "....."])


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Noise images, each with its class's pattern and the distractor at random, non-overlapping places.
    Returns images (n, 1, 24, 24), labels, and the top-left corners of the pattern and the distractor."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 1, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, len(CLASS_PATTERNS), n)
    boxes, distractors = np.zeros((n, 2), int), np.zeros((n, 2), int)
    for i in range(n):
        while True:
            a, b = rng.integers(0, SIZE - PATTERN + 1, 2), rng.integers(0, SIZE - PATTERN + 1, 2)
            if abs(a[0] - b[0]) > PATTERN or abs(a[1] - b[1]) > PATTERN:
                break
        x[i, 0, a[0] : a[0] + PATTERN, a[1] : a[1] + PATTERN] += CLASS_PATTERNS[labels[i]]
        x[i, 0, b[0] : b[0] + PATTERN, b[1] : b[1] + PATTERN] += DISTRACTOR
        boxes[i], distractors[i] = a, b
    return torch.from_numpy(x), torch.from_numpy(labels), boxes, distractors


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 5, padding=2),
            relu1=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 32, 3, padding=1),
            relu2=nn.ReLU(),
            gap=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(32, len(CLASS_PATTERNS)),
        )
    )


@pytest.fixture(scope="module")
def trained():
    """The small CNN trained on 2,400 images for 6 epochs (a few seconds on one core), and 300 held-out ones."""
    torch.manual_seed(0)
    x, y, _, _ = make_images(2400, seed=1)
    model = small_cnn()
    epochs, batch = 6, 64
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=epochs * -(-len(x) // batch))
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, make_images(300, seed=2)


def _inside(peaks: list, corners: np.ndarray, margin: int) -> np.ndarray:
    return np.array(
        [
            p is not None
            and c[0] - margin <= p[0] < c[0] + PATTERN + margin
            and c[1] - margin <= p[1] < c[1] + PATTERN + margin
            for p, c in zip(peaks, corners, strict=True)
        ]
    )


def test_the_trained_network_learned_the_task(trained):
    model, (x, y, _, _) = trained
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.85  # otherwise the localisation tests below would explain a network that guesses


# Score-CAM's weights are probabilities, never negative: channels that fire on the distractor alone still
# count with about the chance-level probability, so its maps stray there more often than the gradient ones.
@pytest.mark.parametrize(
    "method, on_evidence, on_distractor",
    [("gradcam", 0.85, 0.1), ("gradcam++", 0.85, 0.1), ("layercam", 0.85, 0.1), ("scorecam", 0.8, 0.2)],
)
def test_maps_peak_on_the_evidence_not_on_the_distractor(trained, method, on_evidence, on_distractor):
    model, (x, y, boxes, distractors) = trained
    n = 150 if method == "scorecam" else len(x)  # Score-CAM: 32 forward passes per image
    results = cam(model, x[:n], method=method, target=y[:n].tolist(), batch_size=64)
    assert {r.layer for r in results} == {"relu2"}  # the last conv stage, found automatically
    peaks = [r.peak for r in results]
    # The peak is within 2 pixels of the 5x5 evidence (a 9x9 box: 14% of the image by chance) ...
    assert _inside(peaks, boxes[:n], margin=2).mean() >= on_evidence
    # ... and rarely on the distractor, which a brightness-following map would hit about as often.
    assert _inside(peaks, distractors[:n], margin=2).mean() <= on_distractor


def _deletion_curve(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, order: torch.Tensor, fractions: np.ndarray
) -> np.ndarray:
    """Target-class probability as the first ``fraction`` of each image's pixels in ``order`` are set to
    0, the noise's mean: (images, steps)."""
    n, pixels = order.shape
    curve = []
    for f in fractions:
        keep = torch.ones(n, pixels)
        keep.scatter_(1, order[:, : int(round(f * pixels))], 0.0)
        with torch.no_grad():
            probs = model(x * keep.view(n, 1, SIZE, SIZE)).softmax(1)
        curve.append(probs[torch.arange(n), target].numpy())
    return np.stack(curve, 1)


def _area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under each curve by the trapezoid rule (np.trapezoid is NumPy 2 only)."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions)).sum(1)


DELETED = np.linspace(0, 1, 17)  # fractions of the pixels deleted along the curve
DELETION_IMAGES = 150


@pytest.fixture(scope="module")
def random_deletion_area(trained):
    """Per image, the area under the deletion curve with the pixels deleted in a random order."""
    model, (x, y, _, _) = trained
    g = torch.Generator().manual_seed(0)
    order = torch.stack([torch.randperm(SIZE * SIZE, generator=g) for _ in range(DELETION_IMAGES)])
    return _area(_deletion_curve(model, x[:DELETION_IMAGES], y[:DELETION_IMAGES], order, DELETED), DELETED)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_deleting_the_top_ranked_pixels_drops_the_score_faster_than_random(trained, random_deletion_area, method):
    model, (x, y, _, _) = trained
    x, y = x[:DELETION_IMAGES], y[:DELETION_IMAGES]
    heat = torch.from_numpy(np.stack([r.heatmap for r in cam(model, x, method=method, target=y.tolist())])).flatten(1)
    by_cam = torch.sort(heat, dim=1, descending=True, stable=True).indices
    area = _area(_deletion_curve(model, x, y, by_cam, DELETED), DELETED)
    assert area.mean() < 0.7 * random_deletion_area.mean()
    assert (area < random_deletion_area).mean() >= 0.9


# --- the formulas, worked by hand ---------------------------------------------------------------------------


def _bilinear(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resizing with half-pixel centres (source = (dest + 0.5) * in/out - 0.5, clamped at the
    edges), the rule of F.interpolate(align_corners=False) and OpenCV."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, wy = axis(a.shape[0], size[0])
    x0, x1, wx = axis(a.shape[1], size[1])
    rows = a[y0] * (1 - wy)[:, None] + a[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _min_max(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class TinyNet:
    """conv 3x3 stride 2 (2 -> 3 channels) -> ReLU -> global average pool -> linear (3 -> 4 classes),
    with seeded weights, in torch and in NumPy (``cnnzoo.reference``'s convolution)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.wc, self.bc = rng.normal(size=(3, 2, 3, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
        self.wf, self.bf = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
        self.torch = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(2, 3, 3, stride=2, padding=1),
                relu=nn.ReLU(),
                gap=nn.AdaptiveAvgPool2d(1),
                flat=nn.Flatten(),
                fc=nn.Linear(3, 4),
            )
        )
        with torch.no_grad():
            for p, v in zip(self.torch.parameters(), (self.wc, self.bc, self.wf, self.bf), strict=True):
                p.copy_(torch.from_numpy(v))

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(np_conv2d(x, self.wc, self.bc, stride=2, padding=1), 0)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.features(x).mean((2, 3)) @ self.wf.T + self.bf


def _hand_map(net: TinyNet, x: np.ndarray, c: int, method: str) -> np.ndarray:
    """The method's layer map for one image (C, H, W) and class c. The score is linear in the pooled
    features, so dY_c/dA_k is the constant wf[c, k] / (h*w) at every position."""
    a = net.features(x[None])[0]  # (K, h, w)
    hw = a.shape[1] * a.shape[2]
    g = net.wf[c] / hw
    if method == "gradcam":  # = Zhou et al. 2016's CAM, sum_k wf[c, k] A_k, over h*w
        weights = g
    elif method == "layercam":
        weights = np.maximum(g, 0)
    elif method == "gradcam++":
        alpha = np.where(g != 0, g**2 / (2 * g**2 + a.sum((1, 2)) * g**3 + 1e-6), 0)
        weights = hw * np.maximum(g, 0) * alpha
    else:  # scorecam: each upsampled, min-max scaled map masks the input; the class probability weighs it
        weights = np.zeros(len(a), np.float32)
        for k, ak in enumerate(a):
            if ak.max() > ak.min():
                mask = _min_max(_bilinear(ak, x.shape[1:]))
                weights[k] = _softmax(net.logits((x * mask)[None]))[0, c]
    return np.maximum(np.tensordot(weights, a, axes=1), 0)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_equals_its_formula_by_hand(method):
    net = TinyNet()
    x = np.random.default_rng(3).normal(size=(3, 2, 6, 9)).astype(np.float32)  # a 3x5 map, upsampled by 2 and 1.8
    targets = [1, 3, 0]
    results = cam(net.torch, torch.from_numpy(x), method=method, target=targets, topk=4)
    probs = _softmax(net.logits(x))
    for i, (r, c) in enumerate(zip(results, targets, strict=True)):
        hand = _hand_map(net, x[i], c, method)
        assert r.layer == "relu" and r.target == c and r.layer_map.shape == (3, 5)
        np.testing.assert_allclose(r.layer_map, hand, rtol=1e-4, atol=1e-6)
        assert hand.max() > 0  # the image was picked so the comparison below is not of two zero maps
        np.testing.assert_allclose(r.heatmap, _min_max(_bilinear(hand, (6, 9))), atol=1e-5)
        assert r.peak == np.unravel_index(np.argmax(r.heatmap), (6, 9))
        np.testing.assert_allclose(r.target_prob, probs[i, c], rtol=1e-5)
        assert [k for k, _ in r.topk] == list(np.argsort(-probs[i]))
        np.testing.assert_allclose([p for _, p in r.topk], np.sort(probs[i])[::-1], rtol=1e-5)


def test_gradcam_is_zhous_cam_and_explains_the_top1_by_default():
    net = TinyNet()
    x = np.random.default_rng(4).normal(size=(4, 2, 6, 9)).astype(np.float32)
    results = cam(net.torch, torch.from_numpy(x))
    for r, xi, logits in zip(results, x, net.logits(x), strict=True):
        assert r.target == int(np.argmax(logits))
        zhou = np.tensordot(net.wf[r.target], net.features(xi[None])[0], axes=1)  # sum_k w_ck A_k
        np.testing.assert_allclose(r.layer_map * 15, np.maximum(zhou, 0), rtol=1e-4, atol=1e-6)


def test_an_all_zero_map_stays_zero():
    net = TinyNet()
    with torch.no_grad():
        net.torch.conv.bias.fill_(-100.0)  # every activation ReLU'd to 0
    (r,) = cam(net.torch, torch.randn(1, 2, 6, 9))
    assert not r.heatmap.any() and r.peak is None and r.heatmap.dtype == np.float32


# --- every zoo model ----------------------------------------------------------------------------------------


def expected_layer(name: str) -> str:
    """The last feature map before each network's head: its last block, or for the plain stacks (LeNet,
    AlexNet, VGG) the last conv's ReLU, before the final max-pool that would halve the map."""
    vgg_last = {"vgg11": "conv2", "vgg13": "conv2", "vgg16": "conv3", "vgg19": "conv4"}
    if name.startswith("vgg"):
        return f"features.block5_{vgg_last[name.removesuffix('_bn')]}_relu"
    table = {
        "lenet5": "features.relu2",
        "alexnet": "features.relu5",
        "googlenet": "inception5b",
        "inception_v3": "Mixed_7c",
        "inception_v3_keras": "mixed10",
    }
    if name in table:
        return table[name]
    if name.endswith("_keras"):
        return "conv5_block3"
    return "layer3" if get_model_info(name).input_size[1] == 32 else "layer4"  # CIFAR ResNets have three stages


def small_size(name: str) -> int:
    """A small input that still leaves the last map wider than 1x1."""
    info = get_model_info(name)
    if info.input_size[1] <= 32:
        return info.input_size[1]  # LeNet 28, CIFAR ResNets 32
    return {"alexnet": 63, "inception": 139}.get(info.family, 32 if info.family == "vgg" else 64)


def random_model(name: str) -> nn.Module:
    """A zoo model with random weights, set quickly: built on meta, materialised, then convolutions and
    linear layers drawn as PyTorch's defaults, BatchNorm as at construction (the identity in eval mode).
    Fully connected layers over 4M weights (VGG's 103M-weight fc1) get a random rank-8 product of the same
    scale instead, which takes a fraction of the seconds that drawing every weight does."""
    with torch.device("meta"):
        model = create_model(name)
    model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.weight.numel() > 4_000_000:
            with torch.no_grad():  # written in place: a temporary and a copy of 400 MB would cost as much again
                torch.mm(
                    torch.randn(m.out_features, 8) / (8 * m.in_features) ** 0.5,
                    torch.randn(8, m.in_features),
                    out=m.weight,
                )
                m.bias.zero_()
        elif isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            m.reset_parameters()
            if getattr(m, "bias", None) is not None and isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.zeros_(m.bias)  # BatchNorm2dNoScale keeps its shift outside the affine parameters
        else:
            assert not list(m.parameters(recurse=False)) and not list(m.buffers(recurse=False)), (
                f"{type(m).__name__}: set its weights here"
            )
    return model


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_gets_a_map_at_the_expected_layer(name):
    model = random_model(name)
    size, chans = small_size(name), get_model_info(name).input_size[0]
    x = torch.randn(2, chans, size, size)
    # LayerCAM maps are sums of non-negative terms, hardly ever all zero even with random weights
    # (Grad-CAM's often are): a real comparison of batched and one-by-one.
    together = cam(model, x, method="layercam", batch_size=2)
    alone = [cam(model, x[i : i + 1], method="layercam", layer=together[0].layer)[0] for i in range(2)]
    for a, b in zip(together, alone, strict=True):
        assert a.layer == expected_layer(name)
        assert a.heatmap.shape == (size, size) and a.heatmap.dtype == np.float32
        assert np.isfinite(a.heatmap).all() and a.heatmap.min() >= 0 and a.heatmap.max() == 1
        assert a.layer_map.shape[0] * a.layer_map.shape[1] > 1
        assert a.target == b.target
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-4)
        np.testing.assert_allclose(a.layer_map, b.layer_map, rtol=1e-3, atol=1e-4 * float(b.layer_map.max()))


def test_aux_heads_are_skipped_and_a_1x1_last_map_falls_back_to_a_wider_block():
    inception = create_model("inception_v3", aux_logits=True).train()
    assert default_layer(inception, input_size=(3, 139, 139)) == "Mixed_7c"
    # At 75x75 Mixed_7c is 1x1 (a flat map): the last top-level block with a wider map is Mixed_6e.
    (r,) = cam(inception, torch.randn(1, 3, 75, 75))
    assert r.layer == "Mixed_6e" and r.layer_map.shape == (3, 3)
    assert inception.training and inception.AuxLogits.training  # its training mode given back
    googlenet = create_model("googlenet", aux_logits=True).train()
    assert default_layer(googlenet, input_size=(3, 64, 64)) == "inception5b"


def test_list_layers_marks_the_default():
    model = small_cnn()
    layers = list_layers(model, input_size=(1, SIZE, SIZE))
    assert [(n, s) for n, s, _ in layers] == [
        ("conv1", (1, 16, 24, 24)),
        ("relu1", (1, 16, 24, 24)),
        ("pool", (1, 16, 12, 12)),
        ("conv2", (1, 32, 12, 12)),
        ("relu2", (1, 32, 12, 12)),
        ("gap", (1, 32, 1, 1)),
    ]
    assert [n for n, _, default in layers if default] == ["relu2"]
    (r,) = cam(model, torch.randn(1, 1, SIZE, SIZE), method="layercam", layer="relu1")  # any listed layer
    assert r.layer == "relu1" and r.layer_map.shape == (SIZE, SIZE)
    with torch.device("meta"):  # shapes only: no weights to fill
        resnet = create_model("resnet50")
    marked = [(n, s) for n, s, default in list_layers(resnet) if default]
    assert marked == [("layer4", (1, 2048, 7, 7))]  # at the native 224x224


# --- the model is left as it was ----------------------------------------------------------------------------


def test_the_model_is_left_as_it_was():
    model = create_model("resnet20").train()
    model.layer2.eval()  # mixed flags, which model.train(flag) afterwards would not restore
    model.fc.weight.requires_grad_(False)
    flags = {n: m.training for n, m in model.named_modules()}
    needs_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # works under no_grad too, and leaves it on
        for method in METHODS:
            assert len(cam(model, x, method=method, batch_size=32)) == 2
        assert not torch.is_grad_enabled()
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == needs_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm statistics included
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


# --- errors -------------------------------------------------------------------------------------------------


def test_bad_input_gives_one_clear_error():
    net = TinyNet().torch
    x = torch.randn(2, 2, 6, 9)
    with pytest.raises(CnnzooError, match=r"layer 'rleu'.*Did you mean relu\?.*list-layers"):
        cam(net, x, layer="rleu")
    with pytest.raises(CnnzooError, match=r"layer 'fc' outputs \(2, 4\); .* 4-D"):
        cam(net, x, layer="fc")
    with pytest.raises(CnnzooError, match=r"method 'gradcam\+' is not one of gradcam, gradcam\+\+, layercam, scorecam"):
        cam(net, x, method="gradcam+")
    with pytest.raises(CnnzooError, match=r"class 4 is not one of the model's classes 0\.\.3"):
        cam(net, x, target=4)
    with pytest.raises(CnnzooError, match=r"1 classes given for 2 images"):
        cam(net, x, target=[1])
    with pytest.raises(CnnzooError, match=r"'cat' is not a class index"):
        cam(net, x, target="cat")
    with pytest.raises(CnnzooError, match=r"topk must be a positive integer"):
        cam(net, x, topk=0)
    with pytest.raises(InputShapeError, match=r"\(N, C, H, W\) batch or one \(C, H, W\) image.*\(6, 9\)"):
        cam(net, torch.randn(6, 9))
    with pytest.raises(CnnzooError, match=r"cannot tell the input size of Sequential: pass input_size"):
        list_layers(net)
    assert not any(m._forward_hooks for m in net.modules())  # removed on the way out of an error too


# --- files --------------------------------------------------------------------------------------------------


def test_overlay_png_heatmap_npy_and_json(trained, tmp_path):
    model, (x, y, boxes, _) = trained
    (r,) = cam(model, x[:1], topk=3)
    names = ["plus", "x", "ring"]
    png, npy = save_overlay(x[0], r, tmp_path / "cam.png", class_names=names)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (800, 440)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # a picture, not a blank canvas
    np.testing.assert_array_equal(np.load(npy), r.heatmap)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.npy", "cam.png"]  # no temporary files left
    record = json.loads(json.dumps(to_json(r, names)))
    assert record["layer"] == "relu2" and record["method"] == "gradcam"
    assert record["layer_size"] == [12, 12] and record["input_size"] == [SIZE, SIZE]
    assert record["target"] == {"class": r.target, "name": names[r.target], "prob": r.target_prob}
    assert [t["class"] for t in record["topk"]] == [k for k, _ in r.topk] and len(record["topk"]) == 3
    assert record["peak"] == {"y": r.peak[0], "x": r.peak[1]}
    with pytest.raises(InputShapeError, match=r"does not match the 24x24 map"):
        save_overlay(x[0, :, :20], r, tmp_path / "bad.png")
