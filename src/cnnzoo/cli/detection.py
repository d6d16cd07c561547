"""`cnnzoo anchors`, `cnnzoo data convert` and `cnnzoo data scenes`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnzoo.cli.common import (
    app,
    clear_errors,
    console,
)


@app.command()
@clear_errors
def anchors(
    data: Annotated[str, typer.Option(help="scenes, coco:ANN.json, voc:PATH, yolo:DATA.yaml")],
    k: Annotated[int, typer.Option("-k", "--k", help="number of anchors")] = 9,
    data_dir: str | None = None,
    input_size: Annotated[
        tuple[int, int] | None, typer.Option(help="the model's input H W (boxes scaled)")
    ] = None,
    images: Annotated[str | None, typer.Option(help="coco: the images folder")] = None,
    out: Annotated[str | None, typer.Option(help="also write the anchors as JSON")] = None,
    seed: int = 0,
) -> None:
    """YOLO box priors: k-means (1 - IoU) on the training boxes, mean IoU printed."""
    from cnnzoo.workflows.anchors import fit_anchors

    r = fit_anchors(data, k, data_dir, list(input_size) if input_size else None, images, out,
                    seed)  # fmt: skip
    table = Table(title=f"{k} anchors from {r.boxes} boxes of {data} ({r.image_size[0]}x"
                        f"{r.image_size[1]} input)")  # fmt: skip
    for col in ("#", "width", "height"):
        table.add_column(col, justify="right")
    for i, (w, h) in enumerate(r.anchors):
        table.add_row(str(i), f"{w:.1f}", f"{h:.1f}")
    console.print(table)
    console.print(
        f"mean best IoU: k-means {r.mean_iou:.4f}, {k} uniform squares {r.uniform_iou:.4f}, "
        f"yolov3 defaults {r.default_iou:.4f}"
    )
    console.print(f"use: cnnzoo train yolov3 --model-arg '{r.model_arg()}'", highlight=False)


data_app = typer.Typer(help="Dataset tools.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("convert")
@clear_errors
def data_convert(
    source: Annotated[
        str, typer.Option("--from", help="coco:ANN.json, voc:PATH, yolo:DATA.yaml, scenes")
    ],
    dest: Annotated[str, typer.Option("--to", help="coco:OUT.json, voc:ROOT or yolo:ROOT")],
    split: Annotated[str, typer.Option(help="split read and written")] = "train",
    overwrite: Annotated[bool, typer.Option(help="replace existing annotations")] = False,
) -> None:
    """Convert detection annotations between COCO JSON, Pascal VOC XML and YOLO txt."""
    from cnnzoo.data.convert import convert

    written = convert(source, dest, split=split, overwrite=overwrite)
    console.print(f"wrote {written}")


@data_app.command("scenes")
@clear_errors
def data_scenes(
    out: Annotated[str, typer.Option(help="new (or empty) folder to write the scenes into")],
    train: Annotated[int, typer.Option(help="number of train scenes")] = 2000,
    test: Annotated[int, typer.Option(help="number of test scenes")] = 400,
    size: Annotated[int, typer.Option(help="canvas side in pixels")] = 96,
    max_items: Annotated[int, typer.Option(help="the most items per scene")] = 6,
    seed: int = 0,
    source: Annotated[
        str,
        typer.Option(
            help="items from fashion-mnist-mini (bundled, 500 per class) or fashion-mnist "
            "(the full 60,000 train / 10,000 test images: --data-dir, $CNNZOO_DATA or the system "
            "copy)"
        ),
    ] = "fashion-mnist-mini",
    data_dir: Annotated[
        str | None, typer.Option(help="where the full Fashion-MNIST is (source fashion-mnist)")
    ] = None,
) -> None:
    """Generate a scenes dataset of your own size: PNG images, PNG label maps, COCO boxes."""
    from cnnzoo.data.scenes import generate_scenes

    root = generate_scenes(out, train, test, size, max_items, seed, source, data_dir)
    # soft_wrap: the path and the command stay whole for copying, however long
    say = {"highlight": False, "markup": False, "soft_wrap": True}
    console.print(f"wrote {train} train and {test} test scenes to {root}", **say)
    usage = f"use: cnnzoo train unet --data scenes:{root}   (segmentation or detection)"
    console.print(usage, **say)
