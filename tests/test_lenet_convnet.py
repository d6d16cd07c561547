"""LeNet-5 and the compact ConvNet: shapes, feature stages, classifier reset."""

from __future__ import annotations

import pytest
import torch

import cnnzoo


@pytest.mark.parametrize("name", ["lenet5", "convnet"])
@pytest.mark.parametrize("size", [28, 32])
def test_output_shape(name, size):
    model = cnnzoo.create_model(name, num_classes=7, in_channels=3).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_feature_info_matches_real_maps():
    # (LeNet's valid 5x5 convolutions make its maps smaller than input / stride.)
    model = cnnzoo.create_model("convnet").eval()
    maps = {}
    for stage in model.feature_info:
        module = model.get_submodule(stage.module)
        module.register_forward_hook(lambda m, i, o, k=stage.module: maps.__setitem__(k, o))
    model(torch.randn(1, 1, 28, 28))
    for stage in model.feature_info:
        assert maps[stage.module].shape[1] == stage.channels
        assert 28 // maps[stage.module].shape[-1] == stage.reduction


def test_lenet5_has_the_papers_parameter_count_for_10_classes():
    # C1 156, C3 2416, C5 48120, F6 10164, output 850 (full C3 connection table)
    assert sum(p.numel() for p in cnnzoo.create_model("lenet5").parameters()) == 61706


def test_reset_classifier_changes_outputs_and_keeps_the_body():
    model = cnnzoo.create_model("convnet").eval()
    before = model.forward_head(model.forward_features(torch.ones(1, 1, 28, 28)), pre_logits=True)
    model.reset_classifier(4)
    after = model(torch.ones(1, 1, 28, 28))
    assert after.shape == (1, 4)
    assert model.num_classes == 4
    pre = model.forward_head(model.forward_features(torch.ones(1, 1, 28, 28)), pre_logits=True)
    assert torch.equal(before, pre)


@pytest.mark.parametrize("size", [28, 36])
def test_convnet_head_skips_pooling_only_where_it_is_the_identity(size):
    model = cnnzoo.create_model("convnet").eval()
    x = torch.randn(2, 1, size, size)
    calls = []
    model.pool.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        features = model.forward_features(x)
        expected = model.fc(model.fc1(torch.nn.functional.adaptive_avg_pool2d(features, 7)))
        calls.clear()
        torch.testing.assert_close(model(x), expected)
    assert len(calls) == (0 if features.shape[-1] == 7 else 1)
