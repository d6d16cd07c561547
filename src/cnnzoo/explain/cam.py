"""Attribution maps: which input pixels made the model say what it said.

The methods come from two well-kept libraries; cnnzoo writes only the glue (the layer from
``feature_info``, the per-task targets of :mod:`cnnzoo.explain.targets`, batching):

- ``gradcam`` (Selvaraju et al., 2017), ``gradcam++`` (Chattopadhay et al., 2018),
  ``layercam`` (Jiang et al., 2021) and ``scorecam`` (Wang et al., 2020) from
  pytorch-grad-cam: a weighted sum of one layer's feature maps, upsampled to the input;
- ``occlusion`` (Zeiler & Fergus, 2014) from captum: slide a grey square over the image and
  measure how much the target's score falls; it needs no layer, so it works for every
  model, including those without ``feature_info``.

Every map is returned at the input's size, scaled to 0..1 (1: the most important pixel).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.explain.targets import Subject, explainable, subjects

CAM_METHODS = ("gradcam", "gradcam++", "layercam", "scorecam")
METHODS = (*CAM_METHODS, "occlusion")


@dataclass
class Explanation:
    """One attribution map.

    Attributes:
        subject: what it explains (title, score, box).
        method: the method's name.
        layer: the layer it read (None for occlusion).
        heatmap: ``(H, W)`` float array in 0..1 at the input's size.
    """

    subject: Subject
    method: str
    layer: str | None
    heatmap: np.ndarray


def _cam_class(method: str) -> type:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM,
            "scorecam": ScoreCAM}[method]  # fmt: skip


def check_method(method: str) -> str:
    """Return ``method`` lower-cased.

    Raises:
        CnnzooError: for an unknown method (the known ones listed).
    """
    key = method.lower()
    if key not in METHODS:
        raise CnnzooError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    return key


def check_input(model: nn.Module, x: Tensor, in_channels: int | None) -> None:
    """Check that ``x`` is one image batch ``(1, C, H, W)`` with the model's channel count.

    Raises:
        CnnzooError: naming the shape or channel count found and the one expected.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise CnnzooError(f"expected one image as a (1, C, H, W) tensor, got {tuple(x.shape)}")
    if in_channels is not None and x.shape[1] != in_channels:
        raise CnnzooError(f"the image has {x.shape[1]} channels but the model takes {in_channels}")


def attribute(
    net: nn.Module,
    x: Tensor,
    targets: Sequence[Subject],
    method: str,
    layer: nn.Module | None = None,
    batch_size: int = 16,
    window: int | None = None,
) -> np.ndarray:
    """Return one attribution map per subject for the single image ``x``.

    Args:
        net: the model as :func:`~cnnzoo.explain.targets.explainable` returns it.
        x: the normalised image ``(1, C, H, W)``.
        targets: the subjects (their ``target`` is used).
        method: one of :data:`METHODS`.
        layer: the module a CAM method reads (ignored by occlusion).
        batch_size: images per forward pass (the image is repeated, one copy per subject;
            Score-CAM: masked copies per pass).
        window: occlusion's square side in pixels (default: an eighth of the longer side,
            at least 3); the stride is half of it.

    Returns:
        ``(len(targets), H, W)`` float32 array in 0..1.

    Raises:
        CnnzooError: for an unknown method, or a CAM method without a layer.
    """
    method = check_method(method)
    if not targets:
        return np.zeros((0, *x.shape[-2:]), dtype=np.float32)
    if method == "occlusion":
        maps = [_occlusion(net, x, s, window) for s in targets]
        return np.stack(maps).astype(np.float32)
    if layer is None:
        raise CnnzooError(f"{method} reads a layer's feature maps: give a layer")
    cam = _cam_class(method)(model=net, target_layers=[layer])
    cam.batch_size = batch_size  # Score-CAM: masked inputs per forward pass
    maps = []
    try:
        with _quiet_progress():
            for start in range(0, len(targets), batch_size):
                chunk = [s.target for s in targets[start : start + batch_size]]
                batch = x.detach().repeat(len(chunk), 1, 1, 1).requires_grad_(True)
                found = np.asarray(cam(input_tensor=batch, targets=chunk))
                if len(found) != len(chunk):
                    raise CnnzooError(
                        f"the layer runs {len(found) // len(chunk)} times per image (on "
                        "crops or windows), so its maps do not cover the image: choose a "
                        "layer that sees the whole image, or use --method occlusion"
                    )
                maps.append(found)
    finally:
        cam.activations_and_grads.release()
    return np.nan_to_num(np.concatenate(maps)).astype(np.float32)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Score-CAM draws a tqdm bar per image; a command's output stays readable without it."""
    from pytorch_grad_cam import score_cam

    saved = score_cam.tqdm
    score_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, **_: it)
    try:
        yield
    finally:
        score_cam.tqdm = saved


def _occlusion(net: nn.Module, x: Tensor, subject: Subject, window: int | None) -> np.ndarray:
    """Captum's occlusion: the fall of the target's value (the same as the CAMs': a logit, a
    region's logit sum, a box's score) when a square is zeroed (the data's mean after
    normalisation); positive part, scaled to 0..1. Logits, not probabilities: a confident
    model's probability stays at 1 whatever one square hides, which would show nothing."""
    from captum.attr import Occlusion

    h, w = x.shape[-2:]
    side = window or max(3, max(h, w) // 8)
    side = min(side, h, w)
    stride = max(1, side // 2)

    def score(batch: Tensor) -> Tensor:
        return torch.stack([subject.target(o).float() for o in net(batch)])

    with torch.no_grad():
        attr = Occlusion(score).attribute(
            x.detach(),
            sliding_window_shapes=(x.shape[1], side, side),
            strides=(x.shape[1], stride, stride),
            baselines=0.0,
            perturbations_per_eval=16,
        )
    heat = attr[0].sum(0).clamp(min=0).numpy()
    top = heat.max()
    return heat / top if top > 0 else heat


def explain(
    model: nn.Module,
    x: Tensor,
    task: str,
    class_names: list[str],
    method: str = "gradcam",
    layer: str | None = None,
    classes: list[int] | None = None,
    topk: int = 3,
    conf: float = 0.3,
    iou: float = 0.5,
    in_channels: int | None = None,
) -> list[Explanation]:
    """Explain one image: a map per top class, per predicted region or per kept box.

    Args:
        model: a classifier, segmenter or detector.
        x: the normalised image ``(1, C, H, W)``, at the size the model takes.
        task: ``classification``, ``segmentation`` or ``detection``.
        class_names: the model's class names.
        method: one of :data:`METHODS`.
        layer: for CAM methods, a stage name, stage index or module path (default: the
            deepest stage of ``feature_info``; see :func:`cnnzoo.explain.layers.resolve_layer`).
        classes: class indices to explain (default: the top-k predictions).
        topk: how many classes, regions or boxes when ``classes`` is None.
        conf: detection: the score a box needs to be kept.
        iou: detection: NMS IoU threshold.
        in_channels: the channel count the model takes, checked against ``x`` when given.

    Returns:
        One :class:`Explanation` per subject, most probable first.

    Raises:
        CnnzooError: for a wrong input shape or channel count, an unknown method or layer, a
            task without explanations, or a CAM method on a model without stages.
    """
    from cnnzoo.explain.layers import resolve_layer

    method = check_method(method)
    check_input(model, x, in_channels)
    net = explainable(model, task, conf, iou)
    name, module = (None, None) if method == "occlusion" else resolve_layer(model, layer)
    found = subjects(net, x, task, class_names, classes, topk)
    maps = attribute(net, x, found, method, module)
    return [Explanation(s, method, name, m) for s, m in zip(found, maps, strict=True)]
