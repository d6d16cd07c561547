"""The ``cnnzoo`` command line: one thin function per command; the work is in workflows/."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cnnzoo.errors import CnnzooError

app = typer.Typer(
    help="Every architecture of the lecture 'CNN Architectures': build, train, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def clear_errors(fn: F) -> F:
    """Turn a :class:`CnnzooError` into one red line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CnnzooError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


@app.command()
@clear_errors
def models(task: Annotated[str | None, typer.Option(help="only this task")] = None) -> None:
    """Table of every registered model: name, task, params, MACs, paper."""
    from cnnzoo.registry import model_info
    from cnnzoo.summary import model_cost

    table = Table(title="cnnzoo models")
    for col in ("name", "task", "input", "params", "MACs", "paper"):
        table.add_column(
            col,
            no_wrap=col != "paper",
            max_width=48 if col == "paper" else None,
            overflow="ellipsis",
        )
    from cnnzoo.registry import list_models

    for name in list_models(task):
        info = model_info(name)
        params, macs = model_cost(name)
        size = "x".join(map(str, info.input_size))
        table.add_row(name, info.task, size, _human(params), _human(macs), info.paper)
    console.print(table)


@app.command()
@clear_errors
def info(
    name: str,
    input_size: Annotated[
        tuple[int, int, int] | None, typer.Option(help="C H W (default: the model's)")
    ] = None,
    num_classes: Annotated[int | None, typer.Option()] = None,
    depth: Annotated[int, typer.Option(help="module nesting depth shown")] = 2,
) -> None:
    """Per-layer output shapes, parameters and MACs of one model."""
    from cnnzoo.registry import create_model, model_info
    from cnnzoo.summary import summarize

    meta = model_info(name)
    size = tuple(input_size) if input_size else meta.input_size
    kwargs: dict[str, Any] = {"in_channels": size[0]}
    if num_classes:
        kwargs["num_classes"] = num_classes
    if size[1] < meta.small_input_below and meta.small_input:
        kwargs["small_input"] = True
    if size[1] < meta.min_input_size and not kwargs.get("small_input"):
        raise CnnzooError(
            f"{name} needs inputs of at least {meta.min_input_size}x{meta.min_input_size}, "
            f"got {size[1]}x{size[2]}"
        )
    model = create_model(name, **kwargs)
    rows = summarize(model, size, max_depth=depth)
    table = Table(title=f"{name}  input {'x'.join(map(str, size))}  ({meta.paper})")
    for col in ("layer", "type", "output shape", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in rows:
        shape = "x".join(map(str, r.output_shape[1:])) if r.output_shape else "-"
        indent = "  " * (r.depth - 1)
        table.add_row(indent + r.name, r.kind, shape, f"{r.params:,}", _human(r.macs))
    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(r.macs for r in rows if r.depth == 1)
    table.add_row("total", "", "", f"{total_params:,}", _human(total_macs), style="bold")
    console.print(table)


def _parse_model_args(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CnnzooError(f"--model-arg expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _parse_classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise CnnzooError(f"--classes expects e.g. 0-4 or 5,7,9, got {text!r}") from None
    return out


def _train_config(values: dict[str, Any], **overrides: Any) -> Any:
    """Build a TrainConfig from a command's parameters (those that are TrainConfig fields)."""
    from dataclasses import fields

    from cnnzoo.workflows.train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    args = {k: v for k, v in values.items() if k in names}
    devices = str(args.get("devices", "1"))
    args["devices"] = int(devices) if devices.isdigit() else devices
    args["classes"] = _parse_classes(args.get("classes"))
    args.update(overrides)
    return TrainConfig(**args)


def _print_metrics(title: str, metrics: dict[str, float], extra: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for k, v in extra.items():
        table.add_row(k, str(v))
    for k, v in sorted(metrics.items()):
        table.add_row(k, f"{v:.4f}")
    console.print(table)


DATA_HELP = (
    "classification, autoencoders, VAE, DCGAN: fashion-mnist, fashion-mnist-mini or an image "
    "folder; segmentation: scenes, voc:PATH, cityscapes:PATH or masks:PATH; detection: "
    "scenes, coco:ANN.json, voc:PATH or yolo:DATA.yaml; translation: unpaired:PATH, "
    "paired:PATH, fmnist-edges, fmnist-invert, fmnist-shoes"
)


def _parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CnnzooError(f"{option} expects numbers separated by commas, got {text!r}") from None


@app.command()
@clear_errors
def train(
    model: Annotated[str, typer.Argument(help="registered model name (see `cnnzoo models`)")],
    data: Annotated[str, typer.Option(help=DATA_HELP)] = "fashion-mnist",
    out: Annotated[str | None, typer.Option(help="run directory (default runs/MODEL)")] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="where Fashion-MNIST is, or scenes are generated")
    ] = None,
    epochs: int = 10,
    batch_size: Annotated[
        int | None, typer.Option(help="default 128 (classification), 16 (segmentation)")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd, adam, adamw (default sgd; segmentation adamw)")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="default 0.05 (sgd); segmentation 0.002 (adamw)")
    ] = None,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: Annotated[float | None, typer.Option(help="default 5e-4; seg. 1e-4")] = None,
    scheduler: Annotated[str, typer.Option(help="onecycle, cosine, step, none")] = "onecycle",
    loss: Annotated[str, typer.Option(help="cross_entropy, nll, kl")] = "cross_entropy",
    label_smoothing: float = 0.0,
    aux_weight: Annotated[
        float | None, typer.Option(help="auxiliary head weight (default 0.3; PSPNet 0.4)")
    ] = None,
    augment: bool = True,
    val_fraction: float = 0.1,
    subset: Annotated[int | None, typer.Option(help="use the first N training images")] = None,
    image_size: Annotated[int | None, typer.Option(help="image-folder resize")] = None,
    seed: int = 0,
    accelerator: Annotated[str, typer.Option(help="auto, cpu, gpu")] = "auto",
    devices: Annotated[str, typer.Option(help="number of devices (DDP when > 1) or 'auto'")] = "1",
    num_nodes: int = 1,
    precision: Annotated[str, typer.Option(help="32-true, bf16-mixed, 16-mixed")] = "32-true",
    channels_last: bool = False,
    max_time: Annotated[float | None, typer.Option(help="training budget in minutes")] = None,
    num_workers: int = 0,
    model_arg: Annotated[
        list[str] | None, typer.Option(help="builder option key=value, repeatable")
    ] = None,
    classes: Annotated[str | None, typer.Option(help="class subset, e.g. 0-4 or 5,7,9")] = None,
    per_class: Annotated[int | None, typer.Option(help="labelled images per class")] = None,
    weights: Annotated[
        str | None, typer.Option(help="start from a run, .safetensors or torchvision .pth")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="fine-tuning: head, partial, full, gradual")
    ] = None,
    unfreeze: Annotated[int, typer.Option(help="partial: stages to unfreeze")] = 1,
    backbone_lr_scale: Annotated[float, typer.Option(help="backbone lr = lr x this")] = 1.0,
    unfreeze_every: Annotated[int, typer.Option(help="gradual: epochs per stage")] = 1,
    backbone: Annotated[
        str | None, typer.Option(help="segmentation/detection: backbone, e.g. resnet18")
    ] = None,
    backbone_weights: Annotated[
        str | None, typer.Option(help="segmentation/detection: backbone weights (a run)")
    ] = None,
    input_size: Annotated[
        tuple[int, int] | None, typer.Option(help="segmentation/detection: resize to H W")
    ] = None,
    dice_weight: Annotated[float, typer.Option(help="segmentation: + this x Dice loss")] = 0.0,
    class_weights: Annotated[
        str | None, typer.Option(help="segmentation: cross-entropy weight per class, a,b,...")
    ] = None,
    snapshots: Annotated[
        int, typer.Option(help="segmentation/detection: validation images drawn per epoch")
    ] = 4,
    images: Annotated[
        str | None, typer.Option(help="detection, coco:ANN.json: the images folder")
    ] = None,
    latent: Annotated[int | None, typer.Option(help="AE/VAE/GAN: latent code size")] = None,
    beta: Annotated[float | None, typer.Option(help="VAE: weight of the KL term")] = None,
    denoise: Annotated[
        str | None, typer.Option(help="AE: input noise, gaussian:0.3, saltpepper:0.1, mask:0.25")
    ] = None,
    decay_start: Annotated[
        float, typer.Option(help="GANs: fraction of epochs before the lr decays linearly to 0")
    ] = 1.0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Train a model; writes a run directory (config, weights, metrics, plots)."""
    from cnnzoo.workflows.train import train as run_train

    cfg = _train_config(
        locals(),
        out=out or f"runs/{model}",
        max_time_minutes=max_time,
        model_kwargs=_parse_model_args(model_arg or []),
        input_size=list(input_size) if input_size else None,
        class_weights=_parse_floats(class_weights, "--class-weights"),
    )
    result = run_train(cfg)
    extra = {"run": result.run_dir, "epochs": result.epochs, "seconds": f"{result.seconds:.1f}"}
    _print_metrics(f"{model} on {data}", result.metrics, extra)


@app.command()
@clear_errors
def finetune(
    source: Annotated[str, typer.Argument(help="source run directory or model.safetensors")],
    data: Annotated[str, typer.Option(help="fashion-mnist, fashion-mnist-mini or a folder")] = (
        "fashion-mnist"
    ),
    strategy: Annotated[str, typer.Option(help="head, partial, full, gradual")] = "full",
    unfreeze: Annotated[int, typer.Option(help="partial: stages to unfreeze")] = 1,
    backbone_lr_scale: Annotated[float, typer.Option(help="backbone lr = lr x this")] = 1.0,
    unfreeze_every: Annotated[int, typer.Option(help="gradual: epochs per stage")] = 1,
    out: Annotated[str | None, typer.Option(help="run directory")] = None,
    data_dir: str | None = None,
    classes: Annotated[str | None, typer.Option(help="class subset, e.g. 5-9")] = None,
    per_class: Annotated[int | None, typer.Option(help="labelled images per class")] = None,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    scheduler: str = "onecycle",
    augment: bool = True,
    val_fraction: float = 0.1,
    image_size: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    devices: str = "1",
    precision: str = "32-true",
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Fine-tune a trained model on new data: head, partial, full or gradual unfreezing."""
    from cnnzoo.workflows.finetune import finetune as run_finetune

    cfg = _train_config(locals(), model="", out=out or f"runs/finetune-{strategy}")
    result = run_finetune(source, cfg)
    extra = {"run": result.run_dir, "strategy": strategy, "seconds": f"{result.seconds:.1f}"}
    _print_metrics(f"fine-tuned on {data}", result.metrics, extra)


def _run_task(run: str) -> str:
    from cnnzoo.rundir import RunDir

    return RunDir.open(run).read_spec().get("task", "classification")


@app.command("eval")
@clear_errors
def eval_(
    run: Annotated[str, typer.Argument(help="run directory or model.safetensors")],
    data: Annotated[str | None, typer.Option(help="default: the training dataset")] = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: Annotated[
        int | None, typer.Option(help="default 256; segmentation, detection 16")
    ] = None,
    voc07: Annotated[bool, typer.Option(help="detection: VOC2007 11-point AP@0.5")] = False,
    images: Annotated[str | None, typer.Option(help="detection, coco: images folder")] = None,
) -> None:
    """Classification: accuracy, per-class table, confusion matrix. Segmentation: mIoU,
    pixel accuracy, per-class IoU table, overlays. Detection: COCO mAP, mAP@0.5, per-class
    AP table, drawn detections."""
    task = _run_task(run)
    if task == "segmentation":
        _eval_segmentation(run, data, data_dir, split, batch_size or 16)
        return
    if task == "detection":
        _eval_detection(run, data, data_dir, split, batch_size or 16, voc07, images)
        return
    if task in ("reconstruction", "generation", "translation"):
        from cnnzoo.workflows.gen_evaluate import evaluate_reconstruction

        values = evaluate_reconstruction(run, data, data_dir, split, batch_size)
        _print_metrics(f"{run} ({split})", values, {})
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
    run: Annotated[str, typer.Argument(help="run directory or model.safetensors")],
    images: Annotated[list[str], typer.Argument(help="image files")],
    topk: Annotated[int, typer.Option(help="classification: classes shown")] = 3,
    out: Annotated[
        str | None,
        typer.Option(help="segmentation/detection: output folder (default: RUN/predictions)"),
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
    task = _run_task(run)
    if task == "detection":
        from cnnzoo.rundir import RunDir
        from cnnzoo.workflows.det_predict import predict_detection

        folder = out or str(RunDir.open(run).path / "predictions")
        for p in predict_detection(run, images, folder, conf=conf, iou=iou, overwrite=overwrite):
            found = "\t".join(f"{d['class']} {d['score']:.3f}" for d in p.detections[:topk])
            typer.echo(f"{p.file}\t{p.boxes_png}\t{p.json_file}\t{len(p.detections)}\t{found}")
        return
    if task == "segmentation":
        from cnnzoo.rundir import RunDir
        from cnnzoo.workflows.seg_predict import predict_segmentation

        folder = out or str(RunDir.open(run).path / "predictions")
        for p in predict_segmentation(run, images, folder, overwrite=overwrite):
            areas = "\t".join(f"{c} {a:.3f}" for c, a in list(p.areas.items())[:topk])
            typer.echo(f"{p.file}\t{p.label_png}\t{p.overlay_png}\t{areas}")
        return
    from cnnzoo.workflows.predict import predict as run_predict

    for p in run_predict(run, images, topk=topk):
        ranked = "\t".join(f"{c} {q:.3f}" for c, q in zip(p.classes, p.probs, strict=True))
        typer.echo(f"{p.file}\t{ranked}")  # tab-separated: easy to read and to parse


@app.command()
@clear_errors
def sample(
    run: Annotated[str, typer.Argument(help="a VAE or GAN run directory")],
    n: Annotated[int, typer.Option("-n", help="number of images")] = 64,
    out: Annotated[str, typer.Option(help="the PNG grid written")] = "samples.png",
    interpolate: Annotated[
        bool, typer.Option(help="rows walking the latent space between two codes")
    ] = False,
    steps: Annotated[int, typer.Option(help="interpolation: images per row")] = 10,
    label: Annotated[int | None, typer.Option(help="conditional GAN: the class")] = None,
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """New images from a VAE or GAN run, as a PNG grid."""
    from cnnzoo.workflows.sample import sample as run_sample

    path = run_sample(run, out, n=n, seed=seed, interpolate=interpolate, steps=steps,
                      label=label, overwrite=overwrite)  # fmt: skip
    console.print(f"wrote {path}")


@app.command()
@clear_errors
def translate(
    run: Annotated[str, typer.Argument(help="an image-translation run (cyclegan, pix2pix...)")],
    images: Annotated[list[str], typer.Argument(help="image files")],
    out: Annotated[str, typer.Option(help="output PNG (one image) or folder")] = "translated",
    direction: Annotated[str, typer.Option(help="AB or BA (unpaired models)")] = "AB",
    overwrite: bool = False,
) -> None:
    """Translate images from domain A to B (or B to A) with a trained translation run."""
    from cnnzoo.workflows.sample import translate as run_translate

    for path in run_translate(run, images, out, direction=direction, overwrite=overwrite):
        console.print(f"wrote {path}")


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


@app.command()
@clear_errors
def experiment(
    name: Annotated[str, typer.Argument(help="experiment name, or 'list'")],
    quick: Annotated[bool, typer.Option(help="a few-minute version")] = False,
    out: Annotated[str | None, typer.Option(help="output folder (must not exist)")] = None,
) -> None:
    """The lecture's claims, measured: `cnnzoo experiment list`, `cnnzoo experiment NAME`."""
    from cnnzoo.experiments import list_experiments, run_experiment

    if name == "list":
        table = Table(title="cnnzoo experiments")
        table.add_column("name")
        table.add_column("what it measures")
        for exp in list_experiments():
            table.add_row(exp.name, exp.description)
        console.print(table)
        return
    result = run_experiment(name, out=out, quick=quick)
    table = Table(title=result.title)
    for col in result.columns:
        table.add_column(col)
    for row in result.rows:
        table.add_row(*(str(row.get(c, "")) for c in result.columns))
    console.print(table)
    if result.notes:
        console.print(result.notes, highlight=False)
    for fig in result.figures:
        console.print(f"figure: {fig}")


@app.command()
@clear_errors
def demo(
    out: str = "runs/demo",
    epochs: Annotated[int | None, typer.Option(help="default: the recipe's")] = None,
    data_dir: str | None = None,
    progress: bool = True,
) -> None:
    """The main job: train the compact classifier on Fashion-MNIST, evaluate, summarise."""
    from cnnzoo.workflows.demo import run_demo

    result, why = run_demo(out=out, epochs=epochs, data_dir=data_dir, progress=progress)
    console.print(f"data: {why}")
    extra = {
        "run directory": result.run_dir,
        "model": "convnet",
        "params": f"{result.params:,}",
        "epochs": result.epochs,
        "training seconds": f"{result.seconds:.1f}",
    }
    _print_metrics("cnnzoo demo: Fashion-MNIST", result.metrics, extra)
    console.print(f"plots: {result.run_dir / 'plots'}")


if __name__ == "__main__":
    app()
