"""Segmentation from the command line: train, eval, predict; bad --data is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnzoo.data.scenes import generate_scenes
from cnnzoo.data.segmentation import load_mask

CLI = [sys.executable, "-m", "cnnzoo.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=16, n_test=4, size=32)


@pytest.mark.slow
def test_train_eval_predict(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "fcn"
    trained = run(
        "train", "fcn8s", "--backbone", "resnet18", "--data", f"masks:{scenes}",
        "--input-size", "48", "64", "--epochs", "1", "--batch-size", "8", "--no-progress",
        "--accelerator", "cpu", "--out", str(out),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "test/miou" in trained.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    spec = json.loads((out / "model.json").read_text())
    assert spec["resize_to"] == [48, 64] and spec["kwargs"]["backbone"] == "resnet18"

    evaluated = run("eval", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"mIoU {metrics['metrics']['test/miou']:.4f}" in evaluated.stdout
    assert "Sneaker" in evaluated.stdout and "pixel accuracy" in evaluated.stdout

    image = scenes / "images" / "test" / "00000.png"
    predicted = run("predict", str(out), str(image), "--out", str(tmp_path / "preds"))
    assert predicted.returncode == 0, predicted.stderr
    fields = predicted.stdout.strip().split("\t")
    assert fields[0] == str(image) and fields[1].endswith("00000_label.png")
    assert load_mask(fields[1]).shape == (32, 32)  # back at the image's own size
    assert Path(fields[2]).is_file()

    again = run("predict", str(out), str(image), "--out", str(tmp_path / "preds"))
    assert again.returncode == 2 and "exists: pass --overwrite" in again.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("coco:/data", "expected one of scenes, voc:PATH, cityscapes:PATH, masks:PATH"),
        ("voc:/no/such/VOCdevkit", "VOC root /no/such/VOCdevkit does not exist"),
    ],
)
def test_bad_data_is_one_line(data: str, message: str, tmp_path: Path) -> None:
    out = run("train", "unet", "--data", data, "--out", str(tmp_path / "r"), "--no-progress")
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # no empty run directory left behind
