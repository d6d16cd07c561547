"""What the terminal shows: cnnzoo's own lines without other libraries' banners (unless
--verbose), and a `cnnzoo models` table that fits 80 columns and filters like timm."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cnnzoo
from cnnzoo.cli.models import short_citation
from cnnzoo.errors import CnnzooError

CLI = [sys.executable, "-m", "cnnzoo.cli"]
QUICK = ["--data", "fashion-mnist-mini", "--subset", "64", "--epochs", "1", "--no-progress",
         "--accelerator", "cpu"]  # fmt: skip
BANNERS = ("GPU available", "TPU available", "Tip:", "was configured so", "Loading `train_",
           "is deprecated", "weights_only")  # fmt: skip


def run(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"COLUMNS": str(columns)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_a_training_run_shows_no_library_banners_unless_verbose(tmp_path):
    mid = ["--batch-size", "16", "--checkpoint-every", "1step"]  # mid-epoch checkpoints too
    quiet = run("train", "lenet5", *QUICK, *mid, "--out", str(tmp_path / "a"))
    assert quiet.returncode == 0, quiet.stderr
    text = quiet.stdout + quiet.stderr
    assert "test/accuracy" in text
    assert [b for b in BANNERS if b in text] == []
    loud = run("--verbose", "train", "lenet5", *QUICK, "--out", str(tmp_path / "b"))
    assert loud.returncode == 0, loud.stderr
    assert "GPU available" in loud.stdout + loud.stderr


def test_models_fits_80_columns_with_short_citations():
    out = run("models", "--task", "classification")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if line.startswith("resnet50 "))
    assert row.split()[1:5] == ["classification", "25.56M", "4.09G", "He"]
    assert row.rstrip().endswith("He et al. 2016")


def test_models_takes_wildcards_and_long_shows_full_citations():
    out = run("models", "resnet*", "*net", "--long", columns=160)
    assert out.returncode == 0, out.stderr
    names = {line.split()[0] for line in out.stdout.splitlines() if line.strip()[:1].isalpha()}
    assert {"resnet18", "resnet50", "googlenet", "unet", "alexnet"} <= names
    assert "vgg16" not in names and "plain18" not in names
    assert "Deep Residual Learning for Image Recognition" in out.stdout
    assert "3x224x224" in out.stdout


def test_models_matching_nothing_is_one_line_exit_2():
    out = run("models", "transformer*")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "'transformer*'" in out.stderr


def test_list_models_filters_with_wildcards_as_timm():
    assert cnnzoo.list_models(filter="resnet1*") == ["resnet101", "resnet110", "resnet152",
                                                     "resnet18"]  # fmt: skip
    both = cnnzoo.list_models("classification", filter=["vgg1?", "lenet*"])
    assert both == ["lenet5", "vgg11", "vgg13", "vgg16", "vgg19"]
    assert cnnzoo.list_models("detection", filter="resnet*") == []
    with pytest.raises(CnnzooError, match=r"for names use filter='resnet\*'"):
        cnnzoo.list_models("resnet*")


@pytest.mark.parametrize(
    ("paper", "short"),
    [
        ("He, Zhang, Ren, Sun, Deep Residual Learning, CVPR 2016 (Sec. 4.2)", "He et al. 2016"),
        ("Girshick, Fast R-CNN, ICCV 2015", "Girshick 2015"),
        ("Redmon, Farhadi, YOLOv3: An Improvement, arXiv 2018", "Redmon & Farhadi 2018"),
        ("Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014", "Kingma & Welling 2014"),
        ("LeCun et al., Gradient-Based Learning, Proc. IEEE 1998", "LeCun et al. 1998"),
        ("Hinton & Salakhutdinov, Reducing the Dimensionality, Science 2006; "
         "Masci et al., Stacked CAE, ICANN 2011",
         "Hinton & Salakhutdinov 2006; Masci et al. 2011"),
        ("the lecture's own design", "the lecture's own design"),
    ],
)  # fmt: skip
def test_short_citations_keep_first_author_and_year(paper: str, short: str) -> None:
    assert short_citation(paper) == short
