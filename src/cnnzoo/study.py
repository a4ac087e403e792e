"""The study note's low-level convolution layer (``SimpleCNN``), in PyTorch, built the way Keras builds it.

The note writes a Keras layer whose weights do not exist until the first input arrives: ``build(input_shape)``
reads the input's channel count and only then creates a Glorot-uniform kernel and a random-normal bias;
``call`` is a 'valid' ``tf.nn.conv2d`` plus the bias, then a ReLU. PyTorch's counterpart of ``build`` is a
lazy module (``LazyModuleMixin`` with ``UninitializedParameter``, the mechanism of ``nn.LazyConv2d``): the
parameters are placeholders until the first forward pass, whose pre-hook calls :meth:`initialize_parameters`
with the input.

Two layers share that mechanism and differ only in how they compute:

* :class:`SimpleCNN` calls the low-level op, ``F.conv2d`` + bias + ReLU (:func:`conv_layer`), as the note does;
* :class:`SimpleCNNIm2col` does the filter operation itself (:func:`conv_layer_im2col`): it cuts the padded
  input into one window per output position (im2col), and one matrix product multiplies every window with
  every filter and sums, with no convolution op at all.

Both equal ``nn.Conv2d`` + ``nn.ReLU`` given the same weights (tests/test_study.py checks the forward pass
and the gradients, and ``torch.autograd.gradcheck`` in float64). Kernels are stored in PyTorch's layout
(out, in, kh, kw), not Keras' (kh, kw, in, out); :func:`keras_kernel_to_torch` and :func:`torch_kernel_to_keras`
convert. The note's layer is 'valid' only; ``padding`` also takes an int, a pair or 'same' (TensorFlow's
rule, asymmetric for stride > 1, from :mod:`cnnzoo.shapes`), so that the layer can stand in for LeNet-5's
'same' first convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from .errors import InputShapeError
from .shapes import IntPair, Padding2d, conv2d_output_shape, resolve_padding2d

__all__ = [
    "KERAS_RANDOM_NORMAL_STDDEV",
    "SimpleCNN",
    "SimpleCNNIm2col",
    "conv_layer",
    "conv_layer_im2col",
    "glorot_uniform_",
    "keras_kernel_to_torch",
    "replace_first_conv",
    "torch_kernel_to_keras",
]

# keras.initializers.RandomNormal() (what the string 'random_normal' names): mean 0, stddev 0.05.
KERAS_RANDOM_NORMAL_STDDEV = 0.05


def glorot_uniform_(kernels: torch.Tensor) -> torch.Tensor:
    """Fill (out, in, kh, kw) ``kernels`` in place as Keras' ``glorot_uniform`` fills (kh, kw, in, out).

    Uniform on [-limit, limit] with limit = sqrt(6 / (fan_in + fan_out)), fan_in = kh*kw*in and
    fan_out = kh*kw*out: the variance 2 / (fan_in + fan_out) keeps activations and gradients of the same
    scale going forward and backward (Glorot & Bengio 2010). Written out rather than taken from
    ``nn.init.xavier_uniform_`` so that the fans are visibly Keras' whatever the layout.
    """
    out_channels, in_channels, kh, kw = kernels.shape
    fan_in, fan_out = kh * kw * in_channels, kh * kw * out_channels
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return kernels.uniform_(-limit, limit)


def keras_kernel_to_torch(kernel: torch.Tensor) -> torch.Tensor:
    """A Keras Conv2D kernel (kh, kw, in, out) as a PyTorch Conv2d weight (out, in, kh, kw), contiguous."""
    return kernel.permute(3, 2, 0, 1).contiguous()


def torch_kernel_to_keras(weight: torch.Tensor) -> torch.Tensor:
    """A PyTorch Conv2d weight (out, in, kh, kw) as a Keras Conv2D kernel (kh, kw, in, out), contiguous."""
    return weight.permute(2, 3, 1, 0).contiguous()


def _pad(x: torch.Tensor, kernel_size: tuple[int, int], stride: IntPair, padding: Padding2d) -> torch.Tensor:
    """Zero-pad ``x`` as ``padding`` says; 'same' depends on the input size, so it is resolved here."""
    (top, bottom), (left, right) = resolve_padding2d(padding, tuple(x.shape[-2:]), kernel_size, stride)
    return F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x


def conv_layer(
    x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor, stride: IntPair = 1, padding: Padding2d = "valid"
) -> torch.Tensor:
    """The note's ``conv_layer``: convolution with the low-level op, plus bias, then ReLU.

    TensorFlow's ``tf.nn.conv2d(x, k, strides=[1, s, s, 1], padding='VALID')`` is ``F.conv2d(x, k, stride=s)``
    on NCHW tensors; the bias is added per output channel before the ReLU, as in the note.
    """
    kernel_size = tuple(kernels.shape[-2:])
    conv2d_output_shape(tuple(x.shape[-2:]), kernel_size, stride, padding)  # a clear ShapeError if too small
    z = F.conv2d(_pad(x, kernel_size, stride, padding), kernels, stride=stride)
    return torch.relu(z + bias.view(1, -1, 1, 1))


def conv_layer_im2col(
    x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor, stride: IntPair = 1, padding: Padding2d = "valid"
) -> torch.Tensor:
    """:func:`conv_layer` without a convolution op: the filter operation done by hand, as im2col.

    ``Tensor.unfold`` along H, then W, views the padded input as one kh x kw window per output position
    (N, C, OH, OW, kh, kw), no copy. Flattening each window over (C, kh, kw), the order of a filter's
    weights, gives the im2col matrix, one row per position; one matrix product with the filters, one
    column each, multiplies the matching elements and sums them for every position and filter at once.
    """
    out_channels, _, kh, kw = kernels.shape
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    n, c = x.shape[:2]
    oh, ow = conv2d_output_shape(tuple(x.shape[-2:]), (kh, kw), (sh, sw), padding)  # a clear ShapeError if too small
    x = _pad(x, (kh, kw), stride, padding)
    windows = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, OH, OW, kh, kw)
    columns = windows.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    z = columns @ kernels.reshape(out_channels, c * kh * kw).T  # (N*OH*OW, out): multiply and sum
    z = z.reshape(n, oh, ow, out_channels).permute(0, 3, 1, 2)
    return torch.relu(z + bias.view(1, -1, 1, 1))


class SimpleCNN(LazyModuleMixin, nn.Module):
    """The note's ``SimpleCNN`` layer: weights built from the first input's channel count, 'valid' conv + bias + ReLU.

    ``SimpleCNN(num_kernels=32, kernel_size=(3, 3), stride=1)`` as in the note; ``padding`` defaults to the
    note's 'valid'. Until the first forward pass ``kernels`` and ``bias`` are ``UninitializedParameter`` s
    (``in_channels`` is None); that pass creates them, (num_kernels, in_channels, kh, kw) Glorot-uniform
    and (num_kernels,) random-normal with stddev 0.05, as Keras' ``glorot_uniform`` and ``'random_normal'``.
    Loading a state dict into an unbuilt layer builds it too (the lazy-module load hook).
    """

    cls_to_become = None  # unlike nn.LazyConv2d, stay this class: forward is what the note wrote

    def __init__(
        self,
        num_kernels: int = 32,
        kernel_size: IntPair = (3, 3),
        stride: IntPair = 1,
        padding: Padding2d = "valid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_kernels = num_kernels
        self.kernel_size = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        self.stride = stride
        self.padding = padding
        self.kernels = UninitializedParameter(device=device, dtype=dtype)
        self.bias = UninitializedParameter(device=device, dtype=dtype)

    @property
    def in_channels(self) -> int | None:
        """The channel count the layer was built for; None before the first input (or state dict)."""
        return None if self.has_uninitialized_params() else self.kernels.shape[1]

    def reset_parameters(self) -> None:
        """Keras' initialisers: Glorot-uniform kernels, random-normal bias (mean 0, stddev 0.05)."""
        if not self.has_uninitialized_params():
            glorot_uniform_(self.kernels)
            with torch.no_grad():
                self.bias.normal_(0.0, KERAS_RANDOM_NORMAL_STDDEV)

    def initialize_parameters(self, x: torch.Tensor, *args, **kwargs) -> None:
        """Keras' ``build(input_shape)``: called by the lazy-module pre-hook with the first input."""
        if not self.has_uninitialized_params():
            return
        if x.dim() != 4:
            raise InputShapeError(f"{type(self).__name__} needs an (N, C, H, W) input, got shape {tuple(x.shape)}")
        self.kernels.materialize((self.num_kernels, x.shape[1], *self.kernel_size))
        self.bias.materialize((self.num_kernels,))
        self.reset_parameters()

    def _check_input(self, x: torch.Tensor) -> None:
        # After build the channel count is fixed, as in Keras; say so rather than let conv2d fail obscurely.
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"{type(self).__name__} was built for {self.in_channels} input channels (N, C, H, W); "
                f"got shape {tuple(x.shape)}. Build a new layer for another channel count."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return conv_layer(x, self.kernels, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"num_kernels={self.num_kernels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding!r}, in_channels={self.in_channels}"
        )


class SimpleCNNIm2col(SimpleCNN):
    """:class:`SimpleCNN` computing the filter operation itself (:func:`conv_layer_im2col`), no conv op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return conv_layer_im2col(x, self.kernels, self.bias, self.stride, self.padding)


def replace_first_conv(model: nn.Module, layer: nn.Module) -> tuple[str, nn.Conv2d]:
    """Put ``layer`` (a conv + ReLU, such as :class:`SimpleCNN`) in the place of ``model``'s first ``nn.Conv2d``.

    "First" is in registration order, ``model.named_modules()``. Returns the replaced convolution's dotted
    name and the convolution, e.g. ``('features.conv1', Conv2d(1, 6, ...))`` for LeNet-5, so that its weights
    can be copied. ``layer`` ends in its own ReLU, so an ``nn.ReLU`` right after the convolution in the same
    ``nn.Sequential`` becomes ``nn.Identity``: the model then computes what it did, and an in-place ReLU
    cannot overwrite the output that ``layer``'s ReLU keeps for its backward pass.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, layer)
            if isinstance(parent, nn.Sequential):
                names = list(parent._modules)
                after = names.index(child) + 1
                if after < len(names) and isinstance(parent[after], nn.ReLU):
                    setattr(parent, names[after], nn.Identity())
            return name, module
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d to replace")
