"""The peer benchmark's parts that live in cnnzoo's environment (benchmarks/peers.py):
the one scorer both sides share, the ratios and table, the data handed to the peers, and
option checking. Nothing here needs the peers' environment."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(BENCHMARKS / "peerbench"))  # the peers' scripts import their neighbours

from cnnzoo.errors import CnnzooError  # noqa: E402
from peerbench import cnnzoo_side, data, score  # noqa: E402

GT = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}]


def _pred(box: list[float], label: int = 2, conf: float = 0.9) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor([box]), "scores": torch.tensor([conf]),
            "labels": torch.tensor([label])}  # fmt: skip


def test_a_perfect_detection_scores_one() -> None:
    result = score.score_detection([_pred([0, 0, 10, 10])], GT)
    assert result["map"] == pytest.approx(1.0)
    assert result["map_50"] == pytest.approx(1.0)


def test_a_box_at_iou_082_counts_at_seven_of_the_ten_thresholds() -> None:
    result = score.score_detection([_pred([0, 0, 10, 8.2])], GT)  # IoU 0.82: 0.50 .. 0.80
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.7)


def test_a_box_of_the_wrong_class_scores_zero() -> None:
    assert score.score_detection([_pred([0, 0, 10, 10], label=3)], GT)["map_50"] == 0.0


def test_box_predictions_survive_the_file_and_their_count_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "predictions.json"
    score.write_box_predictions(path, [_pred([1, 2, 3, 4]), _pred([5, 6, 7, 8], 0, 0.5)])
    back = score.read_box_predictions(path, 2)
    assert back[1]["boxes"].tolist() == [[5.0, 6.0, 7.0, 8.0]]
    assert back[1]["labels"].dtype == torch.int64
    with pytest.raises(CnnzooError, match="holds 2 predictions: expected 3"):
        score.read_box_predictions(path, 3)


def test_segmentation_iou_ignores_255_and_classes_never_seen() -> None:
    truth = [torch.tensor([[0, 1], [1, 255]])]
    pred = [np.array([[0, 1], [0, 1]], dtype=np.uint8)]
    result = score.score_segmentation(pred, truth, num_classes=3)
    assert result["miou"] == pytest.approx(0.5)  # both classes: 1 / (1 + 1)
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)


def test_a_prediction_of_another_size_or_label_range_is_refused() -> None:
    truth = [torch.zeros(2, 2, dtype=torch.long)]
    with pytest.raises(CnnzooError, match=r"\(2, 3\): expected \(2, 2\)"):
        score.score_segmentation([np.zeros((2, 3), np.uint8)], truth, 3)
    with pytest.raises(CnnzooError, match="labels 0..7: expected 0..2"):
        score.score_segmentation([np.array([[0, 7], [0, 0]])], truth, 3)


def test_mask_predictions_missing_an_image_are_named(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "p.npz", **{"0": np.zeros((2, 2), np.uint8)})
    with pytest.raises(CnnzooError, match="test image\\(s\\) 1"):
        score.read_mask_predictions(tmp_path / "p.npz", 2)


def test_ratio_is_ours_over_theirs_and_none_when_undefined() -> None:
    assert score.ratio(0.5, 0.25) == 2.0
    assert score.ratio(1.0, 0.0) is None
    assert score.ratio(None, 1.0) is None
    assert score.ratio(math.nan, 1.0) is None


def test_the_table_shows_each_side_and_the_ratios() -> None:
    ours = {
        "model": "unet",
        "metrics": {"miou": 0.6, "pixel_accuracy": 0.9},
        "images_per_s": 70.0,
        "onnx_images_per_s": None,
        "train_seconds": 60.0,
        "epochs": 3,
    }
    peer = {"model": "smp", "metrics": {"miou": 0.4, "pixel_accuracy": 0.9},
            "images_per_s": 35.0, "onnx_images_per_s": 50.0, "train_seconds": 59.0,
            "epochs": 2}  # fmt: skip
    table = score.comparison_table("segmentation", [ours], peer)
    assert "| cnnzoo | unet | 0.6000 | 0.9000 | 70.0 | - | 60.0 | 3 |" in table
    assert "| unet | 1.50x | 1.00x | 2.00x | - |" in table


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("peers")
    return data.benchmark_scenes(work, n_train=8, n_test=3, seed=5, fashion_mnist="mini")


def test_detection_splits_follow_cnnzoo_train_and_become_a_yolo_layout(
    scenes: str, tmp_path: Path
) -> None:
    splits = data.detection_splits(scenes, val_fraction=0.25, seed=0)
    assert {k: len(v) for k, v in splits.splits.items()} == {"train": 6, "val": 2, "test": 3}
    yaml_path = data.yolo_layout(splits, tmp_path / "yolo")
    doc = yaml.safe_load(yaml_path.read_text())
    assert Path(doc["path"]).is_absolute()
    assert doc["names"] == splits.class_names and len(doc["names"]) == 10
    assert (doc["train"], doc["val"], doc["test"]) == ("images/train", "images/val", "images/test")
    record = splits.splits["val"][0]
    lines = (tmp_path / "yolo/labels/val" / f"{record.path.stem}.txt").read_text().splitlines()
    assert len(lines) == len(record.boxes)
    label, cx, _, _, h = lines[0].split()
    x1, y1, x2, y2 = record.boxes[0].tolist()
    assert int(label) == int(record.labels[0])
    assert float(cx) == pytest.approx((x1 + x2) / 2 / record.width)
    assert float(h) == pytest.approx((y2 - y1) / record.height)


def test_segmentation_splits_hand_the_peer_file_pairs_and_keep_the_test_masks(scenes: str) -> None:
    splits = data.segmentation_splits(scenes, val_fraction=0.25, seed=0)
    assert [len(splits.splits[k]) for k in ("train", "val", "test")] == [6, 2, 3]
    image, mask = splits.splits["test"][1]
    assert Path(image).name == Path(mask).name == "00001.png"
    assert splits.test_masks[1].shape == (96, 96)
    assert len(splits.class_names) == 11


def test_the_cnnzoo_command_is_time_boxed_with_the_recipe() -> None:
    command = cnnzoo_side.train_command("unet", "scenes:/d", Path("r"), 15, 0.05, 0, "cpu")
    assert command[3:5] == ["train", "unet"]
    assert command[command.index("--time") + 1] == "15"
    assert "width=16" in command and command[command.index("--accelerator") + 1] == "cpu"


def test_a_model_with_a_recipe_trains_with_it_and_the_plain_one_without() -> None:
    command = cnnzoo_side.train_command("yolov3:modern", "scenes:/d", Path("r"), 15, 0.05, 0, "cpu")
    assert command[4] == "yolov3" and command[command.index("--recipe") + 1] == "modern"
    plain = cnnzoo_side.train_command("yolov3", "scenes:/d", Path("r"), 15, 0.05, 0, "cpu")
    assert "--recipe" not in plain and command[command.index("--precision") + 1] == "auto"


def test_every_recipe_names_a_registered_model_and_shipped_backbone_weights() -> None:
    import cnnzoo

    for model, options in cnnzoo_side.RECIPES.items():
        assert model in cnnzoo.list_models(), model
        if "--backbone-weights" in options:
            name = options[options.index("--backbone-weights") + 1]
            assert cnnzoo.weights.get(name).shipped, (model, name)


def test_model_options_after_a_plus_become_model_args() -> None:
    import peers

    entry = "yolov3_tiny:modern+box_weight=5+assigner=multi"
    command = cnnzoo_side.train_command(entry, "scenes:/d", Path("r"), 15, 0.05, 0, "cpu")
    assert command[4] == "yolov3_tiny" and command[command.index("--recipe") + 1] == "modern"
    args = [command[i + 1] for i, c in enumerate(command) if c == "--model-arg"]
    assert args == ["box_weight=5", "assigner=multi"]
    assert peers.check_options("detection", _options(models=entry)) == [entry]
    with pytest.raises(CnnzooError, match=r"\+KEY=VALUE"):
        peers.check_options("detection", _options(models="yolov3_tiny+box_weight"))


def test_an_entrys_recipe_replaces_the_benchmarks_recipe_of_the_model() -> None:
    run = (Path("r"), 15, 0.05, 0, "cpu")
    best = cnnzoo_side.train_command("yolov3_tiny", "scenes:/d", *run)
    paper = cnnzoo_side.train_command("yolov3_tiny:paper", "scenes:/d", *run)
    recipes = [[c[i + 1] for i, a in enumerate(c) if a == "--recipe"] for c in (best, paper)]
    assert recipes == [["modern"], ["paper"]]


def test_parallel_lanes_take_the_trainings_in_turn_peer_first() -> None:
    import peers

    steps = [peers.Step(name, [], {}, Path(name)) for name in ("peer", "a", "b", "c")]
    lanes = peers.plan_lanes(steps, "parallel")
    assert [[s.name for s in lane] for lane in lanes] == [["peer", "b"], ["a", "c"]]
    assert [[s.name for s in lane] for lane in peers.plan_lanes(steps[:2], "parallel")] == [
        ["peer"], ["a"]]  # fmt: skip
    assert peers.plan_lanes(steps, "sequential") == [steps]


def _options(**changes: object) -> argparse.Namespace:
    base = {"minutes": 1.0, "threads": 1, "speed_threads": 1, "speed_repeats": 5,
            "batch_size": 16, "val_fraction": 0.05, "models": None, "cores": None,
            "device": "auto"}  # fmt: skip
    return argparse.Namespace(**(base | changes))


def test_options_are_checked_naming_the_bad_value() -> None:
    import peers

    assert peers.check_options("detection", _options()) == ["fast_rcnn", "yolov3_tiny"]
    with pytest.raises(CnnzooError, match="'unet' is no detection model"):
        peers.check_options("detection", _options(models="yolov3,unet"))
    assert peers.check_options("detection", _options(models="yolov3,yolov3:modern")) == [
        "yolov3", "yolov3:modern"]  # fmt: skip
    with pytest.raises(CnnzooError, match="recipe 'fancy': detection recipes are paper, modern"):
        peers.check_options("detection", _options(models="yolov3:fancy"))
    with pytest.raises(CnnzooError, match="recipe 'fast': segmentation recipes are none"):
        peers.check_options("segmentation", _options(models="unet:fast"))
    with pytest.raises(CnnzooError, match="named twice"):
        peers.check_options("detection", _options(models="ssd,ssd"))
    with pytest.raises(CnnzooError, match="--minutes 0"):
        peers.check_options("segmentation", _options(minutes=0))
    with pytest.raises(CnnzooError, match="--threads 0"):
        peers.check_options("segmentation", _options(threads=0))
    assert peers.check_options("segmentation", _options(peer_lr=6e-3)) == ["unet"]
    with pytest.raises(CnnzooError, match="--peer-lr -0.1: expected a positive"):
        peers.check_options("segmentation", _options(peer_lr=-0.1))


def test_a_bad_option_on_the_command_line_is_one_line_and_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peers.py"), "segmentation", "--mode", "both"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "'both'" in run.stderr


def test_the_peer_loops_schedule_warms_up_then_anneals_to_zero_at_the_budget() -> None:
    import smp_peer

    matched = smp_peer.LOOPS["matched"]
    assert matched["warmup"] == 0.25 and matched["dice"] == 0  # cnnzoo's onecycle, CE only
    assert smp_peer.schedule(0.0, 0.25) == 0 and smp_peer.schedule(0.125, 0.25) == 0.5
    assert smp_peer.schedule(0.25, 0.25) == 1
    assert smp_peer.schedule(0.625, 0.25) == pytest.approx(0.5)
    assert smp_peer.schedule(1.0, 0.25) == pytest.approx(0, abs=1e-12)


def test_train_args_follow_the_recipe_so_their_value_wins() -> None:
    import peers

    args = peers.build_parser().parse_args(
        ["segmentation", "--train-arg=--lr=1e-2", "--train-arg=--ema-decay=0.99"]
    )
    assert args.train_arg == ["--lr=1e-2", "--ema-decay=0.99"]
    command = cnnzoo_side.train_command(
        "unet", "scenes:/d", Path("r"), 15, 0.05, 0, "cpu", args.train_arg
    )
    assert command.index("--lr=1e-2") > command.index("--lr")  # click keeps the last value
    assert command[-1] == "--ema-decay=0.99"


@pytest.mark.parametrize(("fast", "words"), [(True, "(bf16 instructions)"), (False, "(no bf16")])
def test_the_machine_line_says_whether_the_cpu_trains_in_bf16(
    monkeypatch: pytest.MonkeyPatch, fast: bool, words: str
) -> None:
    import classification
    from cnnzoo.tasks import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    line = classification.machine()
    assert words in line and line.endswith(f"torch {torch.__version__}")


def test_the_fast_recipe_benchmark_shares_the_machine_line_and_adds_its_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fast_recipe
    from cnnzoo.tasks import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    line = fast_recipe.machine(3)
    assert "(no bf16 instructions)" in line and line.endswith("; 3 thread(s) per run")


def test_the_results_keep_the_cnnzoo_runs_validation_figures_without_its_loss() -> None:
    metrics = {"seconds": 905.234, "epochs": 39,
               "metrics": {"val/loss": 0.21, "val/miou": 0.52, "val/pixel_accuracy": 0.92,
                           "test/miou": 0.51}}  # fmt: skip
    summary = cnnzoo_side.run_summary(metrics)
    assert summary == {"train_seconds": 905.2, "epochs": 39,
                       "validation": {"miou": 0.52, "pixel_accuracy": 0.92}}  # fmt: skip
