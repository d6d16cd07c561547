"""Ternary and binary weights trained with a straight-through estimator.

Ternary (TWN): Li & Liu, "Ternary Weight Networks", 2016, Sec. 2. Each layer's weights
become ``{-alpha, 0, +alpha}`` with the threshold ``delta = 0.7 * mean|W|`` (their Eq. 7
approximation) and ``alpha`` the mean of ``|W|`` over the weights beyond ``delta`` (Eq. 5):
2 bits per weight.

Binary: Courbariaux, Bengio & David, "BinaryConnect", NeurIPS 2015 (``sign(W)``, latent
weights kept in ``[-1, 1]``) with the scaling of Rastegari et al., "XNOR-Net", ECCV 2016,
Sec. 3.1: ``alpha * sign(W)`` with ``alpha = mean|W|`` per output filter (or per layer):
1 bit per weight.

Training keeps full-precision *latent* weights; the forward pass sees their quantized
values and the backward pass treats the quantizer as the identity (the straight-through
estimator, Bengio et al. 2013; Hubara et al. 2016). The gradient with respect to ``alpha``
is not propagated: alpha is a statistic of the latent weights, as in both papers.

Both papers keep the first convolution and the last classifier in full precision (they
see the raw image and produce the logits, and hold few of the weights);
:func:`apply_lowbit` does the same by default.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from cnnzoo.errors import CnnzooError

MODES = ("ternary", "binary")
BITS = {"ternary": 2, "binary": 1}
TWN_THRESHOLD = 0.7
LAYER_TYPES = (nn.Conv2d, nn.Linear)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise CnnzooError(f"unknown low-bit mode {mode!r}; expected one of {', '.join(MODES)}")


class _TernarySTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: Tensor) -> Tensor:
        magnitude = w.abs()
        delta = TWN_THRESHOLD * magnitude.mean()
        keep = (magnitude > delta).to(w.dtype)
        # Masked mean without boolean indexing (no host-device sync on a GPU); an all-zero
        # layer has nothing beyond the threshold: alpha 0, every weight 0.
        alpha = (magnitude * keep).sum() / keep.sum().clamp_min(1)
        zero = torch.zeros_like(w)
        return torch.where(w > delta, alpha, torch.where(w < -delta, -alpha, zero))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


class _BinarySTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: Tensor, per_channel: bool) -> Tensor:
        ctx.save_for_backward(w)
        if per_channel and w.ndim > 1:
            alpha = w.abs().mean(dim=tuple(range(1, w.ndim)), keepdim=True)
        else:
            alpha = w.abs().mean()
        # sign(0) would give a third value; zero goes to +alpha.
        return torch.where(w >= 0, alpha, -alpha)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (w,) = ctx.saved_tensors
        # The hard-tanh STE of BinaryConnect / XNOR-Net: no gradient where |w| > 1.
        return grad * (w.abs() <= 1).to(grad.dtype), None


def ternarize(w: Tensor) -> Tensor:
    """Return the TWN ternary version of ``w``: exactly ``{-alpha, 0, +alpha}`` for the tensor.

    ``delta = 0.7 * mean|w|``; weights above ``delta`` become ``+alpha``, below ``-delta``
    become ``-alpha``, the rest 0, with ``alpha = mean(|w| where |w| > delta)``. The
    backward pass is the identity (straight-through estimator); an all-zero tensor stays 0.
    """
    return _TernarySTE.apply(w)


def binarize(w: Tensor, per_channel: bool = True) -> Tensor:
    """Return ``alpha * sign(w)`` with ``sign(0) = +1``: two values per scale.

    ``alpha = mean|w|`` per output channel (dim 0, XNOR-Net) when ``per_channel``, else per
    tensor. The backward pass passes the upstream gradient where ``|w| <= 1`` and zero where
    ``|w| > 1`` (BinaryConnect's clipped STE: weights outside ``[-1, 1]`` stop learning from
    the loss; weight decay pulls them back, instead of an explicit clip after each step).
    """
    return _BinarySTE.apply(w, per_channel)


class Ternarize(nn.Module):
    """Parametrization: the layer's forward pass sees :func:`ternarize` of its weight."""

    def forward(self, w: Tensor) -> Tensor:
        return ternarize(w)


class Binarize(nn.Module):
    """Parametrization: the layer's forward pass sees :func:`binarize` of its weight."""

    def __init__(self, per_channel: bool = True) -> None:
        super().__init__()
        self.per_channel = per_channel

    def forward(self, w: Tensor) -> Tensor:
        return binarize(w, self.per_channel)


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def _full_precision_names(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> set[str]:
    """The first weighted layer (the stem convolution) and the classifier.

    Order is registration order; the classifier is the model's ``classifier_name`` when it
    names one of the layers (cnnzoo classifiers), else the last registered layer.
    """
    names = [n for n, _ in layers]
    last = names[-1]
    classifier = getattr(model, "classifier_name", None)
    if isinstance(classifier, str):
        try:
            module = operator.attrgetter(classifier)(model)
        except AttributeError:
            module = None
        if isinstance(module, LAYER_TYPES) and classifier in names:
            last = classifier
    return {names[0], last}


def apply_lowbit(
    model: nn.Module, mode: str, skip_first_last: bool = True, per_channel: bool = True
) -> list[str]:
    """Quantize every ``Conv2d``/``Linear`` weight of ``model`` in place, for training.

    Each weight gets a parametrization (``torch.nn.utils.parametrize``): the full-precision
    latent weight (``<layer>.parametrizations.weight.original``) is what the optimiser
    updates; the forward pass sees its ternary/binary value. With ``skip_first_last`` the
    first layer and the classifier stay in full precision, as in TWN, BinaryConnect and
    XNOR-Net. ``per_channel`` picks binary's scale (per output channel or per layer).

    Returns:
        The names of the quantized layers, in registration order.

    Raises:
        CnnzooError: for an unknown ``mode``, a model that is already quantized, or one
            with no layer left to quantize.
    """
    _check_mode(mode)
    layers = _weighted_layers(model)
    if any(parametrize.is_parametrized(m, "weight") for _, m in layers):
        raise CnnzooError("model already has weight parametrizations; apply_lowbit only once")
    skip = _full_precision_names(model, layers) if skip_first_last and layers else set()
    chosen = [(n, m) for n, m in layers if n not in skip]
    if not chosen:
        raise CnnzooError(
            f"{type(model).__name__} has no Conv2d/Linear layer to quantize"
            + (" besides its first and last (use skip_first_last=False)" if layers else "")
        )
    for _, module in chosen:
        quantizer = Ternarize() if mode == "ternary" else Binarize(per_channel)
        parametrize.register_parametrization(module, "weight", quantizer)
    return [n for n, _ in chosen]


def bake_lowbit(model: nn.Module) -> None:
    """Replace each low-bit parametrization by its quantized values as a plain weight.

    Afterwards ``model`` holds ordinary ``nn.Parameter`` weights (the ternary/binary values,
    still stored as float32) and its ``state_dict`` has the keys of the unquantized model,
    in the same order. Layers without a low-bit parametrization are left alone.
    """
    for module in model.modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        if any(isinstance(p, (Ternarize, Binarize)) for p in module.parametrizations.weight):
            with torch.no_grad():
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            # Removal re-registers the weight last; Conv2d/Linear list it first (before the
            # bias), so move the others behind it to give back the original key order.
            for key in [k for k in module._parameters if k != "weight"]:
                module._parameters[key] = module._parameters.pop(key)


def _scale_count(module: nn.Module, mode: str, per_channel: bool) -> int:
    if mode == "binary" and per_channel:
        return int(module.weight.shape[0])
    return 1


def packed_size_bytes(
    model: nn.Module, mode: str, quantized: list[str], per_channel: bool = True
) -> dict[str, float]:
    """Size of ``model`` stored with packed low-bit weights, against plain float32.

    A quantized layer's weight costs 2 bits (ternary) or 1 bit (binary) per value, rounded
    up to whole bytes per layer, plus one float32 alpha per layer (ternary, binary per
    layer) or per output channel (binary with ``per_channel``). Every other floating-point
    tensor of the ``state_dict`` (biases, BatchNorm parameters and running statistics,
    full-precision layers) costs 4 bytes per value; integer buffers (BatchNorm's batch
    counter) are left out of both sizes.

    Returns:
        ``{"bits_per_weight", "quantized_weights", "scales", "packed_bytes", "fp32_bytes",
        "ratio"}`` where ``ratio = fp32_bytes / packed_bytes``.

    Raises:
        CnnzooError: for an unknown ``mode`` or a name in ``quantized`` that is not a
            ``Conv2d``/``Linear`` layer of ``model``.
    """
    _check_mode(mode)
    bits = BITS[mode]
    layers = dict(_weighted_layers(model))
    packed_keys: set[str] = set()
    packed = fp32 = 0
    weights = scales = 0
    for name in quantized:
        if name not in layers:
            raise CnnzooError(f"{name!r} is not a Conv2d/Linear layer of {type(model).__name__}")
        module = layers[name]
        n = module.weight.numel()
        s = _scale_count(module, mode, per_channel)
        weights += n
        scales += s
        packed += math.ceil(n * bits / 8) + 4 * s
        fp32 += 4 * n
        packed_keys |= {f"{name}.weight", f"{name}.parametrizations.weight.original"}
    for key, tensor in model.state_dict().items():
        if key in packed_keys or not tensor.is_floating_point():
            continue
        packed += 4 * tensor.numel()
        fp32 += 4 * tensor.numel()
    return {
        "bits_per_weight": bits,
        "quantized_weights": weights,
        "scales": scales,
        "packed_bytes": packed,
        "fp32_bytes": fp32,
        "ratio": fp32 / packed if packed else float("nan"),
    }


def weight_levels(model: nn.Module) -> dict[str, int]:
    """Return the number of distinct weight values of each ``Conv2d``/``Linear`` layer.

    Quantized layers report the values their forward pass uses (3 for ternary, 2 per output
    channel for binary); full-precision layers report about one per weight.
    """
    with torch.no_grad():
        return {n: int(torch.unique(m.weight).numel()) for n, m in _weighted_layers(model)}
