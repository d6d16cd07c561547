"""Quantization-aware training: simulated int8 on ONNX Runtime's grid, and its removal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.compress.qat import (
    ActivationFakeQuant,
    activation_qparams,
    fake_quant_weight,
    prepare_qat,
    remove_qat,
)
from cnnzoo.errors import CnnzooError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_weights_are_rounded_per_channel_to_symmetric_int8():
    torch.manual_seed(0)
    w = torch.randn(3, 2, 3, 3) * torch.tensor([0.01, 1.0, 30.0]).view(3, 1, 1, 1)
    w[1, 0, 0, 0] = -w[1].abs().max() * 1.5  # a negative extreme sets channel 1's scale
    q = fake_quant_weight(w)
    for c in range(3):
        scale = w[c].abs().max() / 127
        steps = q[c] / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3)  # on the grid
        assert steps.abs().max().round() == 127  # the extreme is exact
        assert (q[c] - w[c]).abs().max() <= scale / 2 + 1e-6
    assert torch.equal(fake_quant_weight(q), q)  # re-quantizing the grid is exact
    zero = fake_quant_weight(torch.zeros(2, 4))
    assert torch.equal(zero, torch.zeros(2, 4))


def test_activation_range_always_holds_zero_exactly():
    assert activation_qparams(0.0, 2.55) == pytest.approx((0.01, 0))
    scale, zero_point = activation_qparams(-1.0, 1.0)
    assert scale == pytest.approx(2 / 255) and zero_point == 128
    scale, zero_point = activation_qparams(0.5, 1.0)  # widened down to 0
    assert zero_point == 0 and scale == pytest.approx(1 / 255)


def test_activation_observer_tracks_then_freezes_its_range():
    fq = ActivationFakeQuant(momentum=0.5)
    fq(torch.tensor([0.0, 1.0]))
    assert (float(fq.low), float(fq.high)) == (0.0, 1.0)  # first batch sets the range
    fq(torch.tensor([0.0, 3.0]))
    assert float(fq.high) == pytest.approx(2.0)  # moving average
    fq.eval()
    x = torch.tensor([-1.0, 0.5, 10.0], requires_grad=True)
    y = fq(x)
    assert float(fq.high) == pytest.approx(2.0)  # frozen in eval mode
    assert y[0].item() == 0 and y[2].item() == pytest.approx(2.0)  # clipped to the range
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]  # straight through inside the range only


def test_prepare_simulates_int8_and_remove_leaves_plain_grid_weights():
    torch.manual_seed(0)
    model = Tiny()
    keys = list(model.state_dict())
    x = torch.randn(8, 1, 6, 6)
    plain = model(x)
    state = prepare_qat(model)
    assert state.layers == ["conv", "fc"]
    model.train()
    out = model(x)
    assert not torch.allclose(out, plain)  # quantization changes the output a little
    assert (out - plain).abs().max() < 0.1
    out.sum().backward()
    latent = model.conv.parametrizations.weight.original
    assert latent.grad is not None and latent.grad.abs().sum() > 0  # the float weights learn
    with pytest.raises(CnnzooError, match="already"):
        prepare_qat(model)
    remove_qat(model, state)
    assert list(model.state_dict()) == keys
    assert torch.equal(fake_quant_weight(model.conv.weight), model.conv.weight)
    model.eval()
    with torch.no_grad():
        reference = Tiny()
        reference.load_state_dict(model.state_dict())
        reference.eval()
        assert torch.equal(model(x), reference(x))  # no activation hook left


def test_a_model_without_layers_is_refused():
    with pytest.raises(CnnzooError, match="no Conv2d/Linear"):
        prepare_qat(nn.Sequential(nn.ReLU()))
