"""Quantization-aware training (QAT) for the int8 ONNX Runtime model of :mod:`.quantize`.

Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, Sec. 3: fine-tune with *simulated*
quantization — the forward pass rounds weights and activations to the int8 grid they will
have at inference, the backward pass treats rounding as the identity inside the grid's range
(straight-through estimator) — so the float weights learn to sit where rounding hurts least.

The simulation follows the settings :func:`cnnzoo.compress.quantize.quantize_int8` uses with
ONNX Runtime, so the grid trained on is the grid deployed:

- weights of every ``Conv2d``/``Linear``: signed int8, symmetric, one scale per output
  channel, ``scale = max|w| / 127`` (ONNX Runtime's symmetric int8 range is [-127, 127]).
  Folding BatchNorm into a convolution multiplies each output channel by a constant, which
  scales that channel's grid by the same constant: per-channel quantization of the unfolded
  weight is exactly that of the folded one.
- the input of every ``Conv2d``/``Linear``: unsigned int8, asymmetric, one scale per tensor,
  from a range tracked during training (exponential moving average of each batch's min and
  max, as Jacob et al. Sec. 3.1) that always includes 0. ONNX Runtime calibrates these
  ranges again afterwards on training images (MinMax).

After fine-tuning, :func:`remove_qat` leaves weights that are already on their int8 grid
(re-quantizing them is exact) and removes the activation simulation; the model is then
exported and quantized like any other (:func:`cnnzoo.compress.quantize.quantize_int8`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from cnnzoo.errors import CnnzooError

LAYER_TYPES = (nn.Conv2d, nn.Linear)
WEIGHT_QMAX = 127
"""Symmetric int8 weights use [-127, 127] (ONNX Runtime's symmetric range)."""
ACT_QMIN, ACT_QMAX = 0, 255
EMA_MOMENTUM = 0.01
"""Weight of the newest batch in the activation range's moving average."""


def fake_quant_weight(w: Tensor) -> Tensor:
    """Return ``w`` rounded to symmetric int8 with one scale per output channel (dim 0).

    ``scale = max|w_c| / 127`` for channel ``c``; an all-zero channel stays zero. The gradient
    passes unchanged (every weight is inside its channel's range by construction).
    """
    flat = w.detach().reshape(w.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / WEIGHT_QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    zero_point = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(
        w, scale.float(), zero_point, 0, -WEIGHT_QMAX, WEIGHT_QMAX
    )


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """Return ``(scale, zero_point)`` of unsigned int8 over ``[min(low, 0), max(high, 0)]``.

    The range always includes 0 so that zero (padding, ReLU's output) is exact.
    """
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / (ACT_QMAX - ACT_QMIN), 1e-8)
    zero_point = int(min(max(round(ACT_QMIN - low / scale), ACT_QMIN), ACT_QMAX))
    return scale, zero_point


class FakeQuantWeight(nn.Module):
    """Parametrization: the layer's forward pass sees :func:`fake_quant_weight` of its weight."""

    def forward(self, w: Tensor) -> Tensor:
        return fake_quant_weight(w)


class ActivationFakeQuant(nn.Module):
    """Simulated uint8 quantization of one tensor, with a range learned from the data.

    In training mode each call updates the moving averages of the batch's min and max (the
    first call sets them); in eval mode the range is frozen. Values outside the range are
    clipped, and get no gradient (the straight-through estimator of ``fake_quantize``).
    """

    def __init__(self, momentum: float = EMA_MOMENTUM) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                low, high = x.detach().min().float(), x.detach().max().float()
                if not bool(self.seen):
                    self.low.copy_(low)
                    self.high.copy_(high)
                    self.seen.fill_(True)
                else:
                    self.low.lerp_(low, self.momentum)
                    self.high.lerp_(high, self.momentum)
        if not bool(self.seen):
            return x
        scale, zero_point = activation_qparams(float(self.low), float(self.high))
        # fake_quantize needs float32 (the input may be bf16/fp16 under autocast).
        quantized = torch.fake_quantize_per_tensor_affine(
            x.float(), scale, zero_point, ACT_QMIN, ACT_QMAX
        )
        return quantized.to(x.dtype)


class QATState:
    """What :func:`prepare_qat` attached to a model: the observers and their hooks."""

    def __init__(self) -> None:
        self.observers: dict[str, ActivationFakeQuant] = {}
        self.handles: list[RemovableHandle] = []

    @property
    def layers(self) -> list[str]:
        """The simulated layers' names, in registration order."""
        return list(self.observers)


def prepare_qat(model: nn.Module) -> QATState:
    """Simulate int8 on every ``Conv2d``/``Linear`` of ``model``, in place, for fine-tuning.

    Weights get a :class:`FakeQuantWeight` parametrization (the optimiser still updates the
    float weight); each layer's input passes through an :class:`ActivationFakeQuant`, run by
    a forward pre-hook. The observers are not registered as submodules, so the model's
    ``state_dict`` keeps its keys apart from the parametrized weights; they follow the model
    to its device and train/eval mode through the hooks.

    Returns:
        The :class:`QATState` to give to :func:`remove_qat`.

    Raises:
        CnnzooError: for a model with no ``Conv2d``/``Linear`` layer or one whose weights
            already have a parametrization (low-bit or QAT applied before).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    if not layers:
        raise CnnzooError(f"{type(model).__name__} has no Conv2d/Linear layer to quantize")
    if any(parametrize.is_parametrized(m, "weight") for _, m in layers):
        raise CnnzooError("model already has weight parametrizations; prepare_qat applies once")
    state = QATState()
    for name, module in layers:
        parametrize.register_parametrization(module, "weight", FakeQuantWeight())
        observer = ActivationFakeQuant()
        state.observers[name] = observer

        def hook(
            mod: nn.Module, args: tuple[Tensor, ...], observer: ActivationFakeQuant = observer
        ) -> tuple[Tensor, ...]:
            observer.train(mod.training)
            observer.to(args[0].device)
            return (observer(args[0]), *args[1:])

        state.handles.append(module.register_forward_pre_hook(hook))
    return state


def remove_qat(model: nn.Module, state: QATState) -> None:
    """Undo :func:`prepare_qat`: weights become plain parameters holding their int8-grid
    values (in the original ``state_dict`` key order) and the activation hooks go."""
    for handle in state.handles:
        handle.remove()
    state.handles.clear()
    modules = dict(model.named_modules())
    for name in state.layers:
        module = modules[name]
        if not parametrize.is_parametrized(module, "weight"):
            continue
        with torch.no_grad():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        for key in [k for k in module._parameters if k != "weight"]:
            module._parameters[key] = module._parameters.pop(key)
