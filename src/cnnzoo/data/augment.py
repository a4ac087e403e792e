"""The recipe augmentations: MixUp/CutMix, RandomErasing and the auto-augment policies, batched on the device.

torchvision's references apply these one image at a time on the CPU (the policies and RandomErasing in
the dataset's transform, MixUp/CutMix in the collate function). Here they work on whole batches where the
batch is, so in-memory data (MNIST, CIFAR) on a GPU never leaves it:

* :class:`MixUpCutMix`: ``transforms.v2.MixUp`` / ``CutMix`` on a normalised batch, the same arithmetic
  (one ``lam`` per batch, pairs by ``roll(1, 0)``), with soft targets that sum to one; with both alphas
  each batch takes one of the two, as ``v2.RandomChoice`` does.
* :func:`random_erase`: ``v2.RandomErasing`` (scale 0.02-0.33, ratio 0.3-3.3, value 0, after
  normalisation), each image its own box, drawn the same way.
* :class:`DevicePolicy`: TrivialAugmentWide, RandAugment, AugMix and AutoAugment's ImageNet policy on uint8
  batches, each image its own operations and magnitudes (torchvision's policy classes give the
  magnitude tables). Each operation is torchvision's ``v2.functional`` one with a per-image magnitude.
* :func:`folder_train_transform`: for image folders, torchvision's own per-image transforms in the
  decoding workers (RandomResizedCrop or scale jittering, flip, the policy), as the references do.

Every random draw comes from a NumPy generator the caller seeds (``epoch_rng``), never from torch's
global one: a run resumed at an epoch replays the same augmentation, and nothing here syncs the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .base import DataError
from .folder import INTERPOLATIONS

__all__ = [
    "BatchAugment", "DevicePolicy", "MixUpCutMix", "OPERATIONS", "POLICIES", "apply_operations", "epoch_rng",
    "folder_train_transform", "parse_scale_jitter", "random_erase", "torchvision_policy",
]  # fmt: skip

POLICIES = ("ta_wide", "ra", "augmix", "imagenet")


def epoch_rng(seed: int, epoch: int, rank: int, stream: int) -> np.random.Generator:
    """The generator of one augmentation stream for one epoch of one process (a function of these alone)."""
    return np.random.default_rng([seed, epoch, rank, stream])


# ----------------------------------------------------------------------------------------------
# MixUp and CutMix


class MixUpCutMix:
    """Batch-level MixUp (``mixup_alpha``) and/or CutMix (``cutmix_alpha``) with one-hot soft targets."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        self.num_classes = num_classes
        self.kinds = [(k, a) for k, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
        if not self.kinds:
            raise DataError("MixUpCutMix needs mixup_alpha or cutmix_alpha above 0")

    def draw(
        self, rng: np.random.Generator, height: int, width: int
    ) -> tuple[str, float, tuple[int, int, int, int] | None]:
        """(kind, lam, box): which of the two, its weight of the image itself, CutMix's box (x1, y1, x2, y2)."""
        kind, alpha = self.kinds[int(rng.integers(len(self.kinds)))] if len(self.kinds) > 1 else self.kinds[0]
        lam = float(rng.beta(alpha, alpha))
        if kind == "mixup":
            return kind, lam, None
        r_x, r_y = int(rng.integers(width)), int(rng.integers(height))
        r = 0.5 * math.sqrt(1.0 - lam)
        r_w_half, r_h_half = int(r * width), int(r * height)
        box = (max(r_x - r_w_half, 0), max(r_y - r_h_half, 0), min(r_x + r_w_half, width), min(r_y + r_h_half, height))
        x1, y1, x2, y2 = box
        return kind, float(1.0 - (x2 - x1) * (y2 - y1) / (width * height)), box

    def __call__(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        kind, lam, box = self.draw(rng, x.shape[-2], x.shape[-1])
        return self.apply(x, y, kind, lam, box)

    def apply(self, x: torch.Tensor, y: torch.Tensor, kind: str, lam: float, box) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` mixed with ``x.roll(1, 0)`` as ``v2.MixUp`` / ``v2.CutMix`` do, and the mixed one-hot targets."""
        if kind == "mixup":
            out = x.roll(1, 0).mul_(1.0 - lam).add_(x.mul(lam))
        else:
            x1, y1, x2, y2 = box
            out = x.clone()
            out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
        target = F.one_hot(y, self.num_classes).float() if y.dim() == 1 else y.float()
        return out, target.roll(1, 0).mul_(1.0 - lam).add_(target.mul(lam))


# ----------------------------------------------------------------------------------------------
# RandomErasing


def random_erase(
    x: torch.Tensor, p: float, rng: np.random.Generator, *, scale=(0.02, 0.33), ratio=(0.3, 3.3), value: float = 0.0
) -> torch.Tensor:
    """``v2.RandomErasing(p, scale, ratio, value)`` on each image of a batch, in one pass.

    Per image, as ``RandomErasing.make_params``: with probability ``p``, up to 10 tries of an area
    ``U(scale) * H * W`` and a log-uniform aspect ratio, the first box that fits, at a uniform position;
    none fits: the image stays as it is.
    """
    n, _, h, w = x.shape
    apply = rng.random(n) < p
    area = h * w * rng.uniform(scale[0], scale[1], (n, 10))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, 10)))
    bh, bw = np.round(np.sqrt(area * aspect)).astype(np.int64), np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (bh < h) & (bw < w)
    first = fits.argmax(1)
    rows = np.arange(n)
    bh, bw = np.where(fits.any(1), bh[rows, first], 0), np.where(fits.any(1), bw[rows, first], 0)
    top = (rng.random(n) * (h - bh + 1)).astype(np.int64)
    left = (rng.random(n) * (w - bw + 1)).astype(np.int64)
    bh, bw = np.where(apply, bh, 0), np.where(apply, bw, 0)
    box = torch.from_numpy(np.stack([top, top + bh, left, left + bw], 1)).to(x.device, non_blocking=True)
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_r = (r[None] >= box[:, :1]) & (r[None] < box[:, 1:2])  # (N, H)
    inside_c = (c[None] >= box[:, 2:3]) & (c[None] < box[:, 3:4])  # (N, W)
    return x.masked_fill((inside_r[:, None, :, None] & inside_c[:, None, None, :]), value)


# ----------------------------------------------------------------------------------------------
# the operations of the auto-augment policies, one magnitude per image


def _inverse_affine(center, angle, translate, shear) -> list[float]:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1): the output-to-input map of an affine transform."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = center, translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def _grid_transform(x: torch.Tensor, matrices: list[list[float]], mode: str) -> torch.Tensor:
    """``v2.functional.affine``'s grid sampling (zero fill), each image with its own matrix."""
    n, _, h, w = x.shape
    theta = torch.tensor(matrices, dtype=torch.float32, device=x.device).reshape(n, 2, 3)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=x.device))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.round_().to(x.dtype)


def _affine_op(kind: str):
    def op(x: torch.Tensor, m: list[float], mode: str) -> torch.Tensor:
        h, w = x.shape[-2:]
        if kind == "Rotate":
            return _rotate(x, m, mode)
        if kind in ("ShearX", "ShearY"):  # about the top-left corner, as AutoAugment's reference
            shear = [
                (math.degrees(math.atan(v)), 0.0) if kind == "ShearX" else (0.0, math.degrees(math.atan(v))) for v in m
            ]
            mats = [_inverse_affine((-w * 0.5, -h * 0.5), 0.0, (0.0, 0.0), s) for s in shear]
        else:
            mats = [
                _inverse_affine((0.0, 0.0), 0.0, (int(v), 0.0) if kind == "TranslateX" else (0.0, int(v)), (0.0, 0.0))
                for v in m
            ]
        return _grid_transform(x, mats, mode)

    return op


def _rotate(x: torch.Tensor, angles: list[float], mode: str) -> torch.Tensor:
    """``v2.functional.rotate`` per image, with its exact paths for 0 and 180 degrees (and 90, 270 on squares)."""
    out = torch.empty_like(x)
    quarter = {0.0: 0, 180.0: 2} | ({90.0: 1, 270.0: 3} if x.shape[-1] == x.shape[-2] else {})
    turns = [quarter.get(a % 360) for a in angles]
    for k in set(t for t in turns if t is not None):
        idx = [i for i, t in enumerate(turns) if t == k]
        out[idx] = torch.rot90(x[idx], k=k, dims=(-2, -1))
    rest = [i for i, t in enumerate(turns) if t is None]
    if rest:
        out[rest] = _grid_transform(
            x[rest], [_inverse_affine((0.0, 0.0), -(angles[i] % 360), (0.0, 0.0), (0.0, 0.0)) for i in rest], mode
        )
    return out


def _factor(x: torch.Tensor, m: list[float], *, complement: bool = False) -> torch.Tensor:
    """The per-image factors ``1 + m`` (or ``1 - (1 + m)``), computed in double as torchvision's Python floats are."""
    values = [1.0 - (1.0 + v) if complement else 1.0 + v for v in m]
    return torch.tensor(values, dtype=torch.float32, device=x.device).view(-1, 1, 1, 1)


def _blend(a: torch.Tensor, b: torch.Tensor, m: list[float]) -> torch.Tensor:
    """``v2.functional._blend(a, b, 1 + m)`` with one ratio per image."""
    # addcmul: one rounding for b * (1 - ratio) + (a * ratio), as the kernel of add_(b, alpha=1 - ratio) does
    ratio, rest = _factor(a, m), _factor(a, m, complement=True)
    return (a * ratio).addcmul_(b.expand_as(a), rest.expand_as(a)).clamp_(0, 255).to(a.dtype)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _brightness(x, m, mode):
    return (x * _factor(x, m)).clamp_(0, 255).to(x.dtype)


def _color(x, m, mode):
    return x if x.shape[1] == 1 else _blend(x, _gray(x), m)


def _contrast(x, m, mode):
    gray = _gray(x) if x.shape[1] == 3 else x.float()
    return _blend(x, gray.mean(dim=(-3, -2, -1), keepdim=True), m)


def _sharpness(x, m, mode):
    """``v2.functional.adjust_sharpness``: blend with a 3x3 smoothing of the interior, the border kept."""
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32, device=x.device).expand(c, 1, 3, 3)
    out = x.to(torch.float32, copy=True)
    blurred = F.conv2d(out, kernel, groups=c).round_()
    view = out[..., 1:-1, 1:-1]
    view.addcmul_(blurred.sub_(view), _factor(x, m, complement=True).expand_as(view))
    return out.clamp_(0, 255).to(x.dtype)


def _posterize(x, m, mode):
    bits = [int(v) for v in m]
    mask = torch.tensor([((1 << b) - 1) << (8 - b) for b in bits], dtype=torch.uint8, device=x.device).view(-1, 1, 1, 1)
    return x & mask


def _solarize(x, m, mode):
    threshold = torch.tensor([255.0 * v for v in m], dtype=torch.float32, device=x.device).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 255 - x, x)


# name -> f(images uint8 (n, C, H, W), magnitudes (n floats), grid_sample mode) -> images
OPERATIONS: dict[str, Callable] = {
    "Identity": lambda x, m, mode: x,
    **{k: _affine_op(k) for k in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")},
    "Brightness": _brightness, "Color": _color, "Contrast": _contrast, "Sharpness": _sharpness,
    "Posterize": _posterize, "Solarize": _solarize,
    "AutoContrast": lambda x, m, mode: TF.autocontrast(x), "Equalize": lambda x, m, mode: TF.equalize(x),
    "Invert": lambda x, m, mode: TF.invert(x),
}  # fmt: skip


def apply_operations(x: torch.Tensor, ops: list[str], magnitudes: list[float], mode: str) -> torch.Tensor:
    """Image ``i`` of ``x`` through ``OPERATIONS[ops[i]]`` with ``magnitudes[i]``; each operation runs once,
    on the images that drew it."""
    out = x.clone()
    for name in set(ops) - {"Identity"}:
        idx = [i for i, o in enumerate(ops) if o == name]
        out[idx] = OPERATIONS[name](x[idx], [magnitudes[i] for i in idx], mode)
    return out


# ----------------------------------------------------------------------------------------------
# the policies, batched: each image draws its own operations, as the per-image transforms would


def _space(policy: str) -> dict:
    """The policy's operations and magnitude tables, from torchvision's own classes."""
    cls = {"ta_wide": v2.TrivialAugmentWide, "ra": v2.RandAugment, "augmix": v2.AugMix, "imagenet": v2.AutoAugment}[
        policy
    ]
    return dict(cls._AUGMENTATION_SPACE)


class DevicePolicy:
    """An auto-augment policy on uint8 batches ``(N, C, H, W)`` on any device.

    ``ta_wide``: one operation of 14 per image at a magnitude of 31 bins; ``ra``: two operations at bin
    ``ra_magnitude``; ``imagenet``: one of AutoAugment's 25 sub-policies (two operations, each with its
    probability and bin); ``augmix``: three chains of 1-3 operations at bins below ``severity``, mixed with
    Dirichlet weights and the image itself with a Beta weight. Signed magnitudes are negated with
    probability one half. Geometric operations sample with ``interpolation`` (nearest or bilinear: what
    torchvision's tensor kernels take; bicubic falls back to bilinear).
    """

    def __init__(
        self, policy: str, *, interpolation: str = "bilinear", ra_magnitude: int = 9, augmix_severity: int = 3
    ) -> None:
        if policy not in POLICIES:
            raise DataError(f"auto-augment policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.policy, self.ra_magnitude, self.severity = policy, ra_magnitude, augmix_severity
        self.mode = "nearest" if interpolation == "nearest" else "bilinear"
        self.space = _space(policy)
        self.subpolicies = v2.AutoAugment()._policies if policy == "imagenet" else None
        self._tables: dict[tuple[int, int, int], dict] = {}

    def _magnitude(self, rng: np.random.Generator, name: str, bins: int, index: int, size: tuple[int, int]) -> float:
        key = (bins, *size)
        if key not in self._tables:
            self._tables[key] = {op: (fn(bins, *size), signed) for op, (fn, signed) in self.space.items()}
        values, signed = self._tables[key][name]
        if values is None:
            return 0.0
        value = float(values[index])
        return -value if signed and rng.random() <= 0.5 else value

    def _draw(self, rng: np.random.Generator, n: int, bins: int, index, size) -> tuple[list[str], list[float]]:
        """One operation per image, uniform over the space, at bin ``index`` (a number, or a callable drawing one)."""
        names = list(self.space)
        ops = [names[k] for k in rng.integers(len(names), size=n)]
        return ops, [self._magnitude(rng, op, bins, index() if callable(index) else index, size) for op in ops]

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        n, size = len(x), (x.shape[-2], x.shape[-1])
        if n == 0:
            return x
        if self.policy == "ta_wide":
            return apply_operations(x, *self._draw(rng, n, 31, lambda: int(rng.integers(31)), size), self.mode)
        if self.policy == "ra":
            for _ in range(2):
                x = apply_operations(x, *self._draw(rng, n, 31, self.ra_magnitude, size), self.mode)
            return x
        if self.policy == "imagenet":
            chosen = [self.subpolicies[k] for k in rng.integers(len(self.subpolicies), size=n)]
            for step in range(2):
                ops, mags = [], []
                for sub in chosen:
                    name, p, index = sub[step]
                    on = rng.random() <= p
                    ops.append(name if on else "Identity")
                    mags.append(self._magnitude(rng, name, 10, index, size) if on and index is not None else 0.0)
                x = apply_operations(x, ops, mags, self.mode)
            return x
        return self._augmix(x, rng, size)

    def _augmix(self, x: torch.Tensor, rng: np.random.Generator, size) -> torch.Tensor:
        n, dev = len(x), x.device
        m = rng.dirichlet([1.0, 1.0], n)
        weights = torch.from_numpy(rng.dirichlet([1.0] * 3, n) * m[:, 1:2]).float().to(dev)
        mix = torch.from_numpy(m[:, 0]).float().to(dev).view(-1, 1, 1, 1) * x
        for chain in range(3):
            depth = rng.integers(1, 4, size=n)
            aug = x
            for position in range(3):
                ops, mags = self._draw(rng, n, 10, lambda: int(rng.integers(self.severity)), size)
                ops = [op if position < depth[i] else "Identity" for i, op in enumerate(ops)]
                aug = apply_operations(aug, ops, mags, self.mode)
            mix.add_(weights[:, chain].view(-1, 1, 1, 1) * aug)
        return mix.to(x.dtype)


def torchvision_policy(
    policy: str, *, interpolation: str = "bilinear", ra_magnitude: int = 9, augmix_severity: int = 3
) -> v2.Transform:
    """torchvision's own per-image policy transform, as the references' ``ClassificationPresetTrain`` builds it
    (on uint8 tensors its geometric operations take nearest or bilinear sampling only)."""
    interp = v2.InterpolationMode.NEAREST if interpolation == "nearest" else v2.InterpolationMode.BILINEAR
    if policy == "ra":
        return v2.RandAugment(interpolation=interp, magnitude=ra_magnitude)
    if policy == "ta_wide":
        return v2.TrivialAugmentWide(interpolation=interp)
    if policy == "augmix":
        return v2.AugMix(interpolation=interp, severity=augmix_severity)
    if policy == "imagenet":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interp)
    raise DataError(f"auto-augment policy {policy!r}: expected one of {', '.join(POLICIES)}")


# ----------------------------------------------------------------------------------------------
# image folders: the per-image training transform; and what a batcher applies


def parse_scale_jitter(text: str) -> tuple[int, int]:
    """``"256,512"`` -> (256, 512): the range of the shorter side for VGG's scale jittering."""
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise DataError(f"--scale-jitter {text!r}: expected MIN,MAX with 1 <= MIN <= MAX, e.g. 256,512")
    return lo, hi


def folder_train_transform(
    crop: int, *, interpolation: str = "bilinear", policy: str = "none", ra_magnitude: int = 9,
    augmix_severity: int = 3, scale_jitter: str | None = None,
) -> v2.Transform:  # fmt: skip
    """The references' training transform for one uint8 image: RandomResizedCrop(crop) (or, with
    ``scale_jitter="MIN,MAX"``, the shorter side resized to a random size in [MIN, MAX] and a random crop,
    as Simonyan & Zisserman), a horizontal flip, then the policy."""
    interp = INTERPOLATIONS[interpolation]
    if scale_jitter:
        lo, hi = parse_scale_jitter(scale_jitter)
        steps = [
            v2.RandomShortestSize(list(range(lo, hi + 1)), interpolation=interp, antialias=True),
            v2.RandomCrop(crop, pad_if_needed=True),
        ]
    else:
        steps = [v2.RandomResizedCrop(crop, scale=(0.08, 1.0), interpolation=interp, antialias=True)]
    steps.append(v2.RandomHorizontalFlip())
    if policy != "none":
        steps.append(
            torchvision_policy(
                policy, interpolation=interpolation, ra_magnitude=ra_magnitude, augmix_severity=augmix_severity
            )
        )
    return v2.Compose(steps)


@dataclass
class BatchAugment:
    """What a batcher applies to each training batch: ``policy`` to the uint8 pixels (in-memory data, or
    folders decoded on the device), then after normalisation RandomErasing (probability ``erase``) and
    ``mix`` (MixUp/CutMix, soft targets). Each takes its draws from its own stream (see :func:`epoch_rng`)."""

    policy: DevicePolicy | None = None
    erase: float = 0.0
    mix: MixUpCutMix | None = None

    def pixels(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return self.policy(x, rng) if self.policy is not None else x

    def tensors(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.erase > 0:
            x = random_erase(x, self.erase, rng)
        if self.mix is not None:
            x, y = self.mix(x, y, rng)
        return x, y
