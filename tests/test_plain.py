"""Plain networks: the ResNets of He et al. 2016 with the skip connections removed."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.layers import BasicBlock, ProjectionShortcut, ZeroPadShortcut
from cnnzoo.models.base import count_params
from cnnzoo.models.classification.resnet import ResNet

CIFAR_DEPTHS = [20, 32, 44, 56, 110]


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_plain_net_has_exactly_the_resnets_parameters(depth: int) -> None:
    # Option-A shortcuts are parameter-free: removing them changes no parameter.
    plain = cnnzoo.create_model(f"plain{depth}")
    resnet = cnnzoo.create_model(f"resnet{depth}")
    assert count_params(plain) == count_params(resnet)
    assert plain.state_dict().keys() == resnet.state_dict().keys()


@pytest.mark.parametrize("depth", [18, 34])
def test_imagenet_plain_net_lacks_only_the_projection_shortcuts(depth: int) -> None:
    plain = cnnzoo.create_model(f"plain{depth}")
    resnet = cnnzoo.create_model(f"resnet{depth}")
    # A 1x1 projection c -> 2c plus its BN, entering stages 2, 3 and 4 (64 -> 128 -> 256 -> 512).
    projections = sum(c * 2 * c + 2 * (2 * c) for c in (64, 128, 256))
    assert projections == 173_824
    assert count_params(resnet) - count_params(plain) == projections
    extra = set(resnet.state_dict()) - set(plain.state_dict())
    assert all(".shortcut." in key for key in extra)
    assert set(plain.state_dict()) < set(resnet.state_dict())


@pytest.mark.parametrize("name", ["plain18", "plain34", *[f"plain{d}" for d in CIFAR_DEPTHS]])
def test_plain_net_has_no_shortcut_anywhere(name: str) -> None:
    model = cnnzoo.create_model(name)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert blocks and all(b.shortcut is None and not b.residual for b in blocks)
    assert not any(isinstance(m, (ProjectionShortcut, ZeroPadShortcut)) for m in model.modules())


@pytest.mark.parametrize("name", ["plain18", "plain20"])
def test_plain_net_reuses_the_resnet_trunk(name: str) -> None:
    assert isinstance(cnnzoo.create_model(name), ResNet)


def test_removing_the_skip_changes_the_output_of_the_same_weights() -> None:
    torch.manual_seed(0)
    # Training mode: BN normalises each layer, so the comparison is not between vanishing
    # signals (with fresh eval statistics a plain net's activations shrink layer by layer).
    resnet = cnnzoo.create_model("resnet20")
    plain = cnnzoo.create_model("plain20")
    twin = cnnzoo.create_model("resnet20")
    plain.load_state_dict(resnet.state_dict())
    twin.load_state_dict(resnet.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(twin(x), resnet(x))  # control: same weights, same net, same output
        assert (plain(x) - resnet(x)).abs().max() > 1e-3


def test_plain18_runs_resnet18_weights_without_the_shortcuts() -> None:
    torch.manual_seed(0)
    resnet = cnnzoo.create_model("resnet18")
    plain = cnnzoo.create_model("plain18")
    result = plain.load_state_dict(resnet.state_dict(), strict=False)
    assert result.missing_keys == []
    assert {k.split(".shortcut.")[0] for k in result.unexpected_keys} == {
        "stages.1.0",
        "stages.2.0",
        "stages.3.0",
    }
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (plain(x) - resnet(x)).abs().max() > 1e-3


def test_plain_block_computes_relu_of_the_residual_function_only() -> None:
    torch.manual_seed(0)
    block = BasicBlock(16, 16, residual=False).eval()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(block.branch(x)))


def test_zero_init_residual_is_refused_without_skip_connections() -> None:
    with pytest.raises(cnnzoo.CnnzooError, match="residual=False"):
        cnnzoo.create_model("resnet18", residual=False, zero_init_residual=True)
    with pytest.raises(ValueError, match="residual=False"):
        BasicBlock(16, 16, residual=False, zero_init_residual=True)


def test_registry_lists_the_plain_family() -> None:
    plain = [n for n in cnnzoo.list_models() if cnnzoo.model_info(n).family == "plain"]
    assert sorted(plain) == sorted(
        ["plain18", "plain34", "plain20", "plain32", "plain44", "plain56", "plain110"]
    )
    assert all(cnnzoo.model_info(n).torchvision is None for n in plain)
    assert cnnzoo.model_info("plain18").small_input
    assert cnnzoo.model_info("plain56").input_size == (3, 32, 32)
