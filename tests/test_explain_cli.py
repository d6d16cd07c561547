"""`cnnzoo explain` as a user runs it: files written, tables printed, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnzoo.data.fashion_mnist import read_idx

CLI = [sys.executable, "-m", "cnnzoo.cli"]
BUNDLED = Path(__file__).parents[1] / "src/cnnzoo/data/bundled"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=env)  # fmt: skip


@pytest.fixture(scope="module")
def shirt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST test image (class 0, T-shirt/top, in the bundled subset) as a PNG."""
    images = read_idx(BUNDLED / "fashion-mnist-mini-t10k-images-idx3-ubyte.gz")
    labels = read_idx(BUNDLED / "fashion-mnist-mini-t10k-labels-idx1-ubyte.gz")
    path = tmp_path_factory.mktemp("img") / "shirt.png"
    Image.fromarray(images[int((labels == 0).nonzero()[0])].numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnzoo.data.scenes import generate_scenes

    root = generate_scenes(tmp_path_factory.mktemp("scenes"), n_train=2, n_test=2)
    return sorted((root / "images" / "test").glob("*.png"))[0]


def _one_line_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_gradcam_of_a_weight_set_writes_a_figure_and_a_table(shirt, tmp_path):
    out = run("explain", "resnet20.fmnist", str(shirt), "--out", str(tmp_path), "--faithfulness")
    assert out.returncode == 0, out.stderr
    assert "T-shirt/top" in out.stdout and "stages.2" in out.stdout and "deletion" in out.stdout
    figure = tmp_path / "shirt_gradcam.png"
    assert figure.is_file() and Image.open(figure).size[0] > 400
    again = run("explain", "resnet20.fmnist", str(shirt), "--out", str(tmp_path))
    _one_line_error(again, "shirt_gradcam.png exists", "--overwrite")


def test_class_option_and_other_methods(shirt, tmp_path):
    out = run("explain", "resnet20.fmnist", str(shirt), "--method", "gradcam++", "--class",
              "Shirt", "--class", "8", "--out", str(tmp_path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Shirt" in out.stdout and "Bag" in out.stdout and "T-shirt" not in out.stdout
    assert (tmp_path / "shirt_gradcampp.png").is_file()


def test_features_and_filters(shirt, tmp_path):
    out = run("explain", "resnet20.fmnist", str(shirt), "--method", "features", "--layer",
              "stages.1", "--out", str(tmp_path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "most active channels" in out.stdout
    assert (tmp_path / "shirt_features_stages-1.png").is_file()
    png = tmp_path / "filters.png"
    out = run("explain", "resnet20.fmnist", "--method", "filters", "--out", str(png))
    assert out.returncode == 0, out.stderr
    assert png.is_file() and "stem" in out.stdout


def test_top_losses(tmp_path):
    png = tmp_path / "worst.png"
    out = run("explain", "resnet20.fmnist", "--top-losses", "4", "--data", "fashion-mnist-mini",
              "--out", str(png))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "4 most confident mistakes" in out.stdout and png.is_file()
    rows = [line for line in out.stdout.splitlines() if line.startswith("│") and "#" in line]
    assert len(rows) == 4  # one table row per mistake, largest loss first
    losses = [float(line.split("│")[4]) for line in rows]
    assert losses == sorted(losses, reverse=True) and losses[-1] > 0


def test_segmentation_and_detection_runs(scene, tmp_path):
    out = run("explain", "fcn8s.scenes", str(scene), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "of pixels" in out.stdout and "background" not in out.stdout
    out = run("explain", "yolov3.scenes", str(scene), "--out", str(tmp_path / "det"))
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if scene.name in line]
    assert len(rows) >= 1  # one row (and one panel) per kept box
    assert (tmp_path / "det" / f"{scene.stem}_gradcam.png").is_file()


def test_bad_input_is_one_line(shirt, tmp_path):
    _one_line_error(
        run("explain", "resnet20.fmnist", str(shirt), "--layer", "stage9", "--out", str(tmp_path)),
        "unknown layer 'stage9'",
        "stem, stages.0, stages.1, stages.2",
    )
    colour = tmp_path / "colour.png"
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(colour)
    _one_line_error(
        run("explain", "resnet20.fmnist", str(colour), "--out", str(tmp_path)),
        "colour.png is a colour image",
        "1-channel",
    )
    _one_line_error(
        run("explain", "conv_ae.fmnist", str(shirt), "--out", str(tmp_path)),
        "explanations apply to classification, segmentation, detection",
    )
