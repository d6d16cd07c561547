"""Bottleneck blocks, measured: parameters, MACs, speed and accuracy against basic blocks.

The lecture (ResNet): a bottleneck block (1x1 reduce, 3x3, 1x1 expand) cuts parameters and
computation. He et al. 2016 (Fig. 5, Table 1) pair ResNet-34 (basic blocks) with ResNet-50
(bottleneck blocks): the same stages and blocks per stage and the same 3x3 width, the
bottleneck's output 4x wider, at similar cost. Here, on Fashion-MNIST, three networks share
the layout of the CIFAR ResNets (He et al. Sec. 4.2: a 3x3 stem, no pooling, three stages
of ``n`` blocks on 28/14/7-pixel maps, global pooling, one linear layer), with projection
shortcuts (option B) everywhere so that only the blocks differ:

- ``basic``: basic blocks, widths (w, 2w, 4w): 6n + 2 weighted layers (ResNet-34's block);
- ``bottleneck``: bottleneck blocks with 3x3 widths (w, 2w, 4w), outputs (4w, 8w, 16w):
  9n + 2 layers, He et al.'s pairing (ResNet-50's block);
- ``bottleneck-same-out``: bottleneck blocks with outputs (w, 2w, 4w), i.e. 3x3 widths
  (w/4, w/2, w): the same block output width as ``basic`` (its stem is w/4 wide).

Each is trained for the same steps with the same data, seed and optimiser; reported:
parameters, MACs per 28x28 image (:func:`cnnzoo.summary.count_macs`), training and
inference images per second (measured here, on ``threads`` CPU threads) and test accuracy.

Cost: ``--quick`` (width 16, 2 blocks per stage, 200 steps) took 3.5 minutes on one
thread of a shared 2-core machine; the default (width 16, 3 blocks, 1200 steps) took 625 s
on 2 quiet cores (AMD EPYC).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.errors import CnnzooError
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments import fashion_mnist_name as _dataset
from cnnzoo.experiments.timing import TrainClock, inference_ms
from cnnzoo.layers import BasicBlock, Bottleneck, ProjectionShortcut
from cnnzoo.models.classification.resnet import ResNet
from cnnzoo.summary import count_macs
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.workflows.train import fit_and_test

VARIANTS = ("basic", "bottleneck", "bottleneck-same-out")


@dataclass(frozen=True)
class BottleneckSettings:
    """The knobs of the experiment; ``quick`` and default presets below."""

    width: int = 16
    blocks: int = 3
    steps: int = 1200
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    infer_batch: int = 256
    timing_steps: int = 10


QUICK = BottleneckSettings(width=16, blocks=2, steps=200, timing_steps=5)


def build_variant(
    variant: str, width: int = 32, blocks: int = 3, num_classes: int = 10, in_channels: int = 1
) -> ResNet:
    """Return the three-stage small-input ResNet ``variant`` (see the module docstring).

    Raises:
        CnnzooError: for an unknown variant, or a width not divisible by 4 for
            ``bottleneck-same-out``.
    """
    if variant not in VARIANTS:
        raise CnnzooError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if blocks < 1 or width < 1:
        raise CnnzooError(f"width and blocks must be >= 1, got width={width}, blocks={blocks}")
    widths = (width, 2 * width, 4 * width)
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock
    if variant != "basic":
        block = Bottleneck
    if variant == "bottleneck-same-out":
        if width % Bottleneck.expansion:
            raise CnnzooError(f"bottleneck-same-out needs a width divisible by 4, got {width}")
        widths = tuple(w // Bottleneck.expansion for w in widths)  # type: ignore[assignment]
    return ResNet(
        block, (blocks,) * 3, num_classes=num_classes, in_channels=in_channels,
        small_input=True, widths=widths, shortcut_layer=ProjectionShortcut,
    )  # fmt: skip


def weighted_layers(model: nn.Module) -> int:
    """Return the number of convolutions and linear layers on the main path (no shortcuts)."""
    return sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) and ".shortcut" not in name
        for name, m in model.named_modules()
    )


def train_images_per_s(
    model: nn.Module, batch: int, image_size: tuple[int, int], steps: int = 5
) -> float:
    """Return training images/s: SGD steps (forward, backward, update) on a random batch.

    One warm-up step first; the model's weights are restored afterwards.
    """
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 1, *image_size)
    y = torch.randint(0, model.num_classes, (batch,))  # type: ignore[arg-type]
    try:
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        seconds = time.perf_counter() - start
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state)
        model.train(was_training)
    return steps * batch / seconds


def measure(variant: str, s: BottleneckSettings, data: ClassificationData) -> dict[str, Any]:
    """Build, train and time one variant; return its table row."""
    L.seed_everything(s.seed, verbose=False)
    model = build_variant(variant, s.width, s.blocks, data.spec.num_classes)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, (1, *data.spec.image_size))
    torch.set_flush_denormal(True)
    train_ips = train_images_per_s(model, s.batch_size, data.spec.image_size, s.timing_steps)
    clock = TrainClock()
    task = ClassificationTask(model, num_classes=data.spec.num_classes, lr=s.lr)
    metrics = fit_and_test(task, data, s.steps, "32-true", [clock], accelerator="cpu")
    x = torch.randn(s.infer_batch, 1, *data.spec.image_size)
    ms, _ = inference_ms(model, x, repeats=3)
    return {
        "variant": variant,
        "layers": weighted_layers(model),
        "widths_out": "/".join(str(f.channels) for f in model.feature_info[1:]),
        "params": params,
        "params_M": round(params / 1e6, 3),
        "macs": macs,
        "MMACs": round(macs / 1e6, 1),
        "train_img_s": round(train_ips, 1),
        "infer_img_s": round(1000 / ms, 1),
        "accuracy": round(metrics["test/accuracy"], 4),
        "train_s": round(clock.seconds, 1),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bars per variant: params, MACs, training and inference images/s, test accuracy."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    panels = (("params_M", "parameters (M)"), ("MMACs", "MMACs / image"),
              ("train_img_s", "training images/s"), ("infer_img_s", "inference images/s"),
              ("accuracy", "test accuracy"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.6))
    names = [r["variant"] for r in rows]
    colors = ["tab:blue", "tab:orange", "tab:green"][: len(rows)]
    for ax, (key, label) in zip(axes, panels, strict=True):
        values = [r[key] for r in rows]
        ax.bar(range(len(rows)), values, color=colors)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        for i, v in enumerate(values):
            ax.annotate(f"{v:g}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    if any(r["accuracy"] > 0 for r in rows):
        low = min(r["accuracy"] for r in rows)
        axes[-1].set_ylim(max(0.0, low - 0.1), 1.0)
    fig.suptitle("ResNet: basic vs bottleneck blocks (Fashion-MNIST, 28x28)")
    return save_figure(fig, path)


@register_experiment(
    "bottleneck",
    "ResNet basic vs bottleneck blocks at the same stages/blocks: params, MACs, training "
    "and inference images/s, test accuracy after the same steps",
)
def bottleneck(out: Path, quick: bool) -> ExperimentResult:
    """Run the basic-vs-bottleneck experiment (see the module docstring)."""
    s = QUICK if quick else BottleneckSettings()
    dataset = _dataset()
    data = ClassificationData(dataset, val_fraction=0, batch_size=s.batch_size, seed=s.seed)
    rows = [measure(v, s, data) for v in VARIANTS]
    figure = plot(rows, out / "bottleneck.png")
    by = {r["variant"]: r for r in rows}
    base = by["basic"]

    def rel(name: str, key: str) -> str:
        return f"{by[name][key] / base[key]:.2f}x"

    notes = (
        f"Relative to basic: bottleneck (He et al.'s pairing, same 3x3 widths, 4x output) "
        f"{rel('bottleneck', 'params')} params, {rel('bottleneck', 'macs')} MACs, "
        f"{rel('bottleneck', 'train_img_s')} training and {rel('bottleneck', 'infer_img_s')} "
        f"inference images/s; bottleneck-same-out {rel('bottleneck-same-out', 'params')} "
        f"params, {rel('bottleneck-same-out', 'macs')} MACs, "
        f"{rel('bottleneck-same-out', 'train_img_s')} training and "
        f"{rel('bottleneck-same-out', 'infer_img_s')} inference images/s. Test accuracy "
        f"after {s.steps} steps: "
        + ", ".join(f"{r['variant']} {r['accuracy']:.4f}" for r in rows)
        + ". One seed per variant: seed-to-seed spread is not measured. MACs count the "
        "convolutions and the linear layer only, not BN, ReLU and the additions on the "
        "bottleneck's 4x wider activations. Images/s are wall-clock on "
        f"{torch.get_num_threads()} CPU thread(s), {s.timing_steps} timed training steps of "
        f"{s.batch_size} images and inference on {s.infer_batch}-image batches (median of 3)."
    )
    return ExperimentResult(
        title="ResNet basic vs bottleneck blocks on Fashion-MNIST",
        columns=["variant", "layers", "widths_out", "params_M", "MMACs", "train_img_s",
                 "infer_img_s", "accuracy"],
        rows=rows,
        figures=[figure],
        notes=notes,
        settings={**asdict(s), "dataset": dataset, "threads": torch.get_num_threads(),
                  "layout": "3x3 stem, 3 stages x blocks, projection shortcuts, small input",
                  "pairing": "same stages and blocks per stage; bottleneck = same 3x3 widths "
                             "(He et al. Table 1), bottleneck-same-out = same output widths"},
    )  # fmt: skip
