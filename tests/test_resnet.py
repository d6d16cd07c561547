"""ResNet (ImageNet and CIFAR) against torchvision and He et al. 2016."""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torchvision.models as tvm
from torch import nn

import cnnzoo
from cnnzoo.layers import BasicBlock, Bottleneck, ProjectionShortcut, ZeroPadShortcut
from cnnzoo.models.base import count_params
from cnnzoo.models.classification.resnet import ResNet
from cnnzoo.models.classification.resnet_cifar import CifarResNet
from cnnzoo.summary import count_macs

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
ALL = [
    n
    for n in cnnzoo.list_models()
    if cnnzoo.model_info(n).family in ("resnet", "resnet_cifar", "plain")
]
# He et al. 2016, Table 6 (CIFAR-10): parameters in millions.
PAPER_CIFAR_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}
# The deep ones are slow on CPU at 224x224; parity holds at any size. Shape tests run in
# training mode: BN then normalises, whereas in eval mode with fresh statistics a plain net's
# activations shrink layer by layer into subnormal floats, which are very slow on CPU.
PARITY_SIZE = {"resnet18": 224, "resnet50": 224, "resnet34": 64, "resnet101": 64, "resnet152": 64}
TV_WEIGHTS = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": tvm.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": tvm.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": tvm.ResNet152_Weights.IMAGENET1K_V1,
}


@functools.cache
def _shared(name: str) -> nn.Module:
    """Build a default model once per session, for tests that only read it (big ones are slow)."""
    torch.manual_seed(0)
    return cnnzoo.create_model(name)


@functools.cache
def _pair(name: str) -> tuple[nn.Module, nn.Module]:
    """cnnzoo's shared model and its torchvision twin."""
    return _shared(name), getattr(tvm, name)(weights=None)


def _randomize(model: nn.Module) -> None:
    """Give every parameter and BN statistic distinct random values, so no swap goes unseen."""
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05 + (1.0 if "bn" in key else 0.0))


def _cifar_param_count(depth: int, num_classes: int = 10, in_channels: int = 3) -> int:
    """Parameters of the 6n+2 network from Sec. 4.2: 3x3 convs without bias, BN, one FC."""
    n = (depth - 2) // 6
    conv_bn = lambda c_in, c_out: 9 * c_in * c_out + 2 * c_out  # noqa: E731
    total = conv_bn(in_channels, 16)
    previous = 16
    for width in (16, 32, 64):
        total += conv_bn(previous, width) + conv_bn(width, width)  # first block of the stage
        total += (n - 1) * 2 * conv_bn(width, width)
        previous = width
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_resnet_has_torchvision_parameter_count(name: str) -> None:
    ours, theirs = _pair(name)
    assert count_params(ours) == count_params(theirs) == TV_WEIGHTS[name].meta["num_params"]


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_resnet_macs_within_one_percent_of_torchvision(name: str) -> None:
    ours, _ = _pair(name)
    reference = TV_WEIGHTS[name].meta["_ops"] * 1e9
    assert count_macs(ours, (3, 224, 224)) == pytest.approx(reference, rel=0.01)


@pytest.mark.parametrize("name", IMAGENET)
def test_torchvision_weights_give_the_same_logits(name: str) -> None:
    ours, theirs = _pair(name)
    torch.manual_seed(1)
    _randomize(theirs)
    cnnzoo.load_torchvision_weights(ours, theirs.state_dict())
    ours.eval()
    theirs.eval()
    size = PARITY_SIZE[name]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = theirs(x)
        actual = ours(x)
    assert actual.shape == (2, 1000)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero outputs
    assert (actual - expected).abs().max().item() <= 1e-4


def test_torchvision_key_reads_like_the_paper() -> None:
    key = ResNet.torchvision_key
    assert key("conv1.weight") == "stem.conv.weight"
    assert key("bn1.running_var") == "stem.bn.running_var"
    assert key("layer1.0.conv2.weight") == "stages.0.0.conv2.conv.weight"
    assert key("layer3.22.bn3.bias") == "stages.2.22.conv3.bn.bias"
    assert key("layer2.0.downsample.0.weight") == "stages.1.0.shortcut.conv.weight"
    assert key("layer4.0.downsample.1.num_batches_tracked") == (
        "stages.3.0.shortcut.bn.num_batches_tracked"
    )
    assert key("fc.bias") == "fc.bias"


def test_weights_of_another_architecture_are_a_clear_error() -> None:
    model = _shared("resnet18")
    with pytest.raises(cnnzoo.CnnzooError, match=r"unexpected \['features"):
        cnnzoo.load_torchvision_weights(model, {"features.0.weight": torch.zeros(1)})


def test_cifar_resnet_refuses_torchvision_weights() -> None:
    model = cnnzoo.create_model("resnet20")
    with pytest.raises(cnnzoo.CnnzooError, match="no torchvision counterpart"):
        cnnzoo.load_torchvision_weights(model, tvm.resnet18().state_dict())


@pytest.mark.parametrize("name", ALL)
def test_default_input_gives_one_logit_per_class(name: str) -> None:
    info = cnnzoo.model_info(name)
    model = _shared(name)
    expected_classes = 1000 if info.input_size[1] == 224 else 10
    with torch.no_grad():
        out = model.train()(torch.randn(1, *info.input_size))
    assert out.shape == (1, expected_classes)


@pytest.mark.parametrize("name", ALL)
def test_grayscale_28x28_input_with_ten_classes(name: str) -> None:
    info = cnnzoo.model_info(name)
    options = {"small_input": True} if info.small_input else {}
    model = cnnzoo.create_model(name, num_classes=10, in_channels=1, **options)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 28, 28))
    assert out.shape == (1, 10)


@pytest.mark.parametrize("name", ALL)
def test_feature_info_matches_the_feature_maps(name: str) -> None:
    model = _shared(name).train()
    size = 64
    modules = dict(model.named_modules())
    shapes = {}
    handles = [
        modules[stage.module].register_forward_hook(
            lambda _m, _i, out, key=stage.module: shapes.__setitem__(key, tuple(out.shape))
        )
        for stage in model.feature_info
    ]
    with torch.no_grad():
        last = model.forward_features(torch.randn(2, 3, size, size))
    for handle in handles:
        handle.remove()
    expected = [
        (2, s.channels, size // s.reduction, size // s.reduction) for s in model.feature_info
    ]
    assert [shapes[s.module] for s in model.feature_info] == expected
    assert tuple(last.shape) == expected[-1]


def test_small_input_stem_downsamples_by_eight_without_max_pool() -> None:
    model = cnnzoo.create_model("resnet18", small_input=True)
    assert model.feature_info.reduction() == [1, 1, 2, 4, 8]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.stem.conv.kernel_size == (3, 3) and model.stem.conv.stride == (1, 1)
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)


def test_default_stem_follows_table_1() -> None:
    model = _shared("resnet50")
    assert model.stem.conv.kernel_size == (7, 7) and model.stem.conv.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]


@pytest.mark.parametrize("name", ALL)
def test_min_input_size_is_accepted(name: str) -> None:
    info = cnnzoo.model_info(name)
    size = info.min_input_size
    model = _shared(name)
    train_out = model.train()(torch.randn(2, 3, size, size))  # BN needs 2 values per channel
    with torch.no_grad():
        eval_out = model.eval()(torch.randn(1, 3, size, size))
    assert train_out.shape[0] == 2 and eval_out.shape[0] == 1


def test_forward_head_pre_logits_returns_pooled_features() -> None:
    model = _shared("resnet50").eval()
    features = model.forward_features(torch.randn(2, 3, 64, 64))
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, 2048)
    torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "plain20"])
def test_reset_classifier_changes_the_number_of_outputs(name: str) -> None:
    model = cnnzoo.create_model(name)
    model.reset_classifier(5)
    assert model.num_classes == 5
    assert model.get_classifier().out_features == 5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_bottleneck_strides_on_its_3x3_convolution() -> None:
    block = Bottleneck(256, 128, stride=2)
    assert block.conv1.conv.stride == (1, 1)
    assert block.conv2.conv.stride == (2, 2) and block.conv2.conv.kernel_size == (3, 3)
    assert block.conv3.conv.out_channels == 512 == 128 * Bottleneck.expansion
    assert isinstance(block.shortcut, ProjectionShortcut)
    assert block(torch.randn(2, 256, 8, 8)).shape == (2, 512, 4, 4)


def test_imagenet_resnet_uses_projections_only_where_the_shape_changes() -> None:
    model = _shared("resnet34")
    projections = [n for n, m in model.named_modules() if isinstance(m, ProjectionShortcut)]
    assert projections == ["stages.1.0.shortcut", "stages.2.0.shortcut", "stages.3.0.shortcut"]
    model = _shared("resnet50")  # the first stage widens 64 -> 256 channels
    assert isinstance(model.stages[0][0].shortcut, ProjectionShortcut)


def test_zero_init_residual_zeroes_each_blocks_last_bn() -> None:
    model = cnnzoo.create_model("resnet50", zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(torch.count_nonzero(b.conv3.bn.weight) == 0 for b in blocks)
    default = cnnzoo.create_model("resnet18")
    assert torch.all(default.stages[0][0].conv2.bn.weight == 1)


def test_zero_initialised_basic_block_is_the_identity_plus_relu() -> None:
    block = BasicBlock(16, 16, zero_init_residual=True).eval()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_convolutions_use_kaiming_fan_out_init() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18")
    conv = model.stages[3][1].conv2.conv  # 512 x 512 x 3 x 3
    expected_std = (2 / (512 * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_parameter_count_follows_section_4_2(depth: int) -> None:
    params = count_params(_shared(f"resnet{depth}"))
    assert params == _cifar_param_count(depth)
    assert params / 1e6 == pytest.approx(PAPER_CIFAR_PARAMS_M[depth], rel=0.03)


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_has_6n_plus_2_weighted_layers(depth: int) -> None:
    model = _shared(f"resnet{depth}")
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth


def test_cifar_resnet_follows_section_4_2() -> None:
    model = _shared("resnet56")
    assert isinstance(model, CifarResNet)
    assert model.feature_info.channels() == [16, 16, 32, 64]
    assert model.feature_info.reduction() == [1, 1, 2, 4]
    assert [len(stage) for stage in model.stages] == [9, 9, 9]
    shortcuts = [n for n, m in model.named_modules() if isinstance(m, ZeroPadShortcut)]
    assert shortcuts == ["stages.1.0.shortcut", "stages.2.0.shortcut"]
    assert not any(isinstance(m, (ProjectionShortcut, nn.MaxPool2d)) for m in model.modules())
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels() -> None:
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0
    assert list(shortcut.parameters()) == []


@pytest.mark.parametrize("size", [1, 5, 7, 31])
def test_zero_pad_shortcut_matches_the_strided_convolution_at_odd_sizes(size: int) -> None:
    block = BasicBlock(16, 32, stride=2, shortcut_layer=ZeroPadShortcut)
    assert block(torch.randn(2, 16, size, size)).shape == (2, 32, (size + 1) // 2, (size + 1) // 2)


def test_cifar_resnet_rejects_a_depth_that_is_not_6n_plus_2() -> None:
    with pytest.raises(ValueError, match=re.escape("6n + 2")):
        CifarResNet(depth=21)


def test_cifar_resnet_has_no_small_input_option() -> None:
    with pytest.raises(cnnzoo.CnnzooError, match="no small-input variant"):
        cnnzoo.create_model("resnet20", small_input=True)


def test_registry_entries_describe_the_resnets() -> None:
    info = cnnzoo.model_info("resnet50")
    assert (info.family, info.torchvision, info.small_input) == ("resnet", "resnet50", True)
    assert info.input_size == (3, 224, 224)
    info = cnnzoo.model_info("resnet110")
    assert (info.family, info.torchvision, info.small_input) == ("resnet_cifar", None, False)
    assert info.input_size == (3, 32, 32)
    assert set(IMAGENET + CIFAR) <= set(ALL)
