"""The most confident mistakes of a classifier, and where it looked when it made them.

fastai's ``plot_top_losses`` (Howard & Gugger, "Fastai: A Layered API for Deep Learning",
2020) as a function of a run: every image of a split is scored by its cross-entropy loss,
the largest losses among the misclassified images are kept (a wrong answer given with high
confidence costs most), and each is explained twice with a class activation map: once for
the class the model predicted (what it looked at) and once for the true class (what it
should have looked at).

The split is the one ``cnnzoo eval`` measures (:func:`~cnnzoo.families.classification.
evaluate.run_data`): by default the run's own test set, prepared as in training.

Departure from fastai: the loss is always the plain cross-entropy of the softmax, whatever
the run was trained with (label smoothing, distillation), so ``loss == -log(prob_true)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.rundir import RunDir


@dataclass
class TopLoss:
    """One confident mistake.

    Attributes:
        index: the image's position in the split.
        image: the picture the model saw, uint8 ``(C, H, W)`` (resized as the model's input).
        true_label, true_name: the label and its class name.
        pred_label, pred_name: the predicted class and its name.
        prob_pred: the softmax probability of the predicted class.
        prob_true: the softmax probability of the true class.
        loss: the cross-entropy, ``-log(prob_true)``.
        heat_pred: the attribution map of the predicted class, ``(H, W)`` in 0..1.
        heat_true: the attribution map of the true class, ``(H, W)`` in 0..1.
    """

    index: int
    image: Tensor
    true_label: int
    true_name: str
    pred_label: int
    pred_name: str
    prob_pred: float
    prob_true: float
    loss: float
    heat_pred: np.ndarray
    heat_true: np.ndarray


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    from cnnzoo.models.base import AuxOutput

    out = model(x)
    return (out.logits if isinstance(out, AuxOutput) else out).float()


@torch.no_grad()
def split_losses(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], limit: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Score every image of ``batches`` (prepared ``(inputs, labels)`` pairs, in order).

    Args:
        model: the classifier, in eval mode.
        batches: an iterable of ``(x, y)`` as :func:`~cnnzoo.families.classification.
            evaluate.prepared_batches` yields them.
        limit: stop after this many images (None: all).

    Returns:
        ``(losses, predictions, labels)``: per-image cross-entropy, argmax class and label,
        each ``(N,)`` in the split's order.
    """
    losses, preds, labels = [], [], []
    seen = 0
    for x, y in batches:
        if limit is not None:
            x, y = x[: limit - seen], y[: limit - seen]
        logits = _logits(model, x)
        losses.append(F.cross_entropy(logits, y, reduction="none"))
        preds.append(logits.argmax(1))
        labels.append(y)
        seen += len(y)
        if limit is not None and seen >= limit:
            break
    if not losses:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0), empty, empty
    return torch.cat(losses), torch.cat(preds), torch.cat(labels)


def worst_mistakes(losses: Tensor, preds: Tensor, labels: Tensor, n: int) -> list[int]:
    """Return the positions of the ``n`` largest losses among the mistakes, largest first
    (all the mistakes when there are fewer; ties keep the split's order)."""
    wrong = (preds != labels).nonzero().flatten()
    order = torch.sort(losses[wrong], descending=True, stable=True).indices
    return [int(i) for i in wrong[order[:n]]]


def top_losses(
    run: str | Path | RunDir,
    n: int = 16,
    data: str | None = None,
    split: str = "test",
    method: str = "gradcam",
    layer: str | None = None,
    limit: int | None = None,
    data_dir: str | None = None,
    batch_size: int = 256,
    download: bool = True,
) -> list[TopLoss]:
    """Find a classification run's most confident mistakes and explain each of them.

    Args:
        run: a run directory, its ``model.safetensors``, a weight set name or an opened run.
        n: how many mistakes to keep.
        data: dataset name or folder (default: the one the run was trained on).
        split: ``"test"`` or ``"val"``.
        method: an attribution method of :data:`cnnzoo.explain.cam.METHODS`.
        layer: the layer a CAM method reads (default: the deepest stage).
        limit: score only the first ``limit`` images of the split (None: all of them).
        data_dir: where to look for Fashion-MNIST first.
        batch_size: images per forward pass while scoring.
        download: fetch Fashion-MNIST when it is not found.

    Returns:
        Up to ``n`` :class:`TopLoss` items, largest loss first; empty when the model makes
        no mistake on the images scored.

    Raises:
        CnnzooError: for ``n`` < 1, a run that is not a classification run, data that is not
            found or does not match the model, an unknown method or layer.
    """
    from cnnzoo.data.folder import resize_uint8
    from cnnzoo.data.transforms import prepare_batch
    from cnnzoo.explain.cam import check_method, explain
    from cnnzoo.families.assemble import flush_denormals
    from cnnzoo.families.classification.evaluate import prepared_batches, run_data

    if n < 1:
        raise CnnzooError(f"--top-losses {n} is too small: expected 1 or more images")
    if limit is not None and limit < 1:
        raise CnnzooError(f"limit {limit} is too small: expected 1 or more images, or None")
    method = check_method(method)
    run = RunDir.open(run)
    task = run.read_spec().get("task", "classification")
    if task != "classification":
        raise CnnzooError(
            f"--top-losses applies to classification runs; {run.label} is a {task} run"
        )
    flush_denormals()
    model, spec = run.load_model()
    dm, names = run_data(run, spec, data, data_dir, split, batch_size, download)
    losses, preds, labels = split_losses(model, prepared_batches(dm, split), limit)
    mean, std, size = dm.spec.mean, dm.spec.std, spec.get("resize_to")
    in_channels = int(spec["data"]["in_channels"])
    out = []
    for i in worst_mistakes(losses, preds, labels, n):
        image = dm.splits[split][i][0]
        x = prepare_batch(image[None], mean, std, size)
        if tuple(image.shape[-2:]) != tuple(x.shape[-2:]):
            image = resize_uint8(image, x.shape[-2:])
        pred, true = int(preds[i]), int(labels[i])
        found = explain(model, x, "classification", names, method, layer, classes=[pred, true],
                        in_channels=in_channels)  # fmt: skip
        out.append(
            TopLoss(
                index=i,
                image=image,
                true_label=true,
                true_name=names[true],
                pred_label=pred,
                pred_name=names[pred],
                prob_pred=found[0].subject.score,
                prob_true=found[1].subject.score,
                loss=float(losses[i]),
                heat_pred=found[0].heatmap,
                heat_true=found[1].heatmap,
            )
        )
    return out
