"""Greedy layer-wise training (frozen levels, growing net) and the layerwise experiment."""

from __future__ import annotations

import json

import pytest
import torch

import cnnzoo.experiments.layerwise as lw
from cnnzoo import CnnzooError
from cnnzoo.experiments import run_experiment


def _batches() -> lw.Batches:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 12, 12, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    return lw.Batches(x, y, 16, seed=0)


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant", ["relu-bn", "sigmoid"])
def test_greedy_training_freezes_earlier_levels_and_grows(variant):
    torch.manual_seed(0)
    net = lw.LevelNet((4, 4, 8), (1, 2, 1), variant)
    net.depth = 1
    net.head = net.new_head()
    batches = _batches()
    level0 = _clone(net.levels[0])
    assert lw.train_steps(net, batches, 3, 0.1, 0.0)
    trained0 = _clone(net.levels[0])
    assert any(not torch.equal(level0[k], trained0[k]) for k in level0)  # level 1 learned

    old_head = net.head
    lw.grow(net)
    assert net.depth == 2 and net.head is not old_head
    assert net.head[-1].in_features == 4 * lw.HEAD_GRID**2  # the new head reads level 2
    assert not any(p.requires_grad for p in net.levels[0].parameters())
    level1 = _clone(net.levels[1])
    assert lw.train_steps(net, batches, 3, 0.1, 0.0)
    after0 = _clone(net.levels[0])
    for k in trained0:  # weights and BN statistics of the frozen level: unchanged
        assert torch.equal(trained0[k], after0[k]), k
    assert any(not torch.equal(level1[k], net.levels[1].state_dict()[k]) for k in level1)
    assert not net.levels[0].training and net.levels[1].training

    lw.grow(net)
    assert net(torch.randn(2, 1, 12, 12)).shape == (2, 10)
    with pytest.raises(CnnzooError, match="already in use"):
        lw.grow(net)


def test_level_steps_split_the_budget():
    assert lw.level_steps(10, 3) == [3, 3, 4]
    assert sum(lw.level_steps(2000, 10)) == 2000


def test_bad_variant_is_named():
    with pytest.raises(CnnzooError, match="'gelu'"):
        lw.LevelNet((4,), (1,), "gelu")


def test_layerwise_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    tiny = lw.LayerwiseSettings(
        widths=(4, 8, 8), strides=(1, 2, 1), steps=7, batch_size=8, eval_every=2,
        test_images=40,
    )  # fmt: skip
    monkeypatch.setattr(lw, "QUICK", tiny)
    monkeypatch.setattr(lw, "_dataset", lambda: "fashion-mnist-mini")
    nets = []

    class KeptLevelNet(lw.LevelNet):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            nets.append(self)

    monkeypatch.setattr(lw, "LevelNet", KeptLevelNet)
    result = run_experiment("layerwise", out=tmp_path / "lw", quick=True)
    assert [(r["variant"], r["method"]) for r in result.rows] == [
        (v, m) for v in ("relu-bn", "sigmoid") for m in ("greedy", "end-to-end")
    ]
    for row in result.rows:
        assert row["steps"] == 7 and row["levels"] == 3  # same budget, full depth at the end
        assert len(row["accuracy_curve"]) == 4  # steps 2, 4, 6 and the last
        assert row["accuracy_curve"][-1] == pytest.approx(row["accuracy"], abs=1e-4)
    # each row's accuracy is its trained net's, by hand, on the first 40 test images
    _, _, test_x, test_y = lw.load_data("fashion-mnist-mini")
    assert len(nets) == len(result.rows)
    for row, net in zip(result.rows, nets, strict=True):
        assert net.depth == 3
        with torch.no_grad():
            right = net.eval()(test_x[:40]).argmax(1) == test_y[:40]
        assert row["accuracy"] == pytest.approx(right.float().mean().item(), abs=1e-4)
    payload = json.loads((tmp_path / "lw" / "results.json").read_text())
    assert payload["figures"] == ["layerwise.png"]
    assert (tmp_path / "lw" / "layerwise.png").read_bytes()[:4] == b"\x89PNG"
