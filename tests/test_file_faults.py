"""Disk and file faults: a full disk, a damaged or unsafe checkpoint, weights edited after
training. Each ends in one line that names the file, and leaves the previous files intact."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cnnzoo import CnnzooError
from cnnzoo.errors import load_error_line
from cnnzoo.files import atomic_write_bytes, atomic_writer
from cnnzoo.rundir import RunDir
from cnnzoo.workflows.train import TrainConfig, train


def _config(out: Path, **overrides) -> TrainConfig:
    base = dict(model="convnet", data="fashion-mnist-mini", out=str(out), epochs=2,
                batch_size=32, subset=128, val_fraction=0.25,
                model_kwargs={"widths": [8, 16], "hidden": 16}, progress=False,
                accelerator="cpu", scheduler="none")  # fmt: skip
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished two-epoch run (best.ckpt, last.ckpt, model.safetensors), trained once
    (a constant lr, so a resumed run may go on for more epochs)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(_config(out))
    return out


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run this test may damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


class _FullDisk:
    """A file whose disk fills up after ``room`` bytes: what is written up to there stays
    (a half-written file), then ``write`` raises ENOSPC."""

    def __init__(self, real: io.BufferedWriter, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.real.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def _fill_disk(monkeypatch, names: tuple[str, ...], room: int = 16) -> None:
    """Make every cnnzoo write of a file named in ``names`` hit a full disk."""
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args, **kwargs):
        real = real_fdopen(fd, *args, **kwargs)
        target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if any(target.startswith(f".{name}.") for name in names):  # atomic_writer's temp
            return _FullDisk(real, room)
        return real

    monkeypatch.setattr("cnnzoo.files.os.fdopen", fdopen)


def _one_line(message: str) -> str:
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


# -- 4a: a full disk ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_keeps_the_previous_file_and_leaves_no_temporary(where, tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_write_bytes(path, b"the previous checkpoint")
    if where == "write":
        _fill_disk(monkeypatch, ("last.ckpt",))
    else:  # a file system that reports the full disk only when the data is flushed

        def fsync(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr("cnnzoo.files.os.fsync", fsync)
    with pytest.raises(CnnzooError) as err:
        atomic_write_bytes(path, b"x" * 1000)
    message = _one_line(str(err.value))
    assert f"no space left on device while writing {path}" in message
    assert "the previous last.ckpt is intact" in message
    assert path.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_full_disk_on_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    _fill_disk(monkeypatch, ("model.safetensors",))
    with pytest.raises(CnnzooError, match="no partial model.safetensors was left"):
        atomic_write_bytes(tmp_path / "model.safetensors", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_atomic_writer_publishes_only_a_finished_file(tmp_path):
    path = tmp_path / "last.ckpt"
    with atomic_writer(path) as f:
        torch.save({"state_dict": {"w": torch.ones(2)}}, f)
    assert torch.load(path, weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="interrupted"), atomic_writer(path) as f:
        f.write(b"half a checkpoint")
        raise ValueError("interrupted")
    assert torch.load(path, weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_full_disk_while_saving_the_model_keeps_the_previous_weights(run_copy, monkeypatch):
    run = RunDir.open(run_copy)
    before = (run.weights.read_bytes(), run.spec_file.read_bytes())
    model, spec = run.load_model()
    _fill_disk(monkeypatch, ("model.safetensors", "model.json"))
    with pytest.raises(CnnzooError, match="no space left on device while writing .*model"):
        run.save_model(model, spec)
    assert (run.weights.read_bytes(), run.spec_file.read_bytes()) == before
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]
    run.load_model()  # still whole, and its recorded hash still fits


def test_full_disk_during_training_is_one_line(tmp_path, monkeypatch):
    """The disk fills up as epoch 2's row of metrics.csv is written: the run stops with one
    line; epoch 1's table and checkpoint are intact."""
    import cnnzoo.workflows.train as workflow

    real = workflow.EpochTable.on_train_epoch_end

    def second_epoch_hits_a_full_disk(self, trainer, module):
        if trainer.current_epoch == 1:
            _fill_disk(monkeypatch, ("metrics.csv",))
        real(self, trainer, module)

    monkeypatch.setattr(workflow.EpochTable, "on_train_epoch_end", second_epoch_hits_a_full_disk)
    out = tmp_path / "run"
    with pytest.raises(CnnzooError) as err:
        train(_config(out))
    message = _one_line(str(err.value))
    assert f"no space left on device while writing {out / 'metrics.csv'}" in message
    assert "the previous metrics.csv is intact" in message
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")  # the header and epoch 1
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not [p for p in out.rglob("*.tmp")]


def test_full_disk_while_lightning_writes_last_ckpt_is_one_line(tmp_path, monkeypatch):
    """Lightning's checkpoints go through cnnzoo's CheckpointIO (atomic_writer): the disk
    fills up as epoch 2's last.ckpt is written; epoch 1's last.ckpt is intact."""
    import cnnzoo.workflows.train as workflow

    real = workflow.EpochTable.on_train_epoch_end

    def full_at_epoch_2s_checkpoint(self, trainer, module):  # checkpoints are saved after
        real(self, trainer, module)
        if trainer.current_epoch == 1:
            _fill_disk(monkeypatch, ("last.ckpt",), room=4096)

    monkeypatch.setattr(workflow.EpochTable, "on_train_epoch_end", full_at_epoch_2s_checkpoint)
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    with pytest.raises(CnnzooError) as err:
        train(_config(out))
    message = _one_line(str(err.value))
    assert f"no space left on device while writing {last}; the previous last.ckpt is intact" in (
        message
    )
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert not [p for p in out.rglob("*.tmp")]


# -- 4b and 7: a damaged or unsafe last.ckpt ----------------------------------------------


class _Evil:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _damage(path: Path, how: str, marker: Path) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a checkpoint that runs code when unpickled
        checkpoint = torch.load(path, weights_only=True)
        torch.save({**checkpoint, "callbacks": _Evil(marker)}, path)


@pytest.mark.parametrize(
    ("how", "found"),
    [
        ("truncated", "it is damaged (truncated: its zip directory is missing)"),
        ("empty", "it is damaged (empty or truncated)"),
        ("evil", "refused to unpickle it: it asks for posix.system"),
    ],
)
def test_a_bad_last_checkpoint_is_refused_offering_best(how, found, run_copy, tmp_path):
    last = run_copy / "checkpoints" / "last.ckpt"
    best = run_copy / "checkpoints" / "best.ckpt"
    _damage(last, how, tmp_path / "pwned")
    with pytest.raises(CnnzooError) as err:
        train(_config(run_copy, epochs=3, resume=True))
    message = _one_line(str(err.value))
    assert message.startswith(f"cannot resume from {last}: {found}")
    assert f"cp {best} {last}" in message and "--overwrite" in message
    if how == "evil":
        assert "cnnzoo never unpickles untrusted files" in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # the run was copied
def test_following_the_advice_resumes_from_best(run_copy):
    last = run_copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    shutil.copyfile(run_copy / "checkpoints" / "best.ckpt", last)
    result = train(_config(run_copy, epochs=3, resume=True))
    assert result.epochs == 3


def test_without_a_sound_best_the_advice_is_to_start_again(run_copy):
    checkpoints = run_copy / "checkpoints"
    (checkpoints / "last.ckpt").write_bytes(b"not a checkpoint at all")
    (checkpoints / "best.ckpt").unlink()
    with pytest.raises(CnnzooError, match=r"no sound best.ckpt .* start again with --overwrite"):
        RunDir.create(run_copy, resume=True)


def test_cli_resume_from_an_evil_checkpoint_is_one_line_exit_2(run_copy, tmp_path):
    from cnnzoo.cli import app

    last = run_copy / "checkpoints" / "last.ckpt"
    _damage(last, "evil", tmp_path / "pwned")
    done = CliRunner().invoke(app, ["train", "convnet", "--data", "fashion-mnist-mini",
                                    "--out", str(run_copy), "--resume", "--no-progress",
                                    "--accelerator", "cpu"])  # fmt: skip
    assert done.exit_code == 2, done.output
    message = _one_line(done.output)
    assert f"cannot resume from {last}" in message
    assert "it asks for posix.system" in message and "never unpickles untrusted files" in message
    assert not (tmp_path / "pwned").exists()


def test_cli_evil_pth_as_weights_is_one_line_exit_2(tmp_path):
    from cnnzoo.cli import app

    evil = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.ones(1), "x": _Evil(tmp_path / "pwned")}, evil)
    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["train", "convnet", "--weights", str(evil), "--data",
                                    "fashion-mnist-mini", "--out", str(out), "--no-progress",
                                    "--accelerator", "cpu"])  # fmt: skip
    assert done.exit_code == 2, done.output
    message = _one_line(done.output)
    assert f"cannot read weights from {evil}: refused to unpickle it" in message
    assert "it asks for posix.system" in message and "never unpickles untrusted files" in message
    assert "save a state dict instead" in message
    assert not (tmp_path / "pwned").exists() and not out.exists()


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", "it is damaged (empty or truncated)"),
        (b"hello world" * 10, "it is damaged (not a file that torch.save wrote)"),
    ],
)
def test_load_errors_are_one_line(data, found, tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(data)
    with pytest.raises(Exception) as err:
        torch.load(path, weights_only=True)
    assert load_error_line(err.value) == found


def test_a_pickle_of_a_class_names_the_class(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(1), "when": Path("x")}, path)
    with pytest.raises(Exception) as err:
        torch.load(path, weights_only=True)
    line = _one_line(load_error_line(err.value))
    assert line.startswith("refused to unpickle it: it asks for pathlib.")


# -- 4c: weights edited after training ----------------------------------------------------


def _edit_weights(run: Path) -> None:
    state = load_file(run / "model.safetensors")
    key = next(iter(state))
    state[key] = state[key] + 0.01
    save_file(state, run / "model.safetensors")


def test_weights_changed_after_training_are_refused_with_their_hash(run_copy):
    from cnnzoo.files import sha256_file

    spec = json.loads((run_copy / "model.json").read_text())
    recorded = spec["sha256"]["model.safetensors"]
    assert recorded == sha256_file(run_copy / "model.safetensors")
    _edit_weights(run_copy)
    found = sha256_file(run_copy / "model.safetensors")
    for load in (lambda: RunDir.open(run_copy).load_model(),
                 lambda: __import__("cnnzoo").load_weights(
                     __import__("cnnzoo").create_model("convnet", widths=[8, 16], hidden=16),
                     run_copy)):  # fmt: skip
        with pytest.raises(CnnzooError) as err:
            load()
        message = _one_line(str(err.value))
        assert f"{run_copy / 'model.safetensors'} was changed after training" in message
        assert recorded[:12] in message and found[:12] in message


def test_cli_eval_of_edited_weights_is_one_line_exit_2(run_copy):
    from cnnzoo.cli import app

    _edit_weights(run_copy)
    done = CliRunner().invoke(app, ["eval", str(run_copy)])
    assert done.exit_code == 2, done.output
    assert "was changed after training" in _one_line(done.output)


def test_runs_written_before_hashes_were_kept_still_load(run_copy):
    spec_file = run_copy / "model.json"
    spec = json.loads(spec_file.read_text())
    del spec["sha256"]
    spec_file.write_text(json.dumps(spec))
    _edit_weights(run_copy)  # nothing to compare with: loaded as it is
    model, _ = RunDir.open(run_copy).load_model()
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_damaged_epoch_table_on_resume_is_one_line(tmp_path: Path) -> None:
    from cnnzoo.workflows.train import EpochTable

    table = tmp_path / "metrics.csv"
    table.write_bytes(b"epoch,step\n1,10\n\xff\xfe,\n")
    with pytest.raises(CnnzooError, match=r"metrics.csv is not UTF-8 text") as info:
        EpochTable(table, 0.0)
    assert "\n" not in str(info.value)
    table.write_text("epoch,step\n1,10\nnot a number,3\n2,20\n")
    assert [r["epoch"] for r in EpochTable(table, 0.0).rows] == ["1", "2"]
