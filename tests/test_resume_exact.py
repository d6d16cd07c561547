"""Exact resume beyond the plain case of ``test_resume.py``: a weight average (``--ema-decay``),
worker processes that augment (``--num-workers``), and a different number of processes.

Each kill is a real ``SIGKILL`` of a ``cnnzoo train`` process, sent by the process itself at
a chosen step right after that step's mid-epoch checkpoint (no race with a poller); the
uninterrupted run and the resumed one run in this process, through the same command line.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from safetensors.torch import load_file
from torch.utils.data import Dataset, TensorDataset
from typer.testing import CliRunner

from cnnzoo.data.sampler import GlobalBatchSampler, ResumableLoader
from cnnzoo.tasks.checkpointing import ResumeState

# Runs the command line with one more callback: SIGKILL of its own process at the start of
# the first batch after optimisation step STEP (whose checkpoint is then on the disk).
KILLER = """
import os, signal, sys
import lightning as L
from cnnzoo.cli import app

STEP = int(os.environ["CNNZOO_TEST_KILL_AT"])

class Kill(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step >= STEP:
            os.kill(os.getpid(), signal.SIGKILL)

init = L.Trainer.__init__
def with_kill(self, *args, callbacks=None, **kwargs):
    init(self, *args, callbacks=[*(callbacks or []), Kill()], **kwargs)
L.Trainer.__init__ = with_kill
app(["train", *sys.argv[1:]], prog_name="cnnzoo")
"""


def _cli(*args: str) -> None:
    from cnnzoo.cli import app

    done = CliRunner().invoke(app, ["train", *args])
    assert done.exit_code == 0, (done.output[-3000:], done.exception)


def killed_and_resumed(tmp_path: Path, args: list[str], step: int) -> dict:
    """Train ``args`` uninterrupted into ``tmp_path/whole``; train them into ``tmp_path/cut``
    in a process SIGKILLed after the checkpoint of ``step``, then resume that one. Return the
    checkpoint the resume started from."""
    # one thread, as this process (conftest.py)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "CNNZOO_TEST_KILL_AT": str(step)}  # fmt: skip
    command = [sys.executable, "-c", KILLER, *args, "--out", str(tmp_path / "cut")]
    cut = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    _cli(*args, "--out", str(tmp_path / "whole"))  # meanwhile
    _, err = cut.communicate(timeout=600)
    assert cut.returncode == -signal.SIGKILL, err[-3000:]
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == step
    _cli(*args, "--out", str(tmp_path / "cut"), "--resume")
    return saved


def same_run(a: Path, b: Path) -> None:
    """Assert bit-identical weights, equal final metrics and equal ``metrics.csv`` rows (the
    interrupted epoch's ``train/*`` averages too); the seconds may differ."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), (key, (wa[key] - wb[key]).abs().max())
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert mb["metrics"] == ma["metrics"] and mb["epochs"] == ma["epochs"]
    rows = [list(csv.DictReader((run / "metrics.csv").open())) for run in (a, b)]
    for row in (*rows[0], *rows[1]):
        assert row.pop("seconds")
    assert rows[1] == rows[0] and len(rows[0]) == ma["epochs"]


# ConvNet with BatchNorm and dropout, batch augmentation, an EMA of the weights (and of the
# BN statistics): 86 training images in batches of 16, 6 steps an epoch.
EMA_ARGS = ["convnet", "--model-arg", "widths=[4,8]", "--model-arg", "hidden=16", "--data",
            "fashion-mnist-mini", "--subset", "96", "--batch-size", "16", "--epochs", "2",
            "--seed", "5", "--no-progress", "--accelerator", "cpu", "--checkpoint-every",
            "2steps", "--ema-decay", "0.9"]  # fmt: skip


@pytest.mark.slow
def test_a_run_with_a_weight_average_killed_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    step = random.Random().choice([2, 4, 8, 10])  # inside epoch 1 or 2
    saved = killed_and_resumed(tmp_path, EMA_ARGS, step)
    assert saved["averaging_state"]["n_averaged"] == step  # the average is in the checkpoint
    average, current = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(average[k], current[k]) for k in average)  # not the weights
    same_run(tmp_path / "whole", tmp_path / "cut")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnzoo.data.scenes import generate_scenes

    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=40, n_test=4, size=32)


@pytest.mark.slow
def test_a_run_whose_workers_augment_killed_mid_epoch_resumes_exactly(
    scenes: Path, tmp_path: Path
) -> None:
    # segmentation: two worker processes draw each sample's random rescale, crop and flip
    # (global generators); 30 training scenes in batches of 4, 8 steps an epoch
    args = ["unet", "--model-arg", "width=4", "--model-arg", "depth=2", "--data",
            f"masks:{scenes}", "--val-fraction", "0.25", "--batch-size", "4", "--epochs", "2",
            "--seed", "2", "--no-progress", "--accelerator", "cpu", "--snapshots", "0",
            "--num-workers", "2", "--checkpoint-every", "1step"]  # fmt: skip
    step = random.Random().choice([3, 5, 10, 13])
    saved = killed_and_resumed(tmp_path, args, step)
    assert saved["global_step"] % 8  # part-way through an epoch
    same_run(tmp_path / "whole", tmp_path / "cut")


class _Draws(Dataset):
    """Sample ``i`` is ``i`` and a draw of each global generator (an augmenting dataset)."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> list[float]:
        return [i, float(torch.rand(())), float(np.random.rand()), random.random()]


def _samples(batches: list) -> list[list[float]]:
    return [sample for batch in batches for sample in batch]


def _epochs(loader: ResumableLoader, epochs: list[int]) -> list[list[list[float]]]:
    out = []
    for epoch in epochs:
        _set_sampler_epoch(loader, epoch)  # as Lightning does at the start of an epoch
        out.append(_samples(list(loader)))
    return out


def test_worker_draws_belong_to_the_sample_not_to_the_worker() -> None:
    def loader(workers: int) -> ResumableLoader:
        return ResumableLoader(_Draws(), batch_sampler=GlobalBatchSampler(24, 4, seed=1),
                               num_workers=workers, persistent_workers=workers > 0,
                               collate_fn=list)  # fmt: skip

    two = _epochs(loader(2), [0, 1])  # persistent workers: epoch 1 follows epoch 0
    assert _epochs(loader(1), [0, 1]) == two  # the same draws with another number of workers
    resumed = loader(2)  # fresh workers, part-way through epoch 1
    resumed.load_state_dict({"epoch": 1, "batches": 2})
    assert _samples(list(resumed)) == two[1][8:]
    by_sample = [{s[0]: s[1:] for s in epoch} for epoch in two]
    assert len({tuple(d) for d in by_sample[0].values()}) == 24  # all different
    assert all(by_sample[0][i] != by_sample[1][i] for i in range(24))  # new ones each epoch
    assert _epochs(loader(0), [0])[0] != two[0]  # without workers: the main process's draws


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (4, 2), (2, 4)])
def test_a_resume_on_another_number_of_processes_reads_the_rest_of_the_epoch_once(
    before: int, after: int
) -> None:
    data = TensorDataset(torch.arange(52))  # global batches of 8: 6, and one of 4

    def ranks(world: int) -> list[ResumableLoader]:
        return [ResumableLoader(data, batch_sampler=GlobalBatchSampler(52, 8, seed=7, rank=r,
                                                                       world_size=world))
                for r in range(world)]  # fmt: skip

    def global_batches(loaders: list[ResumableLoader], count: int | None = None) -> list:
        shares = [iter(loader) for loader in loaders]
        steps = zip(*shares, strict=True) if count is None else (
            tuple(next(s) for s in shares) for _ in range(count))  # fmt: skip
        return [sorted(i for share in step for i in share[0].tolist()) for step in steps]

    reference = ranks(1)
    _set_sampler_epoch(reference[0], 3)
    whole = global_batches(reference)
    for done in range(1, 7):
        killed = ranks(before)
        for loader in killed:
            _set_sampler_epoch(loader, 3)
        first = global_batches(killed, done)
        states = [loader.state_dict() for loader in killed]
        assert states == [{"epoch": 3, "batches": done}] * before  # rank 0's is saved
        resumed = ranks(after)
        for loader in resumed:
            loader.load_state_dict(states[0])
        rest = global_batches(resumed)
        assert first + rest == whole, done  # the same global batches, in the same order
        seen = [i for batch in first + rest for i in batch]
        assert sorted(seen) == list(range(52)), done  # none twice, none skipped


class _Data:
    batch_size = 8


def test_a_resume_on_another_number_of_processes_says_what_it_keeps() -> None:
    rngs = [{"torch": torch.get_rng_state()}, {"torch": torch.zeros(5, dtype=torch.uint8)}]
    checkpoint = {
        "cnnzoo": {"seconds": 12.5, "rng": rngs, "epoch_sums": [{"logged": {}}, None]},
        "_Data": {"train_loader": {"epoch": 1, "batches": 3}},
    }
    same = ResumeState()  # the same two processes: each takes its own generators
    same.on_load_checkpoint(SimpleNamespace(world_size=2, global_rank=1), None, checkpoint)
    assert same._rng is rngs[1] and same._sums is None and same.previous == 12.5

    one = ResumeState()
    trainer = SimpleNamespace(world_size=1, global_rank=0, datamodule=_Data())
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("cnnzoo").addHandler(handler)  # (the CLI stops it propagating)
    try:
        one.on_load_checkpoint(trainer, None, checkpoint)
    finally:
        logging.getLogger("cnnzoo").removeHandler(handler)
    (line,) = [r.getMessage() for r in records]
    assert "\n" not in line
    assert "written by 2 processes with 1" in line
    assert "same global sample position (epoch 2, after 3 global batches = 24 samples)" in line
    assert "weights, optimizer, schedule and weight average restored" in line
    assert "draw afresh from --seed" in line and "train/* averages" in line
    assert one._rng is None and one._sums is None and one.previous == 12.5
