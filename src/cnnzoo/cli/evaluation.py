"""`cnnzoo eval` and `cnnzoo predict`, dispatched on the run's task."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnzoo.cli.common import app, clear_errors, open_run, print_evaluation


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
    from cnnzoo.families.base import EvalOptions

    opened, family = open_run(run)
    result = family.evaluate(
        opened,
        EvalOptions(data=data, data_dir=data_dir, split=split, batch_size=batch_size,
                    voc07=voc07, images=images, fid_samples=fid_samples),
    )  # fmt: skip
    print_evaluation(result)


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
    from cnnzoo.families.base import PredictOptions

    opened, family = open_run(run)
    options = PredictOptions(topk=topk, out=out, overwrite=overwrite, conf=conf, iou=iou)
    for line in family.predict(opened, images, options):
        typer.echo(line)  # tab-separated: easy to read and to parse
