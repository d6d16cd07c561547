"""``cnnzoo train DETECTOR --recipe paper|modern``: the recipe's defaults, what overrides
them, what the run records, and eval / predict / export of a run with fitted anchors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from cnnzoo.cli import app
from cnnzoo.data.scenes import generate_scenes
from cnnzoo.errors import CnnzooError
from cnnzoo.families.detection.evaluate import evaluate_detection
from cnnzoo.families.registry import family_for
from cnnzoo.rundir import RunDir
from cnnzoo.workflows.export import export_run
from cnnzoo.workflows.train import TrainConfig, train

TINY = {"backbone": "convnet", "widths": [8, 16, 16], "neck_channels": 16}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 48 px scenes: objects half the size YOLOv3's default anchors were chosen for.
    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=24, n_test=6, size=48)


def _cfg(scenes: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(model="yolov3", data=f"scenes:{scenes}", out=str(out), epochs=1, batch_size=8,
                lr=3e-3, val_fraction=0.25, model_kwargs=dict(TINY), progress=False,
                accelerator="cpu", snapshots=0)  # fmt: skip
    return TrainConfig(**(base | overrides))


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.fixture(scope="module")
def modern_run(scenes: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    return train(_cfg(scenes, tmp_path_factory.mktemp("runs") / "modern", recipe="modern"))


def test_paper_recipe_reproduces_todays_configuration(scenes: Path, tmp_path: Path) -> None:
    train(_cfg(scenes, tmp_path / "paper", autoanchor=False))
    config = _config(tmp_path / "paper")
    assert config["recipe"] == "paper" and config["ema_decay"] == 0.0
    assert config["det_augment"] == "flip" and config["scheduler"] == "onecycle"
    assert (config["optimizer"], config["weight_decay"]) == ("adamw", 5e-4)
    assert config["resolved"]["model_kwargs"] == {**TINY, "num_classes": 10, "in_channels": 3}
    assert config["model_kwargs"] == TINY
    checkpoint = torch.load(tmp_path / "paper" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" not in checkpoint  # no EMA


def test_modern_recipe_records_its_resolved_settings(modern_run) -> None:
    config = _config(modern_run.run_dir)
    assert config["recipe"] == "modern" and config["ema_decay"] == 0.999
    assert config["det_augment"] == "mosaic" and config["scheduler"] == "onecycle"
    modern = {"box_loss": "ciou", "assigner": "multi", "obj_target": "iou"}
    assert config["model_kwargs"] == {**TINY, **modern}
    spec = json.loads((modern_run.run_dir / "model.json").read_text())
    assert {k: spec["kwargs"][k] for k in modern} == modern


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("yolov3", {"box_loss": "ciou", "assigner": "multi", "obj_target": "iou"}),
        ("yolov3_tiny", {"box_loss": "ciou", "assigner": "multi", "obj_target": "iou"}),
        ("ssd", {"box_loss": "ciou"}),
        ("fast_rcnn", {}),
    ],
)
def test_modern_recipe_model_options_reach_each_detector_that_takes_them(
    model: str, expected: dict
) -> None:
    cfg = family_for("detection").apply_recipe(TrainConfig(model=model, recipe="modern"))
    assert cfg.model_kwargs == expected


def test_explicit_options_override_the_recipe(scenes: Path, tmp_path: Path) -> None:
    cfg = _cfg(scenes, tmp_path / "r", recipe="modern", ema_decay=0.9, det_augment="flip",
               model_kwargs={**TINY, "box_loss": "giou"}, autoanchor=False)  # fmt: skip
    train(cfg)
    config = _config(tmp_path / "r")
    assert config["ema_decay"] == 0.9 and config["det_augment"] == "flip"
    assert config["resolved"]["model_kwargs"]["box_loss"] == "giou"
    assert config["resolved"]["model_kwargs"]["assigner"] == "multi"  # from the recipe


def test_modern_run_saves_the_ema_weights(modern_run) -> None:
    checkpoint = torch.load(modern_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    saved = load_file(modern_run.run_dir / "model.safetensors")
    name = next(k for k in saved if k.endswith("predictors.0.weight"))
    ema = checkpoint["state_dict"][f"model.{name}"]
    raw = checkpoint["current_model_state"][f"model.{name}"]
    assert torch.equal(saved[name], ema)
    assert not torch.allclose(ema, raw)


def test_autoanchor_fits_the_anchors_and_the_run_rebuilds_them(modern_run, scenes: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    fit = _config(modern_run.run_dir)["resolved"]["autoanchor"]
    assert fit["fitted"] and fit["mean_iou"] > fit["before_mean_iou"]
    anchors = fit["kwargs"]["anchors"]
    spec = json.loads((modern_run.run_dir / "model.json").read_text())
    assert spec["kwargs"]["anchors"] == anchors
    model, _ = RunDir.open(modern_run.run_dir).load_model()
    assert torch.allclose(model.anchors, torch.tensor(anchors))
    # eval reproduces the run's own test numbers, so it built the same model.
    result = evaluate_detection(modern_run.run_dir, None, None, "test", 8)
    assert result.map == pytest.approx(modern_run.metrics["test/map"], abs=1e-6)
    # export plans the graph of the model with those anchors, and the ONNX file matches it.
    plan = family_for("detection").export_plan(model, spec, "yolov3")
    assert plan.output_names == ("boxes", "scores")
    exported = export_run(modern_run.run_dir, tmp_path / "m.onnx", check_images=4)
    assert exported.images_checked == 4 and exported.max_abs_diff < 1e-3
    runner = CliRunner()
    image = scenes / "images" / "test" / "00001.png"
    done = runner.invoke(app, ["predict", str(modern_run.run_dir), str(image), "--out",
                               str(tmp_path / "p")])  # fmt: skip
    assert done.exit_code == 0, done.output


def test_anchors_given_with_model_arg_are_not_fitted(scenes: Path, tmp_path: Path) -> None:
    anchors = [[w, w] for w in (4, 6, 8, 10, 12, 14, 16, 20, 24)]
    train(_cfg(scenes, tmp_path / "a", model_kwargs={**TINY, "anchors": anchors}))
    fit = _config(tmp_path / "a")["resolved"]["autoanchor"]
    assert fit["given"] == ["anchors"] and not fit["fitted"]
    assert fit["bpr"] == fit["before_bpr"]  # what was measured: the anchors given
    assert json.loads((tmp_path / "a" / "model.json").read_text())["kwargs"]["anchors"] == anchors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recipe": "fast"}, "unknown recipe 'fast' for detection models; expected one of paper"),
        ({"ema_decay": 1.5}, "--ema-decay 1.5 is out of range"),
        ({"det_augment": "cutmix"}, "--det-augment 'cutmix' is unknown"),
        ({"model_kwargs": {**TINY, "box_loss": "l1"}}, "box_loss='l1' is unknown"),
    ],
)
def test_bad_recipe_options_are_one_line_errors(scenes: Path, tmp_path: Path, overrides,
                                                message: str) -> None:  # fmt: skip
    with pytest.raises(CnnzooError, match=message.replace("(", r"\(")):
        train(_cfg(scenes, tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_the_modern_recipe_for_a_classifier() -> None:
    result = CliRunner().invoke(app, ["train", "lenet5", "--recipe", "modern"])
    assert result.exit_code == 2
    assert "unknown recipe 'modern' for classification models" in result.output
