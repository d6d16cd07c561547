"""Segmentation end to end: train into a run directory, eval, predict, encoder weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.scenes import SCENE_CLASSES, generate_scenes
from cnnzoo.data.segmentation import load_mask
from cnnzoo.errors import CnnzooError
from cnnzoo.families.segmentation.evaluate import evaluate_segmentation
from cnnzoo.families.segmentation.predict import predict_segmentation
from cnnzoo.rundir import RunDir
from cnnzoo.workflows.train import TrainConfig, train

TINY_UNET = {"width": 4, "depth": 2}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=32, n_test=8, size=32)


def _cfg(scenes: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        model="unet",
        data=f"masks:{scenes}",
        out=str(out),
        epochs=2,
        val_fraction=0.25,
        model_kwargs=dict(TINY_UNET),
        progress=False,
        accelerator="cpu",
        snapshots=2,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def unet_run(scenes: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "unet"
    return train(_cfg(scenes, out, batch_size=8))


def test_training_fills_the_run_directory(unet_run) -> None:
    run = unet_run.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "segmentation"
    assert list(metrics["class_iou"]) == SCENE_CLASSES
    # mIoU is the mean over the classes that occur (None: neither labelled nor predicted)
    ious = [v for v in metrics["class_iou"].values() if v is not None]
    assert metrics["metrics"]["test/miou"] == pytest.approx(np.mean(ious), abs=1e-5)
    spec = json.loads((run / "model.json").read_text())
    assert spec["task"] == "segmentation" and spec["kwargs"]["num_classes"] == 11
    for png in ("curves.png", "class_iou.png", "test_overlays.png", "overlays/epoch_002.png"):
        assert (run / "plots" / png).stat().st_size > 1000, png
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[-3:] == ["val/loss", "val/miou", "val/pixel_accuracy"]
    assert len(rows) == 3
    config = (run / "config.yaml").read_text()
    assert "optimizer: adamw" in config and "batch_size: 8" in config  # segmentation defaults


def test_test_metrics_are_those_of_the_saved_models_predictions(unet_run, scenes: Path) -> None:
    from cnnzoo.data.folder import load_image
    from cnnzoo.data.transforms import normalize_batch

    model, spec = RunDir.open(unet_run.run_dir).load_model()
    files = sorted((scenes / "images" / "test").glob("*.png"))
    x = torch.stack([load_image(f, 3) for f in files])
    y = torch.stack([load_mask(scenes / "masks" / "test" / f.name) for f in files])
    with torch.no_grad():
        pred = model(normalize_batch(x, spec["data"]["mean"], spec["data"]["std"])).argmax(1)
    # by hand: the share of right pixels; IoU per class that occurs, averaged
    ious = []
    for c in range(len(SCENE_CLASSES)):
        union = int(((pred == c) | (y == c)).sum())
        if union:
            ious.append(int(((pred == c) & (y == c)).sum()) / union)
    pixel_accuracy = (pred == y).float().mean().item()
    metrics = json.loads((unet_run.run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["test/pixel_accuracy"] == pytest.approx(pixel_accuracy, abs=1e-5)
    assert metrics["test/miou"] == pytest.approx(np.mean(ious), abs=1e-5)


def test_training_lowers_the_loss(unet_run) -> None:
    rows = (unet_run.run_dir / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[4]) for r in rows]
    assert losses[-1] < losses[0]


def test_eval_reproduces_the_test_metrics_of_training(unet_run) -> None:
    result = evaluate_segmentation(unet_run.run_dir, accelerator="cpu")
    assert result.miou == pytest.approx(unet_run.metrics["test/miou"], abs=1e-5)
    assert result.pixel_accuracy == pytest.approx(unet_run.metrics["test/pixel_accuracy"], abs=1e-5)
    assert [row.name for row in result.per_class] == SCENE_CLASSES
    assert sum(row.pixels for row in result.per_class) == 8 * 32 * 32
    ious = [row.iou for row in result.per_class if row.iou is not None]
    assert np.nanmean(ious) == pytest.approx(result.miou, abs=1e-5)
    assert all(p.is_file() for p in result.pngs)


def test_eval_on_the_validation_split_differs_from_test(unet_run) -> None:
    result = evaluate_segmentation(unet_run.run_dir, split="val", accelerator="cpu", plot=False)
    assert sum(row.pixels for row in result.per_class) == 8 * 32 * 32  # 25 % of 32 scenes
    assert result.miou == pytest.approx(unet_run.metrics["val/miou"], abs=1e-5)


def test_predict_writes_a_label_png_and_an_overlay(unet_run, scenes: Path, tmp_path: Path) -> None:
    image = scenes / "images" / "test" / "00001.png"
    big = tmp_path / "big.jpg"
    Image.open(image).resize((45, 37)).save(big)  # another size than training
    out = tmp_path / "preds"
    results = predict_segmentation(unet_run.run_dir, [image, big], out)
    assert [r.label_png.name for r in results] == ["00001_label.png", "big_label.png"]
    labels = load_mask(results[1].label_png)
    assert labels.shape == (37, 45) and int(labels.max()) < 11
    assert Image.open(results[1].overlay_png).size == (45, 37)
    assert sum(results[0].areas.values()) == pytest.approx(1.0, abs=1e-3)
    # The label PNG holds exactly the model's argmax.
    model, _ = RunDir.open(unet_run.run_dir).load_model()
    from cnnzoo.data.folder import load_image
    from cnnzoo.data.transforms import normalize_batch

    x = normalize_batch(load_image(image, 3)[None], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        expected = model(x).argmax(1)[0]
    assert torch.equal(load_mask(results[0].label_png), expected)
    with pytest.raises(CnnzooError, match="exists: pass --overwrite"):
        predict_segmentation(unet_run.run_dir, [image], out)
    assert predict_segmentation(unet_run.run_dir, [image], out, overwrite=True)


def test_predict_refuses_a_missing_image(unet_run, tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match="image not found: .*nope.png"):
        predict_segmentation(unet_run.run_dir, [tmp_path / "nope.png"], tmp_path / "p")


def test_encoder_starts_from_a_classification_run(scenes: Path, tmp_path: Path, tiny_cfg) -> None:
    cls = train(tiny_cfg(out=str(tmp_path / "cls"), val_fraction=0.0))
    cfg = _cfg(
        scenes, tmp_path / "seg", model="encdec", backbone_weights=str(cls.run_dir),
        model_kwargs={"min_width": 4}, epochs=1, lr=0.0, snapshots=0,
    )  # fmt: skip
    result = train(cfg)
    config = (result.run_dir / "config.yaml").read_text()
    assert "adapted_conv" in config
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["kwargs"]["backbone"] == "convnet" and spec["kwargs"]["widths"] == [8, 16]
    from safetensors.torch import load_file

    source = load_file(str(cls.run_dir / "model.safetensors"))
    target = load_file(str(result.run_dir / "model.safetensors"))
    # lr 0: the encoder still holds the classifier's weights (beyond the adapted first conv).
    convs = [k for k in source if k.endswith("weight") and source[k].ndim == 4]
    first, deeper = convs[0], convs[1]
    torch.testing.assert_close(target[f"backbone.model.{deeper}"], source[deeper])
    assert target[f"backbone.model.{first}"].shape[1] == 3 and source[first].shape[1] == 1


@pytest.mark.parametrize(
    ("model", "kwargs", "key"),
    [
        ("unet", {"width": 4}, "backbone.model.stages.1.0.conv.weight"),
        ("segnet", {"widths": [8, 16], "depths": [2, 2]}, "encoder.1.convs.0.conv.weight"),
    ],
)
def test_unet_and_segnet_encoders_start_from_a_convnet_run(
    scenes: Path, tmp_path: Path, tiny_cfg, model: str, kwargs: dict, key: str
) -> None:
    from safetensors.torch import load_file

    cls = train(tiny_cfg(out=str(tmp_path / "cls"), val_fraction=0.0))
    cfg = _cfg(
        scenes, tmp_path / model, model=model, backbone_weights=str(cls.run_dir),
        model_kwargs=kwargs, epochs=1, lr=0.0, snapshots=0,
    )  # fmt: skip
    result = train(cfg)
    source = load_file(str(cls.run_dir / "model.safetensors"))
    target = load_file(str(result.run_dir / "model.safetensors"))
    # lr 0: the encoder's second stage holds the classifier's first convolution of it.
    torch.testing.assert_close(target[key], source["stages.1.0.conv.weight"])
    # ... and the run rebuilds the same model from its own files.
    loaded, _ = RunDir.open(result.run_dir).load_model()
    torch.testing.assert_close(loaded.state_dict()[key], source["stages.1.0.conv.weight"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"model": "fullres_fcn", "model_kwargs": {}, "backbone": "resnet18"},
            "fullres_fcn has no backbone option",
        ),
        ({"classes": [0, 1]}, "--classes is a classification option"),
        ({"image_size": 64}, r"use --input-size H W"),
        ({"class_weights": [1.0, 2.0]}, "--class-weights has 2 values for 11 classes"),
        ({"model": "pspnet", "model_kwargs": {}, "input_size": [16, 16]}, r"at least 32x32"),
    ],
)
def test_bad_segmentation_options(scenes: Path, tmp_path: Path, overrides, message) -> None:
    with pytest.raises(CnnzooError, match=message):
        train(_cfg(scenes, tmp_path / "bad", **overrides))


def test_backbone_must_match_the_weights(scenes: Path, tmp_path: Path, tiny_cfg) -> None:
    cls = train(tiny_cfg(out=str(tmp_path / "cls"), val_fraction=0.0))
    with pytest.raises(CnnzooError, match="--backbone resnet18 does not match .* convnet"):
        train(_cfg(scenes, tmp_path / "seg", model="fcn8s", backbone="resnet18",
                   backbone_weights=str(cls.run_dir), model_kwargs={}))  # fmt: skip


def test_pspnet_encoder_from_a_small_input_resnet_run(tmp_path: Path) -> None:
    import cnnzoo
    from cnnzoo.families.backbones import backbone_model_args, load_backbone_weights

    torch.manual_seed(0)
    cls = cnnzoo.create_model("resnet18", num_classes=10, in_channels=1, small_input=True)
    RunDir(tmp_path).save_model(cls, {"model": "resnet18", "kwargs": cls.model_kwargs})
    cfg = TrainConfig(model="pspnet", backbone="resnet18", backbone_weights=str(tmp_path))
    args = backbone_model_args(cfg, in_channels=3, num_classes=11)
    assert args["small_input"] is True and args["backbone"] == "resnet18"
    seg = cnnzoo.create_model("pspnet", **args)
    report = load_backbone_weights(seg, str(tmp_path))
    assert report["adapted_conv"] == "stem.conv"
    torch.testing.assert_close(
        seg.backbone.model.stages[2][0].conv1.conv.weight, cls.stages[2][0].conv1.conv.weight
    )
    assert seg.backbone.feature_info.reduction() == [8, 4]
    assert seg.eval()(torch.randn(1, 3, 40, 36)).shape == (1, 11, 40, 36)


def test_segmentation_data_for_a_detector_is_a_clear_error(tmp_path: Path) -> None:
    cfg = TrainConfig(model="yolov3", data="masks:/nowhere", out=str(tmp_path / "y"),
                      progress=False)  # fmt: skip
    with pytest.raises(CnnzooError, match="detection data 'masks:/nowhere' is not understood"):
        train(cfg)
    assert not (tmp_path / "y").exists()
