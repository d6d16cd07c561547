"""Selectable activation/BN in the CIFAR nets, per-layer gradient norms, and the
vanishing-gradients experiment end to end (tiny settings)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import cnnzoo.experiments.vanishing_gradients as vg
from cnnzoo import CnnzooError
from cnnzoo.experiments import run_experiment
from cnnzoo.experiments.gradients import gradient_norms, mean_gradient_norms
from cnnzoo.models.base import count_params
from cnnzoo.registry import create_model
from cnnzoo.viz.gradients import plot_gradient_norms


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name", ["plain20", "resnet20"])
def test_sigmoid_replaces_every_relu(name):
    default = create_model(name)
    sig = create_model(name, activation="sigmoid")
    # stem + two per block (after conv1 and after the block's sum): 1 + 2 * 9
    assert _count(default, nn.ReLU) == 19 and _count(default, nn.Sigmoid) == 0
    assert _count(sig, nn.Sigmoid) == 19 and _count(sig, nn.ReLU) == 0
    assert count_params(sig) == count_params(default)
    assert sig(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_tanh_is_selectable():
    assert _count(create_model("plain20", activation="tanh"), nn.Tanh) == 19


@pytest.mark.parametrize("name", ["plain20", "resnet20"])
def test_norm_false_removes_batchnorm_and_adds_conv_bias(name):
    default = create_model(name)
    bare = create_model(name, norm=False)
    assert _count(bare, nn.BatchNorm2d) == 0 and _count(default, nn.BatchNorm2d) == 19
    convs = [m for m in bare.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(c.bias is not None for c in convs)
    # each BN had 2C parameters, each new bias has C
    bn_channels = sum(m.num_features for m in default.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_params(bare) == count_params(default) - bn_channels
    # layer order unchanged: conv comes first in its conv-act block
    assert [name for name, _ in bare.stem.named_children()] == ["conv", "act"]
    assert bare(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_defaults_unchanged():
    # the paper's ResNet-20: 0.27 M parameters; the plain twin is the same size
    assert count_params(create_model("resnet20")) == 269722
    assert count_params(create_model("plain20")) == 269722
    net = create_model("resnet56")
    assert net.activation == "relu" and net.norm is True


def test_bad_options_are_named():
    with pytest.raises(CnnzooError, match="'swish'"):
        create_model("resnet20", activation="swish")
    with pytest.raises(CnnzooError, match="norm=True"):
        create_model("resnet20", norm=False, zero_init_residual=True)


def _tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(1), nn.Linear(2 * 4 * 4, 3)
    )


def test_gradient_norms_match_a_hand_computation():
    net = _tiny_net()
    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 1])
    net.eval()
    norms = gradient_norms(net, x, y)
    assert list(norms) == ["0", "4"]  # conv and linear only, input to output
    assert not net.training  # mode restored
    assert all(p.grad is None for p in net.parameters())  # zeroed after
    # by hand: train-mode forward, cross-entropy, autograd
    net.train()
    loss = nn.functional.cross_entropy(net(x), y)
    gw_conv, gw_fc = torch.autograd.grad(loss, [net[0].weight, net[4].weight])
    assert norms["0"] == pytest.approx(float(gw_conv.norm()), rel=1e-5)
    assert norms["4"] == pytest.approx(float(gw_fc.norm()), rel=1e-5)
    assert norms["0"] > 0 and norms["4"] > 0


def test_gradient_norms_use_logits_attribute_and_custom_loss():
    net = _tiny_net()

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return SimpleNamespace(logits=self.net(x))

    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 1])
    plain = gradient_norms(net, x, y)
    wrapped = gradient_norms(Wrapped(), x, y)
    assert list(wrapped) == ["net.0", "net.4"]
    assert list(wrapped.values()) == pytest.approx(list(plain.values()))
    doubled = gradient_norms(
        net, x, y, loss_fn=lambda out, t: 2 * nn.functional.cross_entropy(out, t)
    )
    assert list(doubled.values()) == pytest.approx([2 * v for v in plain.values()], rel=1e-5)
    avg = mean_gradient_norms(net, [(x, y), (x, y)])
    assert list(avg.values()) == pytest.approx(list(plain.values()), rel=1e-5)


def test_gradient_norms_refuse_a_model_without_weight_layers():
    with pytest.raises(CnnzooError, match="no Conv2d/Linear"):
        gradient_norms(nn.Sequential(nn.Flatten(1)), torch.randn(2, 3), torch.tensor([0, 1]))


def test_sigmoid_plain_net_first_layer_gradient_vanishes_at_init():
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    torch.manual_seed(0)
    sig = gradient_norms(
        create_model("plain20", in_channels=1, activation="sigmoid", norm=False), x, y
    )
    torch.manual_seed(0)
    res = gradient_norms(create_model("resnet20", in_channels=1), x, y)
    assert len(sig) == len(res) == 20
    first_sig, first_res = next(iter(sig.values())), next(iter(res.values()))
    # 19 sigmoids (derivative <= 1/4) between the loss and the first layer
    assert first_sig < 1e-6 * first_res
    # the last layer (the classifier) still gets a comparable gradient
    assert list(sig.values())[-1] > 0.1 * list(res.values())[-1]


def test_plot_gradient_norms_writes_png(tmp_path):
    path = plot_gradient_norms(
        {"a": {"l1": 1e-3, "l2": 1.0}, "b": {"l1": 0.0, "l2": 0.5}}, tmp_path / "g.png", "t"
    )
    assert path == tmp_path / "g.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_parse_net():
    assert vg.parse_net("plain56-sigmoid-nobn") == vg.NetSpec("plain", 56, "sigmoid", False)
    assert vg.parse_net("resnet20").label == "resnet-20"
    assert vg.parse_net("plain20-nobn").label == "plain-20 no-BN"
    with pytest.raises(CnnzooError, match="'vgg16'"):
        vg.parse_net("vgg16")
    with pytest.raises(CnnzooError, match="'gelu'"):
        vg.parse_net("plain20-gelu")


def test_vanishing_gradients_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    tiny = vg.VanishingSettings(
        init_nets=("plain20", "plain20-sigmoid-nobn"), train_nets=("plain20", "resnet20"),
        steps=4, batch_size=8, grad_batches=1, eval_points=2, test_images=40,
    )  # fmt: skip
    monkeypatch.setattr(vg, "QUICK", tiny)
    monkeypatch.setattr(vg, "_dataset", lambda: "fashion-mnist-mini")
    test_errors = []
    train_net = vg.train_net

    def train_and_measure(model, data, s):
        curve = train_net(model, data, s)
        with torch.no_grad():  # the trained net's test error by hand, before anything else
            wrong = model.eval()(data[2][:40]).argmax(1) != data[3][:40]
        test_errors.append(wrong.float().mean().item())
        return curve

    monkeypatch.setattr(vg, "train_net", train_and_measure)
    result = run_experiment("vanishing-gradients", out=tmp_path / "vg", quick=True)
    assert [r["net"] for r in result.rows] == ["plain-20", "resnet-20", "plain-20 sigmoid no-BN"]
    for row, test_error in zip(result.rows[:2], test_errors, strict=True):
        assert row["test_error"] == pytest.approx(test_error, abs=1e-4)
        # the running training error of the last interval: steps 3 and 4, 16 images
        assert row["train_error"] * 16 == pytest.approx(round(row["train_error"] * 16), abs=1e-3)
        assert row["params"] == 269434  # one input channel
        assert float(row["ratio_init"]) > 0 and float(row["ratio_trained"]) > 0
    assert result.rows[2]["train_error"] == "-"
    assert float(result.rows[2]["ratio_init"]) < 1e-6  # the sigmoid net's vanished gradient
    payload = json.loads((tmp_path / "vg" / "results.json").read_text())
    assert payload["figures"] == [
        "error_curves.png",
        "grad_norms_init_relu_bn.png",
        "grad_norms_trained.png",
    ]
    for name in payload["figures"]:
        assert (tmp_path / "vg" / name).read_bytes()[:4] == b"\x89PNG"
    assert "| plain-20 | 269434 |" in (tmp_path / "vg" / "results.md").read_text()
