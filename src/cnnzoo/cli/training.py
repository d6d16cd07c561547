"""`cnnzoo train` and `cnnzoo finetune`."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnzoo.cli.common import (
    DATA_HELP,
    app,
    clear_errors,
    parse_floats,
    parse_model_args,
    print_metrics,
    train_config,
    width_arg,
)


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
    seeds: Annotated[
        int,
        typer.Option(
            help="train N runs, seeds SEED..SEED+N-1, into OUT/seed-S; OUT/metrics.json: "
            "each metric's mean ± std"
        ),
    ] = 1,
    deterministic: Annotated[
        bool,
        typer.Option(
            help="deterministic algorithms (GPU: cuDNN/cuBLAS too); an op without one stops "
            "the run, named"
        ),
    ] = False,
    accelerator: Annotated[str, typer.Option(help="auto, cpu, gpu")] = "auto",
    devices: Annotated[str, typer.Option(help="number of devices (DDP when > 1) or 'auto'")] = "1",
    num_nodes: int = 1,
    precision: Annotated[
        str, typer.Option(help="32-true, bf16-mixed, 16-mixed, auto (bf16 where fast)")
    ] = "32-true",
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="NHWC activations; unset: with --precision auto the faster of a few timed "
            "steps, else off",
        ),
    ] = None,
    time: Annotated[
        float | None,
        typer.Option(
            "--time",
            help="training budget in minutes: epochs and lr schedule fitted to it "
            "(replaces --epochs)",
        ),
    ] = None,
    max_time: Annotated[
        float | None, typer.Option(help="hard stop after this many minutes (lr as it is)")
    ] = None,
    num_workers: int = 0,
    model_arg: Annotated[
        list[str] | None, typer.Option(help="builder option key=value, repeatable")
    ] = None,
    width: Annotated[
        float | None, typer.Option(help="mobilenet_v1/v2: width multiplier alpha, e.g. 0.5")
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
    fid_samples: Annotated[
        int,
        typer.Option(
            help="VAE/DCGAN: test images (and samples) for the FID; unpaired translation: "
            "images per domain; 0: none"
        ),
    ] = 2000,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="a named set of defaults your own options override: classifiers standard "
            "or fast; detectors paper or modern"
        ),
    ] = None,
    ema_decay: Annotated[
        float, typer.Option(help="EMA of the weights per step (e.g. 0.99); 0: off")
    ] = 0.0,
    crop_padding: Annotated[
        int | None, typer.Option(help="classification: random-crop padding (default side/8)")
    ] = None,
    tta: Annotated[
        bool, typer.Option(help="classification: test on the mean of each image and its mirror")
    ] = False,
    tta_shift: Annotated[
        int, typer.Option(help="with --tta: also average both views shifted ±N px (0: off)")
    ] = 0,
    det_augment: Annotated[
        str | None, typer.Option(help="detection: flip, or mosaic (+ scale/colour jitter)")
    ] = None,
    autoanchor: Annotated[
        bool, typer.Option(help="detection: fit anchors/default boxes to the training boxes")
    ] = True,
    resume: Annotated[
        bool, typer.Option(help="continue from RUN/checkpoints/last.ckpt (mid-epoch too)")
    ] = False,
    checkpoint_every: Annotated[
        str,
        typer.Option(
            help="also write last.ckpt during epochs: a time (30s, 10m, 2h), steps "
            "(500steps) or off"
        ),
    ] = "10m",
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Train a model; writes a run directory (config, weights, metrics, plots)."""
    from cnnzoo.workflows.train import train as run_train

    cfg = train_config(
        locals(),
        out=out or f"runs/{model}",
        max_time_minutes=max_time,
        time_minutes=time,
        model_kwargs=parse_model_args(model_arg or []) | width_arg(width),
        input_size=list(input_size) if input_size else None,
        class_weights=parse_floats(class_weights, "--class-weights"),
    )
    result = run_train(cfg)
    extra = {"run": result.run_dir, "epochs": result.epochs, "seconds": f"{result.seconds:.1f}"}
    if result.std:  # --seeds N: mean ± sample standard deviation over the seeds
        extra["seeds"] = f"{cfg.seed}..{cfg.seed + cfg.seeds - 1} (mean ± std)"
        for k, v in sorted(result.metrics.items()):
            extra[k] = f"{v:.4f} ± {result.std[k]:.4f}"
        print_metrics(f"{model} on {data}", {}, extra)
        return
    if "test/fid" in result.metrics or "test/fid_ab" in result.metrics:
        from cnnzoo.tasks.fid import FID_NAME

        extra["test/fid is"] = f"{FID_NAME}, {int(result.metrics['test/fid_samples'])} images each"
    print_metrics(f"{model} on {data}", result.metrics, extra)


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

    cfg = train_config(locals(), model="", out=out or f"runs/finetune-{strategy}")
    result = run_finetune(source, cfg)
    extra = {"run": result.run_dir, "strategy": strategy, "seconds": f"{result.seconds:.1f}"}
    print_metrics(f"fine-tuned on {data}", result.metrics, extra)
