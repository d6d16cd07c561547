"""PSPNet with the paper's dilated ResNet backbone (output stride 8, aux head on "res4b22")."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import AuxOutput
from cnnzoo.models.segmentation.pspnet import PSPNet


def _build(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(
        "pspnet",
        num_classes=5,
        backbone="resnet18",
        dilated=True,
        head_channels=32,
        aux_channels=16,
        **kwargs,
    )


def _pyramid_inputs(model: nn.Module) -> list[tuple[int, ...]]:
    """Record the shape of every map fed to the pyramid pooling module."""
    shapes: list[tuple[int, ...]] = []
    model.ppm.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    return shapes


def test_dilated_backbone_reads_the_last_two_stages_at_stride_8() -> None:
    model = _build()
    assert model.dilated
    assert model.backbone.feature_info.reduction() == [8, 8]
    assert model.backbone.feature_info.channels() == [512, 256]  # layer4, layer3
    assert model.backbone.feature_info.module_names() == ["stages.3", "stages.2"]
    assert model.backbone.model.replace_stride_with_dilation == (False, True, True)
    assert model.ppm.stages[0][1].conv.in_channels == 512
    assert model.aux_head.conv.conv.in_channels == 256


@pytest.mark.parametrize(("h", "w"), [(64, 64), (65, 63)])
def test_dilated_pspnet_logits_have_the_input_size(h: int, w: int) -> None:
    model = _build().eval()
    shapes = _pyramid_inputs(model)
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert isinstance(out, Tensor)
    assert out.shape == (1, 5, h, w)
    # Stride 8: the stem, max-pool and layer2 each map n to ceil(n / 2).
    assert shapes == [(1, 512, -(-h // 8), -(-w // 8))]


def test_dilated_pspnet_training_returns_aux_logits_of_the_input_size() -> None:
    model = _build().train()
    shapes = _pyramid_inputs(model)
    captured: list[Tensor] = []
    model.aux_head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    out = model(torch.randn(2, 3, 65, 63))
    assert isinstance(out, AuxOutput)
    assert out.logits.shape == (2, 5, 65, 63)
    assert len(out.aux) == 1 and out.aux[0].shape == (2, 5, 65, 63)
    assert shapes == [(2, 512, 9, 8)]
    assert captured[0].shape == (2, 256, 9, 8)  # layer3, also stride 8


def test_dilated_pspnet_without_aux_reads_only_the_deepest_stage() -> None:
    model = _build(aux=False).train()
    assert model.aux_head is None
    assert model.backbone.feature_info.reduction() == [8]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)


def test_default_pspnet_stays_undilated() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("pspnet", num_classes=5, head_channels=32, aux_channels=16)
    assert not model.dilated
    assert model.backbone.feature_info.reduction() == [32, 16]


def test_dilated_pspnet_needs_a_resnet_backbone() -> None:
    with pytest.raises(CnnzooError, match=r"'vgg11'.*ResNet"):
        cnnzoo.create_model("pspnet", backbone="vgg11", dilated=True)


def test_dilated_pspnet_rejects_a_second_dilation_setting() -> None:
    with pytest.raises(CnnzooError, match="replace_stride_with_dilation"):
        _build(replace_stride_with_dilation=(False, False, True))


def test_dilated_pspnet_rejects_a_backbone_not_at_stride_8() -> None:
    # The registry refuses small_input for pspnet; the class passes it on to the backbone,
    # whose 3x3/1 stem would put the dilated stages at stride 2.
    with pytest.raises(CnnzooError, match=r"strides \[2, 2\]"):
        PSPNet(5, backbone="resnet18", dilated=True, small_input=True)
