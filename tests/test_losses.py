"""The lecture's three losses, label smoothing, and GoogLeNet's auxiliary weighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnzoo import CnnzooError
from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks.classification import ClassificationTask, classification_loss

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
TARGET = torch.tensor([0, 2])


def test_nll_cross_entropy_and_kl_agree_for_one_hot_targets():
    ce = classification_loss(LOGITS, TARGET, "cross_entropy")
    nll = classification_loss(LOGITS, TARGET, "nll")
    kl = classification_loss(LOGITS, TARGET, "kl")
    expected = -(F.log_softmax(LOGITS, 1)[[0, 1], [0, 2]]).mean()
    assert ce.item() == pytest.approx(expected.item(), abs=1e-6)
    assert nll.item() == pytest.approx(expected.item(), abs=1e-6)
    assert kl.item() == pytest.approx(expected.item(), abs=1e-6)


def test_kl_to_soft_targets_subtracts_the_target_entropy():
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    kl = classification_loss(LOGITS, soft, "kl")
    logp = F.log_softmax(LOGITS, 1)
    cross = -(soft * logp).sum(1)
    entropy = -(soft * torch.log(soft.clamp_min(1e-12))).sum(1)
    assert kl.item() == pytest.approx((cross - entropy).mean().item(), abs=1e-6)


def test_label_smoothing_matches_the_smoothed_target_cross_entropy():
    eps = 0.1
    smoothed = F.one_hot(TARGET, 3).float() * (1 - eps) + eps / 3
    expected = -(smoothed * F.log_softmax(LOGITS, 1)).sum(1).mean()
    for name in ("cross_entropy", "nll"):
        got = classification_loss(LOGITS, TARGET, name, label_smoothing=eps)
        assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(CnnzooError, match="unknown loss 'mse'"):
        classification_loss(LOGITS, TARGET, "mse")


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return AuxOutput(LOGITS + self.w, (LOGITS.flip(1) + self.w, LOGITS * 0 + self.w))


@pytest.mark.parametrize("weight", [0.3, 1.0])
def test_auxiliary_losses_are_added_at_their_weight(weight):
    task = ClassificationTask(_TwoHeads(), num_classes=3, aux_weight=weight)
    total, logits = task._loss(task.model(None), TARGET)
    main = F.cross_entropy(LOGITS, TARGET)
    aux1 = F.cross_entropy(LOGITS.flip(1), TARGET)
    aux2 = math.log(3)  # uniform logits
    assert torch.equal(logits, LOGITS)
    assert total.item() == pytest.approx(main.item() + weight * (aux1.item() + aux2), abs=1e-5)
