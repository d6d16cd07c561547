"""Knowledge distillation as a LightningModule: a student learns from a frozen teacher.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015. The training
loss is :func:`cnnzoo.compress.distill.kd_loss`; validation, test, metrics and optimiser
are those of :class:`~cnnzoo.tasks.classification.ClassificationTask`, so a distilled
student is evaluated exactly like one trained alone.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.compress.distill import check_kd_params, kd_loss
from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks.classification import ClassificationTask


class DistillationTask(ClassificationTask):
    """Train ``model`` (the student) on the KD loss against a frozen ``teacher``.

    The teacher may be any classifier with the same number of classes; it receives the
    very batch the student receives, so it must accept the student's input size and
    normalisation (the workflow must load both for the same data). It stays in eval mode
    (BatchNorm running statistics, no dropout) whatever ``train()`` is called, runs without
    gradients and is left out of the optimiser. It is a submodule of the task (so Lightning
    moves it to the device and its checkpoints hold it) but not of ``task.model``: saving
    ``task.model`` saves the student only.

    A student with auxiliary classifiers (GoogLeNet) distils through its main logits; each
    auxiliary head keeps the plain cross-entropy on the labels at ``aux_weight``, as in
    :class:`ClassificationTask`.

    Args:
        model: the student network.
        teacher: the trained teacher network.
        num_classes: number of classes (for the metrics).
        temperature: softmax temperature ``T`` (> 0).
        alpha: weight of the soft (teacher) term in ``[0, 1]``; ``1 - alpha`` weights the
            hard-label cross-entropy.
        **kwargs: the other arguments of :class:`ClassificationTask` (optimiser, schedule,
            ``aux_weight``, ``channels_last``...).

    Raises:
        CnnzooError: for a bad ``temperature`` or ``alpha``, a teacher with another number
            of classes, or a nonzero ``label_smoothing`` (the teacher's soft targets replace
            it). The hard term of the KD loss is cross-entropy, which equals ``"nll"`` and
            ``"kl"`` for class-index targets; ``loss`` still names the validation/test loss.
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        num_classes: int,
        temperature: float = 4.0,
        alpha: float = 0.9,
        **kwargs: object,
    ) -> None:
        check_kd_params(temperature, alpha)
        if kwargs.get("label_smoothing", 0.0):
            raise CnnzooError(
                f"label_smoothing {kwargs['label_smoothing']} is not used with distillation; "
                "use 0 (the teacher's soft targets replace it)"
            )
        teacher_classes = getattr(teacher, "num_classes", num_classes)
        if teacher_classes != num_classes:
            raise CnnzooError(
                f"the teacher predicts {teacher_classes} classes, the student {num_classes}; "
                "distil between models of the same classes"
            )
        with warnings.catch_warnings():
            # The parent's save_hyperparameters() sees ``teacher`` in this frame and warns;
            # the call below records the hyper-parameters without it.
            warnings.filterwarnings("ignore", message=".*'teacher' is an instance of")
            super().__init__(model, num_classes, **kwargs)
        self.save_hyperparameters(ignore=["model", "teacher"])
        teacher.requires_grad_(False)
        self.teacher = teacher.eval()

    def train(self, mode: bool = True) -> DistillationTask:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, x: Tensor) -> Tensor:
        """Return the teacher's logits for ``x``, without gradients."""
        self.teacher.eval()
        with torch.no_grad():
            out = self.teacher(x)
        return out.logits if isinstance(out, AuxOutput) else out

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return the KD loss against the frozen teacher (aux heads: plain cross-entropy x
        ``aux_weight``) and the student's logits."""
        hp = self.hparams
        out = self.model(x)
        logits = out.logits if isinstance(out, AuxOutput) else out
        loss = kd_loss(logits, self.teacher_logits(x), y, hp.temperature, hp.alpha)
        if isinstance(out, AuxOutput):
            for aux in out.aux:
                loss = loss + hp.aux_weight * F.cross_entropy(aux.float(), y)
        return loss, logits
