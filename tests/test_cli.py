"""The command line: real subprocesses, as a user runs them; errors are one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

CLI = [sys.executable, "-m", "cnnzoo.cli"]
QUICK = ["--data", "fashion-mnist-mini", "--subset", "64", "--epochs", "1", "--no-progress",
         "--accelerator", "cpu"]  # fmt: skip


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )


def test_models_lists_names_params_and_macs():
    out = run("models", "--task", "classification")
    assert out.returncode == 0, out.stderr
    assert "resnet50" in out.stdout and "25.56M" in out.stdout and "4.09G" in out.stdout


def test_info_shows_layer_shapes():
    out = run("info", "resnet50", "--input-size", "3", "224", "224", "--depth", "1")
    assert out.returncode == 0, out.stderr
    assert "2048x7x7" in out.stdout and "25,557,032" in out.stdout


def test_unknown_model_is_one_line_with_suggestions():
    out = run("info", "resnet5")
    assert out.returncode == 2
    assert "unknown model 'resnet5'" in out.stderr and "resnet50" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_data_folder_is_a_clear_error(tmp_path):
    out = run("train", "lenet5", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "nowhere" in out.stderr and "Traceback" not in out.stderr


def test_empty_data_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    out = run("train", "lenet5", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "empty" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_train_eval_predict_round_trip(tmp_path):
    run_dir = tmp_path / "run"
    out = run("train", "lenet5", *QUICK, "--out", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert "test/accuracy" in out.stdout
    again = run("train", "lenet5", *QUICK, "--out", str(run_dir))
    assert again.returncode == 2 and "already exists" in again.stderr

    ev = run("eval", str(run_dir))
    assert ev.returncode == 0, ev.stderr
    accuracy = json.loads((run_dir / "metrics.json").read_text())["metrics"]["test/accuracy"]
    assert f"accuracy {accuracy:.4f}" in ev.stdout and "Ankle boot" in ev.stdout

    img = tmp_path / "boot.png"
    Image.new("L", (40, 30), color=200).save(img)
    truncated = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), color=(10, 200, 30)).save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    pr = run("predict", str(run_dir), str(img), "--topk", "2")
    assert pr.returncode == 0, pr.stderr
    line = pr.stdout.strip().splitlines()[-1]
    fields = line.split("\t")
    assert fields[0] == str(img) and len(fields) == 3
    probs = [float(f.rsplit(" ", 1)[1]) for f in fields[1:]]
    assert probs[0] >= probs[1] > 0
    bad = run("predict", str(run_dir / "model.safetensors"), str(truncated))
    assert bad.returncode == 2 and "cut.jpg" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    # Same global batch, no augmentation: averaged gradients make the same step. LeNet-5 has
    # no BN (on CPU each process keeps its own BN statistics) and no dropout.
    common = ["lenet5", "--data", "fashion-mnist-mini", "--subset", "64", "--batch-size", "16",
              "--epochs", "1", "--no-augment", "--val-fraction", "0", "--no-progress",
              "--accelerator", "cpu", "--lr", "0.05"]  # fmt: skip
    one = run("train", *common, "--devices", "1", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = run("train", *common, "--devices", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    w1 = load_file(str(tmp_path / "one" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=1e-4)
    seed_only = run("train", *common, "--devices", "1", "--epochs", "0", "--out",
                    str(tmp_path / "zero"))  # fmt: skip
    assert seed_only.returncode == 0, seed_only.stderr[-2000:]
    w0 = load_file(str(tmp_path / "zero" / "model.safetensors"))
    assert any(not torch.equal(w0[k], w1[k]) for k in w1)  # training really moved the weights
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    assert m1["test/accuracy"] == pytest.approx(m2["test/accuracy"], abs=0.01)


@pytest.mark.slow
def test_width_multiplier_reaches_the_model(tmp_path):
    import cnnzoo

    run_dir = tmp_path / "mb"
    out = run("train", "mobilenet_v2", "--width", "0.5", *QUICK, "--out", str(run_dir))
    assert out.returncode == 0, out.stderr
    spec = json.loads((run_dir / "model.json").read_text())
    weights = load_file(str(run_dir / "model.safetensors"))
    half = cnnzoo.create_model(
        "mobilenet_v2", num_classes=10, in_channels=1, width=0.5, small_input=True
    )
    full = cnnzoo.create_model("mobilenet_v2", num_classes=10, in_channels=1, small_input=True)
    assert spec["kwargs"]["width"] == 0.5
    assert (
        sum(w.numel() for k, w in weights.items() if "running" not in k and "num_batches" not in k)
        == sum(p.numel() for p in half.parameters())
        < sum(p.numel() for p in full.parameters())
    )
    bad = run("train", "resnet20", "--width", "0.5", *QUICK, "--out", str(tmp_path / "r"))
    assert bad.returncode == 2 and "width" in bad.stderr and "Traceback" not in bad.stderr
