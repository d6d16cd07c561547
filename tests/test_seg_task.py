"""Segmentation task: pixel cross-entropy with ignore, Dice, aux weighting, mIoU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks.segmentation import (
    SegmentationTask,
    dice_loss,
    iou_from_confusion,
    segmentation_loss,
)

TARGET = torch.tensor([[[0, 1, 255], [2, 2, 1]]])  # (1, 2, 3), one ignored pixel
LOGITS = torch.randn(1, 3, 2, 3, generator=torch.Generator().manual_seed(0))


def test_cross_entropy_averages_over_labelled_pixels_only():
    logp = F.log_softmax(LOGITS, 1)[0]
    picks = [logp[0, 0, 0], logp[1, 0, 1], logp[2, 1, 0], logp[2, 1, 1], logp[1, 1, 2]]
    expected = -torch.stack(picks).mean()
    assert segmentation_loss(LOGITS, TARGET).item() == pytest.approx(expected.item(), abs=1e-6)


def test_dice_is_near_zero_for_a_confident_correct_prediction_and_ignores_255():
    perfect = F.one_hot(TARGET.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    perfect[0, :, 0, 2] = torch.tensor([0.0, 0.0, 50.0])  # a wrong guess on the ignored pixel
    assert dice_loss(perfect, TARGET).item() < 1e-2
    assert dice_loss(-perfect, TARGET).item() > 0.7  # every pixel wrong: only smoothing left


def test_auxiliary_loss_is_added_at_its_weight():
    class Two(torch.nn.Module):
        def forward(self, x):
            return AuxOutput(LOGITS, (LOGITS.flip(1),))

    task = SegmentationTask(Two(), num_classes=3, aux_weight=0.4)
    expected = segmentation_loss(LOGITS, TARGET) + 0.4 * segmentation_loss(LOGITS.flip(1), TARGET)
    assert task._loss(task.model(None), TARGET).item() == pytest.approx(expected.item(), abs=1e-6)


def test_miou_and_pixel_accuracy_on_a_known_prediction():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            # predicts class 2 everywhere but the first pixel (class 0)
            out = torch.zeros(1, 3, 2, 3)
            out[0, 2] = 1
            out[0, 0, 0, 0] = 5
            return out

    task = SegmentationTask(Fixed(), num_classes=3)
    task._evaluate((torch.zeros(1, 3, 2, 3), TARGET), "test")
    confusion = task.test_confusion.compute()
    iou = iou_from_confusion(confusion)
    # class 0: 1/1; class 1: 0 (2 true pixels, never predicted); class 2: 2 of 4 predicted
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0, 0.5]))
    assert (confusion.diagonal().sum() / confusion.sum()).item() == pytest.approx(3 / 5)


def test_a_class_absent_from_labels_and_predictions_has_no_iou():
    confusion = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    iou = iou_from_confusion(confusion)
    assert iou[:2].tolist() == pytest.approx([3 / 4, 2 / 3])
    assert torch.isnan(iou[2])
    assert iou.nanmean().item() == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_a_few_steps_lower_the_loss_of_fcn8s():
    torch.manual_seed(0)
    model = cnnzoo.create_model("fcn8s", num_classes=3, backbone="resnet18")
    task = SegmentationTask(model, num_classes=3, scheduler="none", lr=3e-3)
    optimizer = task.configure_optimizers()
    x = torch.randn(2, 3, 32, 32)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()  # a pixel-wise rule the net can learn
    losses = []
    for _ in range(6):
        loss = task._loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
