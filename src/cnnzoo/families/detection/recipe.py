"""Training recipes of the detectors: ``--recipe paper`` (each paper's training, the
lecture's experiments; the default) and ``--recipe modern`` (the same models and box
parameterisations, trained as detectors are trained today).

A recipe is a set of defaults (:meth:`cnnzoo.families.base.Family.apply_recipe`): an option
given explicitly (``--det-augment``, ``--ema-decay``, ``--scheduler``, ``--model-arg
box_loss=...``) wins over it. The resolved options are recorded in the run's ``config.yaml``
and the model options in ``model.json``.

What ``modern`` changes (each measured in ``benchmarks/det_recipe.py``, docs/detection.md):

- ``ema_decay=0.999``: an EMA of the weights is evaluated and saved
  (:class:`~cnnzoo.tasks.ema.EMA`, its decay ramped over the first steps);
- ``det_augment="mosaic"``: mosaic, scale jitter and colour jitter on the batches
  (:class:`~cnnzoo.data.det_augment.MosaicAugment`) besides the paper's flip;
- model options, for the models that have them: ``box_loss="ciou"`` (YOLOv3, SSD: CIoU on the
  decoded boxes), ``assigner="multi"`` (YOLOv3: several anchors and neighbour cells per
  truth; SSD already matches several default boxes) and ``obj_target="iou"`` (YOLOv3: a
  positive's objectness target is its decoded box's IoU with its truth, as YOLOv5).

Both keep the family's optimiser and its warm-up + cosine schedule (``onecycle``: 25 %
linear warm-up, then cosine to 0) and AutoAnchor (``--autoanchor``, on by default).
"""

from __future__ import annotations

from typing import Any

from cnnzoo.errors import CnnzooError

DET_AUGMENTS = ("flip", "mosaic")
"""``--det-augment``: ``flip`` (the paper recipe: random horizontal flip) or ``mosaic``
(flip, mosaic, scale and colour jitter)."""

DETECTION_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"det_augment": "flip"},
    "modern": {
        "ema_decay": 0.999,
        "det_augment": "mosaic",
        "model_kwargs": {"box_loss": "ciou", "assigner": "multi", "obj_target": "iou"},
    },
}
"""``--recipe`` for detectors: training options, and ``model_kwargs`` given to the models
whose builders take them; the first recipe is the default."""


def check_det_augment(det_augment: str) -> None:
    """Refuse a bad ``--det-augment`` in one line.

    Raises:
        CnnzooError: naming the value.
    """
    if det_augment not in DET_AUGMENTS:
        raise CnnzooError(
            f"--det-augment {det_augment!r} is unknown; expected one of {', '.join(DET_AUGMENTS)}"
        )
