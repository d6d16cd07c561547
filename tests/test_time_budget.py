"""Time-boxed training: the schedule shapes, retargeting, the epoch arithmetic, a simulated
clock through a real Lightning loop, and one real 1-minute run."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnzoo.errors import CnnzooError
from cnnzoo.tasks.budget import Plan, TimeBudget, budgeted, fit_epochs, plan_run
from cnnzoo.tasks.optim import START, WARMUP, ProgressSchedule, build_scheduler, progress_factor


@pytest.mark.parametrize(
    ("name", "progress", "expected"),
    [
        ("onecycle", 0.0, START),
        ("onecycle", WARMUP / 2, START + (1 - START) / 2),
        ("onecycle", WARMUP, 1.0),
        ("onecycle", (1 + WARMUP) / 2, 0.5),
        ("onecycle", 1.0, 0.0),
        ("onecycle", 1.7, 0.0),  # past the end: stays at the final value
        ("cosine", 0.0, 1.0),
        ("cosine", 0.5, 0.5),
        ("cosine", 1.0, 0.0),
        ("step", 0.2, 1.0),
        ("step", 0.5, 0.1),
        ("step", 0.9, 0.01),
        ("step", 1.0, 0.01),
        ("none", 0.7, 1.0),
    ],
)
def test_progress_factor_shapes(name: str, progress: float, expected: float) -> None:
    assert progress_factor(name, progress) == pytest.approx(expected, abs=1e-12)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(CnnzooError, match="unknown scheduler 'linear'"):
        progress_factor("linear", 0.5)


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def test_retargeting_moves_the_end_of_the_schedule() -> None:
    opt = _optimizer(0.1)
    schedule = ProgressSchedule(opt, "cosine", total_steps=100)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(20):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    schedule.retarget(40)  # the lr moves to the new curve at once: 20 of 40 done
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    for _ in range(20):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    state = schedule.state_dict()
    again = ProgressSchedule(_optimizer(0.1), "cosine", total_steps=1)
    again.load_state_dict(state)
    assert again.total == 40 and again.last_epoch == 40


def test_build_scheduler_returns_a_progress_schedule_only_when_asked() -> None:
    plain = build_scheduler("onecycle", _optimizer(), 100)
    budget = build_scheduler("onecycle", _optimizer(), 100, retargetable=True)
    assert plain is not None and not isinstance(plain["scheduler"], ProgressSchedule)
    assert budget is not None and isinstance(budget["scheduler"], ProgressSchedule)
    assert budget["interval"] == "step"
    assert build_scheduler("none", _optimizer(), 100, retargetable=True) is None


@pytest.mark.parametrize(
    ("budget", "elapsed", "done", "epoch", "expected"),
    [
        (60, 0, 0, 10, 6),  # before any epoch: 6 fit
        (60, 20, 2, 10, 6),  # on plan
        (60, 24, 2, 12, 5),  # slower than thought: 36 s left = 3 more
        (60, 56, 5, 11.2, 5),  # 4 s left of an 11 s epoch: stop now
        (60, 54, 5, 10.8, 6),  # 6 s left: one more ends nearer the budget than stopping
        (60, 70, 7, 10, 7),  # over budget: never fewer than done
        (60, 0, 0, 500, 1),  # one epoch longer than the budget: at least one
    ],
)
def test_fit_epochs(budget: float, elapsed: float, done: int, epoch: float, expected: int) -> None:
    assert fit_epochs(budget, elapsed, done, epoch) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # 10 s epochs of 20 steps, 20 s gone: 4 more whole epochs end on the budget
        ((60, 20, 40, 2, 20, 10, 0.5), Plan(6, 120, False)),
        # 6-minute epochs in 15 minutes: 2 or 3 whole epochs miss by 3 minutes; 2.5 do not
        ((900, 360, 1000, 1, 1000, 360, 0.36), Plan(3, 2500, True)),
        # during the first epoch: 100 s epochs, 60 s budget: the 30 steps that fit
        ((60, 2, 1, 0, 50, 100, 2), Plan(1, 30, True)),
        # no time left: stop where it is
        ((60, 61, 30, 3, 10, 20, 2), Plan(3, 30, False)),
    ],
)
def test_plan_run(args: tuple, expected: Plan) -> None:
    assert plan_run(*args) == expected


def test_non_positive_budget_is_refused() -> None:
    with pytest.raises(CnnzooError, match="--time must be a positive number of minutes, got 0"):
        TimeBudget(0)


class _Clock:
    """Simulated seconds: every training step costs ``step`` s, every validation ``val`` s."""

    def __init__(self, step: float, val: float) -> None:
        self.now, self.step, self.val = 0.0, step, val

    def __call__(self) -> float:
        return self.now


class _Tiny(L.LightningModule):
    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.clock = clock
        self.lrs: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        self.clock.now += self.clock.step
        return nn.functional.mse_loss(self.net(batch[0]), batch[1])

    def on_train_batch_end(self, *args: object) -> None:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self.clock.now += self.clock.val

    def configure_optimizers(self) -> dict:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        total = int(self.trainer.estimated_stepping_batches)
        config = build_scheduler("onecycle", opt, total, retargetable=budgeted(self.trainer))
        return {"optimizer": opt, "lr_scheduler": config}


def _loader(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1)), 8)


@pytest.mark.parametrize(
    ("step", "val", "batches", "epochs", "steps"),
    [
        (0.5, 0.0, 10, 12, 120),  # 5 s epochs in 60 s: 12, the schedule ends with the last
        (0.5, 2.0, 10, 9, 90),  # + 2 s validation: 7 s epochs, round(60 / 7) = 9
        (2.0, 0.0, 50, 1, 30),  # an epoch of 100 s: the 30 steps that fit
        (0.5, 0.0, 100, 2, 120),  # 50 s epochs: one, then the 20 steps that fit of a second
    ],
)
def test_a_simulated_run_fits_the_budget_and_ends_annealed(
    step: float, val: float, batches: int, epochs: int, steps: int
) -> None:
    clock = _Clock(step, val)
    module = _Tiny(clock)
    budget = TimeBudget(1.0, clock=clock)
    trainer = L.Trainer(max_epochs=3, callbacks=[budget], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, _loader(8 * batches), _loader(8))
    assert trainer.current_epoch == epochs and trainer.global_step == steps
    assert abs(clock.now - 60) <= 0.1 * 60
    assert module.lrs[-1] == pytest.approx(0.0, abs=1e-12)  # annealed to the final value
    assert max(module.lrs) == pytest.approx(0.1, rel=0.05)  # it reached the peak on the way
    summary = budget.summary(trainer)
    assert summary["epochs"] == epochs and summary["final_lr"] == pytest.approx(0.0, abs=1e-12)
    assert summary["decisions"][-1]["total_steps"] == steps


def test_a_gan_refuses_a_time_budget(tmp_path) -> None:
    from cnnzoo.workflows.train import TrainConfig, train

    cfg = TrainConfig(model="dcgan", data="fashion-mnist-mini", out=str(tmp_path / "g"),
                      time_minutes=1.0, progress=False)  # fmt: skip
    with pytest.raises(CnnzooError, match="--time fits one learning-rate schedule"):
        train(cfg)
    assert not (tmp_path / "g").exists()  # the refused run leaves nothing behind


@pytest.mark.slow
def test_a_one_minute_run_ends_within_ten_percent_with_the_lr_annealed(tmp_path) -> None:
    from cnnzoo.workflows.train import TrainConfig, train

    cfg = TrainConfig(model="lenet5", data="fashion-mnist-mini", out=str(tmp_path / "r"),
                      time_minutes=1.0, progress=False)  # fmt: skip
    result = train(cfg)
    record = json.loads((tmp_path / "r" / "budget.json").read_text())
    assert abs(record["seconds"] - 60) <= 6, record
    assert abs(result.seconds - 60) <= 6
    assert record["final_lr"] == pytest.approx(0.0, abs=1e-9)  # one-cycle's final value
    assert record["epochs"] == result.epochs >= 2
    assert result.metrics["test/accuracy"] > 0.5


def test_the_command_line_takes_time_and_refuses_a_bad_one(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m", "cnnzoo.cli", "train", "lenet5", "--data",
            "fashion-mnist-mini", "--subset", "256", "--no-progress"]  # fmt: skip
    bad = subprocess.run([*base, "--time", "0", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --time must be a positive number of minutes, got 0.0"
    assert not (tmp_path / "bad").exists()
    good = subprocess.run([*base, "--time", "0.1", "--out", str(tmp_path / "ok")],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert good.returncode == 0, good.stderr
    record = json.loads((tmp_path / "ok" / "budget.json").read_text())
    config = yaml.safe_load((tmp_path / "ok" / "config.yaml").read_text())
    assert config["time_minutes"] == 0.1 and record["budget_seconds"] == 6.0
    assert record["decisions"] and record["final_lr"] == pytest.approx(0.0, abs=1e-9)
