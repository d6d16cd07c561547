"""AutoAnchor: priors kept when they fit the training boxes, fitted by k-means when not."""

from __future__ import annotations

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.autoanchor import (
    best_possible_recall,
    fit_ssd_scales,
    fit_yolo_anchors,
    ssd_prior_shapes,
)
from cnnzoo.models.detection.yolov3 import DEFAULT_ANCHORS

CLUSTERS = torch.tensor(
    [[40.0, 40], [60, 120], [130, 60], [110, 110], [90, 200], [220, 90], [180, 180],
     [160, 300], [300, 260]]
)  # fmt: skip


def _boxes_around(centres: torch.Tensor, per: int = 40, noise: float = 0.03) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    jitter = 1 + noise * (2 * torch.rand(len(centres), per, 2, generator=gen) - 1)
    return (centres[:, None, :] * jitter).reshape(-1, 2)


def test_best_possible_recall_counts_boxes_within_the_ratio_of_some_prior() -> None:
    wh = torch.tensor([[10.0, 10], [100, 100], [20, 79], [20, 81]])
    priors = torch.tensor([[20.0, 20]])
    # 10x10: within 2x; 100x100: 5x off; 20x79: 3.95x; 20x81: 4.05x off.
    assert best_possible_recall(wh, priors) == pytest.approx(0.5)
    assert best_possible_recall(wh, priors, ratio=6.0) == pytest.approx(1.0)


def test_kmeans_anchors_recover_known_box_clusters_when_the_defaults_do_not_fit() -> None:
    wh = _boxes_around(CLUSTERS)
    fit = fit_yolo_anchors(wh, torch.tensor(DEFAULT_ANCHORS))
    assert fit.fitted and fit.before_mean_iou < 0.5 < 0.9 < fit.mean_iou
    anchors = torch.tensor(fit.kwargs["anchors"])
    areas = anchors.prod(1)
    assert torch.equal(areas, areas.sort().values)  # smallest first
    expected = CLUSTERS[CLUSTERS.prod(1).argsort()]
    assert torch.allclose(anchors, expected, rtol=0.03)
    assert fit.bpr == 1.0


def test_anchors_that_fit_the_boxes_are_kept() -> None:
    wh = _boxes_around(torch.tensor(DEFAULT_ANCHORS), noise=0.2)
    fit = fit_yolo_anchors(wh, torch.tensor(DEFAULT_ANCHORS))
    assert not fit.fitted and fit.kwargs == {}
    assert fit.bpr == fit.before_bpr == 1.0
    assert fit.to_dict()["fitted"] is False


def test_yolov3_fit_priors_gives_builder_options_that_rebuild_the_model() -> None:
    model = create_model("yolov3", num_classes=2, backbone="convnet", widths=[8, 16, 16])
    fit = model.fit_priors(_boxes_around(CLUSTERS), (640, 640))
    rebuilt = create_model("yolov3", num_classes=2, backbone="convnet", widths=[8, 16, 16],
                           **fit.kwargs)  # fmt: skip
    assert torch.allclose(rebuilt.anchors, torch.tensor(fit.kwargs["anchors"]))


def test_ssd_default_boxes_are_kept_at_any_resolution_and_fitted_for_small_objects() -> None:
    model = create_model("ssd", num_classes=2, backbone="convnet", widths=[8, 16, 16])
    shapes = ssd_prior_shapes(list(model.scales), model.aspect_ratios, (96, 96))
    assert shapes[0].tolist() == pytest.approx([0.2 * 96, 0.2 * 96])
    objects = _boxes_around(torch.tensor([[24.0, 24], [36, 30], [40, 48]]))  # 25-50 %
    assert not model.fit_priors(objects, (96, 96)).fitted
    assert not model.fit_priors(objects * 640 / 96, (640, 640)).fitted  # scales are relative
    tiny = _boxes_around(torch.tensor([[8.0, 8], [12, 10], [16, 16], [20, 14]]))  # ~1-3 %
    fit = model.fit_priors(tiny, (640, 640))
    assert fit.fitted and fit.kwargs["min_scale"] < 0.02 and fit.kwargs["max_scale"] < 0.04
    assert fit.mean_iou > fit.before_mean_iou
    rebuilt = create_model("ssd", num_classes=2, backbone="convnet", widths=[8, 16, 16],
                           **fit.kwargs)  # fmt: skip
    assert rebuilt.scales[0] == pytest.approx(fit.kwargs["min_scale"])


def test_fit_ssd_scales_needs_as_many_maps_as_ratio_lists() -> None:
    fit = fit_ssd_scales(torch.tensor([[10.0, 10]] * 3), [0.2, 0.5, 0.8], [[2.0], [2.0]], (96, 96))
    assert fit.kwargs == {} and "distinct" in fit.notes[0]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(CnnzooError, match="positive"):
        best_possible_recall(torch.tensor([[0.0, 5]]), torch.tensor([[5.0, 5]]))
    with pytest.raises(CnnzooError, match=r"\(N, 2\)"):
        fit_yolo_anchors(torch.zeros(0, 2), torch.tensor(DEFAULT_ANCHORS))
