"""Top losses: a classifier's most confident mistakes, each with the maps of both classes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.data.fashion_mnist import load_fashion_mnist_mini
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.explain.top_losses import top_losses, worst_mistakes
from cnnzoo.rundir import RunDir
from cnnzoo.viz.top_losses import save_top_losses
from cnnzoo.workflows.train import TrainConfig, train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small convnet trained briefly on the bundled mini set: right about 70% of the time."""
    out = tmp_path_factory.mktemp("runs") / "convnet"
    cfg = TrainConfig(model="convnet", data="fashion-mnist-mini", out=str(out), epochs=2,
                      batch_size=32, val_fraction=0.25,
                      model_kwargs={"widths": [8, 16], "hidden": 16}, progress=False,
                      accelerator="cpu")  # fmt: skip
    return train(cfg).run_dir


def _test_set_losses(run: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image loss, prediction and label of the whole mini test set, computed here."""
    model, spec = RunDir.open(run).load_model()
    images, labels = load_fashion_mnist_mini("test")
    x = normalize_batch(images, spec["data"]["mean"], spec["data"]["std"])
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(1), labels


def test_items_are_the_largest_losses_among_the_mistakes(run: Path) -> None:
    items = top_losses(run, n=6)
    losses, preds, labels = _test_set_losses(run)
    wrong = preds != labels
    expected = losses[wrong].sort(descending=True).values[:6]
    assert len(items) == 6
    assert [t.loss for t in items] == sorted((t.loss for t in items), reverse=True)
    np.testing.assert_allclose([t.loss for t in items], expected.numpy(), rtol=1e-4)
    for t in items:
        assert t.pred_label != t.true_label and bool(wrong[t.index])
        assert (t.pred_label, t.true_label) == (int(preds[t.index]), int(labels[t.index]))


def test_probabilities_names_and_image_agree_with_the_loss(run: Path) -> None:
    names = RunDir.open(run).read_spec()["data"]["class_names"]
    images, _ = load_fashion_mnist_mini("test")
    for t in top_losses(run, n=4):
        assert t.loss == pytest.approx(-math.log(t.prob_true), rel=1e-4)
        assert t.prob_pred > t.prob_true  # a mistake: the wrong class won
        assert (t.pred_name, t.true_name) == (names[t.pred_label], names[t.true_label])
        assert t.image.dtype == torch.uint8 and torch.equal(t.image, images[t.index])


def test_heatmaps_cover_the_image_in_0_to_1(run: Path) -> None:
    items = top_losses(run, n=6)
    for t in items:
        for heat in (t.heat_pred, t.heat_true):
            assert heat.shape == tuple(t.image.shape[-2:]) == (28, 28)
            assert heat.min() >= 0.0
            # scaled to a peak of 1, or all 0 where Grad-CAM finds no positive evidence
            assert heat.max() == pytest.approx(1.0) or heat.max() == 0.0
        assert not np.array_equal(t.heat_pred, t.heat_true)
    # Most confident mistakes have evidence for the class they predicted (on this machine's
    # numerics one of six can have none: Grad-CAM's ReLU of a negative sum).
    assert sum(t.heat_pred.max() == pytest.approx(1.0) for t in items) >= 4


def test_n_beyond_the_mistakes_returns_every_mistake(run: Path) -> None:
    _, preds, labels = _test_set_losses(run)
    wrong = (preds[:20] != labels[:20]).nonzero().flatten().tolist()
    assert 0 < len(wrong) < 20
    items = top_losses(run, n=1000, limit=20)
    assert sorted(t.index for t in items) == wrong


def test_worst_mistakes_skips_correct_images_and_may_find_none() -> None:
    losses = torch.tensor([5.0, 0.1, 2.0, 3.0, 2.0])
    labels = torch.tensor([0, 1, 2, 3, 4])
    preds = torch.tensor([0, 0, 1, 1, 0])  # image 0 is right despite its loss
    assert worst_mistakes(losses, preds, labels, 3) == [3, 2, 4]  # ties: the split's order
    assert worst_mistakes(losses, preds, labels, 10) == [3, 2, 4, 1]
    assert worst_mistakes(losses, labels, labels, 3) == []


def test_segmentation_run_is_refused_in_one_line(tmp_path: Path) -> None:
    from cnnzoo.registry import create_model

    seg = RunDir.create(tmp_path / "unet")
    kwargs = {"width": 4, "depth": 2, "num_classes": 3, "in_channels": 3}
    seg.save_model(create_model("unet", **kwargs),
                   {"model": "unet", "kwargs": kwargs, "task": "segmentation"})  # fmt: skip
    with pytest.raises(CnnzooError, match=r"applies to classification runs; .*unet is a "
                       r"segmentation run") as err:  # fmt: skip
        top_losses(seg.path, n=4)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, r"--top-losses 0 is too small: expected 1 or more"),
    ({"n": 2, "limit": 0}, r"limit 0 is too small"),
    ({"n": 2, "method": "saliency"}, r"unknown method 'saliency'"),
    ({"n": 2, "split": "train2"}, r"has no 'train2' split"),
])  # fmt: skip
def test_bad_arguments_are_refused(run: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(CnnzooError, match=message):
        top_losses(run, **kwargs)


def test_figure_is_written_with_a_cell_per_mistake(run: Path, tmp_path: Path) -> None:
    items = top_losses(run, n=5)
    out = save_top_losses(items, tmp_path / "figs" / "worst.png", title="convnet: top losses")
    assert out == tmp_path / "figs" / "worst.png"
    with Image.open(out) as img:
        width, height = img.size
        pixels = np.asarray(img.convert("L"))
    assert width > 2 * height  # two rows of four pairs, wider than tall
    assert pixels.std() > 10  # drawn, not blank
    assert [p.name for p in out.parent.iterdir()] == ["worst.png"]  # no temporary left
    with pytest.raises(ValueError, match="at least one item"):
        save_top_losses([], tmp_path / "none.png")


def test_images_and_maps_are_at_the_size_the_model_takes(run: Path, tmp_path: Path) -> None:
    resized = tmp_path / "resized"
    shutil.copytree(run, resized)
    spec = json.loads((resized / "model.json").read_text())
    spec["resize_to"] = 40  # as for a model with a minimum input size
    (resized / "model.json").write_text(json.dumps(spec))
    for t in top_losses(resized, n=2):
        assert tuple(t.image.shape) == (1, 40, 40) and t.image.dtype == torch.uint8
        assert t.heat_pred.shape == t.heat_true.shape == (40, 40)
