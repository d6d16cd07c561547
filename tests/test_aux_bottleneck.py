"""The aux-loss and bottleneck experiments: their measurements and tiny end-to-end runs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import cnnzoo.experiments.aux_loss as aux_loss
import cnnzoo.experiments.bottleneck as bottleneck
from cnnzoo import CnnzooError
from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.transforms import prepare_batch
from cnnzoo.experiments import run_experiment
from cnnzoo.layers import BasicBlock, Bottleneck
from cnnzoo.models.base import AuxOutput
from cnnzoo.registry import create_model
from cnnzoo.summary import count_macs
from cnnzoo.tasks.classification import ClassificationTask


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 28, 28, generator=g), torch.arange(8) % 10


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return aux_loss.build_pair(aux_loss.AuxLossSettings(seed=0))


# -- aux-loss ----------------------------------------------------------------------------
def test_training_loss_is_main_plus_0_3_times_each_aux_loss(batch):
    x, y = batch
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=10, in_channels=1, dropout=0.0,
                         dropout_aux=0.0).train()  # fmt: skip
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, AuxOutput) and len(out.aux) == 2
    main = F.cross_entropy(out.logits, y)
    aux = [F.cross_entropy(a, y) for a in out.aux]
    expected = main + 0.3 * (aux[0] + aux[1])
    trained_on, _ = ClassificationTask(model, num_classes=10, aux_weight=0.3)._loss(out, y)
    assert float(expected - main) > 0.5  # the heads' share is not negligible
    assert float(trained_on) == pytest.approx(float(expected), rel=1e-5)
    assert float(aux_loss.total_loss(out, y, 0.3)) == pytest.approx(float(expected), rel=1e-5)
    assert float(aux_loss.aux_only_loss(out, y, 0.3)) == pytest.approx(
        float(expected - main), rel=1e-5
    )


def test_network_without_heads_returns_plain_logits_and_shares_the_trunk(pair, batch):
    with_aux, without = pair
    assert without.aux1 is None and without.aux2 is None
    out = without.train()(batch[0])
    assert isinstance(out, torch.Tensor) and out.shape == (8, 10)
    assert isinstance(with_aux.train()(batch[0]), AuxOutput)
    trunk = with_aux.state_dict()
    for key, value in without.state_dict().items():
        assert torch.equal(trunk[key], value), key
    assert set(trunk) - set(without.state_dict()) == {
        k for k in trunk if k.startswith(("aux1.", "aux2."))
    }


def test_aux_heads_add_gradient_to_the_lower_layers_only(pair, batch):
    with_aux, without = pair
    tracked = int(with_aux.conv1.bn.num_batches_tracked)
    aux = aux_loss.trunk_norms(with_aux, *batch, "aux")
    for lower in ("conv1", "inception3a", "inception4a"):
        assert aux_loss.group_norm(aux, (lower,)) > 0, lower
    for upper in ("inception4e", "inception5a", "inception5b", "fc"):
        assert aux_loss.group_norm(aux, (upper,)) == 0.0, upper
    main = aux_loss.trunk_norms(with_aux, *batch, "main")
    # an aux-dominated loss (weight 10) raises inception3a's gradient norm, not 5b's
    total = aux_loss.trunk_norms(with_aux, *batch, "total", aux_weight=10.0)
    assert aux_loss.group_norm(total, ("inception3a",)) > 1.2 * aux_loss.group_norm(
        main, ("inception3a",)
    )
    assert aux_loss.group_norm(total, ("inception5b",)) == pytest.approx(
        aux_loss.group_norm(main, ("inception5b",)), rel=1e-4
    )
    # same initial weights, dropout off in the probe: the main-loss gradients agree
    plain = aux_loss.trunk_norms(without, *batch, "main")
    assert list(plain) == list(main)
    assert aux_loss.group_norm(plain) == pytest.approx(aux_loss.group_norm(main), rel=1e-4)
    # the probe measures a copy: the trained model's BN statistics are untouched
    assert int(with_aux.conv1.bn.num_batches_tracked) == tracked


def test_strip_batchnorm_and_bad_loss_part(pair, batch):
    model = aux_loss.strip_batchnorm(create_model("googlenet", num_classes=10, in_channels=1))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(CnnzooError, match="unknown loss part 'both'"):
        aux_loss.trunk_norms(pair[0], *batch, "both")


@pytest.mark.slow
def test_aux_loss_experiment_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    tiny = aux_loss.AuxLossSettings(steps=4, eval_every=2, batch_size=8, test_subset=40,
                                    grad_batch=8)  # fmt: skip
    monkeypatch.setattr(aux_loss, "QUICK", tiny)
    monkeypatch.setattr(aux_loss, "_dataset", lambda: "fashion-mnist-mini")
    result = run_experiment("aux-loss", out=tmp_path / "a", quick=True)
    assert [(r["run"], r["step"]) for r in result.rows] == [
        (run, step) for run in ("aux", "no-aux") for step in (0, 2, 4)
    ]
    by = {(r["run"], r["step"]): r for r in result.rows}
    # identical initial weights: same test predictions and main-loss gradients at step 0
    assert by["aux", 0]["accuracy"] == by["no-aux", 0]["accuracy"]
    assert by["aux", 0]["lower_grad_main"] == pytest.approx(by["no-aux", 0]["lower_grad_main"],
                                                            rel=1e-3)  # fmt: skip
    # step 0 by hand: the untrained network on the experiment's fixed 40 test images
    data = ClassificationData("fashion-mnist-mini", val_fraction=0, batch_size=8, seed=tiny.seed)
    (x_test, y_test), _ = aux_loss._fixed_batches(data, tiny)
    untrained, _ = aux_loss.build_pair(tiny)
    with torch.no_grad():
        right = untrained.eval()(x_test).argmax(1) == y_test
    assert len(y_test) == 40
    assert by["aux", 0]["accuracy"] == pytest.approx(right.float().mean().item(), abs=1e-4)
    for r in result.rows:
        assert r["accuracy"] * 40 == pytest.approx(round(r["accuracy"] * 40), abs=1e-3)
        assert r["lower_grad_main"] > 0
        assert r["lower_grad_main"] >= r["inception3a_grad_main"]
        assert (r["lower_grad_total"] == "") == (r["run"] == "no-aux")
        if r["run"] == "aux":
            assert r["lower_grad_aux_only"] > 0
    payload = json.loads((tmp_path / "a" / "results.json").read_text())
    assert payload["rows"] == result.rows
    assert set(payload["settings"]["final_test_accuracy"]) == {"aux", "no-aux"}
    markdown = (tmp_path / "a" / "results.md").read_text()
    assert "| run | step | accuracy |" in markdown and "| no-aux | 4 |" in markdown
    for name in ("aux_loss_accuracy", "aux_loss_gradients_init", "aux_loss_gradients_trained"):
        assert (tmp_path / "a" / f"{name}.png").stat().st_size > 5000
        assert f"![{name}]({name}.png)" in markdown


# -- bottleneck --------------------------------------------------------------------------
@pytest.mark.parametrize("c", [4, 8])
def test_bottleneck_block_macs_against_basic_blocks(c):
    hw = 7 * 7
    bottle = Bottleneck(4 * c, c)
    same_out = BasicBlock(4 * c, 4 * c)  # same input and output width
    same_mid = BasicBlock(c, c)  # same 3x3 width (He et al.'s pairing)
    # convolution MACs only: 1x1 (4c->c) + 3x3 (c->c) + 1x1 (c->4c) = 17 c^2 per pixel
    assert count_macs(bottle, (4 * c, 7, 7)) == 17 * c * c * hw
    assert count_macs(same_out, (4 * c, 7, 7)) == 2 * 9 * 16 * c * c * hw
    assert count_macs(same_mid, (c, 7, 7)) == 2 * 9 * c * c * hw

    def params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert params(bottle) < params(same_out) / 10
    assert params(bottle) < params(same_mid) * 1.2


def test_variants_layout_params_and_macs():
    models = {v: bottleneck.build_variant(v, width=8, blocks=2) for v in bottleneck.VARIANTS}
    outs = {v: [f.channels for f in m.feature_info[1:]] for v, m in models.items()}
    assert outs == {"basic": [8, 16, 32], "bottleneck": [32, 64, 128],
                    "bottleneck-same-out": [8, 16, 32]}  # fmt: skip
    layers = {v: bottleneck.weighted_layers(m) for v, m in models.items()}
    assert layers == {"basic": 6 * 2 + 2, "bottleneck": 9 * 2 + 2, "bottleneck-same-out": 20}
    macs = {v: count_macs(m, (1, 28, 28)) for v, m in models.items()}
    params = {v: sum(p.numel() for p in m.parameters()) for v, m in models.items()}
    assert macs["bottleneck-same-out"] < macs["basic"] / 5
    assert params["bottleneck-same-out"] < params["basic"] / 5
    assert macs["basic"] < macs["bottleneck"] < 2 * macs["basic"]
    assert models["basic"](torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(CnnzooError, match="divisible by 4"):
        bottleneck.build_variant("bottleneck-same-out", width=6)
    with pytest.raises(CnnzooError, match="unknown variant 'wide'"):
        bottleneck.build_variant("wide")


def test_bottleneck_experiment_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    tiny = bottleneck.BottleneckSettings(width=8, blocks=1, steps=3, batch_size=8,
                                         infer_batch=8, timing_steps=1)  # fmt: skip
    monkeypatch.setattr(bottleneck, "QUICK", tiny)
    monkeypatch.setattr(bottleneck, "_dataset", lambda: "fashion-mnist-mini")
    accuracies = []
    fit_and_test = bottleneck.fit_and_test

    def fit_test_and_measure(task, data, *args, **kwargs):
        metrics = fit_and_test(task, data, *args, **kwargs)
        test = data.splits["test"]  # the trained net's test accuracy, by hand
        x = prepare_batch(test.images, data.spec.mean, data.spec.std)
        with torch.no_grad():
            right = task.model.eval()(x).argmax(1) == test.labels
        accuracies.append(right.float().mean().item())
        return metrics

    monkeypatch.setattr(bottleneck, "fit_and_test", fit_test_and_measure)
    result = run_experiment("bottleneck", out=tmp_path / "b", quick=True)
    rows = {r["variant"]: r for r in result.rows}
    assert list(rows) == list(bottleneck.VARIANTS)
    for row, accuracy in zip(result.rows, accuracies, strict=True):
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    for variant, row in rows.items():
        model = bottleneck.build_variant(variant, 8, 1)
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["macs"] == count_macs(model, (1, 28, 28))
        assert row["train_img_s"] > 0 and row["infer_img_s"] > 0
        assert row["layers"] == (8 if variant == "basic" else 11)
    assert rows["bottleneck-same-out"]["macs"] < rows["basic"]["macs"] < rows["bottleneck"]["macs"]
    payload = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["variant"] for r in payload["rows"]] == list(bottleneck.VARIANTS)
    assert payload["settings"]["threads"] == 1
    markdown = (tmp_path / "b" / "results.md").read_text()
    assert "| variant | layers | widths_out |" in markdown
    assert "| bottleneck-same-out | 11 | 8/16/32 |" in markdown
    assert (tmp_path / "b" / "bottleneck.png").stat().st_size > 5000
