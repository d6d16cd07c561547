"""Feature maps of a layer, channel statistics and order, first-layer filters, and their grids."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from cnnzoo import CnnzooError
from cnnzoo.explain.features import feature_maps, first_filters
from cnnzoo.registry import create_model
from cnnzoo.viz.features import filter_images, save_feature_grid, save_filter_grid


class Fixed(nn.Module):
    """A two-stage net whose first stage is a known 1x1 convolution (no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0, 2.0]).view(3, 1, 1, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(self.pool(self.conv(x)))


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20").eval()


def test_maps_of_a_stage_have_its_channels_and_reduction(resnet20):
    x = torch.randn(1, 3, 32, 32)
    for stage in resnet20.feature_info:
        fm = feature_maps(resnet20, x, stage.module)
        assert fm.layer == stage.module
        assert fm.maps.shape == (stage.channels, 32 // stage.reduction, 32 // stage.reduction)
        assert len(fm.stats) == stage.channels


def test_default_layer_is_the_deepest_stage_and_matches_forward_features(resnet20):
    x = torch.randn(1, 3, 32, 32)
    fm = feature_maps(resnet20, x)
    assert fm.layer == "stages.2"
    with torch.no_grad():
        assert torch.equal(fm.maps, resnet20.forward_features(x)[0])


def test_stats_match_a_hand_computation():
    x = torch.tensor([[0.0, 1.0], [-2.0, 3.0]]).view(1, 1, 2, 2)
    fm = feature_maps(Fixed(), x, "conv")
    # channel 0: x; channel 1: -x; channel 2: 2x
    expected = [
        (0.5, 1.802776, 3.0, 0.5),  # mean 2/4; population std sqrt(13/4); 2 of 4 above 0
        (-0.5, 1.802776, 2.0, 0.25),
        (1.0, 3.605551, 6.0, 0.5),
    ]
    for stat, (mean, std, top, active) in zip(fm.stats, expected, strict=True):
        assert (stat.mean, stat.std, stat.max, stat.active) == pytest.approx(
            (mean, std, top, active), abs=1e-5
        )
    assert [s.channel for s in fm.stats] == [0, 1, 2]
    assert fm.channel_order("mean") == [2, 0, 1]
    assert fm.channel_order("active") == [0, 2, 1]  # tie: lower index first


def test_the_model_keeps_its_mode_and_batchnorm_its_statistics():
    torch.manual_seed(0)
    model = create_model("resnet20").train()
    before = model.stem.bn.running_mean.clone()
    feature_maps(model, torch.randn(1, 3, 32, 32), "stem")
    assert model.training
    assert torch.equal(model.stem.bn.running_mean, before)
    assert not model.stem._forward_hooks  # the hook is gone


def test_unknown_layer_names_the_stages(resnet20):
    with pytest.raises(CnnzooError, match=r"'nope'.*stem, stages\.0, stages\.1, stages\.2"):
        feature_maps(resnet20, torch.randn(1, 3, 32, 32), "nope")


def test_a_layer_without_4d_output_is_refused():
    with pytest.raises(CnnzooError, match=r"layer 'flat' returned a 2-D tensor \(1, 3\)"):
        feature_maps(Fixed(), torch.randn(1, 1, 4, 4), "flat")


def test_a_layer_returning_a_tuple_is_refused():
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    model = nn.Sequential()
    model.add_module("pair", Pair())
    with pytest.raises(CnnzooError, match="layer 'pair' returned a tuple"):
        feature_maps(model, torch.randn(1, 1, 4, 4), "pair")


def test_a_batch_is_refused(resnet20):
    with pytest.raises(CnnzooError, match=r"one image .*\(2, 3, 32, 32\)"):
        feature_maps(resnet20, torch.randn(2, 3, 32, 32))


def test_unknown_order_is_named():
    fm = feature_maps(Fixed(), torch.randn(1, 1, 2, 2), "conv")
    with pytest.raises(CnnzooError, match="'median'"):
        fm.channel_order("median")


def test_first_filters_of_the_model_are_its_first_conv(resnet20):
    name, weights = first_filters(resnet20)
    assert name == "stem.conv"
    assert torch.equal(weights, resnet20.stem.conv.weight)
    assert weights.shape == (16, 3, 3, 3)
    weights += 1  # a copy: the model is untouched
    assert not torch.equal(weights, resnet20.stem.conv.weight)


def test_first_filters_of_a_stage_have_the_full_path(resnet20):
    name, weights = first_filters(resnet20, "stages.1")
    assert name == "stages.1.0.conv1.conv"
    assert torch.equal(weights, resnet20.stages[1][0].conv1.conv.weight)


def test_a_layer_without_conv_has_no_filters():
    with pytest.raises(CnnzooError, match="layer 'pool' has no nn.Conv2d"):
        first_filters(Fixed(), "pool")


def test_filter_images_per_input_channels():
    rgb, cmap = filter_images(torch.randn(4, 3, 5, 5))
    assert rgb.shape == (4, 5, 5, 3) and cmap is None
    assert rgb.reshape(4, -1).min(1) == pytest.approx(0) and rgb.reshape(4, -1).max(1) == (
        pytest.approx(1)
    )
    gray, cmap = filter_images(torch.randn(4, 1, 3, 3))
    assert gray.shape == (4, 3, 3) and cmap == "gray"
    w = torch.zeros(2, 2, 1, 2)
    w[0, :, 0, 0], w[0, :, 0, 1] = torch.tensor([1.0, 3.0]), torch.tensor([-4.0, 0.0])
    signed, cmap = filter_images(w)
    assert cmap == "RdBu_r"
    assert signed[0, 0].tolist() == [pytest.approx(1.0), pytest.approx(-1.0)]  # means 2, -2
    assert signed[1].tolist() == [[0.0, 0.0]]  # an all-zero filter stays 0


def test_feature_grid_draws_the_requested_panels(tmp_path, resnet20):
    fm = feature_maps(resnet20, torch.randn(1, 3, 32, 32), "stages.0")
    small = save_feature_grid(fm, tmp_path / "small.png", max_maps=4)
    full = save_feature_grid(fm, tmp_path / "full.png")
    with Image.open(small) as a, Image.open(full) as b:
        assert a.format == b.format == "PNG"
        # 4 maps: 2x2 panels; 16 maps: 4x4, so twice as wide
        assert b.size[0] == pytest.approx(2 * a.size[0], rel=0.15)
    assert full.stat().st_size > 10_000


def test_filter_grid_is_a_png_of_all_filters(tmp_path, resnet20):
    path = save_filter_grid(first_filters(resnet20)[1], tmp_path / "f.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # 2 rows of 8
    with pytest.raises(CnnzooError, match=r"\(16, 3\)"):
        save_filter_grid(torch.zeros(16, 3), tmp_path / "bad.png")
