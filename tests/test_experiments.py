"""The experiment framework and the transfer-learning experiment (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnzoo import CnnzooError
from cnnzoo.experiments import (
    ExperimentResult,
    list_experiments,
    register_experiment,
    run_experiment,
)


@register_experiment("unit-test-echo", "writes a one-row table and a figure")
def _echo(out: Path, quick: bool) -> ExperimentResult:
    figure = out / "echo.png"
    figure.write_bytes(b"\x89PNG")
    return ExperimentResult(
        title="Echo", columns=["quick", "value"], rows=[{"quick": quick, "value": 3}],
        figures=[figure], settings={"answer": 42},
    )  # fmt: skip


def test_transfer_is_listed():
    assert "transfer" in [e.name for e in list_experiments()]


def test_results_are_written_as_markdown_and_json(tmp_path):
    run_experiment("unit-test-echo", out=tmp_path / "echo", quick=True)
    payload = json.loads((tmp_path / "echo" / "results.json").read_text())
    assert payload["rows"] == [{"quick": True, "value": 3}]
    assert payload["figures"] == ["echo.png"] and payload["settings"] == {"answer": 42}
    markdown = (tmp_path / "echo" / "results.md").read_text()
    assert "| quick | value |" in markdown and "| True | 3 |" in markdown
    assert "![echo](echo.png)" in markdown


def test_existing_output_folder_is_refused(tmp_path):
    run_experiment("unit-test-echo", out=tmp_path / "echo")
    with pytest.raises(CnnzooError, match="already exists"):
        run_experiment("unit-test-echo", out=tmp_path / "echo")


def test_unknown_experiment_suggests_names():
    with pytest.raises(CnnzooError, match="did you mean transfer"):
        run_experiment("transfr")


def test_transfer_experiment_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    import torch

    import cnnzoo.experiments.transfer as transfer

    # Three steps leave BN statistics far off, and eval-mode activations of the deep nets
    # sink into subnormal floats; flushing them to zero holds on the main thread only.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    tiny = transfer.TransferSettings(
        sizes=(10, 20), seeds=(0, 1), source_steps=4, target_steps=3, batch_size=16,
        precision="32-true",
    )  # fmt: skip
    monkeypatch.setattr(transfer, "QUICK", tiny)
    monkeypatch.setattr(transfer, "_dataset", lambda: "fashion-mnist-mini")
    try:
        result = run_experiment("transfer", out=tmp_path / "t", quick=True)
    finally:
        torch.set_num_threads(threads)
    assert [(r["per_class"], r["method"]) for r in result.rows] == [
        (n, m) for n in (10, 20) for m in ("scratch", "head", "partial", "full")
    ]
    for row in result.rows:
        assert row["seeds"] == 2 and len(row["runs"]) == 2
        assert all(0.0 <= a <= 1.0 for a in row["runs"])
        assert row["mean"] == pytest.approx(sum(row["runs"]) / 2, abs=1e-4)
    assert (tmp_path / "t" / "transfer.png").stat().st_size > 5000
    assert (tmp_path / "t" / "source" / "model.safetensors").is_file()
