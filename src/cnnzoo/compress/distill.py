"""Knowledge distillation: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015, Sec. 2.

The student matches the teacher's class probabilities softened by a temperature ``T``
(``softmax(z / T)``) as well as the true labels. The soft term's gradients scale as
``1 / T**2``, so it is multiplied by ``T**2`` to keep the two terms' relative weight
unchanged when ``T`` changes (Sec. 2, last paragraph).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from cnnzoo.errors import CnnzooError


def check_kd_params(temperature: float, alpha: float) -> None:
    """Check the distillation hyper-parameters.

    Raises:
        CnnzooError: unless ``temperature > 0`` (finite) and ``0 <= alpha <= 1``.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise CnnzooError(f"temperature {temperature} is invalid; expected a number > 0")
    if not (0 <= alpha <= 1):
        raise CnnzooError(f"alpha {alpha} is invalid; expected a number in [0, 1]")


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
) -> Tensor:
    """Return Hinton's distillation loss, averaged over the batch.

    ``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - alpha) * CE(student, targets)``

    Here ``alpha`` weights the SOFT (teacher) term, so ``alpha = 0.9`` means mostly teacher
    (the convention of Hinton et al.'s "weighted average" with the soft term first, and of
    most KD code). The other convention, used by some libraries, has ``alpha`` weight the
    hard-label term: ``alpha * CE + (1 - alpha) * T**2 * KL``; to reproduce a setting
    written that way pass ``1 - alpha``. The KL is summed over classes and averaged over
    the batch (PyTorch's ``kl_div(..., reduction="batchmean")``); ``targets`` are class
    indices ``(N,)`` or class probabilities ``(N, C)``. The teacher's logits get no
    gradient.

    Raises:
        CnnzooError: for ``temperature <= 0``, ``alpha`` outside ``[0, 1]``, or logits of
            different shapes.
    """
    check_kd_params(temperature, alpha)
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise CnnzooError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; expected the same (N, classes)"
        )
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student, targets)
    return alpha * temperature**2 * soft + (1 - alpha) * hard
