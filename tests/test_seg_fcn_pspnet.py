"""FCN-32s/16s/8s and PSPNet: exact output sizes, learned bilinear upsampling, zero-initialised
skips, pyramid pooling, auxiliary output, and that a few steps of training lower the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.layers import PyramidPooling
from cnnzoo.layers.upsample import Upsample
from cnnzoo.models.base import AuxOutput
from cnnzoo.models.segmentation.fcn import crop_to
from cnnzoo.registry import list_models, model_info

FCNS = ("fcn32s", "fcn16s", "fcn8s")
SIZES = ((64, 64), (67, 45))


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, num_classes=5, backbone="resnet18", **kwargs)


def test_models_are_registered_for_segmentation() -> None:
    names = set(list_models("segmentation"))
    assert {"fcn32s", "fcn16s", "fcn8s", "pspnet"} <= names
    assert model_info("fcn8s").paper.startswith("Long, Shelhamer, Darrell")
    assert model_info("pspnet").paper.startswith("Zhao")
    assert model_info("fcn8s").input_size == (3, 128, 128)
    assert model_info("fcn8s").family == "fcn"
    assert model_info("pspnet").family == "pspnet"


@pytest.mark.parametrize("name", FCNS)
def test_fcn_logits_have_the_input_size_for_odd_and_even_sizes(name: str) -> None:
    model = _build(name).eval()
    with torch.no_grad():
        for h, w in SIZES:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 5, h, w)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_fcn8s_fixed_upsampling_keeps_the_input_size(mode: str) -> None:
    model = _build("fcn8s", upsample=mode).eval()
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 45)).shape == (1, 5, 67, 45)


def test_fcn_reads_the_stride_32_16_8_stages_of_the_backbone() -> None:
    model = _build("fcn8s")
    assert model.backbone.feature_info.reduction() == [32, 16, 8]
    assert model.backbone.feature_info.channels() == [512, 256, 128]
    assert model.up_final.factor == 8
    assert [up.factor for up in model.up_skips] == [2, 2]
    assert _build("fcn32s").up_final.factor == 32


def test_fcn_rejects_a_backbone_without_the_needed_strides() -> None:
    # LeNet-5's stages sit at strides 2 and 4: FCN-8s would need stride 4 / 4 = 1 too.
    with pytest.raises(CnnzooError, match="stride"):
        cnnzoo.create_model("fcn8s", backbone="lenet5", in_channels=1)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_initialised_transposed_conv_matches_bilinear_interpolation(factor: int) -> None:
    up = Upsample(3, factor, mode="transposed")
    x = torch.randn(1, 3, 6, 5)
    with torch.no_grad():
        learned = up(x)
    fixed = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert learned.shape == fixed.shape == (1, 3, 6 * factor, 5 * factor)
    # Away from the borders (where the transposed convolution sees zero padding).
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    torch.testing.assert_close(learned[inner], fixed[inner], atol=1e-5, rtol=1e-5)


def test_fcn_final_upsampling_starts_as_bilinear_interpolation() -> None:
    model = _build("fcn32s")
    x = torch.randn(1, 5, 3, 3)
    with torch.no_grad():
        learned = model.up_final(x)
    fixed = F.interpolate(x, scale_factor=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(learned[..., 32:-32, 32:-32], fixed[..., 32:-32, 32:-32])


def test_fcn8s_skip_scores_start_at_zero_so_it_starts_as_its_coarse_path() -> None:
    model = _build("fcn8s").eval()
    for layer in model.score_skips:
        assert torch.count_nonzero(layer.weight) == 0
        assert torch.count_nonzero(layer.bias) == 0
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        maps = model.backbone(x)
        coarse = model.score(maps[0])
        for up, skip in zip(model.up_skips, maps[1:], strict=True):
            coarse = crop_to(up(coarse), skip.shape[-2:])
        expected = crop_to(model.up_final(coarse), x.shape[-2:])
        torch.testing.assert_close(model(x), expected)


def test_crop_to_crops_larger_maps_and_resizes_smaller_ones() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert crop_to(x, (3, 2)).tolist() == [[[[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]]]]
    assert crop_to(x, (5, 5)).shape == (1, 1, 5, 5)


def test_pyramid_pooling_concatenates_input_and_one_reduced_branch_per_bin() -> None:
    ppm = PyramidPooling(16, bins=(1, 2, 3, 6)).eval()
    assert ppm.out_channels == 32
    assert [stage[0].output_size for stage in ppm.stages] == [1, 2, 3, 6]
    assert [stage[1].conv.out_channels for stage in ppm.stages] == [4, 4, 4, 4]
    x = torch.randn(2, 16, 7, 5)
    with torch.no_grad():
        y = ppm(x)
    assert y.shape == (2, 32, 7, 5)
    torch.testing.assert_close(y[:, :16], x)


def test_pyramid_pooling_global_bin_is_constant_over_the_map() -> None:
    ppm = PyramidPooling(8, bins=(1,)).eval()
    with torch.no_grad():
        y = ppm(torch.randn(1, 8, 5, 6))
    branch = y[:, 8:]
    torch.testing.assert_close(branch, branch[..., :1, :1].expand_as(branch))


def test_pyramid_pooling_rejects_more_bins_than_channels() -> None:
    with pytest.raises(CnnzooError, match="channels"):
        PyramidPooling(3, bins=(1, 2, 3, 6))


def test_pspnet_eval_logits_have_the_input_size() -> None:
    model = _build("pspnet").eval()
    with torch.no_grad():
        for h, w in SIZES:
            out = model(torch.randn(1, 3, h, w))
            assert isinstance(out, torch.Tensor)
            assert out.shape == (1, 5, h, w)


def test_pspnet_training_returns_aux_logits_from_the_stride_16_stage() -> None:
    model = _build("pspnet").train()
    assert model.backbone.feature_info.reduction() == [32, 16]
    out = model(torch.randn(2, 3, 67, 45))
    assert isinstance(out, AuxOutput)
    assert out.logits.shape == (2, 5, 67, 45)
    assert len(out.aux) == 1 and out.aux[0].shape == (2, 5, 67, 45)


def test_pspnet_without_aux_returns_plain_logits_in_training() -> None:
    model = _build("pspnet", aux=False).train()
    assert model.aux_head is None
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)


@pytest.mark.parametrize("name", [*FCNS, "pspnet"])
def test_a_few_training_steps_lower_the_loss(name: str) -> None:
    model = _build(name).train()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    # Random labels on 8x8-pixel blocks: a target coarse enough for the stride-8..32 scores
    # to fit (per-pixel noise cannot be fitted, its loss stays at chance).
    target = torch.randint(0, 5, (2, 8, 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(5):
        out = model(x)
        if isinstance(out, AuxOutput):
            loss = criterion(out.logits, target) + 0.4 * criterion(out.aux[0], target)
        else:
            loss = criterion(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
