"""Inference fast paths: BatchNorm folding is exact, folds only true conv -> BN pairs, and the back ends agree."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo import fast
from cnnzoo.fast import find_conv_bn_pairs, fold_batchnorm, fuse_conv_bn, optimize_for_inference
from cnnzoo.layers import BatchNorm2dNoScale

_BN = nn.modules.batchnorm._BatchNorm


pytestmark = pytest.mark.usefixtures("one_thread")


def _models_with_bn() -> list[str]:
    names = []
    for name in cnnzoo.list_models():
        with torch.device("meta"):
            model = cnnzoo.create_model(name)
        if any(isinstance(m, _BN) for m in model.modules()):
            names.append(name)
    return names


def _randomise_bn(model: nn.Module, seed: int = 1) -> None:
    """Statistics and affine parameters away from the identity (fresh BNs are mean 0, var 1, gamma 1, beta 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BN):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(n, generator=g) * 0.2)


def _bn_calls(model: nn.Module) -> list[str]:
    """The BatchNorms the eval-mode forward calls, from the fx graph."""
    graph = fast._trace(model)
    return [n.target for n in graph.nodes if n.op == "call_module" and isinstance(model.get_submodule(n.target), _BN)]


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> float:
    """Max abs difference, relative to the output's scale when that exceeds 1."""
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


# --------------------------------------------------------------------------------------------------
# Every zoo model with BatchNorm: folded == unfolded, and no BN left on the inference path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _models_with_bn())
def test_folding_is_exact_on_every_zoo_model_with_batchnorm(name):
    model = cnnzoo.create_model(name).eval()
    _randomise_bn(model)
    size = max(model.min_size, 32)  # small inputs keep the big models fast
    x = torch.randn(2, model.in_chans, size, size, generator=torch.Generator().manual_seed(2))
    bns_on_path = _bn_calls(model)
    assert bns_on_path, f"{name}: no BatchNorm on the eval path?"
    with torch.no_grad():
        want = model(x)
        folded = fold_batchnorm(model, inplace=True)
        got = folded(x)
    assert _close(got, want) <= 1e-5
    assert len(folded.folded_batchnorms) == len(bns_on_path)  # every BN that runs was folded ...
    assert _bn_calls(folded) == []  # ... and none runs any more


def test_folding_works_on_a_copy_by_default():
    model = cnnzoo.create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert model.training and isinstance(model.bn1, nn.BatchNorm2d)  # untouched, mode included
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not folded.training and isinstance(folded.bn1, nn.Identity) and folded.conv1.bias is not None


# --------------------------------------------------------------------------------------------------
# Only pairs that are consecutive in the data flow are folded
# --------------------------------------------------------------------------------------------------


class ReluBetween(nn.Module):
    """conv1 / bn1 attributes as in ResNet, but wired conv -> relu -> bn: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn1(F.relu(self.conv1(x)))


class ConvOutputReused(nn.Module):
    """The conv's output also feeds a shortcut: folding would change the shortcut."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class SharedConv(nn.Module):
    """One conv called twice, once into a BN: folding would change the other call."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


class WeightReadDirectly(nn.Module):
    """The conv's weight is also used by hand elsewhere."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.conv(x)) + F.conv2d(x, self.conv.weight, padding=1)


class Untraceable(nn.Module):
    """Data-dependent control flow defeats fx: only the plain Sequential's pair may be folded."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.block(x)
        if x.sum() > 0:  # fx cannot decide this
            x = self.bn(F.relu(self.conv(x)))
        return x


@pytest.mark.parametrize(
    "model, channels, pairs",
    [
        (ReluBetween(), 3, []),
        (ConvOutputReused(), 8, []),
        (SharedConv(), 8, []),
        (WeightReadDirectly(), 8, []),
        (Untraceable(), 3, [("block.0", "block.1")]),
    ],
    ids=["relu-between", "output-reused", "shared-conv", "weight-read", "untraceable"],
)
def test_only_pairs_consecutive_in_data_flow_are_folded(model, channels, pairs):
    model.eval()
    _randomise_bn(model)
    assert find_conv_bn_pairs(model) == pairs
    x = torch.randn(2, channels, 8, 8)
    with torch.no_grad():
        assert _close(fold_batchnorm(model)(x), model(x)) <= 1e-5


@pytest.mark.parametrize(
    "conv, bn",
    [
        (nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=True), nn.BatchNorm2d(16, eps=1e-3)),
        (nn.Conv2d(8, 16, (1, 7), padding=(0, 3), dilation=2, bias=False), BatchNorm2dNoScale(16, eps=1e-3)),
        (nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(16, affine=False)),
    ],
    ids=["grouped-strided-biased", "no-scale-dilated", "reflect-padded-no-affine"],
)
def test_fuse_conv_bn_equals_the_pair(conv, bn):
    bn.eval()
    _randomise_bn(bn)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        assert _close(fuse_conv_bn(conv, bn)(x), bn(conv(x))) <= 1e-6


def test_fuse_conv_bn_refuses_what_it_cannot_fold():
    with pytest.raises(ValueError, match="channels"):
        fuse_conv_bn(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(4))
    with pytest.raises(TypeError):
        fuse_conv_bn(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8, track_running_stats=False))


# --------------------------------------------------------------------------------------------------
# optimize_for_inference
# --------------------------------------------------------------------------------------------------


def _resnet20():
    model = cnnzoo.create_model("resnet20").eval()
    _randomise_bn(model)
    return model, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_eager_fast_path_matches_and_keeps_the_model():
    model, x = _resnet20()
    fast_model = optimize_for_inference(model, backend="eager")
    with torch.no_grad():
        want = model(x)
    got = fast_model(x)
    assert got.dtype == torch.float32 and _close(got, want) <= 1e-5
    assert fast_model.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast_model.model_name == "resnet20" and fast_model.info.name == "resnet20"
    assert isinstance(model.bn1, nn.BatchNorm2d)  # the original is untouched


def test_bf16_fast_path_is_close_and_returns_float32():
    model, x = _resnet20()
    with torch.no_grad():
        want = model(x)
    got = optimize_for_inference(model, backend="eager", precision="bf16")(x)
    assert got.dtype == torch.float32
    assert _close(got, want) <= 0.1  # bf16 keeps 8 bits of mantissa


@pytest.mark.skipif(not fast._has_onnxruntime(), reason="onnxruntime / onnxscript not installed")
def test_onnxruntime_fast_path_matches_for_any_batch():
    model, x = _resnet20()
    fast_model = optimize_for_inference(model, backend="onnxruntime")
    with torch.no_grad():
        for batch in (x, x[:1]):
            assert _close(fast_model(batch), model(batch)) <= 1e-5
    with pytest.raises(cnnzoo.InputShapeError, match="3 input channels"):
        fast_model(torch.zeros(1, 1, 32, 32))


def test_auto_backend_choice(monkeypatch):
    monkeypatch.setattr(fast, "_has_onnxruntime", lambda: True)
    assert fast.pick_backend("cpu") == "onnxruntime"
    assert fast.pick_backend("cpu", "bf16") != "onnxruntime"  # ONNX Runtime runs fp32 only here
    assert fast.pick_backend("cuda") == "inductor"
    monkeypatch.setattr(fast, "_has_onnxruntime", lambda: False)
    monkeypatch.setattr(fast, "_has_cxx_compiler", lambda: True)
    assert fast.pick_backend("cpu") == "inductor"
    monkeypatch.setattr(fast, "_has_cxx_compiler", lambda: False)
    assert fast.pick_backend("cpu") == "eager"


def test_bad_settings_are_refused():
    model, _ = _resnet20()
    with pytest.raises(ValueError, match="backend"):
        optimize_for_inference(model, backend="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        optimize_for_inference(model, precision="int8")
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        optimize_for_inference(model, backend="onnxruntime", precision="bf16")


# --------------------------------------------------------------------------------------------------
# On a GPU (run by benchmarks/gpu_bench.py's "gpu-tests" job on the lent machine; skipped elsewhere)
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_default_inference_path_matches_eager():
    """The GPU default (inductor with freezing and CUDA graphs, bf16, channels-last) computes the model."""
    model, x = _resnet20()
    with torch.no_grad():
        want = model(x)
    fast_model = optimize_for_inference(model.cuda(), precision="bf16")
    assert fast_model.backend == "inductor"
    for _ in range(3):  # the first calls compile and record the CUDA graph; later ones replay it
        got = fast_model(x.cuda())
    assert got.dtype == torch.float32 and got.device.type == "cuda"
    assert _close(got.cpu(), want) <= 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step_with_the_defaults_learns():
    """bf16 autocast, channels-last and fused SGD (the GPU training defaults) drive the loss down."""
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20").cuda().to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, fused=True)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    losses = torch.stack(losses).tolist()
    assert losses[-1] < 0.5 * losses[0]  # memorises one batch
