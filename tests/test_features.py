"""features_only / out_indices: every classifier as a backbone returning its stage maps.

Shapes are checked for every registered classifier on the meta device (shapes without
arithmetic, so ResNet-152 and VGG-19 cost nothing); the expected sizes come from each
architecture's convolution and pooling arithmetic, written out below. Values are checked on
small real models: the extractor's maps are the full model's, bit for bit.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

import cnnzoo
from cnnzoo import CnnzooError, create_model, model_info
from cnnzoo.models.base import FeatureInfo, count_params
from cnnzoo.models.features import FeatureExtractor
from cnnzoo.rundir import RunDir

CLASSIFIERS = cnnzoo.list_models("classification")


# --- the arithmetic of each architecture ------------------------------------------------------
def _out(size: int, kernel: int, stride: int, padding: int = 0, ceil: bool = False) -> int:
    """Output size of a convolution or pooling, with PyTorch's ceil-mode rule."""
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:  # the last window must start inside
        out -= 1
    return out


def _halve(size: int) -> int:
    """A 3x3 stride-2 convolution with padding 1 (ResNet's downsampling): rounds up."""
    return _out(size, 3, 2, 1)


def expected_sizes(name: str, size: int, small_input: bool, stages: int) -> list[int]:
    """Return the height (= width) of each stage map of ``name`` for a ``size`` input."""
    family = model_info(name).family
    if family in ("resnet", "resnet_cifar", "plain"):
        if small_input or family == "resnet_cifar" or stages == 4:  # 3x3/1 stem, no pool
            maps = [size, size]
        else:  # 7x7/2 convolution, then 3x3/2 max-pool with padding 1
            stem = _out(size, 7, 2, 3)
            maps = [stem, _out(stem, 3, 2, 1)]
        while len(maps) < stages:
            maps.append(_halve(maps[-1]))
        return maps
    if family in ("vgg", "convnet"):  # 'same' 3x3 convolutions, each stage ends in 2x2/2 pool
        maps = [size // 2]
        while len(maps) < stages:
            maps.append(maps[-1] // 2)
        return maps
    if family == "alexnet":  # 11x11/4 conv (padding 2) and three 3x3/2 pools, valid
        s0 = _out(_out(size, 11, 4, 2), 3, 2)
        s1 = _out(s0, 3, 2)
        return [s0, s1, _out(s1, 3, 2)]
    if family == "lenet":  # C1 'same' + 2x2 pool; C3 is a valid 5x5 conv + 2x2 pool
        s0 = size // 2
        return [s0, _out(s0, 5, 1) // 2]
    if family == "googlenet":  # ceil-mode pools: 3x3/2 after conv1, conv3, 3b; 2x2/2 after 4e
        if small_input:
            c1 = c3 = i3 = size
        else:
            c1 = _out(size, 7, 2, 3)
            c3 = _out(c1, 3, 2, ceil=True)
            i3 = _out(c3, 3, 2, ceil=True)
        i4 = _out(i3, 3, 2, ceil=True)
        return [c1, c3, i3, i4, _out(i4, 2, 2, ceil=True)]
    if family in ("mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2"):
        maps = [size, size] if small_input else [_halve(size), _halve(_halve(size))]
        while len(maps) < stages:
            maps.append(_halve(maps[-1]))
        return maps
    if family == "squeezenet":  # unpadded conv1, ceil-mode 3x3/2 pools
        if small_input:
            maps = [size, size]
        else:
            conv1 = _out(size, 7 if name == "squeezenet1_0" else 3, 2)
            maps = [conv1, _out(conv1, 3, 2, ceil=True)]
        while len(maps) < stages:
            maps.append(_out(maps[-1], 3, 2, ceil=True))
        return maps
    raise AssertionError(f"no size arithmetic written for family {family!r} ({name})")


def _sizes_for(name: str, small_input: bool) -> tuple[int, int]:
    """Two input sizes per model, one odd (to exercise rounding), both >= its minimum."""
    if small_input or model_info(name).input_size[1] <= 32:
        return 32, 27
    return 64, 97


# Valid (unpadded) convolutions and pools make these maps smaller than input / reduction.
NOT_INPUT_OVER_REDUCTION = {"alexnet", "lenet5", "squeezenet1_0", "squeezenet1_1"}

VARIANTS = [(name, False) for name in CLASSIFIERS] + [
    (name, True) for name in ("resnet18", "plain34", "googlenet")
]


@pytest.mark.parametrize(("name", "small_input"), VARIANTS)
def test_stage_maps_have_the_published_channels_and_sizes(name: str, small_input: bool) -> None:
    kwargs = {"small_input": True} if small_input else {}
    with torch.device("meta"):  # shapes only
        features = create_model(name, features_only=True, **kwargs)
    info = features.feature_info
    channels = model_info(name).input_size[0]
    for size in _sizes_for(name, small_input):
        maps = features(torch.zeros(2, channels, size, size, device="meta"))
        expected = expected_sizes(name, size, small_input, len(info))
        assert [m.shape[1] for m in maps] == info.channels()
        assert [tuple(m.shape[2:]) for m in maps] == [(s, s) for s in expected]
        if name not in NOT_INPUT_OVER_REDUCTION:
            for m, r in zip(maps, info.reduction(), strict=True):
                assert m.shape[2] in (size // r, math.ceil(size / r))


def test_alexnet_and_lenet_maps_are_smaller_than_input_over_reduction() -> None:
    # The honest exception to "size / reduction": valid convolutions shave off borders.
    with torch.device("meta"):
        alexnet = create_model("alexnet", features_only=True)
        lenet = create_model("lenet5", features_only=True)
        a = alexnet(torch.zeros(1, 3, 224, 224))
        b = lenet(torch.zeros(1, 1, 28, 28))
    assert [m.shape[-1] for m in a] == [27, 13, 6]  # 224 / (8, 16, 32) = 28, 14, 7
    assert [m.shape[-1] for m in b] == [14, 5]  # 28 / (2, 4) = 14, 7


def test_resnet50_out_indices_1_to_4_have_strides_4_to_32() -> None:
    with torch.device("meta"):
        features = create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4))
        maps = features(torch.zeros(1, 3, 224, 224))
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert features.feature_info.channels() == [256, 512, 1024, 2048]
    assert [tuple(m.shape) for m in maps] == [
        (1, 256, 56, 56),
        (1, 512, 28, 28),
        (1, 1024, 14, 14),
        (1, 2048, 7, 7),
    ]


# --- out_indices ----------------------------------------------------------------------------
def test_default_returns_every_stage() -> None:
    full = create_model("resnet20")
    features = create_model("resnet20", features_only=True)
    assert features.out_indices == (0, 1, 2, 3)
    assert features.feature_info == full.feature_info
    assert isinstance(features.feature_info, FeatureInfo)
    assert len(features(torch.zeros(1, 3, 8, 8))) == 4


def test_out_indices_select_stages_in_the_order_given() -> None:
    features = create_model("resnet20", features_only=True, out_indices=(2, 0))
    maps = features(torch.zeros(1, 3, 16, 16))
    assert features.feature_info.channels() == [32, 16]
    assert features.feature_info.reduction() == [2, 1]
    assert [tuple(m.shape) for m in maps] == [(1, 32, 8, 8), (1, 16, 16, 16)]


def test_negative_out_indices_count_from_the_deepest_stage() -> None:
    features = create_model("resnet20", features_only=True, out_indices=(-3, -1))
    assert features.out_indices == (1, 3)
    assert features.feature_info.channels() == [16, 64]
    assert features.feature_info.module_names() == ["stages.0", "stages.2"]


@pytest.mark.parametrize("bad", [(5,), (-6,), (1, 7)])
def test_out_of_range_index_names_the_valid_range(bad: tuple[int, ...]) -> None:
    with pytest.raises(CnnzooError, match=r"5 stages: use indices 0\.\.4 \(or -5\.\.-1"):
        create_model("resnet18", features_only=True, out_indices=bad)


def test_repeated_or_empty_out_indices_are_rejected() -> None:
    with pytest.raises(CnnzooError, match="selects a stage twice"):
        create_model("convnet", features_only=True, out_indices=(1, -1))
    with pytest.raises(CnnzooError, match="empty"):
        create_model("convnet", features_only=True, out_indices=())


def test_out_indices_without_features_only_is_rejected() -> None:
    with pytest.raises(CnnzooError, match="features_only=True"):
        create_model("convnet", out_indices=(0,))


def test_a_module_without_feature_info_cannot_be_a_backbone() -> None:
    with pytest.raises(CnnzooError, match="no feature_info"):
        FeatureExtractor(nn.Sequential(nn.Conv2d(3, 8, 3)))


# --- the head is gone; the maps are the full model's ------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "channels", "size"),
    [
        ("convnet", {"widths": (8, 16), "hidden": 16}, 1, 28),
        ("lenet5", {}, 1, 28),
        ("resnet20", {}, 3, 32),
        ("plain20", {}, 3, 32),
        ("resnet18", {"small_input": True}, 3, 32),
        ("googlenet", {"small_input": True}, 3, 16),
    ],
)
def test_maps_equal_the_full_models_stage_outputs_bit_for_bit(
    name: str, kwargs: dict, channels: int, size: int, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    full = create_model(name, num_classes=10, **kwargs)
    with torch.no_grad():  # BN statistics other than (0, 1), so that they must be carried
        for key, tensor in full.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                tensor.uniform_(-0.5, 0.5)
    full.eval()
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, tmp_path / "w.safetensors")
    features = create_model(
        name, num_classes=10, features_only=True, weights=tmp_path / "w.safetensors", **kwargs
    ).eval()

    x = torch.randn(2, channels, size, size)
    hooked: dict[str, Tensor] = {}
    for stage in full.feature_info:
        full.get_submodule(stage.module).register_forward_hook(
            lambda _m, _a, out, key=stage.module: hooked.__setitem__(key, out)
        )
    with torch.no_grad():
        full(x)
        maps = features(x)
    assert len(maps) == len(full.feature_info)
    for stage, m in zip(full.feature_info, maps, strict=True):
        assert torch.equal(m, hooked[stage.module]), stage.module
    assert count_params(features) < count_params(full)
    assert f"model.{full.classifier_name}.weight" not in features.state_dict()


def test_stages_after_the_deepest_selected_one_are_removed() -> None:
    full = create_model("resnet18")
    features = create_model("resnet18", features_only=True, out_indices=(1, 2))
    kept = (full.stem, full.stages[0], full.stages[1])
    assert count_params(features) == sum(count_params(m) for m in kept)
    assert features.pruned == ["fc", "global_pool", "stages.2", "stages.3"]


def test_vgg_backbone_drops_the_fully_connected_layers() -> None:
    with torch.device("meta"):
        full = create_model("vgg16")
        features = create_model("vgg16", features_only=True)
    assert count_params(full) == 138_357_544
    assert count_params(features) == 14_714_688  # the 13 convolutions only
    assert {"fc6", "fc7", "fc8", "pool"} <= set(features.pruned)


def test_googlenet_backbone_has_no_auxiliary_heads_even_in_training() -> None:
    features = create_model("googlenet", num_classes=10, features_only=True, small_input=True)
    assert features.model.aux1 is None and features.model.aux2 is None
    assert features.model_kwargs["aux_logits"] is False
    maps = features.train()(torch.randn(2, 3, 16, 16))
    assert isinstance(maps, list) and len(maps) == 5
    assert all(isinstance(m, Tensor) for m in maps)


def test_backbone_trains_end_to_end() -> None:
    features = create_model("convnet", widths=(8, 16), features_only=True).train()
    maps = features(torch.randn(4, 1, 28, 28))
    sum(m.mean() for m in maps).backward()
    assert all(p.grad is not None for p in features.parameters())


def test_a_deep_copy_returns_the_same_maps() -> None:
    # EMA weights and Lightning copy modules; the copy's hooks must fill the copy.
    features = create_model("convnet", widths=(8, 16), features_only=True).eval()
    twin = copy.deepcopy(features)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for a, b in zip(features(x), twin(x), strict=True):
            assert torch.equal(a, b)


def test_backbone_round_trips_through_a_run_directory(tmp_path: Path) -> None:
    features = create_model("resnet20", features_only=True, out_indices=(1, 3)).eval()
    run = RunDir.create(tmp_path / "run")
    run.save_model(features, {"model": "resnet20", "kwargs": features.model_kwargs})
    loaded, _ = RunDir.open(run.path).load_model()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        for a, b in zip(features(x), loaded(x), strict=True):
            assert torch.equal(a, b)
    assert loaded.out_indices == (1, 3)
