"""benchmarks/seg_pretrain.py (pre-trained encoder vs scratch at equal total budget): its
``cnnzoo train`` command lines parse, the pretrained arm pays for its pre-training, and bad
options stop it in one line. The benchmark itself is a measurement, not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import seg_pretrain  # noqa: E402
from cnnzoo.cli import app  # noqa: E402


def _parses(command: list[str]) -> dict:
    """Parse a ``python -m cnnzoo.cli train ...`` line with the real CLI; return its params."""
    assert command[1:4] == ["-m", "cnnzoo.cli", "train"]
    group = typer.main.get_command(app)
    train = group.get_command(group.make_context("cnnzoo", ["train", "--help"]), "train")
    return train.make_context("train", command[4:]).params


@pytest.mark.parametrize("model", list(seg_pretrain.MODELS))
def test_both_arms_differ_only_in_the_encoder_weights_and_budget(model: str) -> None:
    scratch = seg_pretrain.seg_command(model, Path("s"), 8, 0, None, [])
    pretrained = seg_pretrain.seg_command(model, Path("p"), 6.5, 0, Path("pre"), [])
    a, b = _parses(scratch), _parses(pretrained)
    assert a["model"] == b["model"] == model
    assert a["time"] == 8 and b["time"] == 6.5
    assert a["backbone_weights"] is None and b["backbone_weights"] == "pre"
    assert a["lr"] == b["lr"] == seg_pretrain.MODELS[model]["lr"]
    same = {k: v for k, v in a.items() if k not in ("out", "time", "backbone_weights")}
    assert same == {k: v for k, v in b.items() if k in same}
    # Every arm's encoder has the pre-trained convnet's widths.
    assert any(str(seg_pretrain.ENCODER) in arg for arg in a["model_arg"])


def test_the_pretraining_is_the_fast_recipe_on_the_encoder_widths() -> None:
    params = _parses(seg_pretrain.pretrain_command(Path("pre"), 2, 3, ["--precision", "32"]))
    assert params["model"] == "convnet" and params["recipe"] == "fast"
    assert params["time"] == 2 and params["seed"] == 3 and params["precision"] == "32"
    assert params["model_arg"] == [f"widths={seg_pretrain.ENCODER}"]


def test_a_row_counts_the_pretraining_in_the_total(tmp_path: Path) -> None:
    run = tmp_path / "unet-pretrained"
    run.mkdir()
    metrics = {"test/miou": 0.51234, "test/pixel_accuracy": 0.9}
    (run / "metrics.json").write_text(json.dumps({"seconds": 300.0, "epochs": 7,
                                                  "metrics": metrics}))  # fmt: skip
    pretrain = {"seconds": 118.0, "metrics": {"test/accuracy": 0.91}}
    row = seg_pretrain.row("unet", "pretrained", run, pretrain)
    assert row["total s"] == 418.0 and row["pretrain acc"] == 0.91
    assert row["test mIoU"] == 0.5123 and row["epochs"] == 7
    failed = seg_pretrain.row("unet", "scratch", tmp_path / "missing", None)
    assert failed["test mIoU"] is None and failed["pretrain s"] == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "1", "--pretrain-minutes", "2"], "must be above 0 and below --minutes 1"),
        (["unet", "deeplab"], "unknown model(s) ['deeplab']"),
    ],
)
def test_bad_options_stop_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    script = str(BENCHMARKS / "seg_pretrain.py")
    done = subprocess.run([sys.executable, script, *args, "--runs", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr.splitlines()[-1]
    assert not (tmp_path / "r").exists()
