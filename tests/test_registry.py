"""The registry: build by name, list by task, clear errors for unknown names and options."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo import CnnzooError
from cnnzoo.summary import count_macs, model_cost, summarize

EXPECTED_CLASSIFIERS = {
    "alexnet", "googlenet", "lenet5", "convnet",
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    *(f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)),
    *(f"plain{d}" for d in (18, 34, 20, 32, 44, 56, 110)),
}  # fmt: skip


def test_every_model_of_the_issue_is_registered_as_a_classifier():
    assert set(cnnzoo.list_models(task="classification")) >= EXPECTED_CLASSIFIERS


def test_list_models_filters_by_task():
    assert cnnzoo.list_models(task="detection") == [
        n for n in cnnzoo.list_models() if cnnzoo.model_info(n).task == "detection"
    ]


def test_unknown_model_suggests_close_names():
    with pytest.raises(CnnzooError, match=r"unknown model 'resnet19'.*resnet18"):
        cnnzoo.create_model("resnet19")


def test_unknown_task_is_a_clear_error():
    with pytest.raises(CnnzooError, match="unknown task 'segmentaton'"):
        cnnzoo.list_models(task="segmentaton")


def test_unknown_builder_option_is_a_clear_error():
    with pytest.raises(CnnzooError, match="does not accept"):
        cnnzoo.create_model("lenet5", depth=3)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_non_positive_num_classes_is_rejected(bad):
    with pytest.raises(CnnzooError, match="num_classes must be a positive integer"):
        cnnzoo.create_model("lenet5", num_classes=bad)


def test_small_input_on_a_model_without_it_is_rejected():
    with pytest.raises(CnnzooError, match="no small-input variant"):
        cnnzoo.create_model("vgg11", small_input=True)


def test_create_model_applies_num_classes_and_channels():
    model = cnnzoo.create_model("googlenet", num_classes=10, in_channels=1).eval()
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)
    assert model.model_name == "googlenet"


def test_metadata_describes_inputs():
    info = cnnzoo.model_info("resnet18")
    assert info.task == "classification"
    assert info.small_input is True
    assert info.torchvision == "resnet18"
    assert "He" in info.paper
    assert cnnzoo.model_info("vgg16").small_input is False


def test_meta_device_cost_matches_real_count():
    params, macs = model_cost("convnet")
    model = cnnzoo.create_model("convnet")
    assert params == sum(p.numel() for p in model.parameters())
    assert macs == count_macs(model, (1, 28, 28))


def test_convnet_macs_by_hand():
    # conv MACs = H*W*Cin*Cout*9 per conv; pools halve H, W; linear MACs = in*out.
    model = cnnzoo.create_model("convnet", widths=(4, 8), hidden=16)
    convs = 28 * 28 * 9 * (1 * 4 + 4 * 4) + 14 * 14 * 9 * (4 * 8 + 8 * 8)
    expected = convs + 8 * 7 * 7 * 16 + 16 * 10
    assert count_macs(model, (1, 28, 28)) == expected


def test_summary_rows_have_shapes_params_and_macs():
    model = cnnzoo.create_model("lenet5")
    rows = {r.name: r for r in summarize(model, (1, 28, 28), max_depth=1)}
    assert rows["c1"].output_shape == (1, 6, 14, 14)
    assert rows["c3"].output_shape == (1, 16, 5, 5)
    assert rows["c1"].params == 6 * 25 + 6
    assert rows["c1"].macs == 28 * 28 * 6 * 25
    assert next(iter(rows)) == "c1"  # call order


def test_every_registered_model_has_a_cost_for_the_models_table() -> None:
    # `cnnzoo models` tabulates params and MACs of every entry: none may fail to build or run
    # at its default input size (GANs from a latent code, Fast R-CNN on the CPU).
    for name in cnnzoo.list_models():
        params, macs = model_cost(name)
        assert params > 0 and macs > 0, name
