"""The recipe augmentations: each batched operation against torchvision's per-image one, MixUp/CutMix and
RandomErasing against transforms.v2, the policies' draws, and every augmentation flag training on real data
(the 5,000 MNIST digits, and an image folder written here) to a held-out accuracy well above chance."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cnnzoo.data import augment as aug
from cnnzoo.data.augment import OPERATIONS, DevicePolicy, MixUpCutMix, random_erase
from cnnzoo.train import TrainConfig, train

from .data_fixtures import write_png

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_op(name: str, img: torch.Tensor, m: float, interpolation: str) -> torch.Tensor:
    """torchvision's own kernel for one image, called as ``_AutoAugmentBase._apply_image_or_video_transform`` does."""
    mode = InterpolationMode.NEAREST if interpolation == "nearest" else InterpolationMode.BILINEAR
    affine = dict(scale=1.0, interpolation=mode)
    calls = {
        "Identity": lambda: img,
        "ShearX": lambda: TF.affine(img, angle=0.0, translate=[0, 0], shear=[math.degrees(math.atan(m)), 0.0], center=[0, 0], **affine),
        "ShearY": lambda: TF.affine(img, angle=0.0, translate=[0, 0], shear=[0.0, math.degrees(math.atan(m))], center=[0, 0], **affine),
        "TranslateX": lambda: TF.affine(img, angle=0.0, translate=[int(m), 0], shear=[0.0, 0.0], **affine),
        "TranslateY": lambda: TF.affine(img, angle=0.0, translate=[0, int(m)], shear=[0.0, 0.0], **affine),
        "Rotate": lambda: TF.rotate(img, angle=m, interpolation=mode),
        "Brightness": lambda: TF.adjust_brightness(img, 1.0 + m),
        "Color": lambda: TF.adjust_saturation(img, 1.0 + m),
        "Contrast": lambda: TF.adjust_contrast(img, 1.0 + m),
        "Sharpness": lambda: TF.adjust_sharpness(img, 1.0 + m),
        "Posterize": lambda: TF.posterize(img, int(m)),
        "Solarize": lambda: TF.solarize(img, 255.0 * m),
        "AutoContrast": lambda: TF.autocontrast(img),
        "Equalize": lambda: TF.equalize(img),
        "Invert": lambda: TF.invert(img),
    }  # fmt: skip
    return calls[name]()


MAGNITUDES = {  # per image: signed extremes, zero, a value between; Rotate takes the exact 90/180 paths too
    "ShearX": [-0.99, -0.3, 0.0, 0.5], "ShearY": [0.2, -0.7, 0.99, 0.0], "TranslateX": [-32.0, 5.3, 0.0, 12.9],
    "TranslateY": [3.0, -7.9, 14.0, 0.0], "Rotate": [-135.0, 90.0, 4.5, 180.0], "Brightness": [-0.99, 0.5, 0.0, 0.2],
    "Color": [-0.5, 0.9, 0.0, 0.33], "Contrast": [-0.9, 0.5, 0.0, 0.7], "Sharpness": [-0.9, 0.99, 0.1, 0.4],
    "Posterize": [2.0, 4.0, 7.0, 8.0], "Solarize": [1.0, 0.5, 0.0, 0.3],
    **{name: [0.0] * 4 for name in ("AutoContrast", "Equalize", "Invert", "Identity")},
}  # fmt: skip


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 24, 40)])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_every_batched_operation_equals_torchvisions_per_image_kernel(shape, interpolation):
    x = torch.randint(0, 256, (4, *shape), dtype=torch.uint8)
    x[0] = torch.randint(0, 256, (shape[0], 1, 1), dtype=torch.uint8)  # a flat image: blends onto its own mean
    assert set(OPERATIONS) == set(MAGNITUDES)
    for name, mags in MAGNITUDES.items():
        got = OPERATIONS[name](x, mags, interpolation)
        want = torch.stack([reference_op(name, x[i], mags[i], interpolation) for i in range(len(x))])
        assert got.dtype == torch.uint8 and torch.equal(got, want), name


def _recording(monkeypatch):
    """Record what each operation is asked to do, image by image (the batch's indices into the input)."""
    calls = []
    real = aug.apply_operations

    def spy(x, ops, mags, mode):
        calls.append((x.clone(), list(ops), list(mags)))
        return real(x, ops, mags, mode)

    monkeypatch.setattr(aug, "apply_operations", spy)
    return calls


@pytest.mark.parametrize("policy", ["ta_wide", "ra", "imagenet"])
def test_a_policy_is_its_operations_replayed_image_by_image(policy, monkeypatch):
    """Each image of the batch went through exactly the recorded operations, as torchvision's kernels do them,
    and the draws cover the policy's space with torchvision's magnitudes."""
    calls = _recording(monkeypatch)
    x = torch.randint(0, 256, (256, 3, 16, 16), dtype=torch.uint8)
    out = DevicePolicy(policy, interpolation="bilinear", ra_magnitude=9)(x, np.random.default_rng(0))
    assert len(calls) == (1 if policy == "ta_wide" else 2)
    replay = x.clone()
    for _, ops, mags in calls:
        replay = torch.stack(
            [reference_op(o, replay[i], m, "bilinear") for i, (o, m) in enumerate(zip(ops, mags, strict=True))]
        )
    assert torch.equal(out, replay)
    space = dict(
        v2.TrivialAugmentWide._AUGMENTATION_SPACE if policy == "ta_wide" else v2.RandAugment._AUGMENTATION_SPACE
    )
    ops = Counter(o for _, names, _ in calls for o in names)
    if policy != "imagenet":  # uniform over the 14 operations: each near 1/14 of the draws
        assert set(ops) == set(space) and min(ops.values()) > 0.4 * sum(ops.values()) / len(space)
        bins = 31
        for _, names, mags in calls:
            for o, m in zip(names, mags, strict=True):
                table = space[o][0](bins, 16, 16)
                allowed = {0.0} if table is None else {float(v) for v in table} | {-float(v) for v in table}
                if policy == "ra":
                    allowed = {0.0} if table is None else {float(table[9]), -float(table[9])}
                assert any(abs(m - a) < 1e-6 for a in allowed), (o, m)
    else:
        assert "Invert" in ops and "Identity" in ops  # AutoAugment's: Invert is its own, Identity where p said no


def test_augmix_mixes_the_image_with_its_chains():
    """AugMix's output is a convex combination (Beta and Dirichlet weights) of the image and three chains:
    a flat image stays flat under every colour operation, and the result stays within uint8."""
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    out = DevicePolicy("augmix", augmix_severity=3)(x, np.random.default_rng(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape and not torch.equal(out, x)
    again = DevicePolicy("augmix", augmix_severity=3)(x, np.random.default_rng(1))
    assert torch.equal(out, again)  # the draws come from the generator alone


def test_mixup_and_cutmix_equal_transforms_v2_and_their_targets_sum_to_one(monkeypatch):
    from cnnzoo.data import load_data

    digits = load_data("mnist5k").train
    x = digits.images[:32].float() / 255
    y = digits.labels[:32]
    mix = MixUpCutMix(10, mixup_alpha=0.2, cutmix_alpha=1.0)
    rng = np.random.default_rng(0)
    kinds = Counter()
    for _ in range(40):
        kind, lam, box = mix.draw(rng, 28, 28)
        kinds[kind] += 1
        got_x, got_y = mix.apply(x, y, kind, lam, box)
        ref = v2.MixUp(alpha=0.2, num_classes=10) if kind == "mixup" else v2.CutMix(alpha=1.0, num_classes=10)
        params = dict(lam=lam) if kind == "mixup" else dict(box=box, lam_adjusted=lam)
        monkeypatch.setattr(ref, "make_params", lambda flat, p=params: p)
        want_x, want_y = ref(x.clone(), y.clone())
        assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y), kind
        assert torch.allclose(got_y.sum(1), torch.ones(32)) and (got_y >= 0).all()
    assert kinds["mixup"] > 10 and kinds["cutmix"] > 10  # RandomChoice between the two
    mixup_only, rng = MixUpCutMix(10, mixup_alpha=0.2), np.random.default_rng(1)
    lams = np.array([mixup_only.draw(rng, 28, 28)[1] for _ in range(2000)])
    # Beta(0.2, 0.2): mean 1/2, variance a^2 / ((2a)^2 (2a + 1)) = 0.1786
    assert abs(lams.mean() - 0.5) < 0.05 and abs(lams.var() - 0.2**2 / (0.4**2 * 1.4)) < 0.03


def test_random_erasing_boxes_follow_the_reference_distribution():
    x = torch.ones(2000, 3, 40, 40)
    out = random_erase(x, 0.5, np.random.default_rng(0))
    erased = out == 0
    hit = erased.flatten(1).any(1)
    assert 0.45 < hit.float().mean() < 0.55  # p = 0.5
    for i in torch.nonzero(hit).flatten()[:300].tolist():
        rows, cols = erased[i, 0].any(1), erased[i, 0].any(0)
        h, w = int(rows.sum()), int(cols.sum())
        assert int(erased[i, 0].sum()) == h * w and torch.equal(erased[i, 0], erased[i, 1])  # one box, all channels
        assert h < 40 and w < 40
        assert 0.02 * 1600 * 0.8 <= h * w <= 0.33 * 1600 * 1.2  # area fraction in scale (rounding aside)
        assert 0.3 / 1.5 <= h / w <= 3.3 * 1.5  # aspect in ratio (rounding aside)
    ref = v2.RandomErasing(p=1.0)  # the same erase kernel, given one of our boxes
    i = int(torch.nonzero(hit)[0])
    r, c = torch.nonzero(erased[i, 0], as_tuple=True)
    box = dict(
        i=int(r.min()),
        j=int(c.min()),
        h=int(r.max() - r.min() + 1),
        w=int(c.max() - c.min() + 1),
        v=torch.tensor([0.0])[:, None, None],
    )
    assert torch.equal(TF.erase(x[i], **box), out[i]) and ref.value == [0.0]


# ---------------------------------------------------------------------------------------------
# every flag trains, on real data


def _floor(name: str, result: dict, floor: float, capsys) -> None:
    with capsys.disabled():
        print(
            f"\n  held-out accuracy with {name}: {result['test_acc']:.2%} (chance {1 / result['classes']:.0%}, floor {floor:.0%})"
        )
    assert result["test_acc"] >= floor, result


MNIST_FLAGS = {
    "--mixup-alpha 0.2": dict(mixup_alpha=0.2),
    "--cutmix-alpha 1.0": dict(cutmix_alpha=1.0),
    "--auto-augment ta_wide": dict(auto_augment="ta_wide"),
    "--auto-augment ra --ra-magnitude 5": dict(auto_augment="ra", ra_magnitude=5),
    "--auto-augment augmix --augmix-severity 2": dict(auto_augment="augmix", augmix_severity=2),
    "--auto-augment imagenet": dict(auto_augment="imagenet"),
    "--random-erase 0.25": dict(random_erase=0.25),
}


@pytest.mark.parametrize("flag", list(MNIST_FLAGS))
def test_each_augmentation_flag_trains_lenet5_on_the_mnist_digits(flag, tmp_path, capsys):
    cfg = TrainConfig(model="lenet5", epochs=3, out=str(tmp_path / "run"), progress=False, **MNIST_FLAGS[flag])
    result = train(cfg)
    result["classes"] = 10
    _floor(f"{flag} (mnist5k, lenet5, 3 epochs)", result, 0.7, capsys)


COLORS = {"red": (200, 40, 40), "green": (40, 180, 40), "blue": (40, 40, 200)}


@pytest.fixture(scope="module")
def color_folder(tmp_path_factory):
    """Three classes of textured images, told apart by their colour: 48 train and 16 val images each."""
    root = tmp_path_factory.mktemp("colors")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("val", 16)):
        for name, color in COLORS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                texture = rng.normal(0, 30, (36, 36, 1)) + rng.uniform(0.6, 1.2) * np.array(color)
                write_png(root / split / name / f"{i}.png", texture.clip(0, 255).astype(np.uint8))
    return root


FOLDER_FLAGS = {
    "--auto-augment ta_wide": dict(auto_augment="ta_wide"),
    "--auto-augment ra": dict(auto_augment="ra"),
    "--auto-augment augmix": dict(auto_augment="augmix"),
    "--auto-augment imagenet": dict(auto_augment="imagenet"),
    "--random-erase 0.25 --mixup-alpha 0.2 --cutmix-alpha 1.0": dict(
        random_erase=0.25, mixup_alpha=0.2, cutmix_alpha=1.0
    ),
}


@pytest.mark.parametrize("flag", list(FOLDER_FLAGS))
def test_each_augmentation_flag_trains_on_an_image_folder(flag, color_folder, tmp_path, capsys):
    cfg = TrainConfig(
        model="lenet5", data=f"folder:{color_folder}", image_size=32, epochs=5, batch_size=16, lr=0.02, workers=0,
        out=str(tmp_path / "run"), progress=False, model_options={"in_chans": 3}, **FOLDER_FLAGS[flag],
    )  # fmt: skip
    result = train(cfg)
    result["classes"] = 3
    _floor(f"{flag} (3-colour folder, lenet5, 5 epochs)", result, 0.7, capsys)


def test_the_folder_transform_is_torchvisions_policy_in_the_workers(color_folder):
    from cnnzoo.data import load_data
    from cnnzoo.train.augmentation import set_train_transform

    splits = load_data(f"folder:{color_folder}", image_size=32)
    set_train_transform(TrainConfig(model="resnet20", auto_augment="augmix", augmix_severity=2).resolved(), splits)
    steps = splits.train.transform.transforms
    assert isinstance(steps[0], v2.RandomResizedCrop) and isinstance(steps[1], v2.RandomHorizontalFlip)
    assert isinstance(steps[2], v2.AugMix) and steps[2].severity == 2
    image, _ = splits.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
