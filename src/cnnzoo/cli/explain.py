"""`cnnzoo explain`: what a model looked at, what its layers compute, where it errs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnzoo.cli.common import app, clear_errors, console
from cnnzoo.errors import CnnzooError

METHOD_HELP = (
    "gradcam, gradcam++, layercam, scorecam, occlusion (heat maps); features (feature-map "
    "grid of --layer); filters (the kernels of the first convolution in --layer)"
)


@app.command()
@clear_errors
def explain(
    run: Annotated[
        str, typer.Argument(help="run directory, model.safetensors or weight set (MODEL.TAG)")
    ],
    images: Annotated[list[str] | None, typer.Argument(help="image files")] = None,
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "gradcam",
    layer: Annotated[
        str | None,
        typer.Option(
            help="a stage of the model's feature_info (`cnnzoo info NAME` lists them), a "
            "stage index (-1: the deepest, the default) or a module path"
        ),
    ] = None,
    class_: Annotated[
        list[str] | None,
        typer.Option("--class", help="explain this class (name or index; repeatable)"),
    ] = None,
    topk: Annotated[int, typer.Option(help="top classes, largest regions or boxes")] = 3,
    out: Annotated[
        str | None,
        typer.Option(help="output folder (default RUN/explain; explain/NAME for a weight set)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing outputs")] = False,
    faithfulness: Annotated[
        bool, typer.Option(help="also score each map by deletion/insertion curves")
    ] = False,
    conf: Annotated[float, typer.Option(help="detection: keep boxes scoring above")] = 0.3,
    iou: Annotated[float, typer.Option(help="detection: NMS IoU threshold")] = 0.5,
    top_losses: Annotated[
        int | None,
        typer.Option(help="classification: the N most confident mistakes with their CAMs"),
    ] = None,
    data: Annotated[str | None, typer.Option(help="--top-losses: default the run's data")] = None,
    split: Annotated[str, typer.Option(help="--top-losses: split searched")] = "test",
) -> None:
    """Heat maps of what the model looked at (one per top class, predicted region or kept
    box), feature maps, first-layer filters, or the most confident mistakes."""
    from cnnzoo.workflows.explain import (
        ExplainOptions,
        explain_features,
        explain_filters,
        explain_images,
        explain_top_losses,
    )

    options = ExplainOptions(method=method, layer=layer, classes=class_, topk=topk, out=out,
                             overwrite=overwrite, conf=conf, iou=iou,
                             faithfulness=faithfulness)  # fmt: skip
    if top_losses is not None:
        if top_losses < 1:
            raise CnnzooError(f"--top-losses must be at least 1, got {top_losses}")
        items, path = explain_top_losses(run, top_losses, data, split, options)
        if path is None:
            console.print(f"no mistakes on the {split} split: nothing to show")
            return
        table = Table(title=f"{len(items)} most confident mistakes ({split} split)")
        for col in ("image", "predicted", "true", "loss", "p(pred)", "p(true)"):
            table.add_column(col, justify="left" if col in ("predicted", "true") else "right")
        for t in items:
            table.add_row(f"#{t.index}", t.pred_name, t.true_name, f"{t.loss:.2f}",
                          f"{t.prob_pred:.2f}", f"{t.prob_true:.2f}")  # fmt: skip
        console.print(table)
        console.print(f"{len(items)} most confident mistakes: {path}", highlight=False)
        return
    if method == "filters":
        name, path = explain_filters(run, layer, out, overwrite)
        console.print(f"filters of {name}: {path}", highlight=False, soft_wrap=True)
        return
    if method == "features":
        for file, fm, path in explain_features(run, images or [], options):
            table = Table(title=f"{file.name} · {fm.layer}: most active channels")
            for col in ("channel", "mean", "std", "max", "active"):
                table.add_column(col, justify="right")
            for s in (fm.stats[c] for c in fm.channel_order()[:8]):
                table.add_row(str(s.channel), f"{s.mean:.3f}", f"{s.std:.3f}", f"{s.max:.3f}",
                              f"{s.active:.0%}")  # fmt: skip
            console.print(table)
            console.print(f"feature maps: {path}", highlight=False, soft_wrap=True)
        return
    rows = explain_images(run, images or [], options)
    table = Table(title=f"{method} · {rows[0].layer or 'whole image'}" if rows else method)
    columns = ["file", "explains", "score"]
    columns += ["deletion ↓", "insertion ↑", "random del/ins"] if faithfulness else []
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < 2 else "right")
    for r in rows:
        cells = [r.file.name, r.target, f"{r.score:.3f}"]
        if faithfulness and r.faithfulness is not None:
            f = r.faithfulness
            cells += [f"{f.deletion:.3f}", f"{f.insertion:.3f}",
                      f"{f.random_deletion:.3f}/{f.random_insertion:.3f}"]  # fmt: skip
        table.add_row(*cells)
    console.print(table)
    for output in dict.fromkeys(r.output for r in rows):
        console.print(f"heat maps: {output}", highlight=False, soft_wrap=True)
