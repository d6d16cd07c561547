"""GoogLeNet's auxiliary classifiers, measured: do they help the lower layers' gradients?

The lecture (GoogLeNet): two auxiliary classifiers on inception4a and inception4d add their
losses at weight 0.3 during training, "to help the gradients of the lower layers" (Szegedy
et al. 2015, Sec. 5). Here, on Fashion-MNIST, two GoogLeNets start from the *same* initial
weights and see the same batches with the same optimiser:

- ``aux``: ``aux_logits=True``, loss = main + 0.3 * (aux1 + aux2) (:class:`ClassificationTask`);
- ``no-aux``: ``aux_logits=False``, loss = main only. Chosen over ``aux_weight=0`` because
  it is the network without the heads (no wasted aux compute, no weight decay on idle
  heads); its trunk and classifier are copied from the ``aux`` network's initial weights,
  so only the loss differs.

Every ``eval_every`` steps: test accuracy on a fixed test subset and the weight-gradient
L2 norm of every trunk layer (:func:`cnnzoo.experiments.gradients.gradient_norms`) on a
fixed training batch, for the main loss alone and (``aux``) for the total loss. "Lower
layers" are the weight layers below inception4a (the first head's input): conv1-conv3,
inception3a and 3b; their norms are combined as sqrt(sum of squares).

cnnzoo's GoogLeNet is torchvision's variant with batch normalisation after every
convolution; the paper's had none, and that is where deep supervision matters most. The
gradient norms at initialisation are therefore also measured with every BN removed
(``nn.Identity``), untrained. Departure: the ImageNet stem (7x7/2 conv and two 3x3/2
pools) is kept by default instead of ``small_input``: on 28-pixel images the small-input
stem costs 1.1 GMACs per image (about 10 s per 32-image training step on one CPU thread),
the ImageNet stem 16 MMACs; the 22 weighted layers and the heads' places are the same.

Cost: ``--quick`` (200 steps per run) took 2.7 minutes on one thread of a shared 2-core
machine; the default (1500 steps per run) took 468 s on 2 quiet cores (AMD EPYC).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.transforms import prepare_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments import fashion_mnist_name as _dataset
from cnnzoo.experiments.gradients import gradient_norms
from cnnzoo.models.base import AuxOutput
from cnnzoo.registry import create_model
from cnnzoo.tasks.classification import ClassificationTask, classification_loss
from cnnzoo.workflows.train import fit_and_test

RUNS = ("aux", "no-aux")
LOSS_PARTS = ("main", "total", "aux")
LOWER = ("conv1", "conv2", "conv3", "inception3a", "inception3b")
"""Prefixes of the weight layers below inception4a, where the first auxiliary head sits."""


@dataclass(frozen=True)
class AuxLossSettings:
    """The knobs of the experiment; ``quick`` and default presets below."""

    steps: int = 1500
    eval_every: int = 150
    batch_size: int = 64
    lr: float = 0.05
    aux_weight: float = 0.3
    seed: int = 0
    test_subset: int = 2000
    grad_batch: int = 128
    small_input: bool = False


QUICK = AuxLossSettings(steps=200, eval_every=50, test_subset=1000)


def main_loss(out: Tensor | AuxOutput, y: Tensor) -> Tensor:
    """Return the cross-entropy of the main classifier only (aux logits ignored)."""
    logits = out.logits if isinstance(out, AuxOutput) else out
    return classification_loss(logits, y)


def aux_only_loss(out: Tensor | AuxOutput, y: Tensor, aux_weight: float = 0.3) -> Tensor:
    """Return ``aux_weight`` x the sum of the auxiliary cross-entropies (0 for plain logits)."""
    if not isinstance(out, AuxOutput):
        return out.sum() * 0.0
    return sum((aux_weight * classification_loss(a, y) for a in out.aux), torch.zeros(()))


def total_loss(out: Tensor | AuxOutput, y: Tensor, aux_weight: float = 0.3) -> Tensor:
    """Return main cross-entropy + ``aux_weight`` x each auxiliary cross-entropy.

    The same sum :class:`ClassificationTask` trains with; plain logits give the main loss.
    """
    return main_loss(out, y) + aux_only_loss(out, y, aux_weight)


def build_pair(s: AuxLossSettings, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    """Return ``(with heads, without heads)`` GoogLeNets with identical initial trunk weights.

    Raises:
        RuntimeError: if the two networks differ in more than the auxiliary heads.
    """
    L.seed_everything(s.seed, verbose=False)
    kwargs = {"num_classes": num_classes, "in_channels": 1, "small_input": s.small_input}
    with_aux = create_model("googlenet", aux_logits=True, **kwargs)
    without = create_model("googlenet", aux_logits=False, **kwargs)
    missing, unexpected = without.load_state_dict(with_aux.state_dict(), strict=False)
    if missing or any(not k.startswith(("aux1.", "aux2.")) for k in unexpected):
        raise RuntimeError(f"googlenet pair differs beyond the heads: {missing} {unexpected}")
    return with_aux, without


def strip_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``model`` by ``nn.Identity`` in place; return it."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    return model


def trunk_norms(
    model: nn.Module, x: Tensor, y: Tensor, loss: str, aux_weight: float = 0.3
) -> dict[str, float]:
    """Per-layer weight-gradient norms of the trunk (aux heads left out) for one batch.

    ``loss`` is ``"main"``, ``"total"`` or ``"aux"`` (the weighted auxiliary losses alone:
    what the heads add to the main loss's gradient). A copy of the model is measured (the
    BN running statistics of the model being trained stay untouched) with its dropout off,
    so the measurement is deterministic and the networks with and without heads are compared
    on the same function (the heads' dropout would otherwise shift the main one's masks).

    Returns:
        ``{layer name: norm}`` in forward order, for every Conv2d/Linear outside aux1/aux2.

    Raises:
        CnnzooError: for an unknown ``loss``.
    """
    if loss not in LOSS_PARTS:
        raise CnnzooError(f"unknown loss part {loss!r}; expected one of {', '.join(LOSS_PARTS)}")
    probe = copy.deepcopy(model)
    for m in probe.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    fn = {
        "main": main_loss,
        "total": lambda out, t: total_loss(out, t, aux_weight),
        "aux": lambda out, t: aux_only_loss(out, t, aux_weight),
    }[loss]
    norms = gradient_norms(probe, x, y, fn)
    return {k: v for k, v in norms.items() if not k.startswith(("aux1.", "aux2."))}


def group_norm(norms: dict[str, float], prefixes: tuple[str, ...] = LOWER) -> float:
    """Return sqrt(sum of squared norms) of the layers whose names start with ``prefixes``."""
    return math.sqrt(sum(v * v for k, v in norms.items() if k.startswith(prefixes)))


@torch.no_grad()
def subset_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> float:
    """Return the eval-mode accuracy of ``model`` on ``(x, y)``, restoring its mode."""
    was_training = model.training
    model.eval()
    try:
        correct = sum(
            int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
            for i in range(0, len(y), batch)
        )
    finally:
        model.train(was_training)
    return correct / len(y)


class Probe(Callback):
    """Every ``every`` steps (and before the first): test-subset accuracy and gradient norms.

    Attributes:
        records: one dict per probe: step, accuracy, per-layer ``main`` norms (and, with
            ``with_total``, ``total`` and ``aux`` norms).
    """

    def __init__(
        self,
        model: nn.Module,
        every: int,
        test: tuple[Tensor, Tensor],
        grad: tuple[Tensor, Tensor],
        aux_weight: float,
        with_total: bool,
    ) -> None:
        self.model = model
        self.every = every
        self.test = test
        self.grad = grad
        self.aux_weight = aux_weight
        self.with_total = with_total
        self.records: list[dict[str, Any]] = []

    def measure(self, step: int) -> None:
        """Append the record of ``step``."""
        record: dict[str, Any] = {"step": step, "accuracy": subset_accuracy(self.model, *self.test)}
        record["main"] = trunk_norms(self.model, *self.grad, "main", self.aux_weight)
        if self.with_total:
            for part in ("total", "aux"):
                record[part] = trunk_norms(self.model, *self.grad, part, self.aux_weight)
        self.records.append(record)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.measure(0)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            self.measure(step)


def _fixed_batches(
    data: ClassificationData, s: AuxLossSettings
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Return the fixed test subset and the fixed training batch of the gradient probes."""
    spec = data.spec
    test, train = data.splits["test"], data.splits["train"]
    g = torch.Generator().manual_seed(s.seed)
    pick = torch.randperm(len(test), generator=g)[: s.test_subset]
    x_test = prepare_batch(test.images[pick], spec.mean, spec.std)  # type: ignore[attr-defined]
    y_test = test.labels[pick]  # type: ignore[attr-defined]
    pick = torch.randperm(len(train), generator=g)[: s.grad_batch]
    x_grad = prepare_batch(train.images[pick], spec.mean, spec.std)  # type: ignore[attr-defined]
    y_grad = train.labels[pick]  # type: ignore[attr-defined]
    return (x_test, y_test), (x_grad, y_grad)


def run_one(
    name: str, model: nn.Module, data: ClassificationData, s: AuxLossSettings,
    test: tuple[Tensor, Tensor], grad: tuple[Tensor, Tensor],
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """Train one network for ``s.steps``; return its probe records and full test accuracy."""
    L.seed_everything(s.seed, verbose=False)
    probe = Probe(model, s.eval_every, test, grad, s.aux_weight, with_total=name == "aux")
    task = ClassificationTask(model, num_classes=data.spec.num_classes, lr=s.lr,
                              aux_weight=s.aux_weight)  # fmt: skip
    metrics = fit_and_test(task, data, s.steps, "32-true", [probe], accelerator="cpu")
    return probe.records, metrics["test/accuracy"]


def plot_accuracy(records: dict[str, list[dict[str, Any]]], path: Path, n_test: int) -> Path:
    """Test-subset accuracy vs training step, one line per run."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, recs in records.items():
        ax.plot([r["step"] for r in recs], [r["accuracy"] for r in recs], marker="o",
                label=name)  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel(f"test accuracy ({n_test} images)")
    ax.set_title("GoogLeNet on Fashion-MNIST: with vs without auxiliary heads")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


@register_experiment(
    "aux-loss",
    "GoogLeNet with vs without its auxiliary classifiers on Fashion-MNIST: test accuracy "
    "over steps and lower-layer gradient norms of the main and total loss",
)
def aux_loss(out: Path, quick: bool) -> ExperimentResult:
    """Run the auxiliary-classifier experiment (see the module docstring)."""
    from cnnzoo.viz.gradients import plot_gradient_norms

    s = QUICK if quick else AuxLossSettings()
    dataset = _dataset()
    data = ClassificationData(dataset, val_fraction=0, batch_size=s.batch_size, seed=s.seed)
    test, grad = _fixed_batches(data, s)
    with_aux, without = build_pair(s, data.spec.num_classes)

    # Initialisation, BN removed (the paper's network had none): untrained, measured only.
    no_bn = strip_batchnorm(copy.deepcopy(with_aux))
    init_no_bn = {loss: trunk_norms(no_bn, *grad, loss, s.aux_weight) for loss in LOSS_PARTS}

    records: dict[str, list[dict[str, Any]]] = {}
    final: dict[str, float] = {}
    for name, model in (("aux", with_aux), ("no-aux", without)):
        records[name], final[name] = run_one(name, model, data, s, test, grad)

    rows = []
    for name, recs in records.items():
        for r in recs:
            rows.append({
                "run": name, "step": r["step"], "accuracy": round(r["accuracy"], 4),
                "lower_grad_main": round(group_norm(r["main"]), 5),
                "inception3a_grad_main": round(group_norm(r["main"], ("inception3a",)), 5),
                "lower_grad_total": round(group_norm(r["total"]), 5) if "total" in r else "",
                "lower_grad_aux_only": round(group_norm(r["aux"]), 5) if "aux" in r else "",
            })  # fmt: skip

    first, last = records["aux"][0], records["aux"][-1]
    init_series = {
        "BN, main loss": first["main"],
        "BN, main + 0.3 aux": first["total"],
        "BN, 0.3 aux only": first["aux"],
        "no BN, main loss": init_no_bn["main"],
        "no BN, main + 0.3 aux": init_no_bn["total"],
        "no BN, 0.3 aux only": init_no_bn["aux"],
    }
    end_series = {
        "aux run: main loss": last["main"],
        "aux run: main + 0.3 aux": last["total"],
        "aux run: 0.3 aux only": last["aux"],
        "no-aux run: main loss": records["no-aux"][-1]["main"],
    }
    figures = [
        plot_accuracy(records, out / "aux_loss_accuracy.png", len(test[1])),
        plot_gradient_norms(init_series, out / "aux_loss_gradients_init.png",
                            "GoogLeNet at initialisation: trunk weight-gradient norms"),
        plot_gradient_norms(end_series, out / "aux_loss_gradients_trained.png",
                            f"GoogLeNet after {s.steps} steps: trunk weight-gradient norms"),
    ]  # fmt: skip

    def ratio(main: dict[str, float], part: dict[str, float]) -> float:
        return group_norm(part) / max(group_norm(main), 1e-30)

    acc = ", ".join(f"{n} {final[n]:.4f}" for n in RUNS)
    notes = (
        f"Final test accuracy (all {len(data.splits['test'])} test images): {acc}. "
        f"Lower layers (conv1-conv3, inception3a/3b) gradient norm, total / main loss: "
        f"x{ratio(first['main'], first['total']):.3f} at initialisation with BN, "
        f"x{ratio(init_no_bn['main'], init_no_bn['total']):.3f} with BN removed (untrained), "
        f"x{ratio(last['main'], last['total']):.3f} after {s.steps} steps (aux run); the "
        f"heads' own share (0.3 x aux losses alone / main): "
        f"{ratio(first['main'], first['aux']):.3f} at initialisation, "
        f"{ratio(init_no_bn['main'], init_no_bn['aux']):.3f} without BN, "
        f"{ratio(last['main'], last['aux']):.3f} after training. The heads' gradient is zero "
        "above inception4d (nothing above aux2's input feeds them). "
        f"The `accuracy` column is on a fixed {len(test[1])}-image test subset. "
        "cnnzoo's GoogLeNet has BN after every convolution (torchvision's variant); the "
        "paper's did not."
    )
    return ExperimentResult(
        title="GoogLeNet auxiliary classifiers on Fashion-MNIST",
        columns=["run", "step", "accuracy", "lower_grad_main", "inception3a_grad_main",
                 "lower_grad_total", "lower_grad_aux_only"],
        rows=rows,
        figures=figures,
        notes=notes,
        settings={**asdict(s), "dataset": dataset, "threads": torch.get_num_threads(),
                  "final_test_accuracy": {n: round(final[n], 4) for n in RUNS},
                  "no_aux": "aux_logits=False, initial weights copied from the aux network"},
    )  # fmt: skip
