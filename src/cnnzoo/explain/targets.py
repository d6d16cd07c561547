"""What an explanation is about, per task: a class, a class's pixels, or one detected box.

An attribution method needs a number to explain. For each task the number is one output of
the model, read from the output of one image:

- classification: the class's logit (:class:`ClassTarget`);
- segmentation: the sum of the class's logits over the pixels predicted as that class
  (:class:`RegionTarget`), so the map answers "what made these pixels this class?";
- detection: the score of one kept box (:class:`BoxTarget`): among the detections of the
  same class, the one that overlaps the reference box most (the same input gives the same
  boxes, so that is the box itself; an occluded input may move it a little).

Each target also gives :meth:`prob`, a probability-like score in 0..1 (softmax probability,
mean pixel probability, box score) used by the faithfulness curves.

:func:`explainable` wraps a model so that its output iterates per image, as the attribution
libraries expect, and :func:`subjects` chooses what to explain: the top-k classes, the
largest predicted regions, or the kept boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError

TASKS = ("classification", "segmentation", "detection")


class ClassTarget:
    """A class's logit in a classifier's output ``(K,)``."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output: Tensor) -> Tensor:
        return output[self.index]

    def prob(self, output: Tensor) -> Tensor:
        """Return the softmax probability of the class."""
        return output.float().softmax(-1)[self.index]


class RegionTarget:
    """A class's logits summed over a mask of pixels, in a segmenter's output ``(C, H, W)``."""

    def __init__(self, index: int, mask: Tensor) -> None:
        self.index = index
        self.mask = mask.float()

    def __call__(self, output: Tensor) -> Tensor:
        return (output[self.index] * self.mask.to(output.device)).sum()

    def prob(self, output: Tensor) -> Tensor:
        """Return the class's mean softmax probability over the mask."""
        p = output.float().softmax(0)[self.index]
        mask = self.mask.to(output.device)
        return (p * mask).sum() / mask.sum().clamp(min=1)


class BoxTarget:
    """The score of the detection of ``label`` that overlaps ``box`` most (0 if none)."""

    def __init__(self, label: int, box: Tensor) -> None:
        self.label = label
        self.box = box.float()

    def __call__(self, output: dict[str, Tensor]) -> Tensor:
        from torchvision.ops import box_iou

        scores = output["scores"]
        same = (output["labels"] == self.label).nonzero().flatten()
        if same.numel() == 0:
            return scores.sum() * 0.0
        boxes = output["boxes"][same].detach().float()
        iou = box_iou(self.box[None].to(scores.device), boxes)[0]
        best = int(iou.argmax())
        if float(iou[best]) <= 0:
            return scores.sum() * 0.0
        return scores[same[best]]

    def prob(self, output: dict[str, Tensor]) -> Tensor:
        """Return the box's score (already a probability)."""
        return self(output)


@dataclass
class Subject:
    """One thing to explain in one image.

    Attributes:
        target: the target object (:class:`ClassTarget`, :class:`RegionTarget`, ...).
        label: the class index.
        title: what a figure calls it, e.g. ``"Shirt 0.91"``.
        score: the model's probability for it on the unchanged image.
        box: ``(x1, y1, x2, y2)`` in input pixels for a detection, else None.
    """

    target: Any
    label: int
    title: str
    score: float
    box: tuple[float, float, float, float] | None = None


class _Detections(nn.Module):
    """A detector whose output is its decoded detections, differentiable in the scores."""

    def __init__(self, model: nn.Module, conf: float, iou: float, max_det: int) -> None:
        super().__init__()
        self.model = model
        self.conf, self.iou, self.max_det = conf, iou, max_det
        decode = type(model).decode
        # Detectors decode under torch.no_grad (inference); the undecorated function keeps
        # the graph from the raw outputs to the kept scores.
        self._decode = getattr(decode, "__wrapped__", decode)

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        raw = self.model(x)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return self._decode(self.model, raw, size, self.conf, self.iou, self.max_det)


def explainable(
    model: nn.Module, task: str, conf: float = 0.3, iou: float = 0.5, max_det: int = 20
) -> nn.Module:
    """Return ``model`` in eval mode, wrapped where its output must become per-image items.

    Raises:
        CnnzooError: for a task that has no explanation (autoencoders, GANs, ...).
    """
    if task not in TASKS:
        raise CnnzooError(
            f"explanations apply to {', '.join(TASKS)} models; this is a {task} model "
            "(see `cnnzoo sample` / `cnnzoo eval` for generative models)"
        )
    model.eval()
    if task == "detection":
        return _Detections(model, conf, iou, max_det).eval()
    return model


@torch.no_grad()
def subjects(
    net: nn.Module,
    x: Tensor,
    task: str,
    class_names: list[str],
    classes: list[int] | None = None,
    topk: int = 3,
) -> list[Subject]:
    """Choose what to explain in the single image ``x`` ``(1, C, H, W)``.

    Classification: the ``classes`` given, else the ``topk`` most probable. Segmentation:
    the pixels predicted as each of ``classes``, else the ``topk`` largest predicted regions
    other than a class named ``background`` (a class given but predicted nowhere is
    explained over the whole image). Detection: the
    kept boxes (of ``classes`` only, when given), best first, at most ``topk``.

    Returns:
        The subjects, most probable (or largest) first; empty for a detector that keeps no box.
    """
    out = net(x)
    if task == "classification":
        probs = out[0].float().softmax(-1)
        picks = classes if classes is not None else probs.topk(min(topk, len(probs))).indices
        found = []
        for c in (int(c) for c in picks):
            title = f"{class_names[c]} {probs[c]:.2f}"
            found.append(Subject(ClassTarget(c), c, title, float(probs[c])))
        return found
    if task == "segmentation":
        logits = out[0].float()
        labels = logits.argmax(0)
        probs = logits.softmax(0)
        if classes is None:  # the largest regions, background last
            area = torch.bincount(labels.flatten(), minlength=logits.shape[0])
            found_classes = [int(c) for c in area.argsort(descending=True) if area[c] > 0]
            objects = [c for c in found_classes if class_names[c].lower() != "background"]
            classes = (objects or found_classes)[:topk]
        found = []
        for c in classes:
            mask = labels == c
            share = float(mask.float().mean())
            if not mask.any():
                mask = torch.ones_like(mask)
            target = RegionTarget(c, mask)
            title = f"{class_names[c]} {share:.0%} of pixels"
            found.append(Subject(target, c, title, float(target.prob(logits))))
        return found
    dets = out[0]
    labels = [int(v) for v in dets["labels"]]
    keep = [i for i, c in enumerate(labels) if classes is None or c in classes][:topk]
    found = []
    for i in keep:
        label, score = int(dets["labels"][i]), float(dets["scores"][i])
        box = dets["boxes"][i].detach()
        xyxy = tuple(float(v) for v in box.tolist())
        found.append(Subject(BoxTarget(label, box), label, f"{class_names[label]} {score:.2f}",
                             score, xyxy))  # fmt: skip
    return found


def class_indices(names: list[str] | None, class_names: list[str]) -> list[int] | None:
    """Return the indices of class ``names`` (a name, or an index as text), or None.

    Raises:
        CnnzooError: for a class the model does not have (its classes listed).
    """
    if not names:
        return None
    out = []
    lower = [c.lower() for c in class_names]
    for name in names:
        if name.isdigit() and int(name) < len(class_names):
            out.append(int(name))
        elif name.lower() in lower:
            out.append(lower.index(name.lower()))
        else:
            raise CnnzooError(
                f"unknown class {name!r}: this model's classes are {', '.join(class_names)}"
            )
    return out
