"""The run directory contract: never clobbered, atomic files, weights without pickle."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo import CnnzooError
from cnnzoo.files import atomic_write_text
from cnnzoo.rundir import RunDir


def test_existing_run_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(CnnzooError, match="already exists.*--overwrite"):
        RunDir.create(tmp_path / "run")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_it(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("x")
    run = RunDir.create(tmp_path / "run", overwrite=True)
    assert not (run.path / "old.txt").exists()
    assert run.plots.is_dir() and run.checkpoints.is_dir()


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(CnnzooError, match="cannot resume"):
        RunDir.create(tmp_path / "run", resume=True)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_model_round_trip_through_safetensors(tmp_path):
    model = cnnzoo.create_model("lenet5", num_classes=3)
    run = RunDir.create(tmp_path / "run")
    run.save_model(model, {"model": "lenet5", "kwargs": {"num_classes": 3}})
    loaded, spec = RunDir.open(run.weights).load_model()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    assert spec["model"] == "lenet5"


def test_open_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CnnzooError, match="is not a cnnzoo run"):
        RunDir.open(tmp_path)


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    import os

    from cnnzoo.files import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.html", "<p>hi</p>")
    finally:
        os.umask(umask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
