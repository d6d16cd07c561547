"""airbench's rungs in the fast recipe's screen (benchmarks/fast_screen.py): identity init,
BatchNorm biases at a scaled learning rate, and the lookahead average."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fast_screen
from cnnzoo.registry import create_model


def test_identity_init_passes_the_first_input_channels_through() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    narrowing = nn.Conv2d(6, 4, 3, padding=1, bias=False)
    before = narrowing.weight.clone()
    assert fast_screen.identity_init(nn.Sequential(conv, narrowing)) == 1
    x = torch.randn(2, 4, 5, 5)
    y = conv(x)
    torch.testing.assert_close(y[:, :4], x)
    assert not torch.allclose(y[:, 4:], torch.zeros_like(y[:, 4:]))  # the rest keep their init
    torch.testing.assert_close(narrowing.weight, before)  # fewer outputs than inputs: untouched


def test_batchnorm_biases_get_the_scaled_learning_rate_and_no_decay() -> None:
    model = create_model("convnet", head_norm=True, init="pytorch", widths=(16, 64))
    groups = fast_screen.param_groups(model, 0.1, 5e-4, decay_norms=False, bias_lr_scale=64)
    bn_biases = {
        id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
    scaled = [g for g in groups if g["lr"] == pytest.approx(6.4)]
    assert len(scaled) == 1 and {id(p) for p in scaled[0]["params"]} == bn_biases
    assert scaled[0]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    plain = fast_screen.param_groups(model, 0.1, 5e-4, decay_norms=False, bias_lr_scale=1)
    assert all(g["lr"] == pytest.approx(0.1) for g in plain)


def test_lookahead_pulls_the_weights_to_their_average_harder_as_training_ends() -> None:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    look = fast_screen.Lookahead(layer, every=5, base=0.95, power=3.0)
    look.step(5, 10)  # the first call only starts the average (at 0)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    look.step(7, 10)  # not a multiple of 5: nothing happens
    assert layer.weight.item() == 1.0
    look.step(10, 10)  # rho = 0.95**5 * 1**3: the weights keep 1 - rho of their move
    assert layer.weight.item() == pytest.approx(1 - 0.95**5)
