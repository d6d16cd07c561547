"""What the layers learn, and where the last one looks: a plain net and its residual twin.

The lecture's "see inside the network": the first layer's filters are small edge and blob
detectors (Zeiler & Fergus, ECCV 2014, Fig. 2); deeper stages respond to larger, more
abstract parts on coarser maps; Grad-CAM (Selvaraju et al., ICCV 2017) shows which part of
the image the last stage's evidence for a class comes from. Here, on Fashion-MNIST, plain-20
and ResNet-20 (He et al., CVPR 2016, Sec. 4.2: the same 19 convolutions, with and without
the identity shortcuts) are trained identically, then:

1. the first convolution's 16 filters of each;
2. one test image's feature maps, stem to last stage (the most active channels of each);
3. Grad-CAM of the true class at the last stage, plain vs residual, on a few test images;
4. a table: test accuracy, and how concentrated the Grad-CAM maps are over ``cam_images``
   test images: the share of the map's mass on the garment (pixels above
   ``object_threshold`` of 255; a uniform map would score the garment's area, also listed),
   the fraction of the map above 0.5, and its entropy normalised to 0..1 (1 = uniform).
   Image statistics are mean ± std over images (all seeds pooled); accuracy over seeds.

The default trains each net for 1,200 steps of 64 images with 3 seeds (about 7 minutes on
2 idle CPU cores); ``--quick`` one seed of 400 steps (under a minute). Training is the lean loop
of :mod:`cnnzoo.experiments.vanishing_gradients` (SGD + Nesterov, cosine decay).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments.vanishing_gradients import (
    MEAN,
    STD,
    Batches,
    _dataset,
    error_rate,
    make_optimizer,
    run_steps,
)
from cnnzoo.explain.cam import explain
from cnnzoo.explain.features import feature_maps, first_filters
from cnnzoo.explain.layers import stages_of
from cnnzoo.registry import create_model

METRICS = ("in_object", "above_half", "entropy")


@dataclass(frozen=True)
class WhatLayersSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    plain: str = "plain20"
    residual: str = "resnet20"
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 1200
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 1e-4
    test_images: int = 2000
    cam_images: int = 200
    show_images: int = 4
    per_stage: int = 8
    object_threshold: int = 20


QUICK = WhatLayersSettings(seeds=(0,), steps=400)


def load_images(dataset: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ``(train_x, train_y, test_uint8, test_y)``: the training images normalised,
    the test images as stored (uint8 ``(N, 1, 28, 28)``), so they can be drawn and masked."""
    from cnnzoo.data.fashion_mnist import load_fashion_mnist, load_fashion_mnist_mini

    load = load_fashion_mnist_mini if dataset == "fashion-mnist-mini" else load_fashion_mnist
    (tx, ty), (vx, vy) = load("train"), load("test")
    return normalise(tx), ty, vx, vy


def normalise(images: Tensor) -> Tensor:
    """Return uint8 Fashion-MNIST images as the nets take them (float, zero mean, unit std)."""
    return (images.float() / 255 - MEAN) / STD


def train(model: nn.Module, x: Tensor, y: Tensor, s: WhatLayersSettings, seed: int) -> bool:
    """Train ``model`` for ``s.steps`` steps of cross-entropy.

    Returns:
        False if the loss became non-finite (training stopped there), else True.
    """
    batches = Batches(x, y, s.batch_size, seed)
    opt, sched = make_optimizer(list(model.parameters()), s.lr, s.weight_decay, s.steps)
    model.train()
    finite = run_steps(model, batches, opt, sched, s.steps)
    model.eval()
    return finite


def cam_sharpness(heatmap: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """Measure how concentrated one attribution map is.

    Args:
        heatmap: ``(H, W)`` map in 0..1.
        mask: ``(H, W)`` bool, True on the object.

    Returns:
        ``in_object`` (the share of the map's mass on the object), ``above_half`` (the
        fraction of pixels above 0.5) and ``entropy`` (of the map as a distribution over
        pixels, divided by its largest value ``log(H * W)``), all in 0..1; None for an
        all-zero map (it points nowhere).
    """
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = heat.sum()
    if total <= 0:
        return None
    p = heat.ravel() / total
    nz = p[p > 0]
    return {
        "in_object": float(heat[mask].sum() / total),
        "above_half": float((heat > 0.5).mean()),
        "entropy": float(-(nz * np.log(nz)).sum() / math.log(p.size)),
    }


def class_names() -> list[str]:
    """Return the ten Fashion-MNIST class names, in label order."""
    from cnnzoo.data.fashion_mnist import FASHION_MNIST_CLASSES

    return list(FASHION_MNIST_CLASSES)


def grad_cams(
    model: nn.Module, images: Tensor, labels: Tensor
) -> list[tuple[np.ndarray, float, int]]:
    """Return ``(heatmap, probability, predicted)`` per image: Grad-CAM of the true class at
    the deepest stage, the model's probability of that class, and its top class."""
    names = class_names()
    out = []
    for image, label in zip(images, labels, strict=True):
        x = normalise(image[None])
        (ex,) = explain(model, x, "classification", names, classes=[int(label)])
        with torch.no_grad():
            predicted = int(model(x).argmax(1))
        out.append((ex.heatmap, ex.subject.score, predicted))
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _pm(values: list[float]) -> str:
    mean, std = _mean_std(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {std:.3f}"


def _show_indices(labels: Tensor, n: int) -> list[int]:
    """The first test image of each of the first ``n`` classes met, in test order."""
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        seen.setdefault(label, i)
        if len(seen) == n:
            break
    return list(seen.values())


def plot_cams(
    images: Tensor,
    cams: dict[str, list[tuple[np.ndarray, float, int]]],
    labels: Tensor,
    masks: np.ndarray,
    path: Path,
) -> Path:
    """One row per image: the input, then each model's Grad-CAM over it (true class)."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.cam import heat_overlay
    from cnnzoo.viz.figure import save_figure

    names = class_names()
    cols = len(cams) + 1
    fig, axes = plt.subplots(len(images), cols, figsize=(2.3 * cols, 2.45 * len(images)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for i, (row, image) in enumerate(zip(axes, images, strict=True)):
        row[0].imshow(image[0].numpy(), cmap="gray", interpolation="nearest")
        row[0].set_title(f"true: {names[int(labels[i])]}", fontsize=8)
        for ax, (model, found) in zip(row[1:], cams.items(), strict=True):
            heat, prob, predicted = found[i]
            ax.imshow(heat_overlay(image, heat), interpolation="nearest")
            sharp = cam_sharpness(heat, masks[i])
            share = f"on garment {sharp['in_object']:.2f}" if sharp else "empty map"
            wrong = "" if predicted == int(labels[i]) else f" (said {names[predicted]})"
            ax.set_title(f"{model}: p {prob:.2f}{wrong}\n{share}", fontsize=8)
    fig.suptitle("Grad-CAM of the true class at the last stage (bright: more evidence)",
                 fontsize=9)  # fmt: skip
    return save_figure(fig, path)


def _figures(
    out: Path,
    models: dict[str, nn.Module],
    test_u8: Tensor,
    labels: Tensor,
    s: WhatLayersSettings,
) -> list[Path]:
    from cnnzoo.viz.features import save_filter_grid, save_stage_maps

    figures = []
    for name, model in models.items():
        conv, weights = first_filters(model)
        figures.append(save_filter_grid(
            weights, out / f"filters_{name}.png",
            f"{name}: first-layer filters ({conv}, {tuple(weights.shape)}), each scaled to "
            "its range",
        ))  # fmt: skip
    show = _show_indices(labels, s.show_images)
    x = normalise(test_u8[show[0] : show[0] + 1])
    for name, model in models.items():
        stages = [feature_maps(model, x, st.module) for st in stages_of(model)]
        figures.append(save_stage_maps(
            test_u8[show[0]], stages, out / f"stages_{name}.png", s.per_stage,
            f"{name}: the {s.per_stage} most active channels of each stage (by mean), "
            "each scaled to its range",
        ))  # fmt: skip
    masks = (test_u8[show, 0] > s.object_threshold).numpy()
    shown = {name: grad_cams(model, test_u8[show], labels[show]) for name, model in models.items()}
    figures.append(plot_cams(test_u8[show], shown, labels[show], masks, out / "gradcam.png"))
    return figures


@register_experiment(
    "what-layers-learn",
    "first-layer filters, feature maps stem to last stage, and Grad-CAM sharpness of plain-20 "
    "vs ResNet-20 trained on Fashion-MNIST (Zeiler & Fergus 2014; Selvaraju et al. 2017)",
)
def what_layers_learn(out: Path, quick: bool) -> ExperimentResult:
    """Run the what-layers-learn experiment (see the module docstring)."""
    from cnnzoo.families.assemble import flush_denormals

    flush_denormals()  # subnormal activations slow Grad-CAM on CPU ~10x and change nothing
    s = QUICK if quick else WhatLayersSettings()
    dataset = _dataset()
    tx, ty, test_u8, test_y = load_images(dataset)
    acc_x, acc_y = normalise(test_u8[: s.test_images]), test_y[: s.test_images]
    cam_u8, cam_y = test_u8[: s.cam_images], test_y[: s.cam_images]
    masks = (cam_u8[:, 0] > s.object_threshold).numpy()
    area = [float(m.mean()) for m in masks]

    names = (s.plain, s.residual)
    acc: dict[str, list[float]] = {n: [] for n in names}
    measured: dict[str, dict[str, list[float]]] = {n: {k: [] for k in METRICS} for n in names}
    empty = {n: 0 for n in names}
    diverged: list[str] = []
    paired: list[float] = []  # per image and seed: residual in-object minus plain in-object
    first: dict[str, nn.Module] = {}  # the first seed's nets are drawn
    for seed in s.seeds:
        in_object: dict[str, list[float | None]] = {}
        for name in names:
            torch.manual_seed(seed)
            model = create_model(name, num_classes=10, in_channels=1)
            if not train(model, tx, ty, s, seed):
                diverged.append(f"{name} seed {seed}")
            acc[name].append(1.0 - error_rate(model, acc_x, acc_y))
            found = grad_cams(model, cam_u8, cam_y)
            sharp = [cam_sharpness(h, m) for (h, _, _), m in zip(found, masks, strict=True)]
            empty[name] += sum(v is None for v in sharp)
            for key in METRICS:
                measured[name][key] += [v[key] for v in sharp if v is not None]
            in_object[name] = [v["in_object"] if v else None for v in sharp]
            first.setdefault(name, model)
        paired += [
            r - p
            for p, r in zip(in_object[s.plain], in_object[s.residual], strict=True)
            if p is not None and r is not None
        ]

    rows = [_row(n, acc[n], measured[n], empty[n], area, s) for n in names]
    figures = _figures(out, first, test_u8, test_y, s)
    return ExperimentResult(
        title="What the layers learn: plain-20 vs ResNet-20 on Fashion-MNIST",
        columns=["model", "seeds", "test_accuracy", "cam_in_object", "object_area",
                 "cam_above_half", "cam_entropy", "empty_maps"],
        rows=rows,
        figures=figures,
        notes=_notes(rows, paired, diverged, s),
        settings={**asdict(s), "dataset": dataset,
                  "test_accuracy": f"on the first {len(acc_y)} test images, mean ± std "
                                   "over seeds",
                  "cam": f"Grad-CAM of the true class at the deepest stage, on the first "
                         f"{len(cam_y)} test images; mean ± std over images (seeds pooled)",
                  "object": f"pixels above {s.object_threshold}/255"},
    )  # fmt: skip


def _row(
    name: str,
    accs: list[float],
    measured: dict[str, list[float]],
    empty: int,
    area: list[float],
    s: WhatLayersSettings,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": name, "seeds": len(s.seeds), "test_accuracy": _pm(accs),
        "cam_in_object": _pm(measured["in_object"]), "object_area": _pm(area),
        "cam_above_half": _pm(measured["above_half"]), "cam_entropy": _pm(measured["entropy"]),
        "empty_maps": empty, "accuracy_runs": [round(a, 4) for a in accs],
    }  # fmt: skip
    for key in METRICS:
        mean, std = _mean_std(measured[key])
        row[f"{key}_mean"], row[f"{key}_std"] = round(mean, 4), round(std, 4)
    row["accuracy_mean"] = round(_mean_std(accs)[0], 4)
    row["object_area_mean"] = round(_mean_std(area)[0], 4)
    return row


def _notes(
    rows: list[dict[str, Any]], paired: list[float], diverged: list[str], s: WhatLayersSettings
) -> str:
    """A reading of the measured numbers only: which net's maps sit more on the garment."""
    plain, res = rows
    lines = [
        f"Test accuracy after {s.steps} steps: {plain['model']} {plain['test_accuracy']}, "
        f"{res['model']} {res['test_accuracy']}."
    ]
    closer = None  # the net whose maps sit more on the garment, where the difference is clear
    if paired:
        mean, std = _mean_std(paired)
        sem = std / math.sqrt(len(paired))
        wins = sum(d > 0 for d in paired) / len(paired)
        if abs(mean) <= 2 * sem:
            verdict = "no clear difference"
        else:
            closer = res["model"] if mean > 0 else plain["model"]
            verdict = f"{closer}'s maps sit more on the garment"
        lines.append(
            f"Share of Grad-CAM mass on the garment: {plain['model']} {plain['cam_in_object']}, "
            f"{res['model']} {res['cam_in_object']} (a uniform map would score the garment's "
            f"area, {plain['object_area']}). Paired over the same {len(paired)} image-seed "
            f"pairs, {res['model']} minus {plain['model']} is {mean:+.3f} (standard error "
            f"{sem:.3f}; {res['model']} higher on {wins:.0%} of them): {verdict}."
        )
    focused = set()
    for key, what in (("above_half", "Fraction of the map above 0.5"),
                      ("entropy", "Normalised entropy")):  # fmt: skip
        a, b = plain[f"{key}_mean"], res[f"{key}_mean"]
        if not (math.isnan(a) or math.isnan(b)):
            lower = plain["model"] if a < b else res["model"]
            focused.add(lower)
            lines.append(f"{what}: {a:.3f} vs {b:.3f} ({lower} lower, i.e. more focused).")
    other = res["model"] if closer == plain["model"] else plain["model"]
    if closer and focused == {other}:
        lines.append(
            f"The measures disagree: {other}'s maps are more concentrated, but not more on "
            "the garment."
        )
    empty = plain["empty_maps"] + res["empty_maps"]
    if empty:
        lines.append(
            f"All-zero maps (no positive evidence at the last stage), left out of the image "
            f"statistics: {plain['model']} {plain['empty_maps']}, {res['model']} "
            f"{res['empty_maps']}."
        )
    if diverged:
        lines.append(f"Diverged (non-finite loss): {', '.join(diverged)}.")
    lines.append(
        "The last stage is 7x7 on 28x28 inputs, so every map is a 7x7 map upsampled: "
        "'sharper' here means concentrated at that resolution. "
        + ("One seed: differences between the nets may be seed noise."
           if len(s.seeds) == 1 else f"{len(s.seeds)} seeds.")
    )  # fmt: skip
    return " ".join(lines)
