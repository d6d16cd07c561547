"""Ternary (TWN) and binary (BinaryConnect / XNOR-Net) weights with a straight-through estimator."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.compress.lowbit import (
    apply_lowbit,
    bake_lowbit,
    binarize,
    packed_size_bytes,
    ternarize,
    weight_levels,
)
from cnnzoo.errors import CnnzooError


class Tiny(nn.Module):
    """stem conv (first) -> conv + BN -> classifier (last), like a cnnzoo classifier."""

    classifier_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.body = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.body(x)))
        return self.fc(x.mean((2, 3)))


def test_ternarize_follows_the_twn_formula_by_hand():
    w = torch.tensor([[0.1, -0.9, 0.5, -0.05], [1.2, 0.0, -0.4, 0.3]])
    # mean|w| = 3.45 / 8 = 0.43125, delta = 0.7 * 0.43125 = 0.301875;
    # |w| > delta: 0.9, 0.5, 1.2, 0.4 -> alpha = 3.0 / 4 = 0.75 (0.3 falls just below delta).
    expected = torch.tensor([[0.0, -0.75, 0.75, 0.0], [0.75, 0.0, -0.75, 0.0]])
    torch.testing.assert_close(ternarize(w), expected)


def test_ternarize_leaves_an_all_zero_tensor_zero():
    assert torch.equal(ternarize(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_ternary_layer_has_exactly_zero_and_plus_minus_alpha():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    q = ternarize(w)
    values = torch.unique(q)
    magnitude = w.abs()
    delta = 0.7 * magnitude.mean()
    alpha = magnitude[magnitude > delta].mean()
    torch.testing.assert_close(values, torch.stack([-alpha, torch.tensor(0.0), alpha]))


def test_binarize_gives_plus_minus_alpha_per_output_channel():
    w = torch.tensor([[0.5, -1.5, 0.0, 2.0], [-0.2, -0.2, 0.4, 0.2]])
    q = binarize(w)
    # alpha_0 = 4.0 / 4 = 1.0, alpha_1 = 1.0 / 4 = 0.25; sign(0) -> +alpha, never 0.
    expected = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-0.25, -0.25, 0.25, 0.25]])
    torch.testing.assert_close(q, expected)
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3)
    q = binarize(w)
    for c in range(6):
        alpha = w[c].abs().mean()
        torch.testing.assert_close(torch.unique(q[c]), torch.stack([-alpha, alpha]))


def test_binarize_per_layer_uses_one_scale():
    w = torch.tensor([[0.5, -1.5], [0.0, -0.2]])
    # alpha = 2.2 / 4 = 0.55
    torch.testing.assert_close(
        binarize(w, per_channel=False), torch.tensor([[0.55, -0.55], [0.55, -0.55]])
    )


def test_ternary_ste_passes_the_upstream_gradient_unchanged():
    torch.manual_seed(0)
    w = torch.randn(4, 5, requires_grad=True)
    upstream = torch.randn(4, 5)
    (ternarize(w) * upstream).sum().backward()
    torch.testing.assert_close(w.grad, upstream)


def test_binary_ste_masks_the_gradient_where_weight_exceeds_one():
    w = torch.tensor([[0.5, -1.5, 0.9], [2.0, -0.1, 1.0]], requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (binarize(w) * upstream).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([[1.0, 0.0, 3.0], [0.0, 5.0, 6.0]]))


def test_apply_lowbit_keeps_first_and_last_layer_full_precision_by_default():
    torch.manual_seed(0)
    model = Tiny()
    assert apply_lowbit(model, "ternary") == ["body"]
    levels = weight_levels(model)
    assert levels["body"] == 3
    assert levels["stem"] == model.stem.weight.numel()
    assert levels["fc"] == model.fc.weight.numel()


def test_apply_lowbit_everywhere_when_asked():
    torch.manual_seed(0)
    model = Tiny()
    assert apply_lowbit(model, "binary", skip_first_last=False, per_channel=False) == [
        "stem",
        "body",
        "fc",
    ]
    assert weight_levels(model) == {"stem": 2, "body": 2, "fc": 2}


def test_apply_lowbit_on_resnet20_keeps_stem_and_classifier():
    from cnnzoo import create_model

    model = create_model("resnet20", num_classes=10, in_channels=1)
    names = apply_lowbit(model, "ternary")
    convs_and_fcs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(names) == len(convs_and_fcs) - 2
    assert "fc" not in names and convs_and_fcs[0] not in names
    assert all(v == 3 for k, v in weight_levels(model).items() if k in names)


def test_apply_lowbit_rejects_bad_mode_and_double_application():
    with pytest.raises(CnnzooError, match="quaternary"):
        apply_lowbit(Tiny(), "quaternary")
    model = Tiny()
    apply_lowbit(model, "ternary")
    with pytest.raises(CnnzooError, match="already"):
        apply_lowbit(model, "binary")


def test_apply_lowbit_refuses_a_model_with_nothing_to_quantize():
    with pytest.raises(CnnzooError, match="no Conv2d/Linear"):
        apply_lowbit(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3)), "binary")


@pytest.mark.parametrize("mode", ["ternary", "binary"])
def test_sgd_on_the_latent_weights_alone_lowers_the_loss(mode):
    torch.manual_seed(0)
    model = Tiny()
    apply_lowbit(model, mode, skip_first_last=False)
    # Only the latent weights train: any progress has come through the STE.
    latent = [p for n, p in model.named_parameters() if n.endswith("weight.original")]
    assert len(latent) == 3
    before = model.body.weight.detach().clone()
    x = torch.randn(32, 1, 8, 8)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    opt = torch.optim.SGD(latent, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]
    w = model.body.weight
    assert not torch.equal(w, before)
    if mode == "ternary":
        assert torch.unique(w).numel() == 3
    else:
        assert all(torch.unique(w[c]).numel() == 2 for c in range(8))


@pytest.mark.parametrize("mode", ["ternary", "binary"])
def test_bake_leaves_plain_quantized_weights_and_the_same_keys(mode):
    torch.manual_seed(0)
    model = Tiny().eval()
    keys = list(model.state_dict())
    apply_lowbit(model, mode)
    x = torch.randn(3, 1, 8, 8)
    quantized_weight = model.body.weight.detach().clone()
    out_before = model(x)
    bake_lowbit(model)
    assert list(model.state_dict()) == keys
    assert type(model.body.weight) is nn.Parameter
    assert not hasattr(model.body, "parametrizations")
    assert torch.equal(model.body.weight, quantized_weight)
    assert torch.equal(model(x), out_before)
    fresh = Tiny().eval()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), out_before)


def test_packed_size_by_hand():
    model = Tiny()
    names = apply_lowbit(model, "ternary")
    # body: 4*8*3*3 = 288 weights at 2 bits = 72 bytes + one alpha (4 bytes) = 76.
    # fp32 rest: stem 36, body bias 8, BN weight/bias/mean/var 32, fc 80 + 10 -> 166 * 4 = 664.
    size = packed_size_bytes(model, "ternary", names)
    assert size["packed_bytes"] == 76 + 664
    assert size["fp32_bytes"] == 288 * 4 + 664
    assert size["ratio"] == pytest.approx((288 * 4 + 664) / 740)
    assert size["bits_per_weight"] == 2 and size["quantized_weights"] == 288
    # binary per channel: 288 bits = 36 bytes + 8 alphas (32 bytes).
    assert packed_size_bytes(model, "binary", names)["packed_bytes"] == 36 + 32 + 664
    assert packed_size_bytes(model, "binary", names, per_channel=False)["packed_bytes"] == (
        36 + 4 + 664
    )
    bake_lowbit(model)
    assert packed_size_bytes(model, "ternary", names)["packed_bytes"] == 740


def test_packed_size_rounds_each_layer_up_to_whole_bytes():
    model = nn.Sequential(nn.Linear(3, 3, bias=False))
    size = packed_size_bytes(model, "ternary", ["0"])
    assert size["packed_bytes"] == math.ceil(9 * 2 / 8) + 4  # 18 bits -> 3 bytes, + alpha
    assert size["fp32_bytes"] == 36


def test_packed_size_rejects_unknown_layers():
    with pytest.raises(CnnzooError, match="'nope'"):
        packed_size_bytes(Tiny(), "binary", ["nope"])
    with pytest.raises(CnnzooError, match="octal"):
        packed_size_bytes(Tiny(), "octal", [])
