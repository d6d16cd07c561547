"""GoogLeNet / Inception v1: shapes, auxiliary heads, and parity with torchvision's twin."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import GoogLeNet_Weights
from torchvision.models import googlenet as tv_googlenet

import cnnzoo
from cnnzoo.layers import Inception
from cnnzoo.models.base import AuxOutput, count_params, init_weights_kaiming
from cnnzoo.models.classification.googlenet import GoogLeNet
from cnnzoo.summary import count_macs


def _feature_shapes(model: GoogLeNet, x: Tensor) -> list[tuple[int, ...]]:
    """Run ``model`` on ``x`` and return the output shape of each ``feature_info`` module."""
    modules = dict(model.named_modules())
    shapes: list[tuple[int, ...]] = []
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for name in model.feature_info.module_names()
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


@pytest.fixture(scope="module")
def torchvision_googlenet() -> nn.Module:
    """torchvision's GoogLeNet with both aux heads, non-trivial weights and BN statistics.

    Its default init (std 0.01) with fresh BN statistics would shrink the logits towards
    zero and make any comparison pass; He init plus random BN statistics keeps them O(10).
    """
    torch.manual_seed(0)
    model = tv_googlenet(weights=None, aux_logits=True, init_weights=True, transform_input=False)
    init_weights_kaiming(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_inception_module_concatenates_branches_at_same_size() -> None:
    block = Inception(192, 64, 96, 128, 16, 32, 32)
    y = block(torch.randn(2, 192, 7, 7))
    assert block.out_channels == 256
    assert y.shape == (2, 256, 7, 7)
    assert block.branch5x5[1].conv.kernel_size == (5, 5)  # the paper's 5x5 by default


def test_registry_entry() -> None:
    info = cnnzoo.model_info("googlenet")
    assert info.task == "classification"
    assert info.family == info.torchvision == "googlenet"
    assert info.input_size == (3, 224, 224)
    assert info.small_input is True
    assert info.min_input_size == 15


def test_small_input_grayscale_28x28_gives_logits_in_eval() -> None:
    model = cnnzoo.create_model("googlenet", num_classes=10, in_channels=1, small_input=True)
    y = model.eval()(torch.randn(2, 1, 28, 28))
    assert isinstance(y, Tensor)
    assert y.shape == (2, 10)


def test_default_stem_accepts_min_input_size_and_nothing_smaller() -> None:
    size = cnnzoo.model_info("googlenet").min_input_size
    model = cnnzoo.create_model("googlenet", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
        with pytest.raises(RuntimeError, match="too small"):
            model(torch.randn(2, 1, size - 1, size - 1))


def test_training_mode_returns_logits_and_two_aux_logits() -> None:
    model = cnnzoo.create_model("googlenet", num_classes=7).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, AuxOutput)
    assert len(out.aux) == 2
    assert [tuple(t.shape) for t in (out.logits, *out.aux)] == [(2, 7)] * 3


def test_plain_logits_in_eval_mode_and_without_aux_heads() -> None:
    x = torch.randn(2, 3, 64, 64)
    with_aux = cnnzoo.create_model("googlenet", num_classes=7).eval()
    without_aux = cnnzoo.create_model("googlenet", num_classes=7, aux_logits=False).train()
    for model in (with_aux, without_aux):
        y = model(x)
        assert isinstance(y, Tensor) and not isinstance(y, AuxOutput)
        assert y.shape == (2, 7)
    assert without_aux.aux1 is None and without_aux.aux2 is None


@pytest.mark.parametrize(("aux_logits", "expected"), [(False, 6_624_904), (True, 13_004_888)])
def test_param_count_equals_torchvision(aux_logits: bool, expected: int) -> None:
    ours = cnnzoo.create_model("googlenet", aux_logits=aux_logits)
    theirs = tv_googlenet(weights=None, aux_logits=aux_logits, init_weights=True)
    assert count_params(ours) == count_params(theirs) == expected


@pytest.mark.parametrize("aux_logits", [True, False])
def test_torchvision_weights_give_same_logits(
    torchvision_googlenet: nn.Module, aux_logits: bool
) -> None:
    model = cnnzoo.create_model("googlenet", aux_logits=aux_logits)
    cnnzoo.load_torchvision_weights(model, torchvision_googlenet.state_dict())
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model.eval()(x), torchvision_googlenet(x)
    assert theirs.abs().max() > 1.0  # the comparison below is not between near-zeros
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_torchvision_weights_fill_aux_heads(torchvision_googlenet: nn.Module) -> None:
    model = cnnzoo.create_model("googlenet")
    cnnzoo.load_torchvision_weights(model, torchvision_googlenet.state_dict())
    assert torch.equal(model.aux2.fc2.weight, torchvision_googlenet.aux2.fc2.weight)


def test_torchvision_key_renames_branches_and_drops_aux_without_heads() -> None:
    with_aux = cnnzoo.create_model("googlenet")
    without_aux = cnnzoo.create_model("googlenet", aux_logits=False)
    assert with_aux.torchvision_key("conv1.conv.weight") == "conv1.conv.weight"
    assert with_aux.torchvision_key("inception3a.branch1.bn.bias") == (
        "inception3a.branch1x1.bn.bias"
    )
    assert with_aux.torchvision_key("inception4d.branch2.1.conv.weight") == (
        "inception4d.branch3x3.1.conv.weight"
    )
    assert with_aux.torchvision_key("inception5b.branch3.0.bn.running_var") == (
        "inception5b.branch5x5.0.bn.running_var"
    )
    assert with_aux.torchvision_key("inception4e.branch4.1.conv.weight") == (
        "inception4e.branch_pool.1.conv.weight"
    )
    assert with_aux.torchvision_key("aux1.fc2.bias") == "aux1.fc2.bias"
    assert without_aux.torchvision_key("aux1.fc2.bias") is None
    assert without_aux.torchvision_key("fc.weight") == "fc.weight"


def test_macs_within_one_percent_of_torchvision() -> None:
    model = cnnzoo.create_model("googlenet", aux_logits=False)
    macs = count_macs(model, (3, 224, 224))
    reference = GoogLeNet_Weights.IMAGENET1K_V1.meta["_ops"] * 1e9  # "GFLOPS" = GMACs
    assert abs(macs - reference) / reference < 0.01


@pytest.mark.parametrize(
    ("small_input", "size", "reductions"),
    [(False, 64, [2, 4, 8, 16, 32]), (True, 28, [1, 1, 1, 2, 4])],
)
def test_feature_info_matches_feature_maps(
    small_input: bool, size: int, reductions: list[int]
) -> None:
    model = cnnzoo.create_model("googlenet", small_input=small_input).eval()
    info = model.feature_info
    assert info.module_names() == ["conv1", "conv3", "inception3b", "inception4e", "inception5b"]
    assert info.channels() == [64, 192, 480, 832, 1024]
    assert info.reduction() == reductions
    shapes = _feature_shapes(model, torch.randn(1, 3, size, size))
    assert [s[1] for s in shapes] == info.channels()
    assert [size // s[2] for s in shapes] == reductions
    assert [size // s[3] for s in shapes] == reductions


def test_forward_features_is_inception5b_map_and_head_pools_it() -> None:
    model = cnnzoo.create_model("googlenet", num_classes=7).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 64, 64))
        assert features.shape == (2, 1024, 2, 2)
        assert model.forward_head(features, pre_logits=True).shape == (2, 1024)
        assert model.forward_head(features).shape == (2, 7)
    assert model.get_classifier() is model.fc


def test_reset_classifier_changes_main_and_aux_outputs() -> None:
    model = cnnzoo.create_model("googlenet", num_classes=10)
    model.reset_classifier(5)
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert model.num_classes == 5
    assert [tuple(t.shape) for t in (out.logits, *out.aux)] == [(2, 5)] * 3


def test_aux_loss_backpropagates_into_aux_heads() -> None:
    model = cnnzoo.create_model("googlenet", num_classes=10, in_channels=1, small_input=True)
    out = model.train()(torch.randn(2, 1, 28, 28))
    target = torch.tensor([3, 7])
    loss = nn.functional.cross_entropy(out.logits, target) + 0.3 * sum(
        nn.functional.cross_entropy(aux, target) for aux in out.aux
    )
    loss.backward()
    for head in (model.aux1, model.aux2):
        assert head.fc2.weight.grad.abs().sum() > 0
        assert head.conv.conv.weight.grad.abs().sum() > 0
    assert model.fc.weight.grad.abs().sum() > 0
