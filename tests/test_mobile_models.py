"""Efficient networks: MobileNet V1/V2, ShuffleNet V1/V2, SqueezeNet 1.0/1.1.

The papers' figures (parameters, multiply-adds) for the networks torchvision lacks, and
torchvision's model definitions as the oracle for the others: the same parameter count, its
state dict loads, the same logits. Shape questions run on the meta device (no arithmetic).
"""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo import CnnzooError, create_model, load_torchvision_weights, model_info
from cnnzoo.layers.mobile import (
    DepthwiseSeparableConv,
    InvertedResidual,
    channel_shuffle,
    make_divisible,
)
from cnnzoo.models.base import count_params
from cnnzoo.models.classification.shufflenet import ShuffleNetV2, ShuffleUnit, ShuffleV2Unit
from cnnzoo.models.weights import load_weights
from cnnzoo.summary import count_macs

SHUFFLENET_V2 = [f"shufflenet_v2_x{s}" for s in ("0_5", "1_0", "1_5", "2_0")]
TORCHVISION = ["mobilenet_v2", *SHUFFLENET_V2, "squeezenet1_0", "squeezenet1_1"]
ALL = ["mobilenet_v1", "shufflenet_v1", *TORCHVISION]
# conv1 of SqueezeNet is unpadded: its maps are smaller than input / stride (exact sizes below).
SQUEEZENET_MAPS = {
    ("squeezenet1_0", 224): [109, 54, 27, 13],
    ("squeezenet1_1", 224): [111, 55, 27, 13],
    ("squeezenet1_0", 97): [46, 23, 11, 5],
    ("squeezenet1_1", 97): [48, 24, 12, 6],
    ("squeezenet1_0", 28): [28, 28, 14, 7],
    ("squeezenet1_1", 28): [28, 28, 14, 7],
    ("squeezenet1_0", 27): [27, 27, 13, 6],
    ("squeezenet1_1", 27): [27, 27, 13, 6],
}


def _meta(name: str, **kwargs: object) -> nn.Module:
    """Return ``create_model(name, **kwargs)`` on the meta device: shapes only."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _cost(name: str, **kwargs: object) -> tuple[int, int]:
    """(parameters, MACs at 224x224) of ``name`` built with ``kwargs`` on the meta device."""
    model = _meta(name, **kwargs).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 224, 224, device="meta"))
    return count_params(model), counter.get_total_flops() // 2


def _tv_meta(name: str) -> dict:
    return tvm.get_model_weights(name).IMAGENET1K_V1.meta


@functools.cache
def _random_torchvision(name: str) -> nn.Module:
    """torchvision's ``name`` in eval mode with random weights and calibrated BN statistics.

    Weights are He-uniform, BN scales and all biases random; the BN statistics are those of
    one random batch, so that eval mode normalises and the logits stay O(1) at any depth
    (a 1e-4 comparison means something only for outputs of moderate size).
    """
    with torch.device("meta"):
        model = getattr(tvm, name)(weights=None)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.dim() > 1:
                bound = (6 / tensor[0].numel()) ** 0.5
                tensor.uniform_(-bound, bound)
            elif key.endswith(("running_mean", "num_batches_tracked")):
                tensor.zero_()
            elif key.endswith("running_var"):
                tensor.fill_(1)
            elif key.endswith("weight"):  # BN scale
                tensor.uniform_(0.5, 1.5)
            else:  # biases, BN shift
                tensor.uniform_(-0.1, 0.1)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in norms:
            bn.momentum = 1.0
        model.train()(torch.randn(4, 3, 64, 64))
        for bn in norms:
            bn.momentum = 0.1
    return model.eval()


@functools.cache
def _loaded(name: str) -> nn.Module:
    """cnnzoo's ``name`` holding the weights of :func:`_random_torchvision`, in eval mode."""
    model = _meta(name)
    model.to_empty(device="cpu")
    load_torchvision_weights(model, _random_torchvision(name).state_dict())
    return model.eval()


# --- layers ---------------------------------------------------------------------------------
def test_channel_shuffle_interleaves_the_groups() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    shuffled = channel_shuffle(x, 2).flatten().tolist()
    assert shuffled == [0, 3, 1, 4, 2, 5]  # groups (0 1 2) and (3 4 5), one channel of each


@pytest.mark.parametrize(("channels", "groups"), [(6, 2), (12, 3), (12, 4), (24, 8), (240, 3)])
def test_channel_shuffle_is_a_permutation_undone_by_shuffling_with_c_over_g(
    channels: int, groups: int
) -> None:
    x = torch.randn(2, channels, 3, 3)
    shuffled = channel_shuffle(x, groups)
    assert not torch.equal(shuffled, x)
    assert sorted(shuffled[0, :, 0, 0].tolist()) == sorted(x[0, :, 0, 0].tolist())
    assert torch.equal(channel_shuffle(shuffled, channels // groups), x)


def test_channel_shuffle_rejects_channels_the_groups_do_not_divide() -> None:
    with pytest.raises(ValueError, match="cannot shuffle 10 channels in 3 equal groups"):
        channel_shuffle(torch.zeros(1, 10, 2, 2), 3)


def test_depthwise_separable_conv_costs_what_section_3_1_says() -> None:
    # Howard et al., Eq. 5: D_K^2 M D_F^2 + M N D_F^2, i.e. 1/N + 1/9 of a 3x3 convolution.
    m, n, size = 32, 64, 14
    block = DepthwiseSeparableConv(m, n)
    assert block.depthwise.conv.groups == m
    assert count_params(block) == 9 * m + m * n + 2 * (m + n)  # + BN scale and shift
    macs = count_macs(block, (m, size, size))
    assert macs == (9 * m + m * n) * size * size
    assert macs / (9 * m * n * size * size) == pytest.approx(1 / n + 1 / 9)


def test_inverted_residual_adds_its_input_only_where_shapes_agree() -> None:
    assert InvertedResidual(24, 24, 1, 6).use_residual
    assert not InvertedResidual(24, 24, 2, 6).use_residual
    assert not InvertedResidual(16, 24, 1, 6).use_residual
    block = InvertedResidual(24, 24, 1, 6).eval()
    nn.init.zeros_(block.project.bn.weight)  # the residual branch now outputs exactly 0
    x = torch.randn(2, 24, 5, 5)
    assert torch.equal(block(x), x)


def test_inverted_residual_expands_by_t_and_projects_linearly() -> None:
    block = InvertedResidual(32, 16, 2, 6)
    assert block.expand.conv.out_channels == 192
    assert block.depthwise.conv.groups == 192 and block.depthwise.conv.stride == (2, 2)
    assert not hasattr(block.project, "act")  # linear bottleneck (Section 3.2)
    assert InvertedResidual(32, 16, 1, 1).expand is None
    assert block(torch.randn(2, 32, 9, 9)).shape == (2, 16, 5, 5)


def test_make_divisible_rounds_to_the_nearest_multiple_losing_at_most_ten_percent() -> None:
    assert make_divisible(32 * 0.35) == 16  # 11.2 -> 8 would lose 29 %
    assert make_divisible(24 * 0.75) == 24  # 18 -> 16 loses 11 %: one multiple more
    assert make_divisible(320 * 1.4) == 448
    assert make_divisible(240 * 0.5, 12) == 120


# --- MobileNet V1: the paper's figures ------------------------------------------------------
def _mobilenet_v1_params(num_classes: int = 1000) -> int:
    """Parameters of Table 1 by hand: a conv-BN per row, the FC layer."""
    widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    total = 27 * 32 + 2 * 32  # conv1 3x3x3x32 + BN
    for m, n in itertools.pairwise(widths):
        total += 9 * m + 2 * m + m * n + 2 * n  # depthwise + BN, pointwise + BN
    return total + 1024 * num_classes + num_classes


def test_mobilenet_v1_has_the_parameters_and_mult_adds_of_table_8() -> None:
    model = create_model("mobilenet_v1")
    assert count_params(model) == _mobilenet_v1_params()
    assert count_params(model) == pytest.approx(4.24e6, rel=0.02)
    assert count_macs(model, (3, 224, 224)) == pytest.approx(569e6, rel=0.02)


@pytest.mark.parametrize(
    ("width", "mult_adds", "params"),
    [(0.75, 325e6, 2.6e6), (0.5, 149e6, 1.3e6), (0.25, 41e6, 0.5e6)],
)
def test_mobilenet_v1_width_multiplier_follows_table_6(
    width: float, mult_adds: float, params: float
) -> None:
    model_params, macs = _cost("mobilenet_v1", width=width)
    assert macs == pytest.approx(mult_adds, rel=0.02)
    assert model_params == pytest.approx(params, abs=0.05e6 + 0.02 * params)  # paper: 0.1 M steps


def test_mobilenet_v1_stages_follow_table_1() -> None:
    model = _meta("mobilenet_v1")
    assert model.stem.conv.stride == (2, 2)
    assert [len(stage) for stage in model.stages] == [1, 2, 2, 6, 2]
    assert model.feature_info.channels() == [64, 128, 256, 512, 1024]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    last = model.stages[4][1]
    assert last.depthwise.conv.stride == (1, 1)  # Table 1's final "s2" is a stride of 1


# --- ShuffleNet V1: the paper's figures -----------------------------------------------------
def test_shufflenet_v1_g3_has_the_size_and_complexity_of_the_paper() -> None:
    params, macs = _cost("shufflenet_v1")  # groups=3, scale 1x by default
    assert params == pytest.approx(1.9e6, rel=0.05)
    assert macs == pytest.approx(140e6, rel=0.05)


@pytest.mark.parametrize(("groups", "mflops"), [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_v1_complexity_of_each_group_count_follows_table_1(
    groups: int, mflops: int
) -> None:
    # Table 1 widens the stages as g grows, so that the complexity stays near 140 MFLOPs.
    _, macs = _cost("shufflenet_v1", groups=groups)
    assert macs == pytest.approx(mflops * 1e6, rel=0.02)


def test_shufflenet_v1_half_scale_costs_what_table_2_says() -> None:
    # "ShuffleNet 0.5x": every layer has half the filters, about a quarter of the cost.
    _, macs = _cost("shufflenet_v1", scale=0.5)
    assert macs == pytest.approx(38e6, rel=0.05)
    assert _meta("shufflenet_v1", scale=0.5).feature_info.channels() == [12, 12, 120, 240, 480]


def test_shufflenet_v1_units_follow_figure_2() -> None:
    model = _meta("shufflenet_v1", groups=3)
    first, second = model.stages[0][0], model.stages[0][1]
    assert first.gconv1.conv.groups == 1  # Stage2's first 1x1 sees only 24 channels
    assert isinstance(first.shuffle, nn.Identity)
    assert second.gconv1.conv.groups == 3 and second.shuffle.groups == 3
    assert second.gconv2.conv.groups == 3
    assert first.gconv2.conv.out_channels == 240 - 24  # concatenated to the pooled input
    assert second.dwconv.conv.groups == second.dwconv.conv.in_channels == 60  # 240 / 4
    assert not hasattr(second.dwconv, "act")  # no ReLU after the depthwise convolution
    assert [len(stage) for stage in model.stages] == [4, 8, 4]
    assert model.feature_info.channels() == [24, 24, 240, 480, 960]


def test_shuffle_unit_with_stride_2_concatenates_the_pooled_input() -> None:
    unit = ShuffleUnit(48, 96, groups=4, stride=2).eval()
    x = torch.rand(1, 48, 8, 8)
    out = unit(x)
    assert out.shape == (1, 96, 4, 4)
    torch.testing.assert_close(out[:, :48], nn.functional.avg_pool2d(x, 3, 2, 1))


def test_shufflenet_v1_rejects_groups_outside_table_1() -> None:
    with pytest.raises(CnnzooError, match=r"groups=5.*1, 2, 3, 4, 8"):
        create_model("shufflenet_v1", groups=5)


def test_shuffle_unit_rejects_channels_its_groups_do_not_divide() -> None:
    with pytest.raises(ValueError, match="bottleneck channels \\(25\\)"):
        ShuffleUnit(100, 100, groups=2)


# --- torchvision parity ---------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_count_equals_torchvision(name: str) -> None:
    ours = _meta(name)
    assert count_params(ours) == count_params(_random_torchvision(name))
    assert count_params(ours) == _tv_meta(name)["num_params"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_weights_give_the_same_logits(name: str) -> None:
    ours, theirs = _loaded(name), _random_torchvision(name)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = theirs(x)
        actual = ours(x)
    assert actual.shape == (1, 1000)
    assert expected.abs().max() > 0.1  # not a comparison of two near-zero outputs
    assert (actual - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", TORCHVISION)
def test_mult_adds_equal_torchvision(name: str) -> None:
    _, macs = _cost(name)
    assert macs / 1e9 == pytest.approx(_tv_meta(name)["_ops"], abs=0.0006)  # 3 decimals


def test_shufflenet_v2_mult_adds_and_sizes_follow_table_5() -> None:
    table = {
        "0_5": (41e6, 1.4e6),
        "1_0": (146e6, 2.3e6),
        "1_5": (299e6, 3.5e6),
        "2_0": (591e6, 7.4e6),
    }
    for size, (flops, weights) in table.items():
        params, macs = _cost(f"shufflenet_v2_x{size}")
        assert macs == pytest.approx(flops, rel=0.02)
        assert params == pytest.approx(weights, abs=0.05e6)


def test_torchvision_keys_read_like_the_papers() -> None:
    v2 = _meta("mobilenet_v2")
    assert v2.torchvision_key("features.0.1.weight") == "stem.bn.weight"
    assert v2.torchvision_key("features.1.conv.0.0.weight") == "stages.0.0.depthwise.conv.weight"
    assert v2.torchvision_key("features.1.conv.1.weight") == "stages.0.0.project.conv.weight"
    assert v2.torchvision_key("features.3.conv.0.1.running_var") == (
        "stages.1.1.expand.bn.running_var"
    )
    assert v2.torchvision_key("features.17.conv.3.bias") == "stages.6.0.project.bn.bias"
    assert v2.torchvision_key("features.18.0.weight") == "last_conv.conv.weight"
    assert v2.torchvision_key("classifier.1.weight") == "fc.weight"
    key = ShuffleNetV2.torchvision_key
    assert key("conv1.0.weight") == "stem.conv.weight"
    assert key("stage3.0.branch1.2.weight") == "stages.1.0.branch1.pointwise.conv.weight"
    assert key("stage2.1.branch2.3.weight") == (
        "stages.0.1.branch2.separable.depthwise.conv.weight"
    )
    assert key("conv5.1.num_batches_tracked") == "conv5.bn.num_batches_tracked"
    squeeze = _meta("squeezenet1_0")
    assert squeeze.torchvision_key("features.0.bias") == "stem.conv.bias"
    assert squeeze.torchvision_key("features.3.squeeze.weight") == (
        "stages.0.fire2.squeeze.conv.weight"
    )
    assert squeeze.torchvision_key("features.12.expand3x3.bias") == (
        "stages.2.fire9.expand3x3.conv.bias"
    )
    assert squeeze.torchvision_key("classifier.1.weight") == "conv10.weight"


@pytest.mark.parametrize("name", ["mobilenet_v1", "shufflenet_v1"])
def test_models_without_a_torchvision_twin_refuse_its_weights(name: str) -> None:
    with pytest.raises(CnnzooError, match="no torchvision counterpart"):
        load_torchvision_weights(_meta(name), {"conv1.weight": torch.zeros(1)})


def test_weights_of_another_architecture_are_a_clear_error() -> None:
    with pytest.raises(CnnzooError, match=r"unexpected \['conv1.0.weight"):
        load_torchvision_weights(_meta("mobilenet_v2"), {"conv1.0.weight": torch.zeros(1)})


def test_torchvision_weights_transfer_to_ten_grayscale_classes() -> None:
    model = create_model("shufflenet_v2_x0_5", num_classes=10, in_channels=1)
    report = load_weights(model, _random_torchvision("shufflenet_v2_x0_5").state_dict())
    assert report.key_format == "torchvision"
    assert report.dropped_head == ["fc.bias", "fc.weight"]
    assert report.adapted_conv == "stem.conv"


# --- the classifier contract ----------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_small_input_gives_ten_logits_for_fashion_mnist_and_learns(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, small_input=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 7])

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks before and after the step
        logits = model(x)
        assert logits.shape == (2, 10)
        return nn.functional.cross_entropy(logits, y)

    before = loss()
    before.backward()
    assert all(p.grad is not None for p in model.parameters())  # every layer is used
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert math.isfinite(after.item()) and after.item() != before.item()


@pytest.mark.parametrize("small_input", [False, True])
@pytest.mark.parametrize("name", ALL)
def test_feature_info_describes_the_stage_maps(name: str, small_input: bool) -> None:
    model = _meta(name, small_input=small_input)
    features = _meta(name, features_only=True, small_input=small_input)
    info = model.feature_info
    assert features.feature_info == info
    for size in (28, 27) if small_input else (224, 97):  # odd sizes: every halving rounds up
        x = torch.zeros(2, 3, size, size, device="meta")
        maps = features(x)
        assert [m.shape[1] for m in maps] == info.channels()
        sizes = [m.shape[-1] for m in maps]
        if name.startswith("squeezenet"):
            assert sizes == SQUEEZENET_MAPS[(name, size)]
        else:
            assert sizes == [math.ceil(size / r) for r in info.reduction()]
        assert maps[-1].shape == model.forward_features(x).shape
    deepest = (4, 16) if name.startswith("squeezenet") else (8, 32)
    assert info.reduction()[-1] == deepest[0 if small_input else 1]


@pytest.mark.parametrize("name", ALL)
def test_any_number_of_input_channels(name: str) -> None:
    model = _meta(name, in_channels=5, num_classes=7).eval()
    assert model(torch.zeros(2, 5, 64, 64, device="meta")).shape == (2, 7)


@pytest.mark.parametrize(
    "name", ["mobilenet_v1", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1"]
)
def test_reset_classifier_changes_the_number_of_outputs(name: str) -> None:
    model = create_model(name, small_input=True).eval()
    model.reset_classifier(5)
    assert model.num_classes == 5
    classifier = model.get_classifier()
    assert getattr(classifier, "out_features", getattr(classifier, "out_channels", None)) == 5
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 5)


def test_squeezenet_pre_logits_are_the_pooled_fire9_features() -> None:
    model = create_model("squeezenet1_1", small_input=True).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 28, 28))
        pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_squeezenet_min_input_size_is_the_smallest_that_runs(name: str) -> None:
    size = model_info(name).min_input_size
    model = _meta(name).eval()
    assert model(torch.zeros(1, 3, size, size, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, size - 1, size - 1, device="meta"))


@pytest.mark.parametrize(
    "name", ["mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2_x1_0"]
)
def test_a_one_pixel_input_runs(name: str) -> None:
    assert model_info(name).min_input_size == 1
    model = _meta(name).train()  # BatchNorm needs two values per channel: a batch of 2
    assert model(torch.zeros(2, 3, 1, 1, device="meta")).shape == (2, 1000)


def test_shufflenet_v2_unit_keeps_half_the_channels_untouched() -> None:
    unit = ShuffleV2Unit(48, 48).eval()
    x = torch.randn(1, 48, 6, 6)
    out = unit(x)
    # after the two-group shuffle the untouched half sits at the even channels
    assert torch.equal(out[:, 0::2], x[:, :24])
    assert unit.branch1 is None
    assert ShuffleV2Unit(24, 48, stride=2)(x[:, :24]).shape == (1, 48, 3, 3)


@pytest.mark.parametrize("name", ALL)
def test_registry_entries_describe_the_models(name: str) -> None:
    info = model_info(name)
    assert info.task == "classification"
    assert info.input_size == (3, 224, 224)
    assert info.small_input is True
    assert info.torchvision == (name if name in TORCHVISION else None)
    assert any(year in info.paper for year in ("2016", "2017", "2018"))
    assert name in cnnzoo.list_models("classification")
