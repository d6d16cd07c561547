"""``cnnzoo explain``: attribution maps, feature maps, filters and top losses of a run, as files.

Outputs never replace a file silently (``overwrite`` must be given). The default folder is
the run's ``explain/`` (``explain/NAME`` for a weight set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.families.outputs import check_inputs, refuse_existing
from cnnzoo.rundir import RunDir

VIEWS = ("features", "filters")


@dataclass
class ExplainOptions:
    """What ``cnnzoo explain`` computes and where it writes.

    ``method`` is an attribution method of :data:`cnnzoo.explain.cam.METHODS`, or
    ``features`` / ``filters``; ``classes`` are class names or indices as text.
    """

    method: str = "gradcam"
    layer: str | None = None
    classes: Sequence[str] | None = None
    topk: int = 3
    out: str | None = None
    overwrite: bool = False
    conf: float = 0.3
    iou: float = 0.5
    faithfulness: bool = False


@dataclass
class ExplainRow:
    """One line of ``cnnzoo explain``'s table: a map of one subject of one image."""

    file: Path
    target: str
    score: float
    layer: str | None
    output: Path
    faithfulness: Any = None  # cnnzoo.explain.faithfulness.Faithfulness


def out_folder(run: RunDir, out: str | None) -> Path:
    """Return ``out`` or the run's default explanation folder."""
    return Path(out) if out else run.explanations


def single_output(run: RunDir, out: str | None, default_name: str, overwrite: bool) -> Path:
    """The file for a one-figure view: ``out`` itself when it ends in ``.png``, else
    ``default_name`` inside the folder.

    Raises:
        CnnzooError: if the file exists and ``overwrite`` is False.
    """
    path = (
        Path(out) if out and out.lower().endswith(".png") else out_folder(run, out) / default_name
    )
    refuse_existing(path, overwrite)
    return path


def _slug(text: str) -> str:
    return text.replace("+", "p").replace(".", "-").replace("/", "-")


def explain_images(
    run_or_weights: str | Path, files: Sequence[str | Path], options: ExplainOptions
) -> list[ExplainRow]:
    """Explain image files with a run: one figure per image (the image, then a heat map per
    top class, predicted region or kept box) named ``STEM_METHOD.png``.

    Returns:
        One row per map, in file order.

    Raises:
        CnnzooError: for a bad run, method, layer, class, image or existing output.
    """
    from cnnzoo.explain.cam import check_method, explain
    from cnnzoo.explain.faithfulness import deletion_insertion
    from cnnzoo.explain.inputs import load_input
    from cnnzoo.explain.targets import class_indices, explainable
    from cnnzoo.viz.cam import save_explanations

    method = check_method(options.method)
    if not files:
        raise CnnzooError(f"--method {method} explains images: give one or more image files")
    if options.topk < 1:
        raise CnnzooError(f"--topk must be at least 1, got {options.topk}")
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    task = spec.get("task", "classification")
    names = spec["data"]["class_names"]
    classes = class_indices(list(options.classes or []), names)
    folder = out_folder(run, options.out)
    suffix = f"_{_slug(method)}.png"
    paths = check_inputs(files, folder, [suffix], options.overwrite)
    rows = []
    for path in paths:
        image, x = load_input(path, spec, run.label)
        found = explain(model, x, task, names, method, options.layer, classes, options.topk,
                        options.conf, options.iou, int(spec["data"]["in_channels"]))  # fmt: skip
        if options.faithfulness:
            net = explainable(model, task, options.conf, options.iou)
            for ex in found:
                ex.faithfulness = deletion_insertion(net, x, ex.subject, ex.heatmap)
        layer = found[0].layer if found else None
        title = f"{path.name} · {method}" + (f" · {layer}" if layer else "")
        output = save_explanations(image, found, folder / f"{path.stem}{suffix}", title)
        if not found:
            rows.append(ExplainRow(path, "(nothing kept above --conf)", 0.0, None, output))
        for ex in found:
            rows.append(ExplainRow(path, ex.subject.title, ex.subject.score, ex.layer, output,
                                   getattr(ex, "faithfulness", None)))  # fmt: skip
    return rows


def explain_filters(run_or_weights: str | Path, layer: str | None, out: str | None,
                    overwrite: bool) -> tuple[str, Path]:  # fmt: skip
    """Draw the kernels of the first convolution in ``layer`` (default: the model's first).

    Returns:
        ``(convolution name, PNG written)``.

    Raises:
        CnnzooError: for a bad run or layer, or an existing output.
    """
    from cnnzoo.explain.features import first_filters
    from cnnzoo.viz.features import save_filter_grid

    run = RunDir.open(run_or_weights)
    model, _ = run.load_model()
    name, weights = first_filters(model, layer)
    path = single_output(run, out, f"filters_{_slug(name)}.png", overwrite)
    title = f"{run.label} · {name} · {tuple(weights.shape)}"
    return name, save_filter_grid(weights, path, title)


def explain_features(
    run_or_weights: str | Path, files: Sequence[str | Path], options: ExplainOptions
) -> list[tuple[Path, Any, Path]]:
    """Draw the feature maps of ``options.layer`` (default: the deepest stage) for each image,
    most active channels first, as ``STEM_features_LAYER.png``.

    Returns:
        ``(image file, FeatureMaps, PNG written)`` per image.

    Raises:
        CnnzooError: for a bad run, layer or image, or an existing output.
    """
    from cnnzoo.explain.features import feature_maps
    from cnnzoo.explain.inputs import load_input
    from cnnzoo.explain.layers import resolve_layer
    from cnnzoo.viz.features import save_feature_grid

    if not files:
        raise CnnzooError("--method features shows an image's feature maps: give image files")
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    layer, _ = resolve_layer(model, options.layer)
    folder = out_folder(run, options.out)
    suffix = f"_features_{_slug(layer)}.png"
    paths = check_inputs(files, folder, [suffix], options.overwrite)
    results = []
    for path in paths:
        _, x = load_input(path, spec, run.label)
        fm = feature_maps(model, x, layer)
        title = f"{path.name} · {layer} · {fm.maps.shape[0]} channels"
        results.append(
            (path, fm, save_feature_grid(fm, folder / f"{path.stem}{suffix}", title=title))
        )
    return results


def explain_top_losses(
    run_or_weights: str | Path,
    n: int,
    data: str | None,
    split: str,
    options: ExplainOptions,
) -> tuple[list[Any], Path | None]:
    """The ``n`` most confident mistakes on a split, with the CAMs of the predicted and the
    true class, drawn as one grid (``top_losses.png``).

    Returns:
        ``(items, PNG written)``; no PNG when the model makes no mistake.

    Raises:
        CnnzooError: for a run that is not a classification run, ``n`` below 1, bad data,
            or an existing output.
    """
    from cnnzoo.explain.top_losses import top_losses
    from cnnzoo.viz.top_losses import save_top_losses

    run = RunDir.open(run_or_weights)
    path = single_output(run, options.out, "top_losses.png", options.overwrite)
    items = top_losses(run, n=n, data=data, split=split, method=options.method,
                       layer=options.layer)  # fmt: skip
    if not items:
        return items, None
    title = f"{run.label} · {len(items)} most confident mistakes · {options.method}"
    return items, save_top_losses(items, path, title)
