"""Detection task (mAP through torchmetrics/pycocotools) and the detection data module."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from cnnzoo.data.datamodule import IMAGENET_MEAN, IMAGENET_STD
from cnnzoo.data.det_datamodule import DetectionData
from cnnzoo.errors import CnnzooError
from cnnzoo.tasks.detection import DetectionTask, class_ap_list

SIZE = 32


class Dummy(nn.Module):
    """A detector whose ``decode`` returns given predictions (or one fixed box per image).

    ``forward`` returns a stored tensor; the loss is the squared distance of one parameter to
    0.5, so an optimiser has something to learn.
    """

    def __init__(self, predictions=None, num_classes: int = 3) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0]))
        self.register_buffer("out", torch.zeros(1))
        self.num_classes = num_classes
        self.predictions = predictions
        self.calls: list[tuple] = []

    def forward(self, x):
        return self.out.expand(len(x))

    def loss(self, outputs, targets, image_size):
        loss = ((self.w - 0.5) ** 2).sum() + 0 * outputs.sum()
        return {"loss": loss, "loss_w": loss.detach() * 2}

    def decode(
        self, outputs, image_size, score_threshold=0.05, iou_threshold=0.5, max_detections=100
    ):
        self.calls.append((tuple(image_size), score_threshold, iou_threshold, max_detections))
        if self.predictions is not None:
            return [{k: v.clone() for k, v in p.items()} for p in self.predictions]
        h, w = image_size
        box = torch.tensor([[0.0, 0.0, w / 2, h / 2]])
        return [
            {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
            for _ in range(len(outputs))
        ]


def _target(boxes, labels, **extra):
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    t.update(extra)
    return t


def _pred(boxes, labels, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def _evaluate(preds, targets, num_classes=3, **task_kwargs):
    model = Dummy(preds, num_classes)
    task = DetectionTask(model, num_classes=num_classes, **task_kwargs)
    x = torch.zeros(len(targets), 3, SIZE, SIZE)
    task._evaluate((x, targets), "test")
    return task, task.epoch_metrics("test")


A = [2.0, 3.0, 12.0, 13.0]
B = [15.0, 10.0, 30.0, 28.0]


def test_perfect_predictions_give_map_one_and_pass_the_decode_settings():
    targets = [_target([A, B], [0, 1]), _target([B], [1])]
    preds = [_pred([A, B], [0, 1], [0.9, 0.8]), _pred([B], [1], [0.7])]
    task, m = _evaluate(preds, targets, score_threshold=0.2, iou_threshold=0.4, max_detections=7)
    assert m["map"] == pytest.approx(1.0)
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_75"] == pytest.approx(1.0)
    # aligned with class ids 0, 1, 2; class 2 has no ground truth -> NaN
    ap = task.last_class_ap
    assert len(ap) == 3
    assert ap[:2] == pytest.approx([1.0, 1.0])
    assert math.isnan(ap[2])
    assert task.model.calls == [((SIZE, SIZE), 0.2, 0.4, 7)]


def test_a_box_at_iou_06_counts_at_050_but_not_at_075():
    gt = [0.0, 0.0, 10.0, 10.0]
    shifted = [0.0, 0.0, 10.0, 6.0]  # inside the ground truth, 60% of its area: IoU 0.6
    task, m = _evaluate([_pred([shifted], [0], [0.9])], [_target([gt], [0])], num_classes=1)
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_75"] == pytest.approx(0.0)
    # matched at IoU 0.50, 0.55 (and 0.60 at the edge) of the ten thresholds 0.50..0.95
    assert 0.15 < m["map"] < 0.35
    assert task.last_class_ap == [pytest.approx(m["map"])]


def test_a_wrong_class_prediction_gives_ap_zero_for_the_missed_class():
    targets = [_target([A], [0]), _target([B], [1])]
    preds = [_pred([A], [1], [0.5]), _pred([B], [1], [0.9])]  # image 0: right box, wrong class
    task, m = _evaluate(preds, targets)
    assert task.last_class_ap[0] == pytest.approx(0.0)
    assert task.last_class_ap[1] == pytest.approx(1.0)  # its false positive scores lower
    assert m["map_50"] == pytest.approx(0.5)


def test_difficult_objects_are_neither_required_nor_counted_as_misses():
    pred = [_pred([A], [0], [0.9])]
    plain, _ = _evaluate(pred, [_target([A, B], [0, 0])], num_classes=1)
    _, m = _evaluate(
        pred, [_target([A, B], [0, 0], difficult=torch.tensor([False, True]))], num_classes=1
    )
    assert plain.last_metrics["map_50"] == pytest.approx(0.5, abs=0.02)  # recall 1/2
    assert m["map_50"] == pytest.approx(1.0)


def test_class_ap_list_maps_torchmetrics_classes_and_minus_one():
    result = {"classes": torch.tensor([0, 2, 5]), "map_per_class": torch.tensor([0.5, -1.0, 0.25])}
    ap = class_ap_list(result, 4)
    assert ap[0] == 0.5
    assert math.isnan(ap[1]) and math.isnan(ap[2]) and math.isnan(ap[3])
    one = class_ap_list({"classes": torch.tensor(1), "map_per_class": torch.tensor(0.75)}, 2)
    assert math.isnan(one[0]) and one[1] == 0.75


def test_training_step_returns_the_loss_and_rejects_non_finite():
    task = DetectionTask(Dummy(), num_classes=3)
    batch = (torch.zeros(2, 3, SIZE, SIZE), [_target([A], [0]), _target([B], [1])])
    loss = task.training_step(batch, 0)
    assert loss.item() == pytest.approx(2.25)
    loss.backward()
    assert task.model.w.grad.item() == pytest.approx(3.0)
    with torch.no_grad():
        task.model.w.fill_(float("nan"))
    from cnnzoo.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        task.training_step(batch, 0)


# -- the data module --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from cnnzoo.data.scenes import generate_scenes

    return generate_scenes(
        tmp_path_factory.mktemp("det") / "scenes", n_train=8, n_test=4, size=SIZE
    )


def test_scenes_batches_are_normalised_images_and_target_lists(scenes):
    dm = DetectionData(f"scenes:{scenes}", batch_size=2, augment=False, val_fraction=0.25)
    assert dm.spec.sizes == {"train": 6, "val": 2, "test": 4}
    assert dm.spec.num_classes == 10 and dm.spec.class_names[0] == "T-shirt/top"
    assert dm.spec.image_size == (SIZE, SIZE) and dm.spec.in_channels == 3
    raw, targets = next(iter(dm.train_dataloader()))
    assert raw.dtype == torch.uint8 and raw.shape == (2, 3, SIZE, SIZE)
    x, out = dm.on_after_batch_transfer((raw, targets), 0)
    assert x.dtype == torch.float32 and x.shape == (2, 3, SIZE, SIZE)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (raw.float() / 255 - mean) / std)
    assert isinstance(out, list) and len(out) == 2
    assert sum(len(t["boxes"]) for t in out) > 0
    for t in out:
        b = t["boxes"]
        assert b.dtype == torch.float32 and b.shape[1] == 4 and len(t["labels"]) == len(b)
        assert (b >= 0).all() and (b <= SIZE).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert ((t["labels"] >= 0) & (t["labels"] < 10)).all()
    assert dm.has_split("val") and dm.has_split("test") and not dm.has_split("other")


def test_val_split_is_held_out_of_train_without_overlap(scenes):
    dm = DetectionData(f"scenes:{scenes}", batch_size=2, val_fraction=0.25, seed=3)
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert train.base is val.base and test.base is not train.base
    assert not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(8))
    assert len(val) == 2 and len(test) == 4
    again = DetectionData(f"scenes:{scenes}", batch_size=2, val_fraction=0.25, seed=3)
    assert again.splits["val"].indices == val.indices
    assert "val" not in DetectionData(f"scenes:{scenes}", val_fraction=0).splits


def test_input_size_scales_the_boxes_and_augmentation_flips_them(scenes):
    plain = DetectionData(f"scenes:{scenes}", augment=False, val_fraction=0.25)
    scaled = DetectionData(
        f"scenes:{scenes}", input_size=(64, 48), augment=False, val_fraction=0.25
    )
    assert scaled.spec.image_size == (64, 48)
    factor = torch.tensor([48 / SIZE, 64 / SIZE, 48 / SIZE, 64 / SIZE])
    compared = 0
    for split in ("val", "test"):
        for i in range(len(plain.splits[split])):
            _, t0 = plain.splits[split][i]
            image, t1 = scaled.splits[split][i]
            assert image.shape == (3, 64, 48)
            if len(t0["boxes"]) == len(t1["boxes"]):
                torch.testing.assert_close(t1["boxes"], t0["boxes"] * factor, atol=1e-3, rtol=0)
                assert torch.equal(t1["labels"], t0["labels"])
                compared += 1
    assert compared >= 3

    augmented = DetectionData(f"scenes:{scenes}", input_size=(64, 48), val_fraction=0.25)
    key = augmented.splits["train"].indices[0]
    expected = augmented.splits["train"].base.target(key)["boxes"] * factor
    mirrored = expected.clone()
    mirrored[:, 0], mirrored[:, 2] = 48 - expected[:, 2], 48 - expected[:, 0]
    torch.manual_seed(0)
    seen = set()
    for _ in range(16):
        image, t = augmented.splits["train"][0]
        assert image.shape == (3, 64, 48)
        if len(t["boxes"]) != len(expected):
            continue
        if torch.allclose(t["boxes"], expected, atol=1e-3):
            seen.add("plain")
        elif torch.allclose(t["boxes"], mirrored, atol=1e-3):
            seen.add("flipped")
        else:
            pytest.fail(f"boxes {t['boxes']} are neither {expected} nor mirrored")
    assert seen == {"plain", "flipped"}


def test_coco_form_finds_the_sibling_test_file(scenes):
    dm = DetectionData(f"coco:{scenes / 'annotations' / 'instances_train.json'}", val_fraction=0.25)
    assert dm.spec.sizes == {"train": 6, "val": 2, "test": 4}
    assert dm.splits["test"].base.annotation_file.name == "instances_test.json"


def test_bad_data_forms_are_user_errors(scenes, tmp_path):
    with pytest.raises(CnnzooError, match="scenes:"):
        DetectionData(str(scenes))
    with pytest.raises(CnnzooError, match="not understood"):
        DetectionData("pascal:/nowhere")
    with pytest.raises(CnnzooError, match="input-size"):
        DetectionData(f"scenes:{scenes}", input_size=(0, 4))


def test_lightning_fit_and_test_log_map(scenes):
    L.seed_everything(0)
    dm = DetectionData(f"scenes:{scenes}", batch_size=2, val_fraction=0.25)
    task = DetectionTask(Dummy(num_classes=10), num_classes=10, lr=0.1)
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    assert "val/map" in trainer.callback_metrics
    assert task.model.w.item() < 2.0  # three AdamW steps towards 0.5
    (result,) = trainer.test(task, datamodule=dm)
    for key in ("test/map", "test/map_50", "test/map_75", "test/loss", "test/loss_w"):
        assert key in result
    assert 0.0 <= result["test/map"] <= result["test/map_50"] <= 1.0
    assert result["test/loss"] == pytest.approx((task.model.w.item() - 0.5) ** 2, rel=1e-4)
    assert len(task.last_class_ap) == 10
    assert task.model.calls[-1][0] == (SIZE, SIZE)
