"""Training runs, a few steps each: the run directory, losses, aux heads, resume, NaN, data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cnnzoo import CnnzooError
from cnnzoo.families.classification.evaluate import evaluate
from cnnzoo.families.classification.predict import predict
from cnnzoo.workflows.train import train


def _rows(run_dir):
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_training_fills_the_run_directory(tiny_cfg):
    result = train(tiny_cfg(epochs=2))
    run = result.run_dir
    for name in ("config.yaml", "model.safetensors", "model.json", "metrics.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "plots" / "curves.png").stat().st_size > 1000
    assert (run / "plots" / "confusion.png").stat().st_size > 1000
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "convnet" and metrics["task"] == "classification"
    assert metrics["dataset"] == "fashion-mnist-mini" and metrics["epochs"] == 2
    # the recorded accuracy is the trace of the test confusion matrix over its total
    confusion = result.confusion
    assert metrics["metrics"]["test/accuracy"] == pytest.approx(
        float(confusion.diagonal().sum() / confusion.sum()), abs=1e-6
    )
    assert "val/accuracy" in metrics["metrics"]
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r["val/accuracy"] != "" for r in rows)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == "convnet" and config["resolved"]["data"]["in_channels"] == 1
    assert result.confusion.sum().item() == 1000  # the mini test split


def test_a_short_run_learns_well_above_chance(tiny_cfg):
    result = train(tiny_cfg(subset=1024, epochs=3, batch_size=64, lr=0.05, val_fraction=0.0))
    assert result.metrics["test/accuracy"] > 0.45  # chance is 0.10


def test_nll_and_cross_entropy_train_to_the_same_weights(tiny_cfg, tmp_path):
    weights = []
    for loss in ("cross_entropy", "nll"):
        result = train(tiny_cfg(loss=loss, out=str(tmp_path / loss), augment=False))
        weights.append(load_file(str(result.run_dir / "model.safetensors")))
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-4, rtol=1e-4)


def test_kl_loss_with_label_smoothing_trains(tiny_cfg):
    from cnnzoo.data.fashion_mnist import load_fashion_mnist_mini
    from cnnzoo.data.transforms import normalize_batch
    from cnnzoo.rundir import RunDir

    result = train(tiny_cfg(loss="kl", label_smoothing=0.1))
    # test/loss is KL(smoothed target || softmax) of the saved model, by hand: the true class
    # holds 0.9 + 0.1/10 of the target's mass, every other class 0.1/10
    model, spec = RunDir.open(result.run_dir).load_model()
    x, y = load_fashion_mnist_mini("test")
    with torch.no_grad():
        log_p = model(normalize_batch(x, spec["data"]["mean"], spec["data"]["std"])).log_softmax(1)
    target = torch.full_like(log_p, 0.01)
    target[torch.arange(len(y)), y] = 0.91
    kl = (target * (target.log() - log_p)).sum(1).mean()
    assert result.metrics["test/loss"] == pytest.approx(float(kl), abs=1e-4)


def test_googlenet_trains_with_its_auxiliary_classifiers(tiny_cfg, monkeypatch):
    import cnnzoo.tasks.classification as cls

    seen = []
    original = cls.classification_loss
    monkeypatch.setattr(
        cls, "classification_loss", lambda *a, **k: seen.append(a[0].shape) or original(*a, **k)
    )
    train(tiny_cfg(model="googlenet", model_kwargs={}, subset=32, val_fraction=0.0))
    # each training step: main logits + 2 auxiliary heads, all (batch, 10)
    assert seen[:3] == [torch.Size([32, 10])] * 3


def test_resume_continues_a_crashed_run_from_the_last_checkpoint(tiny_cfg, monkeypatch):
    import cnnzoo.tasks.classification as cls

    original = cls.classification_loss
    calls = {"n": 0}

    def crash_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 training steps + 1 validation step per epoch
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, "classification_loss", crash_in_epoch_2)
    cfg = tiny_cfg(epochs=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    assert [int(r["epoch"]) for r in _rows(Path(cfg.out))] == [1]
    monkeypatch.setattr(cls, "classification_loss", original)
    result = train(tiny_cfg(epochs=2, resume=True))
    assert result.epochs == 2
    assert [int(r["epoch"]) for r in _rows(result.run_dir)] == [1, 2]


def test_existing_run_directory_is_refused(tiny_cfg):
    train(tiny_cfg())
    with pytest.raises(CnnzooError, match="already exists"):
        train(tiny_cfg())


def test_nan_loss_stops_and_names_step_and_checkpoint(tiny_cfg, monkeypatch):
    import cnnzoo.tasks.classification as cls

    original = cls.classification_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(cls, "classification_loss", poisoned)
    cfg = tiny_cfg(epochs=3, subset=64, val_fraction=0.0)  # 2 steps per epoch
    with pytest.raises(CnnzooError, match=r"loss became nan at step 3 \(epoch 1\).*last\.ckpt"):
        train(cfg)


def test_image_folder_training_eval_and_predict(tiny_cfg, image_folder):
    cfg = tiny_cfg(data=str(image_folder), image_size=16, subset=None, val_fraction=0.34)
    result = train(cfg)
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["data"]["class_names"] == ["cat", "dog", "owl"]
    assert spec["data"]["in_channels"] == 3
    report = evaluate(result.run_dir, split="test")
    assert report.accuracy == pytest.approx(result.metrics["test/accuracy"], abs=1e-6)
    assert sum(r.support for r in report.per_class) == report.confusion.sum().item()
    files = sorted(image_folder.glob("*/0.png"))
    preds = predict(result.run_dir, files, topk=2)
    assert [p.file for p in preds] == files
    for p in preds:
        assert len(p.classes) == 2 and set(p.classes) <= {"cat", "dog", "owl"}
        assert p.probs[0] >= p.probs[1] and sum(p.probs) <= 1 + 1e-6


def test_eval_reproduces_the_training_test_accuracy(tiny_cfg):
    result = train(tiny_cfg())
    report = evaluate(result.run_dir)
    assert report.accuracy == pytest.approx(result.metrics["test/accuracy"], abs=1e-6)
    assert len(report.per_class) == 10


def test_predict_names_a_file_that_is_not_an_image(tiny_cfg, tmp_path):
    result = train(tiny_cfg())
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(CnnzooError, match="notes.png"):
        predict(result.run_dir, [bad])


def test_wrong_channel_count_for_the_data_is_a_clear_error(tiny_cfg):
    with pytest.raises(CnnzooError, match="in_channels=3.*1 channel"):
        train(tiny_cfg(model_kwargs={"in_channels": 3}))


@pytest.mark.slow
def test_models_needing_larger_inputs_get_resized_batches(tiny_cfg):
    result = train(tiny_cfg(model="vgg11", model_kwargs={}, subset=16, batch_size=16,
                            val_fraction=0.0))  # fmt: skip
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["resize_to"] == 32


def test_imagenet_resnets_use_their_small_input_stem_on_28px_images():
    from cnnzoo.families.assemble import fit_model_to_data

    args, resize = fit_model_to_data("resnet18", 1, 10, 28, {})
    assert args["small_input"] is True and resize is None
    args, resize = fit_model_to_data("resnet18", 3, 10, 224, {})
    assert "small_input" not in args and resize is None
    args, resize = fit_model_to_data("alexnet", 1, 10, 28, {})
    assert resize == 63


def test_torchvision_weights_via_the_weights_option(tiny_cfg, tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-tv.pth"
    torch.save(tv.state_dict(), path)
    result = train(tiny_cfg(model="resnet18", model_kwargs={}, weights=str(path), epochs=0,
                            subset=16, val_fraction=0.0))  # fmt: skip
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["resize_to"] == 64  # the ImageNet stem is kept; 28 px images are upsampled
    saved = load_file(str(result.run_dir / "model.safetensors"))
    tv_state = tv.state_dict()
    assert torch.equal(saved["stages.1.0.conv1.conv.weight"], tv_state["layer2.0.conv1.weight"])
    # 3 -> 1 input channel: the first convolution's kernels are summed over RGB
    assert torch.allclose(saved["stem.conv.weight"], tv_state["conv1.weight"].sum(1, keepdim=True))
    assert saved["fc.weight"].shape == (10, 512)  # fresh 10-class head
