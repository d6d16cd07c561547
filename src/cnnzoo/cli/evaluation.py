"""`cnnzoo eval` and `cnnzoo predict`, dispatched on the run's task."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnzoo.cli.common import (
    CnnzooError,
    app,
    clear_errors,
    console,
    print_metrics,
    run_task,
)


@app.command("eval")
@clear_errors
def eval_(
    run: Annotated[
        str, typer.Argument(help="run directory, model.safetensors or weight set (MODEL.TAG)")
    ],
    data: Annotated[str | None, typer.Option(help="default: the training dataset")] = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: Annotated[
        int | None, typer.Option(help="default 256; segmentation, detection 16")
    ] = None,
    voc07: Annotated[bool, typer.Option(help="detection: VOC2007 11-point AP@0.5")] = False,
    images: Annotated[str | None, typer.Option(help="detection, coco: images folder")] = None,
    fid_samples: Annotated[
        int,
        typer.Option(
            help="VAE/DCGAN: test images (and samples) for the FID; unpaired translation: "
            "images per domain"
        ),
    ] = 2000,
) -> None:
    """Classification: accuracy, per-class table, confusion matrix. Segmentation: mIoU,
    pixel accuracy, per-class IoU table, overlays. Detection: COCO mAP, mAP@0.5, per-class
    AP table, drawn detections. Autoencoders/VAE: MSE, PSNR, SSIM (VAE: ELBO); VAE/DCGAN: FID.
    Paired translation: L1, PSNR, SSIM against the true B; unpaired: FID A->B and B->A."""
    task = run_task(run)
    if task == "segmentation":
        _eval_segmentation(run, data, data_dir, split, batch_size or 16)
        return
    if task == "detection":
        _eval_detection(run, data, data_dir, split, batch_size or 16, voc07, images)
        return
    if task in ("reconstruction", "generation", "translation"):
        from cnnzoo.tasks.fid import FID_NAME
        from cnnzoo.workflows.gen_evaluate import evaluate_reconstruction, evaluate_translation

        measure = evaluate_translation if task == "translation" else evaluate_reconstruction
        values = measure(run, data, data_dir, split, batch_size, fid_samples=fid_samples)
        extra = {}
        if "fid" in values or "fid_ab" in values:
            extra["fid"] = f"{FID_NAME}, {int(values.pop('fid_samples', 0))} images each"
        print_metrics(f"{run} ({split})", values, extra)
        return
    from cnnzoo.workflows.evaluate import evaluate

    result = evaluate(run, data=data, data_dir=data_dir, split=split, batch_size=batch_size or 256)
    table = Table(title=f"accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  ({split})")
    for col in ("class", "support", "accuracy (recall)", "precision"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result.per_class:
        table.add_row(row.name, str(row.support), f"{row.recall:.4f}", f"{row.precision:.4f}")
    console.print(table)
    if result.confusion_png:
        console.print(f"confusion matrix: {result.confusion_png}")


def _eval_segmentation(
    run: str, data: str | None, data_dir: str | None, split: str, batch_size: int
) -> None:
    from cnnzoo.workflows.seg_evaluate import evaluate_segmentation

    result = evaluate_segmentation(run, data, data_dir, split, batch_size)
    title = (
        f"mIoU {result.miou:.4f}  pixel accuracy {result.pixel_accuracy:.4f}  "
        f"loss {result.loss:.4f}  ({split})"
    )
    table = Table(title=title)
    for col in ("class", "IoU", "pixels", "pixel accuracy"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result.per_class:
        iou = "-" if row.iou is None else f"{row.iou:.4f}"
        acc = "-" if row.accuracy is None else f"{row.accuracy:.4f}"
        table.add_row(row.name, iou, f"{row.pixels:,}", acc)
    console.print(table)
    for png in result.pngs:
        console.print(f"figure: {png}")


def _eval_detection(
    run: str,
    data: str | None,
    data_dir: str | None,
    split: str,
    batch_size: int,
    voc07: bool,
    images: str | None,
) -> None:
    from cnnzoo.workflows.det_evaluate import evaluate_detection

    r = evaluate_detection(run, data, data_dir, split, batch_size, voc07=voc07, images_dir=images)
    voc = "VOC07 11-point" if r.voc07 else "VOC all-point"
    title = (
        f"mAP@[.5:.95] {r.map:.4f}  mAP@0.5 {r.map_50:.4f}  mAP@0.75 {r.map_75:.4f}  "
        f"{voc} mAP@0.5 {r.voc_map_50:.4f}  ({split}, {r.images} images)"
    )
    table = Table(title=title)
    for col in ("class", "objects", "AP@[.5:.95]", f"AP@0.5 ({voc})"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in r.per_class:
        ap = "-" if row.ap is None else f"{row.ap:.4f}"
        ap50 = "-" if row.ap_50 is None else f"{row.ap_50:.4f}"
        table.add_row(row.name, str(row.objects), ap, ap50)
    console.print(table)
    for png in r.pngs:
        console.print(f"figure: {png}")


@app.command()
@clear_errors
def predict(
    run: Annotated[
        str, typer.Argument(help="run directory, model.safetensors or weight set (MODEL.TAG)")
    ],
    images: Annotated[list[str], typer.Argument(help="image files")],
    topk: Annotated[int, typer.Option(help="classification: classes shown")] = 3,
    out: Annotated[
        str | None,
        typer.Option(
            help="segmentation/detection: output folder (default: RUN/predictions; for a "
            "weight set, predictions/NAME)"
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="segmentation/detection: replace outputs")
    ] = False,
    conf: Annotated[float, typer.Option(help="detection: keep boxes scoring above")] = 0.3,
    iou: Annotated[float, typer.Option(help="detection: NMS IoU threshold")] = 0.5,
) -> None:
    """Classification: file, top-k classes with probabilities. Segmentation: a label PNG and
    a colour overlay PNG per image, and the classes by area. Detection: a PNG with the boxes
    drawn and a JSON of the detections per image."""
    from cnnzoo.rundir import RunDir

    opened = RunDir.open(run)
    task = opened.read_spec().get("task", "classification")
    if task == "detection":
        from cnnzoo.workflows.det_predict import predict_detection

        folder = out or str(opened.predictions)
        for p in predict_detection(run, images, folder, conf=conf, iou=iou, overwrite=overwrite):
            found = "\t".join(f"{d['class']} {d['score']:.3f}" for d in p.detections[:topk])
            typer.echo(f"{p.file}\t{p.boxes_png}\t{p.json_file}\t{len(p.detections)}\t{found}")
        return
    if task == "segmentation":
        from cnnzoo.workflows.seg_predict import predict_segmentation

        folder = out or str(opened.predictions)
        for p in predict_segmentation(run, images, folder, overwrite=overwrite):
            areas = "\t".join(f"{c} {a:.3f}" for c, a in list(p.areas.items())[:topk])
            typer.echo(f"{p.file}\t{p.label_png}\t{p.overlay_png}\t{areas}")
        return
    if task != "classification":
        use = (
            "cnnzoo sample (VAE, GAN) or cnnzoo translate"
            if task != "reconstruction"
            else ("cnnzoo eval (reconstructions)")
        )
        raise CnnzooError(
            f"{opened.label} is a {task} model: predict labels images with classifiers, "
            f"segmenters and detectors; use {use}"
        )
    from cnnzoo.workflows.predict import predict as run_predict

    for p in run_predict(run, images, topk=topk):
        ranked = "\t".join(f"{c} {q:.3f}" for c, q in zip(p.classes, p.probs, strict=True))
        typer.echo(f"{p.file}\t{ranked}")  # tab-separated: easy to read and to parse
