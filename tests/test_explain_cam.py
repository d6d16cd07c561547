"""Attribution maps point where the evidence is, per task; faithfulness curves; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnzoo.errors import CnnzooError
from cnnzoo.explain.cam import METHODS, explain
from cnnzoo.explain.faithfulness import area, deletion_insertion
from cnnzoo.explain.layers import default_layer, resolve_layer, stages_of
from cnnzoo.explain.targets import BoxTarget, class_indices, explainable
from cnnzoo.registry import create_model

SIZE = 32


def _stripes(g: torch.Generator, n: int, horizontal: bool) -> torch.Tensor:
    """(n, SIZE, SIZE/2) stripes of period 4 with a random phase."""
    phase = torch.randint(0, 4, (n, 1, 1), generator=g)
    idx = torch.arange(SIZE).view(1, SIZE, 1) if horizontal else torch.arange(SIZE // 2)
    return ((idx + phase) % 4 < 2).float().expand(n, SIZE, SIZE // 2)


def left_half_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1: horizontal stripes on the left half, class 0: vertical; the right half is
    random binary noise, the same for both classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    left = torch.where(y.view(n, 1, 1).bool(), _stripes(g, n, True), _stripes(g, n, False))
    right = (torch.rand(n, SIZE, SIZE // 2, generator=g) > 0.5).float()
    x = torch.cat([left, right], dim=2)[:, None] * 2 - 1
    return x + 0.1 * torch.randn(x.shape, generator=g), y


@pytest.fixture(scope="module")
def left_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=2, in_channels=1)
    x, y = left_half_data(512, 0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(60):
        i = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = left_half_data(32, 1)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.95  # it learned the left half
    return model, xt[:6], yt[:6]


@pytest.mark.parametrize("method", METHODS)
def test_cam_mass_lies_on_the_half_that_decides_the_class(left_model, method):
    model, xt, yt = left_model
    shares = []
    for k in range(len(xt)):
        (ex,) = explain(model, xt[k : k + 1], "classification", ["v", "h"], method,
                        classes=[int(yt[k])])  # fmt: skip
        assert ex.heatmap.shape == (SIZE, SIZE)
        assert ex.heatmap.min() >= 0 and ex.heatmap.max() <= 1
        shares.append(ex.heatmap[:, : SIZE // 2].sum() / ex.heatmap.sum())
    assert np.mean(shares) > 0.65, shares  # half of the mass would be chance


def test_a_map_that_knows_beats_a_random_order_and_a_wrong_map_does_not(left_model):
    model, xt, yt = left_model
    net = explainable(model, "classification")
    (ex,) = explain(model, xt[:1], "classification", ["v", "h"], classes=[int(yt[0])])
    left = np.zeros((SIZE, SIZE))
    left[:, : SIZE // 2] = 1
    good = deletion_insertion(net, xt[:1], ex.subject, left)
    bad = deletion_insertion(net, xt[:1], ex.subject, 1 - left)
    assert good.deletion < good.random_deletion and good.insertion > good.random_insertion
    assert bad.deletion > good.deletion and bad.insertion < good.insertion
    for value in (good.deletion, good.insertion, bad.random_deletion, bad.random_insertion):
        assert 0 <= value <= 1


def test_area_is_the_trapezoid_rule():
    assert area(np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert area(np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)


def test_topk_explains_the_most_probable_classes_in_order(left_model):
    model, xt, _ = left_model
    found = explain(model, xt[:1], "classification", ["v", "h"], topk=2)
    probs = torch.softmax(model(xt[:1]), 1)[0].detach()
    assert [e.subject.label for e in found] == probs.argsort(descending=True).tolist()
    assert found[0].subject.score == pytest.approx(float(probs.max()), abs=1e-5)


# --- layers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("resnet20", ["stem", "stages.0", "stages.1", "stages.2"]),
        ("unet", ["inc", "down.0", "down.1", "down.2", "down.3"]),
        ("segnet", [f"encoder.{i}.convs" for i in range(5)]),
        ("fcn8s", [f"backbone.model.stages.{i}" for i in (2, 3, 4)]),
    ],
)
def test_stages_are_module_paths_of_the_model_shallow_to_deep(name, stages):
    model = create_model(name, num_classes=3)
    found = stages_of(model)
    assert [s.module for s in found] == stages
    modules = dict(model.named_modules())
    assert all(s.module in modules for s in found)
    assert [s.reduction for s in found] == sorted(s.reduction for s in found)
    assert default_layer(model) == stages[-1]
    assert resolve_layer(model, "0") == (stages[0], modules[stages[0]])


@pytest.mark.parametrize("name", ["unet", "segnet", "fullres_fcn"])
def test_segmenters_feature_info_matches_their_maps(name):
    model = create_model(name, num_classes=3).eval()
    maps = {}
    hooks = [
        model.get_submodule(s.module).register_forward_hook(
            lambda _m, _i, out, key=s.module: maps.__setitem__(key, out)
        )
        for s in model.feature_info
    ]
    model(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    for s in model.feature_info:
        assert maps[s.module].shape[1] == s.channels
        assert maps[s.module].shape[-1] == 64 // s.reduction


def test_unknown_layer_lists_the_stages():
    model = create_model("resnet20", num_classes=2)
    with pytest.raises(CnnzooError, match=r"unknown layer 'stage9'.*stem, stages.0, stages.1"):
        resolve_layer(model, "stage9")
    with pytest.raises(CnnzooError, match="out of range"):
        resolve_layer(model, "7")


def test_a_model_without_stages_is_told_to_use_occlusion():
    model = create_model("patchwise", num_classes=3, patch=5)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(CnnzooError, match="no feature_info.*occlusion"):
        explain(model, x, "segmentation", ["a", "b", "c"], "gradcam")
    (ex,) = explain(model, x, "segmentation", ["a", "b", "c"], "occlusion", topk=1)
    assert ex.heatmap.shape == (8, 8) and ex.layer is None


# --- segmentation and detection ------------------------------------------------------------


def test_segmentation_explains_each_predicted_region_not_background():
    torch.manual_seed(0)
    model = create_model("fullres_fcn", num_classes=3, depth=2, width=8).eval()
    names = ["background", "a", "b"]
    x = torch.randn(1, 3, 16, 16)
    labels = model(x).argmax(1)[0]
    found = explain(model, x, "segmentation", names, "gradcam", topk=3)
    present = [c for c in labels.unique().tolist() if c != 0]
    assert sorted(e.subject.label for e in found) == sorted(present)
    for ex in found:
        assert torch.equal(ex.subject.target.mask.bool(), labels == ex.subject.label)
        assert ex.heatmap.shape == (16, 16)


def test_detection_gives_one_map_per_kept_box_from_that_box_score():
    torch.manual_seed(0)
    model = create_model("yolov1", num_classes=3).eval()
    x = torch.randn(1, 3, 96, 96)
    names = ["a", "b", "c"]
    with torch.no_grad():
        dets = model.decode(model(x), (96, 96), 0.0, 0.5, 20)[0]
    found = explain(model, x, "detection", names, "gradcam", topk=4, conf=0.0)
    assert len(found) == min(4, len(dets["scores"])) >= 2
    for i, ex in enumerate(found):  # best box first, each its own target
        assert ex.subject.box == pytest.approx(dets["boxes"][i].tolist())
        assert ex.subject.score == pytest.approx(float(dets["scores"][i]))
        assert isinstance(ex.subject.target, BoxTarget)
        assert float(ex.subject.target(dets)) == pytest.approx(float(dets["scores"][i]))
    assert not np.allclose(found[0].heatmap, found[1].heatmap)
    label = found[0].subject.label
    only = explain(model, x, "detection", names, "gradcam", classes=[label], conf=0.0)
    assert only and all(e.subject.label == label for e in only)


def test_a_layer_that_runs_on_crops_is_refused():
    model = create_model("sliding_window", num_classes=2, window_sizes=(0.5,),
                         aspect_ratios=(1.0,), crop_size=16).eval()  # fmt: skip
    with pytest.raises(CnnzooError, match="runs .* times per image"):
        explain(model, torch.randn(1, 3, 32, 32), "detection", ["a", "b"], conf=0.0, topk=1)


# --- bad input ------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors(left_model):
    model, xt, _ = left_model
    with pytest.raises(CnnzooError, match="has 3 channels but the model takes 1"):
        explain(model, xt[:1].repeat(1, 3, 1, 1), "classification", ["v", "h"], in_channels=1)
    with pytest.raises(CnnzooError, match="unknown method 'gradcam3'"):
        explain(model, xt[:1], "classification", ["v", "h"], "gradcam3")
    with pytest.raises(CnnzooError, match="apply to classification, segmentation, detection"):
        explain(model, xt[:1], "autoencoder", ["v", "h"])
    with pytest.raises(CnnzooError, match="unknown class 'Shirt'.*v, h"):
        class_indices(["Shirt"], ["v", "h"])
    assert class_indices(["H", "0"], ["v", "h"]) == [1, 0]
