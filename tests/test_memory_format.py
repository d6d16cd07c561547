"""Channels-last chosen for the hardware: with ``--precision auto`` a run times both memory
formats on its own model and keeps the faster one, recorded in its config."""

from __future__ import annotations

import time

import pytest
import torch
import yaml
from torch import Tensor, nn

from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks import memory_format
from cnnzoo.tasks.memory_format import (
    MemoryFormatChoice,
    _tensors,
    choose_channels_last,
    format_seconds,
    rule_of_thumb,
)


class SlowIn(nn.Module):
    """A convolution that sleeps when its input is in the named memory format."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.slow = slow

    def forward(self, x: Tensor) -> Tensor:
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if (self.slow == "channels_last") == nhwc:
            time.sleep(0.03)
        return self.bn(self.conv(x))


def test_the_loss_gathers_every_float_tensor_of_an_output() -> None:
    a, b, c = torch.ones(2), torch.full((3,), 2.0), torch.zeros(1, dtype=torch.long)
    assert len(list(_tensors(a))) == 1
    assert len(list(_tensors((a, [b, c], {"k": b})))) == 3  # the integer tensor is left out
    aux = AuxOutput(a, [b, b])
    assert sum(t.sum() for t in _tensors(aux)) == 2 + 6 + 6


@pytest.mark.parametrize("slow", ["channels_last", "contiguous"])
def test_the_faster_format_is_chosen(slow: str) -> None:
    model = SlowIn(slow)
    choice = choose_channels_last(model, torch.randn(4, 3, 8, 8), "32-true")
    assert choice.channels_last is (slow == "contiguous")
    assert choice.reason == "measured (4x3x8x8 batch, 32-true)"
    assert choice.seconds is not None
    assert (
        choice.seconds[slow] > 0.03 > choice.seconds[next(k for k in choice.seconds if k != slow)]
    )


def test_timing_leaves_the_model_as_it_was() -> None:
    model = SlowIn("channels_last").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = format_seconds(model, torch.randn(4, 3, 8, 8), rounds=2)
    assert set(seconds) == {"contiguous", "channels_last"}
    assert all(s > 0 for s in seconds.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert not model.training
    assert model.conv.weight.is_contiguous()
    assert model.conv.weight.grad is None


def test_a_tie_keeps_the_contiguous_format(monkeypatch) -> None:
    same = {"contiguous": 1.0, "channels_last": 0.98}  # 2 % is within the noise
    monkeypatch.setattr(memory_format, "format_seconds", lambda *a, **k: same)
    assert not choose_channels_last(nn.Identity(), torch.randn(1, 1, 2, 2), "32-true").channels_last
    monkeypatch.setattr(memory_format, "format_seconds",
                        lambda *a, **k: {"contiguous": 1.0, "channels_last": 0.9})  # fmt: skip
    assert choose_channels_last(nn.Identity(), torch.randn(1, 1, 2, 2), "32-true").channels_last


@pytest.mark.parametrize(
    ("precision", "expected"), [("bf16-mixed", True), ("16-mixed", True), ("32-true", False)]
)
def test_without_measuring_the_rule_follows_the_precision(precision: str, expected: bool) -> None:
    assert rule_of_thumb(precision) is expected
    choice = choose_channels_last(SlowIn("contiguous"), torch.randn(1, 3, 4, 4), precision,
                                  measure=False, why_not="--deterministic")  # fmt: skip
    assert choice == MemoryFormatChoice(expected, "rule (--deterministic)")
    assert choice.to_dict() == {"channels_last": expected, "chosen_by": "rule (--deterministic)"}


def test_a_model_that_cannot_run_a_random_batch_falls_back_to_the_rule() -> None:
    choice = choose_channels_last(nn.Linear(3, 2), torch.randn(2, 3, 4, 4), "bf16-mixed")
    assert choice.channels_last is True and choice.seconds is None
    assert choice.reason.startswith("rule (could not time the model on a random batch: ")


def _config(run) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_precision_auto_measures_and_records_the_choice(tiny_cfg) -> None:
    from cnnzoo.workflows.train import train

    result = train(tiny_cfg(precision="auto"))
    config = _config(result.run_dir)
    chosen = config["resolved"]["memory_format"]
    assert chosen["chosen_by"].startswith("measured (32x1x28x28 batch, ")
    assert set(chosen["seconds_per_step"]) == {"contiguous", "channels_last"}
    assert config["channels_last"] is chosen["channels_last"]
    # A resumed run keeps the format it started with, unmeasured.
    again = train(tiny_cfg(precision="auto", resume=True))
    kept = _config(again.run_dir)["resolved"]["memory_format"]
    assert kept["channels_last"] is chosen["channels_last"]
    assert kept["chosen_by"] == "rule (resumed: the format the run started with)"


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"precision": "32-true"}, False),  # not auto: off, as before, not measured
     ({"precision": "auto", "channels_last": True}, True),  # the user's choice wins
     ({"precision": "auto", "deterministic": True}, None)],  # no timing noise in the run
)  # fmt: skip
def test_an_explicit_choice_or_a_deterministic_run_is_not_measured(
    tiny_cfg, options: dict, expected: bool | None
) -> None:
    from cnnzoo.tasks.precision import resolve_precision
    from cnnzoo.workflows.train import train

    config = _config(train(tiny_cfg(**options)).run_dir)
    chosen = config["resolved"].get("memory_format")
    if expected is None:  # deterministic: the rule for the resolved precision
        expected = rule_of_thumb(resolve_precision("auto", "cpu"))
        assert chosen["chosen_by"] == "rule (--deterministic)"
    else:
        assert chosen is None
    assert config["channels_last"] is expected
