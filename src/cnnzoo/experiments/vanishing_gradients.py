"""Vanishing gradients and the degradation problem, measured (He et al. 2016, Fig. 6).

The lecture's recap: the lower layers of a deep plain network are hard to train because
the gradient vanishes on its way down (worst with the sigmoid, whose derivative is at most
1/4); skip connections fix it. He et al. 2016, Fig. 6 (CIFAR-10): plain-56 trains to a
*higher* training error than plain-20, while ResNet-56 trains better than ResNet-20.

Here, on Fashion-MNIST (28x28, one channel), with the CIFAR nets of Sec. 4.2:

1. per-layer weight-gradient norms at initialisation (mean over a few batches) for plain and
   residual nets of 20 and 56 layers, ReLU or sigmoid, with or without BatchNorm;
2. the trained nets (ReLU + BN, plus the sigmoid/no-BN variants the settings list): training
   error (running, in train mode, as in Fig. 6) and test error curves, and their gradient
   norms again after training.

The default trains plain-20/56 and ResNet-20/56 (ReLU + BN) and plain-20/56 with the
sigmoid (+ BN) for 800 steps of 32 images (about 25 CPU minutes on one thread, estimated from
the ``--quick`` run's per-step CPU time); all 16 combinations are measured at initialisation.
``--quick`` trains the four ReLU + BN nets for 60 steps (about 4 minutes).

One lean loop trains every net identically: SGD with Nesterov momentum, cosine decay, no
augmentation; a net whose loss turns non-finite stops and is reported as diverged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments import fashion_mnist_name as _dataset
from cnnzoo.experiments.gradients import mean_gradient_norms
from cnnzoo.models.base import count_params

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel statistics


@dataclass(frozen=True)
class NetSpec:
    """One network of the experiment: ``plain``/``resnet``, depth, activation, BN."""

    family: str
    depth: int
    activation: str = "relu"
    norm: bool = True

    @property
    def label(self) -> str:
        """E.g. ``plain-56``, ``resnet-20 sigmoid``, ``plain-20 no-BN``."""
        extras = ([] if self.activation == "relu" else [self.activation]) + (
            [] if self.norm else ["no-BN"]
        )
        return " ".join([f"{self.family}-{self.depth}", *extras])

    def build(self, num_classes: int = 10) -> nn.Module:
        """Return the freshly initialised network (one input channel)."""
        from cnnzoo.registry import create_model

        return create_model(
            f"{self.family}{self.depth}", num_classes=num_classes, in_channels=1,
            activation=self.activation, norm=self.norm,
        )  # fmt: skip


def parse_net(text: str) -> NetSpec:
    """Parse ``"plain56"``, ``"resnet20-sigmoid"``, ``"plain20-sigmoid-nobn"`` into a NetSpec.

    Raises:
        CnnzooError: for an unknown family, depth or option.
    """
    name, *options = text.split("-")
    family = name.rstrip("0123456789")
    depth = name[len(family) :]
    if family not in ("plain", "resnet") or not depth.isdigit():
        raise CnnzooError(f"unknown net {text!r}; expected e.g. plain56 or resnet20-sigmoid-nobn")
    activation, norm = "relu", True
    for opt in options:
        if opt == "nobn":
            norm = False
        elif opt in ("relu", "sigmoid", "tanh"):
            activation = opt
        else:
            raise CnnzooError(f"unknown option {opt!r} in net {text!r}; use sigmoid, tanh or nobn")
    return NetSpec(family, int(depth), activation, norm)


ALL_NETS = tuple(
    f"{f}{d}{a}{n}"
    for f in ("plain", "resnet")
    for d in (20, 56)
    for a in ("", "-sigmoid")
    for n in ("", "-nobn")
)


@dataclass(frozen=True)
class VanishingSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    init_nets: tuple[str, ...] = ALL_NETS
    train_nets: tuple[str, ...] = (
        "plain20", "plain56", "resnet20", "resnet56", "plain20-sigmoid", "plain56-sigmoid",
    )  # fmt: skip
    steps: int = 800
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 1e-4
    grad_batches: int = 3
    eval_points: int = 8
    test_images: int = 2000
    seed: int = 0


QUICK = VanishingSettings(
    train_nets=("plain20", "plain56", "resnet20", "resnet56"),
    steps=60, grad_batches=2, eval_points=3, test_images=500,
)  # fmt: skip


def load_data(dataset: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return normalised float ``(train_x, train_y, test_x, test_y)`` of Fashion-MNIST."""
    from cnnzoo.data.fashion_mnist import load_fashion_mnist, load_fashion_mnist_mini

    load = load_fashion_mnist_mini if dataset == "fashion-mnist-mini" else load_fashion_mnist
    (tx, ty), (vx, vy) = load("train"), load("test")
    return (tx.float() / 255 - MEAN) / STD, ty, (vx.float() / 255 - MEAN) / STD, vy


class Batches:
    """Endless shuffled mini-batches of ``(x, y)``, reproducible from ``seed``."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size = x, y, min(batch_size, len(y))
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(y), generator=self.gen)
        self.pos = 0

    def next(self) -> tuple[Tensor, Tensor]:
        """Return the next batch (reshuffling after each pass)."""
        if self.pos + self.batch_size > len(self.y):
            self.order = torch.randperm(len(self.y), generator=self.gen)
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.x[idx], self.y[idx]


@torch.no_grad()
def error_rate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250) -> float:
    """Return the classification error of ``model`` (eval mode) on ``(x, y)``."""
    was_training = model.training
    model.eval()
    wrong = 0
    for i in range(0, len(y), batch_size):
        wrong += int((model(x[i : i + batch_size]).argmax(1) != y[i : i + batch_size]).sum())
    model.train(was_training)
    return wrong / max(1, len(y))


def make_optimizer(
    params: list[nn.Parameter], lr: float, weight_decay: float, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD (momentum 0.9, Nesterov) with cosine decay over ``steps``."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))


def run_steps(
    model: nn.Module,
    batches: Batches,
    opt: torch.optim.Optimizer,
    sched: Any,
    steps: int,
    on_step: Callable[[int], None] | None = None,
) -> bool:
    """Take ``steps`` cross-entropy steps of ``opt`` and ``sched`` on ``batches``, calling
    ``on_step(i)`` after each (the lean loop the layer-wise and what-layers-learn
    experiments share).

    Returns:
        False if the loss became non-finite (training stopped there), else True.
    """
    for i in range(steps):
        x, y = batches.next()
        loss = nn.functional.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            return False
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(i)
    return True


def train_net(
    model: nn.Module,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    s: VanishingSettings,
) -> dict[str, Any]:
    """Train ``model`` for ``s.steps`` steps; return its curves and final errors.

    Returns:
        ``{"steps": [...], "train_error": [...], "test_error": [...], "diverged": bool}``:
        the running training error of the steps since the previous point and the test error
        on the first ``s.test_images`` test images, at ``s.eval_points`` evenly spaced steps.
    """
    tx, ty, vx, vy = data
    vx, vy = vx[: s.test_images], vy[: s.test_images]
    batches = Batches(tx, ty, s.batch_size, s.seed)
    opt, sched = make_optimizer(list(model.parameters()), s.lr, s.weight_decay, s.steps)
    points = sorted(
        {max(1, round(s.steps * (i + 1) / s.eval_points)) for i in range(s.eval_points)}
    )
    curve: dict[str, Any] = {"steps": [], "train_error": [], "test_error": [], "diverged": False}
    wrong = seen = 0
    model.train()
    for step in range(1, s.steps + 1):
        x, y = batches.next()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            curve["diverged"] = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        wrong += int((logits.detach().argmax(1) != y).sum())
        seen += len(y)
        if step in points:
            curve["steps"].append(step)
            curve["train_error"].append(wrong / seen)
            curve["test_error"].append(error_rate(model, vx, vy))
            wrong = seen = 0
    return curve


def _ratio(norms: dict[str, float]) -> float:
    values = list(norms.values())
    return values[0] / values[-1] if values[-1] > 0 else math.inf


def _fmt(v: float) -> str:
    return "diverged" if not math.isfinite(v) else f"{v:.2e}"


def plot_curves(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """Fig. 6 shape: left plain nets, right ResNets; thin = training error, bold = test."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for i, (label, c) in enumerate((k, v) for k, v in curves.items() if k.startswith(family)):
            color = f"C{i}"
            ax.plot(c["steps"], c["train_error"], color=color, linewidth=0.9, linestyle="--")
            ax.plot(c["steps"], c["test_error"], color=color, linewidth=2.2, label=label)
        ax.set_title(f"{family} nets (dashed: train, bold: test)")
        ax.set_xlabel("optimisation step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error")
    return save_figure(fig, path)


def _init_norms(
    specs: list[NetSpec], batches: list[tuple[Tensor, Tensor]], seed: int
) -> dict[str, dict[str, float]]:
    out = {}
    for spec in specs:
        torch.manual_seed(seed)
        out[spec.label] = mean_gradient_norms(spec.build(), batches)
    return out


@register_experiment(
    "vanishing-gradients",
    "per-layer gradient norms and train/test error of plain vs residual nets, 20 vs 56 layers "
    "(ReLU/sigmoid, with/without BN), on Fashion-MNIST (He et al. 2016 Fig. 6)",
)
def vanishing_gradients(out: Path, quick: bool) -> ExperimentResult:
    """Run the vanishing-gradients experiment (see the module docstring)."""
    from cnnzoo.viz.gradients import plot_gradient_norms

    s = QUICK if quick else VanishingSettings()
    dataset = _dataset()
    data = load_data(dataset)
    gen = torch.Generator().manual_seed(s.seed + 1)
    probe_idx = torch.randperm(len(data[1]), generator=gen)[: s.grad_batches * 64]
    probes = [
        (data[0][probe_idx[i : i + 64]], data[1][probe_idx[i : i + 64]])
        for i in range(0, len(probe_idx), 64)
    ]
    init_specs = [parse_net(n) for n in s.init_nets]
    train_specs = [parse_net(n) for n in s.train_nets]
    init = _init_norms(list(dict.fromkeys(init_specs + train_specs)), probes, s.seed)

    curves: dict[str, dict[str, Any]] = {}
    trained: dict[str, dict[str, float]] = {}
    rows = []
    for spec in train_specs:
        torch.manual_seed(s.seed)
        model = spec.build()
        start = time.process_time()
        curve = train_net(model, data, s)
        cpu = time.process_time() - start
        curves[spec.label] = curve
        after = {} if curve["diverged"] else mean_gradient_norms(model, probes)
        trained[spec.label] = after
        rows.append({
            "net": spec.label, "params": count_params(model),
            "train_error": round(curve["train_error"][-1], 4) if curve["train_error"] else None,
            "test_error": round(curve["test_error"][-1], 4) if curve["test_error"] else None,
            "ratio_init": _fmt(_ratio(init[spec.label])),
            "ratio_trained": _fmt(_ratio(after)) if after else "diverged",
            "first_init": _fmt(next(iter(init[spec.label].values()))),
            "cpu_s": round(cpu, 1), "diverged": curve["diverged"],
        })  # fmt: skip
    trained_labels = {r["net"] for r in rows}
    for spec in init_specs:  # nets measured at init only
        if spec.label not in trained_labels:
            rows.append({
                "net": spec.label, "params": count_params(spec.build()),
                "train_error": "-", "test_error": "-",
                "ratio_init": _fmt(_ratio(init[spec.label])), "ratio_trained": "-",
                "first_init": _fmt(next(iter(init[spec.label].values()))), "cpu_s": "-",
                "diverged": False,
            })  # fmt: skip

    figures = [plot_curves(curves, out / "error_curves.png")]
    for tag, what, nets in (
        ("relu_bn", "ReLU + BN nets",
         [sp.label for sp in init_specs if sp.activation == "relu" and sp.norm]),
        ("variants", "56-layer nets", [sp.label for sp in init_specs if sp.depth == 56]),
    ):  # fmt: skip
        if nets:
            figures.append(plot_gradient_norms(
                {n: init[n] for n in nets}, out / f"grad_norms_init_{tag}.png",
                f"weight-gradient norm per layer at initialisation: {what}",
            ))  # fmt: skip
    if any(trained.values()):
        series = {f"{k} init": init[k] for k in trained if trained[k]}
        series.update({f"{k} trained": v for k, v in trained.items() if v})
        figures.append(plot_gradient_norms(
            series, out / "grad_norms_trained.png",
            f"weight-gradient norm per layer, at init and after {s.steps} steps",
        ))  # fmt: skip
    return ExperimentResult(
        title="Vanishing gradients: plain vs residual, 20 vs 56 layers (Fashion-MNIST)",
        columns=["net", "params", "train_error", "test_error", "first_init", "ratio_init",
                 "ratio_trained", "cpu_s"],
        rows=rows,
        figures=figures,
        notes=_notes(rows, s),
        settings={**asdict(s), "dataset": dataset,
                  "ratio": "first-layer / last-layer weight-gradient L2 norm "
                           f"(mean over {s.grad_batches} batches of 64)",
                  "train_error": "running training error over the last eval interval",
                  "test_error": f"on the first {s.test_images} test images"},
    )  # fmt: skip


def _notes(rows: list[dict[str, Any]], s: VanishingSettings) -> str:
    """A reading of the measured numbers only: which deeper net trained worse or better."""
    by = {r["net"]: r for r in rows if isinstance(r["train_error"], float)}
    lines = []
    for family in ("plain", "resnet"):
        a, b = by.get(f"{family}-20"), by.get(f"{family}-56")
        if a and b:
            verdict = "higher" if b["train_error"] > a["train_error"] else "lower or equal"
            lines.append(
                f"{family}-56 ended with a {verdict} training error than {family}-20 "
                f"({b['train_error']:.3f} vs {a['train_error']:.3f}; test "
                f"{b['test_error']:.3f} vs {a['test_error']:.3f}) after {s.steps} steps."
            )
    firsts = {r["net"]: r["first_init"] for r in rows}
    if "plain-56 sigmoid" in firsts and "resnet-56" in firsts:
        lines.append(
            f"At initialisation the first layer of plain-56 sigmoid gets a gradient of norm "
            f"{firsts['plain-56 sigmoid']} vs {firsts['resnet-56']} for resnet-56 (ReLU + BN)."
        )
    ratios = ", ".join(f"{r['net']} {r['ratio_init']}" for r in rows)
    lines.append(
        f"First-/last-layer gradient ratio at initialisation (< 1: the gradient shrinks "
        f"towards the input, > 1: it grows): {ratios}."
    )
    diverged = [r["net"] for r in rows if r["diverged"]]
    if diverged:
        lines.append(f"Diverged (non-finite loss): {', '.join(diverged)}.")
    lines.append(
        "These are single-seed runs of a short budget; He et al. trained 64k iterations "
        "on CIFAR-10, so only the direction of the differences is comparable."
    )
    return " ".join(lines)
