"""The what-layers-learn experiment: its CAM sharpness measures, and a tiny run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import cnnzoo.experiments.what_layers_learn as wll
from cnnzoo.experiments import list_experiments, run_experiment


def test_sharpness_of_a_map_on_the_object_only():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    heat = np.zeros((4, 4))
    heat[0, :2] = 1.0  # two hot pixels, both on the object
    sharp = wll.cam_sharpness(heat, mask)
    assert sharp["in_object"] == 1.0
    assert sharp["above_half"] == 2 / 16
    assert sharp["entropy"] == pytest.approx(math.log(2) / math.log(16))


def test_sharpness_of_a_uniform_map_is_the_object_area():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :3] = True
    sharp = wll.cam_sharpness(np.full((4, 4), 0.4), mask)
    assert sharp["in_object"] == pytest.approx(3 / 16)
    assert sharp["above_half"] == 0.0
    assert sharp["entropy"] == pytest.approx(1.0)


def test_an_empty_map_has_no_sharpness():
    assert wll.cam_sharpness(np.zeros((3, 3)), np.ones((3, 3), dtype=bool)) is None


def test_show_indices_are_the_first_of_distinct_classes():
    assert wll._show_indices(torch.tensor([3, 3, 1, 3, 0, 2]), 3) == [0, 2, 4]


def test_the_experiment_is_registered():
    assert "what-layers-learn" in [e.name for e in list_experiments()]


def test_tiny_run_writes_its_table_and_figures(tmp_path, monkeypatch):
    tiny = wll.WhatLayersSettings(
        seeds=(0,), steps=3, batch_size=16, test_images=40, cam_images=6, show_images=2,
        per_stage=3,
    )  # fmt: skip
    monkeypatch.setattr(wll, "QUICK", tiny)
    monkeypatch.setattr(wll, "_dataset", lambda: "fashion-mnist-mini")
    result = run_experiment("what-layers-learn", out=tmp_path / "w", quick=True)
    assert [r["model"] for r in result.rows] == ["plain20", "resnet20"]
    for row in result.rows:
        assert 0 <= row["accuracy_mean"] <= 1
        assert row["empty_maps"] <= 6
        if row["empty_maps"] < 6:
            for key in wll.METRICS:
                assert 0 <= row[f"{key}_mean"] <= 1 and row[f"{key}_std"] >= 0
        assert 0 < row["object_area_mean"] < 1
    payload = json.loads((tmp_path / "w" / "results.json").read_text())
    expected = ["filters_plain20.png", "filters_resnet20.png", "stages_plain20.png",
                "stages_resnet20.png", "gradcam.png"]  # fmt: skip
    assert payload["figures"] == expected
    for name in expected:
        assert (tmp_path / "w" / name).read_bytes()[:4] == b"\x89PNG"
    assert "| plain20 | 1 |" in (tmp_path / "w" / "results.md").read_text()
    assert "Test accuracy after 3 steps" in result.notes
