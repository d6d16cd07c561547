"""AlexNet and VGG: shapes, minimal input, torchvision parity (parameters, outputs, MACs),
feature_info and the classifier interface.

torchvision's model definitions are the oracle. Building a VGG costs seconds, almost all of
it drawing 100 M+ random numbers twice (default init, then the model's own), and every
forward pass reads FC6's 400 MB. So the tests that need values share one pair of models per
name (a module-scoped fixture); tests of shapes, shape errors and operation counts run on the
meta device, where the same modules and shape checks run without data; cnnzoo's own
initialisation is checked on two real builds.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import pytest
import torch
import torchvision
from torch import Tensor, nn

import cnnzoo
from cnnzoo import CnnzooError, create_model, load_torchvision_weights, model_info
from cnnzoo.models.base import ImageClassifier
from cnnzoo.summary import count_macs

VGG_NAMES = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
NAMES = ["alexnet", *VGG_NAMES]
MIN_INPUT = {"alexnet": 63, **dict.fromkeys(VGG_NAMES, 32)}
# Parity runs at 224x224 for these, at 64x64 for the others (same code paths, less time).
PARITY_AT_224 = {"alexnet", "vgg11_bn"}


def _build_on_meta(name: str, **kwargs: object) -> ImageClassifier:
    """Return ``create_model(name, **kwargs)`` built on the meta device: shapes, no data."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _random_torchvision(name: str) -> nn.Module:
    """Return torchvision's ``name`` in eval mode, every weight and BN statistic random.

    One uniform draw per tensor, cheaper than torchvision's own initialisation, and the
    running means and variances differ from 0 and 1 so that their mapping is tested too.
    """
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(1)
            elif tensor.dim() > 1:  # conv and linear weights: He-uniform keeps activations O(1)
                bound = (6 / tensor[0].numel()) ** 0.5
                tensor.uniform_(-bound, bound)
            elif key.endswith(("running_var", "weight")):  # BN scale and variance
                tensor.uniform_(0.5, 1.5)
            else:  # biases, BN shift and mean
                tensor.uniform_(-0.1, 0.1)
    return model.eval()


class Twins(NamedTuple):
    name: str
    ours: ImageClassifier
    torchvision: nn.Module


@pytest.fixture(scope="module", params=NAMES)
def twins(request: pytest.FixtureRequest) -> Twins:
    """cnnzoo's model carrying the weights of a random torchvision twin, both in eval mode."""
    name = request.param
    reference = _random_torchvision(name)
    # Built without data, then given torchvision's: create_model's own random draws would
    # all be overwritten.
    ours = _build_on_meta(name).to_empty(device="cpu")
    ours = load_torchvision_weights(ours, reference.state_dict()).eval()
    return Twins(name, ours, reference)


def _stage_outputs(model: ImageClassifier, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """Return the output of every ``feature_info`` module and ``forward_features(x)``."""
    outputs: list[Tensor] = []
    handles = [
        operator.attrgetter(stage.module)(model).register_forward_hook(
            lambda _m, _i, out: outputs.append(out)
        )
        for stage in model.feature_info
    ]
    try:
        with torch.no_grad():
            last = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, last


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_alexnet_and_all_eight_vggs() -> None:
    registered = cnnzoo.list_models("classification")
    assert set(NAMES) <= set(registered)
    assert sorted(n for n in registered if model_info(n).family == "vgg") == sorted(VGG_NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registry_metadata(name: str) -> None:
    info = model_info(name)
    assert info.task == "classification"
    assert info.input_size == (3, 224, 224)
    assert info.min_input_size == MIN_INPUT[name]
    assert info.small_input is False
    assert info.torchvision == name
    assert info.family == ("alexnet" if name == "alexnet" else "vgg")
    assert ("2012" if name == "alexnet" else "2015") in info.paper


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_default_input_gives_one_logit_per_class(name: str) -> None:
    model = _build_on_meta(name)
    with torch.device("meta"):
        assert model(torch.zeros(2, *model_info(name).input_size)).shape == (2, 1000)


@pytest.mark.parametrize("name", NAMES)
def test_gray_min_input_size_works_in_training_mode(name: str) -> None:
    size = model_info(name).min_input_size
    model = _build_on_meta(name, in_channels=1, num_classes=10)
    assert model.training
    with torch.device("meta"):
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", NAMES)
def test_min_input_size_is_minimal(name: str) -> None:
    size = model_info(name).min_input_size - 1
    model = _build_on_meta(name, in_channels=1, num_classes=10)
    with pytest.raises(RuntimeError, match="too small"), torch.device("meta"):
        model(torch.zeros(2, 1, size, size))


# --- torchvision parity ---------------------------------------------------------------------


def test_parameter_count_equals_torchvision(twins: Twins) -> None:
    ours = sum(p.numel() for p in twins.ours.parameters())
    assert ours == sum(p.numel() for p in twins.torchvision.parameters())


def test_outputs_match_torchvision_with_its_weights(twins: Twins) -> None:
    size = 224 if twins.name in PARITY_AT_224 else 64
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = twins.torchvision(x)
        actual = twins.ours(x)
    assert expected.std() > 1e-3  # random weights give non-trivial logits to compare
    assert (actual - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_macs_match_torchvision_published_gflops(name: str) -> None:
    published = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta["_ops"] * 1e9
    with torch.device("meta"):  # operation counts need shapes only
        macs = count_macs(_build_on_meta(name), (3, 224, 224))
    assert abs(macs - published) / published < 0.01  # torchvision's "GFLOPS" count MACs


def test_torchvision_weights_for_another_configuration_are_refused() -> None:
    with torch.device("meta"):  # the checks fail before any value is copied
        vgg11_state = torchvision.models.vgg11().state_dict()
        vgg11_bn_state = torchvision.models.vgg11_bn().state_dict()
        vgg13, vgg11, vgg11_gray = (
            create_model("vgg13"),
            create_model("vgg11"),
            create_model("vgg11", in_channels=1),
        )
    with pytest.raises(CnnzooError, match="missing"):
        load_torchvision_weights(vgg13, vgg11_state)
    with pytest.raises(CnnzooError, match="unexpected"):
        load_torchvision_weights(vgg11, vgg11_bn_state)
    with pytest.raises(CnnzooError, match=r"shape mismatch for stages\.0\.0\.conv\.weight"):
        load_torchvision_weights(vgg11_gray, vgg11_state)


# --- feature_info ---------------------------------------------------------------------------


def test_feature_info_channels_match_stage_outputs(twins: Twins) -> None:
    size = model_info(twins.name).min_input_size
    outputs, last = _stage_outputs(twins.ours, torch.randn(1, 3, size, size))
    assert [o.shape[1] for o in outputs] == twins.ours.feature_info.channels()
    assert outputs[-1].shape == last.shape  # forward_features ends at the last stage


def test_feature_info_reduction_is_each_stage_stride(twins: Twins) -> None:
    # With floor-rounded conv/pool arithmetic, growing the input by the total stride R grows
    # a map of stride r by exactly R / r pixels, whatever the padding.
    info = twins.ours.feature_info
    stride = max(info.reduction())
    size = model_info(twins.name).min_input_size
    small, _ = _stage_outputs(twins.ours, torch.randn(1, 3, size, size))
    large, _ = _stage_outputs(twins.ours, torch.randn(1, 3, size + stride, size + stride))
    growth = [b.shape[-1] - a.shape[-1] for a, b in zip(small, large, strict=True)]
    assert growth == [stride // r for r in info.reduction()]


STAGE_MAPS_AT_224 = {
    # 224 -> conv1 55 -> pool 27 -> conv2 27 -> pool 13 -> conv3..5 13 -> pool 6 (Fig. 2)
    "alexnet": ((64, 27, 27), (192, 13, 13), (256, 6, 6)),
    # Table 1: five max-pools halve the map, widths 64-128-256-512-512
    **dict.fromkeys(
        VGG_NAMES, ((64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (512, 7, 7))
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_stage_maps_at_224_follow_the_paper(name: str) -> None:
    with torch.device("meta"):  # shapes only
        model = create_model(name).eval()
        outputs, _ = _stage_outputs(model, torch.zeros(1, 3, 224, 224))
    assert tuple(tuple(o.shape[1:]) for o in outputs) == STAGE_MAPS_AT_224[name]
    assert [c for c, _, _ in STAGE_MAPS_AT_224[name]] == model.feature_info.channels()


# --- head and classifier --------------------------------------------------------------------


def test_pre_logits_are_fc7_features_that_fc8_maps_to_logits(twins: Twins) -> None:
    size = model_info(twins.name).min_input_size
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        features = twins.ours.forward_features(x)
        pre_logits = twins.ours.forward_head(features, pre_logits=True)
        logits = twins.ours.forward_head(features)
    assert pre_logits.shape == (1, 4096)
    assert torch.allclose(twins.ours.get_classifier()(pre_logits), logits, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_gives_five_outputs(name: str) -> None:
    size = model_info(name).min_input_size
    model = _build_on_meta(name, in_channels=1, num_classes=10)
    model.reset_classifier(5)
    assert model.get_classifier() is model.fc8
    assert model.get_classifier().out_features == 5
    assert model.num_classes == 5
    with torch.device("meta"):
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 5)


@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_dropout_option_sets_fc6_and_fc7(name: str) -> None:
    model = _build_on_meta(name, dropout=0.2)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]


# --- initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn"])
def test_builder_initialises_he_convs_small_linears_zero_biases(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            expected = (2 / fan_out) ** 0.5
            assert module.weight.std().item() == pytest.approx(expected, rel=0.1)
            assert torch.count_nonzero(module.bias) == 0
        elif isinstance(module, nn.Linear):
            assert module.weight.std().item() == pytest.approx(0.01, rel=0.05)
            assert torch.count_nonzero(module.bias) == 0
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert torch.isfinite(logits).all()
    assert logits.std() > 0
