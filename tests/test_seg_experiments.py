"""The segmentation experiments (upsampling modes; segmentation cost), with tiny settings."""

from __future__ import annotations

import json

import pytest
import torch

from cnnzoo.experiments import list_experiments, run_experiment

ENCDEC = {"backbone": "convnet", "widths": (8, 16), "min_width": 8}


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory):
    from cnnzoo.data.scenes import generate_scenes

    root = tmp_path_factory.mktemp("scenes") / "tiny"
    generate_scenes(root, n_train=24, n_test=8, size=32)
    return "masks:" + str(root)


@pytest.fixture
def one_thread():
    # Barely trained nets sink into subnormal floats in eval mode; flushing them to zero
    # holds on the main thread only.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_both_experiments_are_listed():
    names = [e.name for e in list_experiments()]
    assert "upsampling" in names and "segmentation-cost" in names


def _check_written(out, rows, columns):
    payload = json.loads((out / "results.json").read_text())
    assert payload["rows"] == rows and payload["columns"] == columns
    markdown = (out / "results.md").read_text()
    assert "| " + " | ".join(columns) + " |" in markdown
    for figure in payload["figures"]:
        assert (out / figure).stat().st_size > 5000


def test_upsampling_experiment_end_to_end(tmp_path, monkeypatch, tiny_scenes):
    import cnnzoo.experiments.upsampling as up

    tiny = up.UpsamplingSettings(
        models={"encdec": ENCDEC, "unet": {"width": 4, "depth": 2}}, steps=3, batch_size=8,
        infer_images=4, infer_repeats=2, precision="32-true", channels_last=False,
    )  # fmt: skip
    monkeypatch.setattr(up, "QUICK", tiny)
    monkeypatch.setattr(up, "_dataset", lambda: tiny_scenes)
    result = run_experiment("upsampling", out=tmp_path / "up", quick=True)
    assert [(r["model"], r["upsampling"]) for r in result.rows] == [
        (m, mode) for m in ("encdec", "unet") for mode in ("transposed", "bilinear", "nearest")
    ]
    for row in result.rows:
        assert 0.0 <= row["test_miou"] <= 1.0 and 0.0 <= row["pixel_accuracy"] <= 1.0
        assert row["params"] > 0 and row["train_seconds"] > 0
        assert row["inference_ms_per_image"] > 0
    for model in ("encdec", "unet"):
        params = {r["upsampling"]: r["params"] for r in result.rows if r["model"] == model}
        # fixed interpolation has no weights: only the transposed convolutions add parameters
        assert params["nearest"] == params["bilinear"] < params["transposed"]
    _check_written(tmp_path / "up", result.rows, result.columns)
    assert "transposed vs bilinear" in result.notes
    assert (tmp_path / "up" / "predictions.png").is_file()


def test_segmentation_cost_experiment_end_to_end(tmp_path, monkeypatch, tiny_scenes):
    import cnnzoo.experiments.seg_cost as cost

    tiny = cost.SegCostSettings(
        models={
            "patchwise": {"patch": 15, "width": 8, "chunk": 2048},
            "fullres_fcn": {"depth": 4, "width": 16},
            "encdec": ENCDEC,
            "fcn8s": {"backbone": "convnet", "widths": (8, 16, 16)},
        },
        train_seconds=0.5, batch_size=8, test_images=None, infer_images=4, infer_repeats=2,
        precision="32-true", channels_last=False,
    )  # fmt: skip
    monkeypatch.setattr(cost, "QUICK", tiny)
    monkeypatch.setattr(cost, "_dataset", lambda: tiny_scenes)
    result = run_experiment("segmentation-cost", out=tmp_path / "cost", quick=True)
    by = {r["model"]: r for r in result.rows}
    assert list(by) == ["patchwise", "fullres_fcn", "encdec", "fcn8s"]
    for row in result.rows:
        assert 0.0 <= row["test_miou"] <= 1.0
        assert row["params"] > 0 and row["macs_per_image"] > 0
        assert row["inference_ms_per_image"] > 0 and row["steps"] >= 1
        # the time budget stops training: one step over budget at most, not max_steps
        assert 0.5 <= row["train_seconds"] < 30
        assert row["macs_per_pixel"] == round(row["macs_per_image"] / (32 * 32))
    # one small CNN per pixel > full-resolution layers > layers on downsampled maps
    assert by["patchwise"]["macs_per_pixel"] > by["fullres_fcn"]["macs_per_pixel"]
    assert by["fullres_fcn"]["macs_per_pixel"] > by["encdec"]["macs_per_pixel"]
    # patch-wise does ~60x the MACs of any other model here: slowest by far
    slowest = max(result.rows, key=lambda r: r["inference_ms_per_image"])
    assert slowest["model"] == "patchwise"
    _check_written(tmp_path / "cost", result.rows, result.columns)
    assert "Patch-wise needs" in result.notes and "trained for 0.5 s" in result.notes
