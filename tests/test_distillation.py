"""Hinton knowledge distillation: the loss formula and the frozen-teacher task."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnzoo.compress.distill import kd_loss
from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks.distillation import DistillationTask

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.5, 2.5]])
TARGETS = torch.tensor([1, 2])


def softmax_row(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def kl_by_hand(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    """sum_i p_t log(p_t / p_s), averaged over the rows."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p_s, p_t = softmax_row(s_row, t), softmax_row(t_row, t)
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    return total / len(student)


def ce_by_hand(student: torch.Tensor, targets: torch.Tensor) -> float:
    rows = student.tolist()
    return -sum(
        math.log(softmax_row(r, 1.0)[y]) for r, y in zip(rows, targets.tolist(), strict=True)
    ) / len(rows)


def test_kd_loss_equals_the_formula_by_hand():
    t, alpha = 2.0, 0.7
    # Row 0 at T = 2: p_s = softmax(0.5, 1, 0.25), p_t = softmax(1, 0.5, 0); CE uses T = 1.
    expected = alpha * t**2 * kl_by_hand(STUDENT, TEACHER, t) + (1 - alpha) * ce_by_hand(
        STUDENT, TARGETS
    )
    assert kd_loss(STUDENT, TEACHER, TARGETS, t, alpha).item() == pytest.approx(expected, rel=1e-5)


def test_first_row_written_out():
    # One sample, T = 1, alpha = 0.5: student (0, ln 3) -> p_s = (1/4, 3/4);
    # teacher (0, 0) -> p_t = (1/2, 1/2); label 1.
    s = torch.tensor([[0.0, math.log(3.0)]])
    te = torch.tensor([[0.0, 0.0]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    ce = -math.log(0.75)
    expected = 0.5 * kl + 0.5 * ce
    assert kd_loss(s, te, torch.tensor([1]), 1.0, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_plain_cross_entropy():
    loss = kd_loss(STUDENT, TEACHER, TARGETS, 4.0, 0.0)
    assert loss.item() == pytest.approx(ce_by_hand(STUDENT, TARGETS), rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_alpha_one_is_t_squared_kl(t):
    loss = kd_loss(STUDENT, TEACHER, TARGETS, t, 1.0)
    assert loss.item() == pytest.approx(t**2 * kl_by_hand(STUDENT, TEACHER, t), rel=1e-5)


def test_t_squared_keeps_the_soft_term_finite_at_high_temperature():
    # Hinton et al. Sec. 2.1: as T grows, T^2 * KL tends to matching the zero-meaned logits,
    # (1 / 2C) * sum_i (d_i - mean d)^2 with d = teacher - student; without T^2 it vanishes.
    d = TEACHER - STUDENT
    d = d - d.mean(1, keepdim=True)
    limit = (d**2).sum(1).mean().item() / (2 * STUDENT.shape[1])
    assert kd_loss(STUDENT, TEACHER, TARGETS, 200.0, 1.0).item() == pytest.approx(limit, rel=1e-2)


def test_teacher_logits_get_no_gradient():
    s = STUDENT.clone().requires_grad_(True)
    te = TEACHER.clone().requires_grad_(True)
    kd_loss(s, te, TARGETS, 3.0, 0.9).backward()
    assert te.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("t", "alpha", "match"),
    [(0.0, 0.5, "temperature"), (-1.0, 0.5, "temperature"), (float("nan"), 0.5, "temperature"),
     (2.0, -0.1, "alpha"), (2.0, 1.5, "alpha")],
)  # fmt: skip
def test_kd_loss_rejects_bad_hyperparameters(t, alpha, match):
    with pytest.raises(CnnzooError, match=match):
        kd_loss(STUDENT, TEACHER, TARGETS, t, alpha)


def test_kd_loss_rejects_logits_of_different_shapes():
    with pytest.raises(CnnzooError, match="differ"):
        kd_loss(STUDENT, TEACHER[:, :2], TARGETS, 2.0, 0.5)


# -- the task -----------------------------------------------------------------------------


def student_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5),
    )  # fmt: skip


def teacher_net() -> nn.Module:
    # Another architecture, with dropout and BatchNorm that would change in train mode.
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


def make_task(**kwargs) -> DistillationTask:
    torch.manual_seed(0)
    base = dict(temperature=4.0, alpha=0.9, lr=0.05, scheduler="none", weight_decay=0.0)
    base.update(kwargs)
    return DistillationTask(student_net(), teacher_net(), 5, **base)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)


def test_training_steps_lower_the_kd_loss_and_leave_the_teacher_alone():
    task = make_task()
    with torch.no_grad():  # a confident teacher, so that the soft term has something to teach
        task.teacher[-1].weight.mul_(10.0)
    teacher_before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    x, y = batch()
    opt = torch.optim.SGD(task.model.parameters(), lr=0.05, momentum=0.9)
    task.train()
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        for i in range(25):
            opt.zero_grad()
            loss = task.training_step((x, y), i)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not task.teacher.training
    for k, v in task.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # BN statistics included
    assert all(p.grad is None for p in task.teacher.parameters())


def test_training_step_is_the_kd_loss_against_the_teacher_in_eval_mode():
    task = make_task(alpha=0.6, temperature=3.0)
    x, y = batch()
    task.train()
    with torch.no_grad():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = task.training_step((x, y), 0)
        student = task.model(x)  # train mode: BatchNorm uses this batch's statistics again
        assert not task.teacher.training
        teacher = task.teacher(x)
    assert loss.item() == pytest.approx(kd_loss(student, teacher, y, 3.0, 0.6).item(), rel=1e-4)


def test_teacher_is_not_in_the_student_weights_nor_the_optimiser():
    task = make_task()
    teacher_ids = {id(p) for p in task.teacher.parameters()}
    assert not any(k.startswith("teacher") for k in task.model.state_dict())
    assert set(task.model.state_dict()) == set(student_net().state_dict())
    opt = task.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    params = [p for g in opt.param_groups for p in g["params"]]
    assert params and not any(id(p) in teacher_ids for p in params)
    assert all(not p.requires_grad for p in task.teacher.parameters())


def test_teacher_stays_in_eval_mode_through_a_lightning_fit():
    task = make_task()
    seen: list[tuple[bool, bool]] = []
    task.teacher.register_forward_pre_hook(
        lambda m, _: seen.append((m.training, torch.is_grad_enabled()))
    )
    teacher_before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in task.model.state_dict().items()}
    x, y = batch()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        val_check_interval=2, limit_val_batches=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, loader, loader)
    assert len(seen) == 4 and seen == [(False, False)] * 4
    assert not task.teacher.training
    for k, v in task.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert any(not torch.equal(v, student_before[k]) for k, v in task.model.state_dict().items())
    task.train()
    assert task.model.training and not task.teacher.training


class AuxStudent(nn.Module):
    """A GoogLeNet-like student: main and one auxiliary head in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(4, 5)
        self.aux = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutput:
        f = self.body(x).flatten(1)
        return AuxOutput(self.fc(f), (self.aux(f),)) if self.training else self.fc(f)


def test_auxiliary_heads_keep_the_hard_cross_entropy():
    torch.manual_seed(0)
    task = DistillationTask(AuxStudent(), teacher_net(), 5, temperature=2.0, alpha=0.8)
    x, y = batch()
    task.train()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = task.training_step((x, y), 0)
        out = task.model(x)
        teacher = task.teacher(x)
    expected = kd_loss(out.logits, teacher, y, 2.0, 0.8) + 0.3 * F.cross_entropy(out.aux[0], y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_task_rejects_bad_settings():
    with pytest.raises(CnnzooError, match="alpha"):
        DistillationTask(student_net(), teacher_net(), 5, alpha=2.0)
    with pytest.raises(CnnzooError, match="temperature"):
        DistillationTask(student_net(), teacher_net(), 5, temperature=0.0)
    with pytest.raises(CnnzooError, match="label_smoothing"):
        DistillationTask(student_net(), teacher_net(), 5, label_smoothing=0.1)
    teacher = teacher_net()
    teacher.num_classes = 7
    with pytest.raises(CnnzooError, match="7 classes"):
        DistillationTask(student_net(), teacher, 5)
