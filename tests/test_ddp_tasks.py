"""DDP on two CPU processes for segmentation and detection: the run completes and the test
metrics it synchronised across processes equal a one-process evaluation of the saved model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnzoo.data.scenes import generate_scenes
from cnnzoo.families.detection.evaluate import evaluate_detection
from cnnzoo.families.segmentation.evaluate import evaluate_segmentation

CLI = [sys.executable, "-m", "cnnzoo.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=16, n_test=6, size=48)


COMMON = ["--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--no-progress",
          "--accelerator", "cpu", "--devices", "2", "--snapshots", "0"]  # fmt: skip


@pytest.mark.slow
def test_segmentation_ddp_metrics_match_one_process_eval(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    result = run("train", "unet", "--data", f"masks:{scenes}", "--out", str(out), *COMMON,
                 "--model-arg", "width=4", "--model-arg", "depth=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((out / "metrics.json").read_text())["metrics"]
    again = evaluate_segmentation(out, accelerator="cpu", plot=False)
    assert again.miou == pytest.approx(trained["test/miou"], abs=1e-5)
    assert again.pixel_accuracy == pytest.approx(trained["test/pixel_accuracy"], abs=1e-5)


@pytest.mark.slow
def test_detection_ddp_metrics_match_one_process_eval(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "det"
    result = run("train", "yolov3", "--data", f"scenes:{scenes}", "--out", str(out), *COMMON,
                 "--backbone", "convnet", "--model-arg", "widths=[8,16,16]",
                 "--model-arg", "neck_channels=16")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((out / "metrics.json").read_text())["metrics"]
    again = evaluate_detection(out, accelerator="cpu", plot=False)
    assert again.map == pytest.approx(trained["test/map"], abs=1e-6)
    assert again.map_50 == pytest.approx(trained["test/map_50"], abs=1e-6)
