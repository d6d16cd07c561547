"""Pruning: exact unstructured sparsity, real channel removal, export and rebuild of the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo import CnnzooError
from cnnzoo.compress.prune import (
    make_permanent,
    parse_prune,
    sparsity_report,
    structured_prune,
    unstructured_prune,
)
from cnnzoo.layers.residual import PrunableZeroPadShortcut
from cnnzoo.models.shapes import apply_module_shapes, module_shapes
from cnnzoo.rundir import RunDir


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    import torch_pruning as tp

    return int(tp.utils.count_ops_and_params(model, x)[0])


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(
        "convnet", num_classes=10, in_channels=1, widths=(8, 16), hidden=16
    ).eval()


MODELS = {
    "convnet": dict(widths=(8, 16), hidden=16),
    "resnet20": {},
    "mobilenet_v2": dict(small_input=True, width=0.35),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, num_classes=10, in_channels=1, **MODELS[name]).eval()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: m.weight.detach().clone()
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


# -- parse_prune -------------------------------------------------------------------------
def test_parse_prune_reads_kind_amount_and_importance():
    spec = parse_prune("structured:0.5")
    assert (spec.kind, spec.amount, spec.importance, spec.structured) == (
        "structured",
        0.5,
        "l1",
        True,
    )
    assert parse_prune("structured:0.3:taylor").importance == "taylor"
    assert parse_prune("unstructured:0.8").scope == "global"
    layer = parse_prune("unstructured-layer:0.6")
    assert (layer.scope, layer.amount, layer.structured) == ("layer", 0.6, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("structured", "expected structured:R"),
        ("magic:0.5", "expected structured:R"),
        ("structured:half", "'half' is not a number"),
        ("structured:1.5", "1.5 is not in \\(0, 1\\)"),
        ("unstructured:0", "0.0 is not in \\(0, 1\\)"),
        ("structured:0.5:gradient", "unknown importance 'gradient'"),
        ("unstructured:0.5:bn", "only applies to structured"),
    ],
)
def test_parse_prune_rejects_bad_values_naming_them(text, message):
    with pytest.raises(CnnzooError, match=message):
        parse_prune(text)


# -- unstructured ------------------------------------------------------------------------
def test_global_pruning_reaches_the_requested_sparsity_exactly():
    model = _convnet()
    report = unstructured_prune(model, 0.6, "global")
    pruned = ["stages.0.1.conv", "stages.1.0.conv", "stages.1.1.conv", "fc1.1"]
    assert sorted(report.layers) == sorted(pruned)
    total = sum(model.get_submodule(n).weight.numel() for n in pruned)
    zeros = sum(int((model.get_submodule(n).weight == 0).sum()) for n in pruned)
    assert zeros == round(0.6 * total) == report.zeros
    assert report.sparsity == pytest.approx(0.6, abs=1 / total)
    # global: one threshold, so the layers lose different fractions
    assert len({round(layer.sparsity, 3) for layer in report.layers.values()}) > 1
    # the first convolution and the classifier stay dense by default
    assert int((model.stages[0][0].conv.weight == 0).sum()) == 0
    assert int((model.fc.weight == 0).sum()) == 0


def test_per_layer_pruning_reaches_the_sparsity_in_each_layer():
    model = _convnet()
    report = unstructured_prune(model, 0.7, "layer", include_first_last=True)
    assert len(report.layers) == 6  # four convolutions, two linear layers
    for name, layer in report.layers.items():
        w = model.get_submodule(name).weight
        assert layer.zeros == int((w == 0).sum()) == round(0.7 * w.numel()), name


def test_iterative_pruning_extends_the_earlier_zeros():
    model = _convnet()
    unstructured_prune(model, 0.5, "global")
    first = {n: w == 0 for n, w in _weights(model).items()}
    # the existing zeros have the smallest magnitude, so the higher sparsity keeps them
    report = unstructured_prune(model, 0.8, "global")
    assert report.zeros == round(0.8 * report.total)
    for name, mask in first.items():
        assert bool((model.get_submodule(name).weight[mask] == 0).all()), name


def _fine_tune(model: nn.Module, steps: int = 2) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(2)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model(x)  # the mask hook recomputes ``weight`` from the updated ``weight_orig``


def test_masks_keep_the_zeros_through_fine_tuning_until_made_permanent():
    model = _convnet().train()
    first = unstructured_prune(model, 0.5, "global", permanent=False)
    assert hasattr(model.stages[1][0].conv, "weight_mask")
    _fine_tune(model)
    assert sparsity_report(model, first.layers).zeros == round(0.5 * first.total)
    zeros_before = {n: model.get_submodule(n).weight == 0 for n in first.layers}
    second = unstructured_prune(model, 0.8, "global", permanent=False)
    _fine_tune(model)
    assert sparsity_report(model, second.layers).zeros == round(0.8 * second.total)
    for name, mask in zeros_before.items():
        assert bool((model.get_submodule(name).weight[mask] == 0).all()), name
    assert make_permanent(model) == 4
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    assert sparsity_report(model, second.layers).zeros == round(0.8 * second.total)


def test_without_masks_fine_tuning_regrows_the_zeros():
    model = _convnet().train()
    report = unstructured_prune(model, 0.5, "global")
    _fine_tune(model)
    assert sparsity_report(model, report.layers).zeros < report.zeros


def test_unstructured_pruning_removes_the_smallest_magnitudes():
    model = _convnet()
    before = _weights(model)
    report = unstructured_prune(model, 0.6, "global")
    removed, kept = [], []
    for name in report.layers:
        w0, w1 = before[name], model.get_submodule(name).weight.detach()
        removed.append(w0[w1 == 0].abs())
        kept.append(w0[w1 != 0].abs())
        assert torch.equal(w1[w1 != 0], w0[w1 != 0])  # survivors untouched
    assert torch.cat(removed).max() <= torch.cat(kept).min()


def test_unstructured_pruning_is_permanent():
    model = _convnet()
    keys = set(model.state_dict())
    unstructured_prune(model, 0.5, "layer")
    assert set(model.state_dict()) == keys  # no weight_orig / weight_mask
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert type(m.weight) is nn.Parameter
            assert not m._forward_pre_hooks
            assert not hasattr(m, "weight_mask")


def test_unstructured_refuses_a_lower_sparsity_than_already_reached():
    model = _convnet()
    unstructured_prune(model, 0.8, "global")
    with pytest.raises(CnnzooError, match="already have 80.0% zero weights"):
        unstructured_prune(model, 0.5, "global")


def test_sparsity_report_counts_zeros_and_says_there_is_no_speed_up():
    model = _convnet()
    with torch.no_grad():
        model.fc.weight[:, :4] = 0
    report = sparsity_report(model)
    assert report.layers["fc"].zeros == 40 and report.layers["fc"].total == 160
    data = report.to_dict()
    assert data["zeros"] == 40
    assert data["layers"]["fc"]["sparsity"] == pytest.approx(0.25)
    assert "latency" in data["note"] and "same size" in data["note"]


# -- structured --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_structured_pruning_removes_channels_and_cuts_macs(name):
    model = _model(name)
    fresh = _weights(_model(name))
    x = torch.randn(2, 1, 28, 28)
    macs = _macs(model, x[:1])
    report = structured_prune(model, x[:1], 0.5)
    assert _macs(model, x[:1]) <= 0.5 * macs
    assert report.macs_after == _macs(model, x[:1]) and report.macs_before == macs
    assert report.mac_reduction >= 0.5
    shrunk = [n for n, w in _weights(model).items() if w.shape[0] < fresh[n].shape[0]]
    assert len(shrunk) >= 3
    assert set(shrunk) <= set(report.layers)
    y = model(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    assert model.get_classifier().out_features == 10
    assert report.params_after < report.params_before


def test_pruning_dead_channels_of_a_cifar_resnet_keeps_its_outputs():
    # Zero BN scale and shift of every 4th channel everywhere: those channels are exactly
    # zero in each block and in every stage's residual stream (the zero-padding shortcut
    # copies channel i to channel i). Removing them, across the shortcuts, must not change
    # the outputs; BN-scale importance ranks them first.
    model = _model("resnet20")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight[::4] = 0
                m.bias[::4] = 0
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, 28, 28)
    expected = model(x)
    report = structured_prune(model, x[:1], 0.2, importance="bn")
    assert report.pruning_ratio <= 0.25
    shortcuts = [m for m in model.modules() if isinstance(m, PrunableZeroPadShortcut)]
    assert len(shortcuts) == 2
    assert shortcuts[0].in_channels < 16 and shortcuts[1].out_channels < 64
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture
def crafted_convnet():
    """A convnet whose first convolution has channels 0-3 with big weights (L1 likes them)
    but a tiny BN scale and a BN shift that kills them after the ReLU (BN scale and Taylor
    see that they do not matter), and channels 4-7 with small weights but a normal BN."""
    model = _convnet()
    first, second = model.stages[0][0], model.stages[0][1]
    with torch.no_grad():
        first.conv.weight[:4] *= 10
        second.conv.weight[:, :4] *= 10
        first.bn.weight[:4] = 0.01
        first.bn.weight[4:] = 1.0
        first.bn.bias[:4] = -1000.0
    return model


def _kept_rows(before: torch.Tensor, after: torch.Tensor) -> set[int]:
    return {next(i for i in range(before.shape[0]) if torch.equal(before[i], row)) for row in after}


@pytest.mark.parametrize(
    ("importance", "removable"),
    [("l1", {4, 5, 6, 7}), ("bn", {0, 1, 2, 3}), ("taylor", {0, 1, 2, 3})],
)
def test_importances_choose_the_channels_they_should(crafted_convnet, importance, removable):
    model = crafted_convnet
    before = model.stages[0][0].conv.weight.detach().clone()
    torch.manual_seed(1)
    xc, yc = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    report = structured_prune(
        model,
        xc[:1],
        0.3,
        importance=importance,
        loss_fn=lambda m: F.cross_entropy(m(xc), yc),
    )
    removed = set(range(8)) - _kept_rows(before, model.stages[0][0].conv.weight.detach())
    assert removed, report.layers
    assert removed <= removable
    assert all(p.grad is None for p in model.parameters())


def test_structured_pruning_rejects_bad_requests():
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(CnnzooError, match="taylor importance needs gradients"):
        structured_prune(_convnet(), x, 0.5, importance="taylor")
    with pytest.raises(CnnzooError, match="unknown importance 'l2'"):
        structured_prune(_convnet(), x, 0.5, importance="l2")
    with pytest.raises(CnnzooError, match="in \\(0, 1\\), got 1.0"):
        structured_prune(_convnet(), x, 1.0)
    with pytest.raises(CnnzooError, match="by only .*less than the requested 95.0%"):
        structured_prune(_convnet(), x, 0.95, steps=2, max_ratio=0.3)


def test_structured_pruning_keeps_the_training_mode_and_bn_statistics():
    model = _model("resnet20").train()
    stats = model.stem.bn.running_mean.clone()
    structured_prune(model, torch.randn(1, 1, 28, 28), 0.3)
    assert model.training
    kept = model.stem.bn.running_mean
    assert all(bool((stats == v).any()) for v in kept)  # survivors, not updated by tracing


def test_pruned_model_exports_to_onnx_with_the_same_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _model("resnet20")
    x = torch.randn(2, 1, 28, 28)
    structured_prune(model, x[:1], 0.5)
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(
        model, (x,), str(path), opset_version=17, input_names=["x"], output_names=["y"]
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(onnx_out, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)


# -- shapes ------------------------------------------------------------------------------
def test_pruned_model_round_trips_through_the_run_directory(tmp_path):
    kwargs = dict(num_classes=10, in_channels=1)
    model = _model("resnet20")
    x = torch.randn(2, 1, 28, 28)
    structured_prune(model, x[:1], 0.5)
    shapes = module_shapes(model, cnnzoo.create_model("resnet20", **kwargs))
    assert shapes["stem.conv"]["out_channels"] == model.stem.conv.out_channels < 16
    assert shapes["stem.bn"] == {"type": "BatchNorm2d", "num_features": model.stem.bn.num_features}
    assert shapes["stages.1.0.shortcut"]["type"] == "PrunableZeroPadShortcut"
    assert "fc" in shapes and shapes["fc"]["out_features"] == 10
    RunDir(tmp_path / "run").save_model(
        model, {"model": "resnet20", "kwargs": kwargs, "shapes": shapes}
    )
    loaded, spec = RunDir.open(tmp_path / "run").load_model()
    assert spec["shapes"] == shapes
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training


def test_module_shapes_is_empty_for_an_unpruned_model():
    assert module_shapes(_model("mobilenet_v2"), _model("mobilenet_v2")) == {}


def test_apply_module_shapes_keeps_the_other_constructor_settings():
    model = cnnzoo.create_model("resnet18", num_classes=10, in_channels=1, small_input=True)
    model.stages[1][0].conv2.conv.dilation = (2, 2)
    shapes = {
        "stages.1.0.conv2.conv": {
            "type": "Conv2d",
            "in_channels": 128,
            "out_channels": 100,
            "groups": 1,
        },
        "stages.1.0.conv2.bn": {"type": "BatchNorm2d", "num_features": 100},
    }
    apply_module_shapes(model, shapes)
    conv, bn = model.stages[1][0].conv2.conv, model.stages[1][0].conv2.bn
    assert (conv.out_channels, conv.dilation, conv.padding, conv.bias) == (
        100,
        (2, 2),
        (1, 1),
        None,
    )
    assert (bn.num_features, bn.eps, bn.momentum) == (100, 1e-5, 0.1)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"stem.nope": {"type": "Conv2d"}}, "'stem.nope'.*has no such layer"),
        ({"stem.conv": {"type": "Conv5d"}}, "unknown layer type 'Conv5d'"),
        ({"stem.bn": {"type": "Linear", "in_features": 1, "out_features": 2}}, "is a Linear"),
        ({"stem.conv": {"type": "Conv2d", "in_channels": 1}}, "malformed"),
    ],
)
def test_apply_module_shapes_rejects_shapes_of_another_model(shapes, message):
    with pytest.raises(CnnzooError, match=message):
        apply_module_shapes(_model("resnet20"), shapes)
