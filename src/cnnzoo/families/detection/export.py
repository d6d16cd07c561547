"""What an exported detector computes: the graph ends at the candidates, and the app runs
the post-processing (score threshold, class-aware NMS, top-k) after it.

A one-stage detector (YOLOv1, YOLOv3, SSD) exports its network *and* its box decoding:
``boxes (N, M, 4)`` xyxy pixels and ``scores (N, M, C)``, one row per anchor, grid cell or
default box. Non-maximum suppression stays out of the graph: its output size depends on the
data, ONNX's ``NonMaxSuppression`` is not implemented alike by every runtime (and not at all
by several mobile ones), and every runtime has a fast NMS of its own, so the manifest
describes the step instead (cnnzoo's is
:func:`~cnnzoo.models.detection.postprocess.score_candidates`). Fast R-CNN and the sliding
window select their regions inside the network (proposals with NMS, windows with RoI
pooling) and do not export.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.families.base import Graph
from cnnzoo.models.detection.postprocess import score_candidates

BOXES = "boxes: (N, M, 4) candidate boxes, x1 y1 x2 y2 in input pixels, before NMS"
SCORES = "scores: (N, M, C) each candidate's score per class, 0..1, before NMS"


class CandidateGraph(nn.Module):
    """A one-stage detector up to its candidates: ``forward(x) -> (boxes, scores)``."""

    def __init__(self, detector: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.detector = detector
        self.image_size = image_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.detector.candidates(self.detector(x), self.image_size)  # type: ignore[operator]


def candidate_graph(
    model: nn.Module, model_name: str, image_size: tuple[int, int]
) -> CandidateGraph:
    """Wrap a one-stage detector for export.

    Raises:
        CnnzooError: for a detector without a single-pass candidate decoding (two-stage).
    """
    if not callable(getattr(model, "candidates", None)):
        raise CnnzooError(
            f"{model_name} selects its regions inside the network (proposals or windows), so "
            "it does not export; the one-stage detectors (yolov1, yolov3, ssd) do"
        )
    return CandidateGraph(model, image_size)


def postprocessing(conf: float, iou: float, max_detections: int = 100) -> dict[str, Any]:
    """The post-processing an app runs on the graph's outputs (the manifest's record)."""
    return {
        "steps": [
            f"keep each (candidate, class) pair whose score is above {conf}",
            "clip its box to the image",
            f"class-aware non-maximum suppression at IoU {iou} (a box suppresses only "
            "boxes of its own class)",
            f"keep the {max_detections} highest scores per image",
        ],
        "score_threshold": conf,
        "iou_threshold": iou,
        "max_detections": max_detections,
        "reference": "cnnzoo.models.detection.postprocess.score_candidates",
    }


class GraphDetector(nn.Module):
    """An exported one-stage detector as a model of the detection interface:
    ``forward(x)`` runs the graph (candidates), ``decode`` the manifest's post-processing
    (:func:`~cnnzoo.models.detection.postprocess.score_candidates`), so the detection task's
    own test loop scores an ONNX (fp32 or int8) file as it scores the PyTorch model."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.graph(x))

    def decode(
        self,
        outputs: tuple[Tensor, ...],
        image_size: tuple[int, int],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, Tensor]]:
        """Return each image's detections (``score_candidates`` on the graph's outputs)."""
        boxes, scores = outputs
        return score_candidates(
            boxes, scores, image_size, score_threshold, iou_threshold, max_detections
        )


def finish(image_size: tuple[int, int], conf: float, iou: float, max_detections: int = 100) -> Any:
    """Return the manifest's post-processing as code: ``(boxes, scores) -> detections``."""

    def run(outputs: Any) -> list[dict[str, Tensor]]:
        boxes, scores = outputs
        return score_candidates(boxes, scores, image_size, conf, iou, max_detections)

    return run
