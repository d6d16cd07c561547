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


@pytest.mark.slow
def test_transfer_experiment_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    import torch

    import cnnzoo.experiments.transfer as transfer
    from cnnzoo.data.transforms import prepare_batch

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
    trained = []
    fit_and_test = transfer.fit_and_test

    def fit_test_and_keep(task, data, *args, **kwargs):
        metrics = fit_and_test(task, data, *args, **kwargs)
        trained.append((task.model, data))
        return metrics

    monkeypatch.setattr(transfer, "fit_and_test", fit_test_and_keep)
    try:
        result = run_experiment("transfer", out=tmp_path / "t", quick=True)
    finally:
        torch.set_num_threads(threads)
    assert [(r["per_class"], r["method"]) for r in result.rows] == [
        (n, m) for n in (10, 20) for m in ("scratch", "head", "partial", "full")
    ]
    for row in result.rows:
        assert row["seeds"] == 2 and len(row["runs"]) == 2
        assert row["mean"] == pytest.approx(sum(row["runs"]) / 2, abs=1e-4)
    # the source, then every row's seeds in order; one run (10/class, head, seed 0) by hand:
    # its model's accuracy on the target test images (classes 5-9 relabelled 0-4)
    assert len(trained) == 1 + 8 * 2
    model, data = trained[3]
    test = data.splits["test"]
    assert set(test.labels.tolist()) == set(range(5))
    with torch.no_grad():
        x = prepare_batch(test.images, data.spec.mean, data.spec.std)
        right = model.eval()(x).argmax(1) == test.labels
    assert result.rows[1]["runs"][0] == pytest.approx(right.float().mean().item(), abs=1e-4)
    assert (tmp_path / "t" / "transfer.png").stat().st_size > 5000
    assert (tmp_path / "t" / "source" / "model.safetensors").is_file()
