"""Checkpoints by time and by steps, written atomically, and an exact resume: a training
process killed in the middle of an epoch and resumed with ``--resume`` ends with the weights
and metrics of a run that was never interrupted."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from cnnzoo.data.sampler import GlobalBatchSampler, ResumableLoader
from cnnzoo.errors import CnnzooError
from cnnzoo.tasks.budget import TimeBudget, budgeted
from cnnzoo.tasks.checkpointing import (
    AtomicCheckpointIO,
    Every,
    PeriodicCheckpoint,
    elastic_start,
    parse_every,
)
from cnnzoo.tasks.optim import build_scheduler


@pytest.mark.parametrize(
    ("text", "every"),
    [
        ("10m", Every(seconds=600.0)),
        ("30s", Every(seconds=30.0)),
        ("2h", Every(seconds=7200.0)),
        ("1.5min", Every(seconds=90.0)),
        ("500steps", Every(steps=500)),
        ("100steps", Every(steps=100)),
        ("1step", Every(steps=1)),
        ("off", None),
        (None, None),
    ],
)
def test_checkpoint_every_reads_times_and_steps(text: str | None, every: Every | None) -> None:
    assert parse_every(text) == every


@pytest.mark.parametrize("text", ["10", "ten minutes", "-5m", "0s", "2.5steps", "0steps", "5d"])
def test_checkpoint_every_refuses_other_values_naming_the_forms(text: str) -> None:
    with pytest.raises(CnnzooError) as err:
        parse_every(text)
    message = str(err.value)
    assert repr(text) in message and "10m" in message and "500steps" in message


def test_the_command_line_refuses_a_bad_interval_in_one_line(tmp_path: Path) -> None:
    from cnnzoo.cli import app

    out = tmp_path / "r"
    done = CliRunner().invoke(app, ["train", "lenet5", "--checkpoint-every", "soon",
                                    "--out", str(out)])  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "--checkpoint-every 'soon'" in done.output and "500steps" in done.output
    assert done.output.count("\n") == 1 and not out.exists()


def _served(loader: DataLoader) -> list[list[int]]:
    return [batch[0].flatten().tolist() for batch in loader]


def test_the_training_loader_continues_where_its_state_says() -> None:
    data = TensorDataset(torch.arange(20).view(20, 1))

    def loader() -> ResumableLoader:
        return ResumableLoader(data, batch_sampler=GlobalBatchSampler(20, 6, seed=1))

    first = loader()
    _set_sampler_epoch(first, 2)  # as Lightning does at the start of an epoch
    whole = _served(first)
    it = iter(first)
    taken = [next(it)[0].flatten().tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2} and taken == whole[:2]

    again = loader()
    again.load_state_dict(state)
    assert _served(again) == whole[2:]  # the rest of the epoch, then
    assert _served(again) == whole  # whole epochs again
    done = loader()
    done.load_state_dict({"epoch": 2, "batches": 4})  # the epoch had ended: the next one
    assert done.batch_sampler.epoch == 3 and len(_served(done)) == 4


def test_lightning_draws_a_new_permutation_every_epoch() -> None:
    loader = ResumableLoader(
        TensorDataset(torch.arange(30)), batch_sampler=GlobalBatchSampler(30, 5)
    )
    epochs = []
    for epoch in range(3):
        _set_sampler_epoch(loader, epoch)
        epochs.append([i for batch in _served(loader) for i in batch])
    assert all(sorted(e) == list(range(30)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


def test_a_checkpoint_that_fails_to_write_leaves_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    (tmp_path / ".last.ckpt.abc.tmp").write_bytes(b"half")  # a killed writer's leftover

    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails part-way
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000), "f": lambda: 0}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_torchrun_restart_resumes_or_starts_again(tmp_path: Path, monkeypatch, caplog) -> None:
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: lenet5\n")
    for name in ("TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_USE_AGENT_STORE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert elastic_start(run, last, False, False) == (False, False)  # not under torchrun
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic_start(run, last, False, False) == (False, True)  # nothing saved: again
    last.write_bytes(b"x")
    assert elastic_start(run, last, False, False) == (True, False)  # continue
    last.unlink()
    (run / "model.safetensors").write_bytes(b"x")  # trained, no checkpoint: leave it alone
    assert elastic_start(run, last, False, False) == (False, False)

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    with caplog.at_level("WARNING", logger="cnnzoo"):
        elastic_start(run, last, False, False)
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in caplog.text


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _StopError(Exception):
    pass


class _Tiny(L.LightningModule):
    """Each step costs 0.5 simulated seconds; the run may stop after ``stop`` steps."""

    def __init__(self, clock: _Clock, stop: int | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.clock, self.stop = clock, stop

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        self.clock.now += 0.5
        return nn.functional.mse_loss(self.net(batch[0]), batch[1])

    def on_train_batch_end(self, *args: object) -> None:
        if self.stop is not None and self.global_step >= self.stop:
            raise _StopError

    def configure_optimizers(self) -> dict:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        total = int(self.trainer.estimated_stepping_batches)
        config = build_scheduler("onecycle", opt, total, retargetable=budgeted(self.trainer))
        return {"optimizer": opt, "lr_scheduler": config}


def _budget_run(tmp_path: Path, stop: int | None, resume: bool) -> tuple[L.Trainer, TimeBudget]:
    clock = _Clock()
    budget = TimeBudget(1.0, clock=clock)
    saver = PeriodicCheckpoint(tmp_path / "last.ckpt", Every(steps=25))
    trainer = L.Trainer(max_epochs=5, callbacks=[budget, saver], logger=False,
                        enable_progress_bar=False,
                        enable_model_summary=False, plugins=[AtomicCheckpointIO()])  # fmt: skip
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(800, 4, generator=g), torch.randn(800, 1)), 8)
    ckpt = str(tmp_path / "last.ckpt") if resume else None
    with contextlib.suppress(_StopError):
        trainer.fit(_Tiny(clock, stop), data, ckpt_path=ckpt, weights_only=True)
    return trainer, budget


def test_a_time_interval_checkpoints_every_so_many_seconds_of_training(tmp_path: Path) -> None:
    clock = _Clock()  # each step costs 0.5 simulated seconds: 5 s is 10 steps
    saver = PeriodicCheckpoint(tmp_path / "last.ckpt", parse_every("5s"), clock=clock)
    trainer = L.Trainer(max_epochs=1, callbacks=[saver], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, plugins=[AtomicCheckpointIO()])  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(800, 4), torch.randn(800, 1)), 8)
    with contextlib.suppress(_StopError):
        trainer.fit(_Tiny(clock, stop=37), data)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 30


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before")
def test_a_resumed_time_budget_counts_the_seconds_before_it(tmp_path: Path) -> None:
    whole, _ = _budget_run(tmp_path / "whole", stop=None, resume=False)
    assert whole.global_step == 120  # 100-step epochs of 50 s: one, then 20 steps of a second
    _budget_run(tmp_path / "cut", stop=60, resume=False)  # killed at 30 s, saved at 25 steps
    saved = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 50
    resumed, budget = _budget_run(tmp_path / "cut", stop=None, resume=True)
    assert resumed.global_step == 120  # the rest of the 60 s, not 60 s more
    assert budget.summary(resumed)["seconds"] == pytest.approx(60.0)


# -- a real training process, killed and resumed ------------------------------------------
CLI = [sys.executable, "-m", "cnnzoo.cli", "train"]
# ConvNet with BatchNorm and dropout, augmented data: weights, optimizer, schedule, BN
# statistics, data order and every random draw must all continue exactly. 173 training
# images in batches of 16: 11 steps an epoch; a checkpoint every 3 steps falls mid-epoch.
ARGS = ["convnet", "--model-arg", "widths=[4,8]", "--model-arg", "hidden=16", "--data",
        "fashion-mnist-mini", "--subset", "192", "--batch-size", "16", "--epochs", "2",
        "--seed", "3", "--no-progress", "--accelerator", "cpu",
        "--checkpoint-every", "3steps"]  # fmt: skip
PER_EPOCH = 11


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([*CLI, *ARGS, "--out", str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def kill_after_checkpoint(proc: subprocess.Popen, last: Path, target: int, per_epoch: int,
                          pid: int | None = None) -> dict:  # fmt: skip
    """SIGKILL ``pid`` (default: ``proc``) as soon as ``last`` holds a mid-epoch checkpoint
    at step ``target`` or later; return that checkpoint."""
    while proc.poll() is None:
        if last.is_file():
            saved = torch.load(last, weights_only=True, map_location="cpu")
            if saved["global_step"] >= target and saved["global_step"] % per_epoch:
                os.kill(pid or proc.pid, signal.SIGKILL)
                return saved
        time.sleep(0.01)
    raise AssertionError(f"the run ended before a checkpoint at step {target}: {proc.returncode}")


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(tmp_path: Path) -> None:
    target = random.Random().choice([3, 6, 9, 12, 15, 18])  # a checkpoint inside an epoch
    whole = _start(tmp_path / "whole")  # the uninterrupted run, alongside
    cut = _start(tmp_path / "cut")
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    kill_after_checkpoint(cut, last, target, PER_EPOCH)
    cut.wait()
    assert cut.returncode == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)  # the file is whole: it loads
    step = saved["global_step"]
    position = saved["ClassificationData"]["train_loader"]
    assert position == {"epoch": step // PER_EPOCH, "batches": step % PER_EPOCH}, target
    assert 0 < position["batches"] < PER_EPOCH  # killed part-way through an epoch

    _finish(_start(tmp_path / "cut", "--resume"))
    _finish(whole)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=f"{key} (step {step})")
    m1 = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m2["metrics"] == pytest.approx(m1["metrics"], abs=1e-6)
    assert m2["epochs"] == m1["epochs"] == 2
    assert m2["seconds"] >= saved["cnnzoo"]["seconds"]  # the earlier run's time counts
    rows = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))
    ref = list(csv.DictReader((tmp_path / "whole" / "metrics.csv").open()))
    assert len(rows) == len(ref) == 2
    for row, expected in zip(rows, ref, strict=True):  # the interrupted epoch's averages too
        assert row.pop("seconds") and expected.pop("seconds")
        assert {k: float(v) for k, v in row.items()} == pytest.approx(
            {k: float(v) for k, v in expected.items()}, abs=1e-6
        )
    seconds = [
        float(r["seconds"]) for r in csv.DictReader((tmp_path / "cut" / "metrics.csv").open())
    ]
    assert seconds == sorted(seconds)  # the clock went on across the restart


class _StopAt(L.Callback):
    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if self.step is not None and trainer.global_step >= self.step:
            raise _StopError


@pytest.mark.slow
def test_a_gan_stopped_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    # manual optimisation (two optimizer steps a batch), a generator and a discriminator
    from cnnzoo.families.base import TrainConfig
    from cnnzoo.workflows.train import train

    cfg = TrainConfig(model="dcgan", data="fashion-mnist-mini", subset=96, batch_size=16,
                      epochs=2, progress=False, accelerator="cpu", checkpoint_every="2steps",
                      seed=1, fid_samples=0)  # fmt: skip

    def run(out: str, stop: int | None = None, resume: bool = False) -> None:
        def adapt(job):
            job.callbacks.append(_StopAt(stop))
            return job

        with contextlib.suppress(_StopError):
            train(replace(cfg, out=str(tmp_path / out), resume=resume), adapt)

    run("whole")
    run("cut", stop=17)  # 12 steps an epoch: the checkpoint of step 16, inside epoch 2
    assert (
        torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)["global_step"] == 16
    )
    run("cut", resume=True)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [r.split(",")[:2] + r.split(",")[3:] for r in (tmp_path / "cut/metrics.csv").open()]
    ref = [r.split(",")[:2] + r.split(",")[3:] for r in (tmp_path / "whole/metrics.csv").open()]
    assert rows == ref
