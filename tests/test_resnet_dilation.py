"""Dilated ResNets (torchvision's ``replace_stride_with_dilation``) and dilated residual blocks."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn

import cnnzoo
from cnnzoo.layers import BasicBlock, Bottleneck
from cnnzoo.models.features import FeatureExtractor

SIZE = 64


def _randomize(model: nn.Module) -> None:
    """Distinct random values for every parameter and BN statistic (as tests/test_resnet.py)."""
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05 + (1.0 if "bn" in key else 0.0))


def _dilations(model: nn.Module) -> list[tuple[str, int]]:
    """(name, dilation) of every 3x3 convolution, in module order."""
    return [
        (name, m.dilation[0])
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]


@pytest.mark.parametrize(
    ("flags", "deepest_stride"), [((False, True, True), 8), ((False, False, True), 16)]
)
def test_dilated_resnet50_matches_torchvision(
    flags: tuple[bool, bool, bool], deepest_stride: int
) -> None:
    torch.manual_seed(0)
    theirs = tvm.resnet50(weights=None, replace_stride_with_dilation=list(flags))
    ours = cnnzoo.create_model("resnet50", replace_stride_with_dilation=flags)
    torch.manual_seed(1)
    _randomize(theirs)
    cnnzoo.load_torchvision_weights(ours, theirs.state_dict())
    ours.eval()
    theirs.eval()
    # Same dilation, stride and padding in every 3x3 convolution, in the same order.
    assert [d for _, d in _dilations(ours)] == [d for _, d in _dilations(theirs)]
    assert max(d for _, d in _dilations(ours)) == (4 if flags[1] else 2)

    deepest: list[Tensor] = []
    theirs.layer4.register_forward_hook(lambda _m, _i, out: deepest.append(out))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = theirs(x)
        actual = ours(x)
    assert expected.abs().max() > 0.1  # not a comparison of two near-zero outputs
    assert (actual - expected).abs().max().item() <= 1e-4

    reductions = [2, 4, 8, 8 if flags[1] else 16, deepest_stride]
    assert ours.feature_info.reduction() == reductions
    backbone = FeatureExtractor(ours).eval()
    with torch.no_grad():
        maps = backbone(x)
    side = SIZE // deepest_stride
    assert maps[-1].shape == (1, 2048, side, side)
    assert [m.shape[-1] for m in maps] == [SIZE // r for r in reductions]
    assert (maps[-1] - deepest[0]).abs().max().item() <= 1e-4


def test_dilated_resnet18_reports_stride_8_for_its_last_two_stages() -> None:
    # torchvision refuses dilation in BasicBlock; cnnzoo dilates both of its 3x3 convolutions.
    torch.manual_seed(0)
    backbone = cnnzoo.create_model(
        "resnet18", features_only=True, replace_stride_with_dilation=(False, True, True)
    ).train()
    assert backbone.feature_info.reduction() == [2, 4, 8, 8, 8]
    assert backbone.feature_info.channels() == [64, 64, 128, 256, 512]
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, SIZE, SIZE))
    expected = [
        (2, s.channels, SIZE // s.reduction, SIZE // s.reduction) for s in backbone.feature_info
    ]
    assert [tuple(m.shape) for m in maps] == expected
    assert [tuple(m.shape) for m in maps][-2:] == [(2, 256, 8, 8), (2, 512, 8, 8)]


def test_dilation_accumulates_as_in_torchvision() -> None:
    model = cnnzoo.create_model("resnet18", replace_stride_with_dilation=(False, True, True))
    stages = model.stages
    # Stage 3 (layer3): first block keeps the previous dilation 1 and stride 1, then 2.
    assert stages[2][0].conv1.conv.dilation == (1, 1) and stages[2][0].conv1.conv.stride == (1, 1)
    assert stages[2][0].conv2.conv.dilation == (1, 1)
    assert stages[2][1].conv1.conv.dilation == (2, 2) == stages[2][1].conv1.conv.padding
    # Stage 4 (layer4): first block at 2, then 4.
    assert stages[3][0].conv1.conv.dilation == (2, 2) and stages[3][0].conv1.conv.stride == (1, 1)
    assert stages[3][1].conv2.conv.dilation == (4, 4) == stages[3][1].conv2.conv.padding
    # The projection shortcut still changes channels, but no longer strides.
    assert stages[2][0].shortcut.conv.stride == (1, 1)
    assert stages[1][0].shortcut.conv.stride == (2, 2)


def test_dilation_changes_no_weights() -> None:
    torch.manual_seed(0)
    plain = cnnzoo.create_model("resnet34")
    dilated = cnnzoo.create_model("resnet34", replace_stride_with_dilation=(True, True, True))
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert shapes == {k: v.shape for k, v in dilated.state_dict().items()}
    assert dilated.feature_info.reduction() == [2, 4, 4, 4, 4]
    assert max(d for _, d in _dilations(dilated)) == 8


def test_default_resnet_is_not_dilated() -> None:
    model = cnnzoo.create_model("resnet18")
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert {d for _, d in _dilations(model)} == {1}
    explicit = cnnzoo.create_model("resnet18", replace_stride_with_dilation=(False,) * 3)
    assert explicit.feature_info.reduction() == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("flags", [(True,), (False, True, True, True)])
def test_wrong_number_of_dilation_flags_is_a_clear_error(flags: tuple[bool, ...]) -> None:
    with pytest.raises(cnnzoo.CnnzooError, match="one flag per stage"):
        cnnzoo.create_model("resnet18", replace_stride_with_dilation=flags)


@pytest.mark.parametrize("dilation", [1, 2, 4])
@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_dilated_block_keeps_the_spatial_size(block: type[nn.Module], dilation: int) -> None:
    module = block(16, 16 // block.expansion, dilation=dilation).eval()  # identity skip
    with torch.no_grad():
        assert module(torch.randn(1, 16, 9, 7)).shape[-2:] == (9, 7)
        strided = block(16, 4, stride=2, dilation=dilation).eval()
        assert strided(torch.randn(1, 16, 9, 7)).shape[-2:] == (5, 4)


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilated_convolution_sees_exactly_its_spaced_taps(dilation: int) -> None:
    conv = BasicBlock(1, 1, dilation=dilation).conv1.conv
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.zeros(1, 1, 11, 11, requires_grad=True)
    conv(x)[0, 0, 5, 5].backward()
    grad = x.grad[0, 0]
    taps = [5 - dilation, 5, 5 + dilation]
    expected = torch.zeros(11, 11)
    expected[torch.tensor(taps)[:, None], torch.tensor(taps)[None, :]] = 1.0
    torch.testing.assert_close(grad, expected)
    for axis in grad.nonzero().unbind(1):  # receptive field of the conv: 2 * dilation + 1
        assert axis.max() - axis.min() + 1 == 2 * dilation + 1


def test_non_positive_dilation_is_rejected() -> None:
    with pytest.raises(ValueError, match="dilation"):
        BasicBlock(4, 4, dilation=0)
