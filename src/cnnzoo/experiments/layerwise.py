"""Greedy layer-wise training vs end-to-end, measured.

The lecture: "add a new level only after you trained the previous" — the way deep nets were
trained before ReLU, BatchNorm and skip connections made end-to-end training work. Here, on
Fashion-MNIST, a deep plain stack of ``conv 3x3 - (BN) - activation`` levels with an
``average-pool to 4x4 + linear`` head is trained two ways with the same total number of
optimisation steps (same batch size, optimiser and learning rate):

* **greedy**: level 1 + a temporary head for ``steps / levels`` steps; then level 1 is
  **frozen** (no gradient, BN statistics fixed), level 2 and a *new* head are added and
  trained; and so on. The last head on top of all levels is the final classifier.
* **end-to-end**: all levels + head from the first step.

Both with ReLU + BN and with the sigmoid without BN (the lecture era's setting).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments.vanishing_gradients import (
    Batches,
    _dataset,
    error_rate,
    load_data,
    make_optimizer,
    run_steps,
)
from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import count_params, init_weights_kaiming

VARIANTS: dict[str, tuple[type[nn.Module], bool]] = {
    "relu-bn": (nn.ReLU, True),
    "sigmoid": (nn.Sigmoid, False),
    "sigmoid-bn": (nn.Sigmoid, True),
    "relu": (nn.ReLU, False),
}
"""Level types: activation and whether a BatchNorm follows each convolution."""

HEAD_GRID = 4


class LevelNet(nn.Module):
    """A plain stack of conv-(BN)-activation levels; ``head`` classifies the top level.

    Args:
        widths: output channels of each level.
        strides: stride of each level (same length as ``widths``).
        variant: a key of :data:`VARIANTS` (activation, BN or not).
        num_classes: outputs of the head.
        in_channels: channels of the input image.

    Raises:
        CnnzooError: for an unknown variant or mismatched widths/strides.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        strides: tuple[int, ...],
        variant: str = "relu-bn",
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise CnnzooError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if len(widths) != len(strides) or not widths:
            raise CnnzooError(f"need one stride per level, got widths {widths}, strides {strides}")
        act, norm = VARIANTS[variant]
        self.num_classes = num_classes
        channels = [in_channels, *widths]
        self.levels = nn.ModuleList(
            ConvBnAct(channels[i], channels[i + 1], 3, strides[i],
                      norm_layer=nn.BatchNorm2d if norm else None, act_layer=act)
            for i in range(len(widths))
        )  # fmt: skip
        self.depth = len(widths)  # levels in use (grown one by one in greedy training)
        self.head = self.new_head()
        init_weights_kaiming(self, linear_std=None)

    def new_head(self) -> nn.Module:
        """Return a fresh head for the current top level: average-pool to 4x4, then linear.

        The 4x4 grid keeps some layout, so even one level's features can classify.
        """
        width = self.levels[self.depth - 1].conv.out_channels
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(HEAD_GRID), nn.Flatten(1),
            nn.Linear(width * HEAD_GRID**2, self.num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        frozen = [lvl for lvl in self.levels[: self.depth] if not _trainable(lvl)]
        with torch.no_grad():  # frozen levels: no graph, no backward through them
            for level in frozen:
                x = level(x)
        for level in self.levels[len(frozen) : self.depth]:
            x = level(x)
        return self.head(x)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def freeze(module: nn.Module) -> None:
    """Stop training ``module``: no gradients, BN statistics fixed (eval mode)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


def train_steps(
    net: LevelNet,
    batches: Batches,
    steps: int,
    lr: float,
    weight_decay: float,
    on_step: Callable[[int], None] | None = None,
) -> bool:
    """Train the trainable parameters of ``net`` for ``steps`` steps (cosine-decayed SGD).

    Frozen levels stay in eval mode. ``on_step(i)`` is called after each step.

    Returns:
        False if the loss became non-finite (training stopped there), else True.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    opt, sched = make_optimizer(params, lr, weight_decay, steps)
    for level in net.levels[: net.depth]:
        level.train(_trainable(level))
    net.head.train()
    return run_steps(net, batches, opt, sched, steps, on_step)


def grow(net: LevelNet) -> None:
    """Freeze the levels in use, add the next level and a new head (greedy training)."""
    if net.depth >= len(net.levels):
        raise CnnzooError(f"all {len(net.levels)} levels are already in use")
    for level in net.levels[: net.depth]:
        freeze(level)
    net.depth += 1
    net.head = net.new_head()


def level_steps(total: int, levels: int) -> list[int]:
    """Split ``total`` steps over ``levels`` levels as evenly as possible (last ones get more)."""
    base, extra = divmod(total, levels)
    return [base + (1 if i >= levels - extra else 0) for i in range(levels)]


@dataclass(frozen=True)
class LayerwiseSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    widths: tuple[int, ...] = (16, 16, 16, 32, 32, 32, 64, 64, 64, 64)
    strides: tuple[int, ...] = (1, 1, 1, 2, 1, 1, 2, 1, 1, 1)
    variants: tuple[str, ...] = ("relu-bn", "sigmoid")
    steps: int = 2000
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 1e-4
    eval_every: int = 100
    test_images: int = 2000
    seed: int = 0


QUICK = LayerwiseSettings(
    widths=(16, 16, 32, 32, 64, 64), strides=(1, 1, 2, 1, 2, 1),
    steps=300, batch_size=32, eval_every=50, test_images=500,
)  # fmt: skip


def run_method(
    method: str, variant: str, data: tuple[Tensor, Tensor, Tensor, Tensor], s: LayerwiseSettings
) -> dict[str, Any]:
    """Train one net ``greedy`` or ``end-to-end``; return its accuracy curve and summary."""
    tx, ty, vx, vy = data
    vx, vy = vx[: s.test_images], vy[: s.test_images]
    torch.manual_seed(s.seed)
    net = LevelNet(s.widths, s.strides, variant)
    batches = Batches(tx, ty, s.batch_size, s.seed)
    curve: dict[str, list[float]] = {"steps": [], "accuracy": []}
    done = 0

    def record(_: int) -> None:
        nonlocal done
        done += 1
        if done % s.eval_every == 0 or done == s.steps:
            curve["steps"].append(done)
            curve["accuracy"].append(1 - error_rate(net, vx, vy))
            net.head.train()
            for level in net.levels[: net.depth]:
                level.train(_trainable(level))

    start = time.process_time()
    ok = True
    if method == "end-to-end":
        net.depth = len(net.levels)
        net.head = net.new_head()
        ok = train_steps(net, batches, s.steps, s.lr, s.weight_decay, record)
    elif method == "greedy":
        net.depth = 1
        net.head = net.new_head()
        for i, n in enumerate(level_steps(s.steps, len(net.levels))):
            if i > 0:
                grow(net)
            ok = train_steps(net, batches, n, s.lr, s.weight_decay, record) and ok
    else:
        raise CnnzooError(f"unknown method {method!r}; expected greedy or end-to-end")
    cpu = time.process_time() - start
    accuracy = 1 - error_rate(net, vx, vy)
    return {
        "method": method, "variant": variant, "levels": net.depth,
        "accuracy": round(accuracy, 4), "steps": done, "cpu_s": round(cpu, 1),
        "params": count_params(net), "diverged": not ok, "curve": curve,
    }  # fmt: skip


def plot(results: list[dict[str, Any]], levels: int, steps: int, path: Path) -> Path:
    """Test accuracy vs optimisation step, greedy (dashed) vs end-to-end (solid)."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    variants = list(dict.fromkeys(r["variant"] for r in results))
    for r in results:
        color = f"C{variants.index(r['variant'])}"
        style = "--" if r["method"] == "greedy" else "-"
        ax.plot(r["curve"]["steps"], r["curve"]["accuracy"], style, color=color, marker=".",
                label=f"{r['method']} ({r['variant']})")  # fmt: skip
    for b in range(1, levels):  # where greedy training adds a level
        ax.axvline(sum(level_steps(steps, levels)[:b]), color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel("optimisation step (grey: greedy adds a level)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{levels}-level plain net: greedy layer-wise vs end-to-end")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@register_experiment(
    "layerwise",
    "greedy layer-wise training (add a level only after training the previous, earlier "
    "levels frozen) vs end-to-end, same steps, on Fashion-MNIST",
)
def layerwise(out: Path, quick: bool) -> ExperimentResult:
    """Run the layer-wise experiment (see the module docstring)."""
    s = QUICK if quick else LayerwiseSettings()
    dataset = _dataset()
    data = load_data(dataset)
    results = [run_method(m, v, data, s) for v in s.variants for m in ("greedy", "end-to-end")]
    figure = plot(results, len(s.widths), s.steps, out / "layerwise.png")
    rows = [{k: v for k, v in r.items() if k != "curve"} for r in results]
    for row, r in zip(rows, results, strict=True):
        row["accuracy_curve"] = [round(a, 4) for a in r["curve"]["accuracy"]]
    notes = []
    for v in s.variants:
        g, e = (next(r for r in rows if r["variant"] == v and r["method"] == m)
                for m in ("greedy", "end-to-end"))  # fmt: skip
        better = "greedy" if g["accuracy"] > e["accuracy"] else "end-to-end"
        notes.append(
            f"{v}: greedy {g['accuracy']:.3f} vs end-to-end {e['accuracy']:.3f} test accuracy "
            f"({better} higher), CPU {g['cpu_s']:.0f} s vs {e['cpu_s']:.0f} s."
        )
    notes.append(
        "Greedy levels are frozen once trained (each level gets 1/"
        f"{len(s.widths)} of the steps); a single seed, so small gaps are within noise."
    )
    return ExperimentResult(
        title=f"Greedy layer-wise vs end-to-end training of a {len(s.widths)}-level plain net",
        columns=["variant", "method", "levels", "params", "accuracy", "steps", "cpu_s",
                 "diverged"],
        rows=rows,
        figures=[figure],
        notes=" ".join(notes),
        settings={**asdict(s), "dataset": dataset, "greedy": "earlier levels frozen",
                  "accuracy": f"on the first {s.test_images} test images"},
    )  # fmt: skip
