"""Autoencoder pre-training, measured: an encoder learnt without labels initialises a classifier.

The lecture: an autoencoder is trained without labels through an information bottleneck; it
compresses, denoises, and its encoder can pre-train the feature extractor of a supervised
model. Here, on Fashion-MNIST:

1. **Pre-training (no labels):** a ``conv_ae`` whose encoder is the ResNet-20 classifier's
   feature extractor (``backbone="resnet20"``: every layer but the final 64 -> 10 linear
   layer) is trained to reconstruct all 60,000 training images; its data module serves images
   only. The encoder sees exactly what the classifier will see (images standardised with the
   dataset's mean and std); the decoder outputs the [0, 1] image, scored by MSE.
2. **Classification with few labels:** 10, 50, 250 or 1000 labelled images per class (seeded
   draws), the same ResNet-20 trained for the same steps with the same SGD + one-cycle
   schedule, crop + flip, from three starts: ``scratch`` (random init), ``ae-finetune`` (the
   AE encoder's weights copied into every layer but the head; everything trains) and
   ``ae-linear`` (the same encoder frozen, BN statistics included: a linear probe on its 64
   pooled features). Metric: accuracy on the full 10,000-image test set, mean ± std over
   seeds.
3. **Compression:** the same autoencoder with bottlenecks of 2 ... 64 numbers per image (784
   pixels in), each trained with the same budget as in 1; PSNR and SSIM of the test-set
   reconstructions, and one strip of reconstructions per bottleneck.

CPU time of the default run (3 seeds, 4 sizes, 6 bottlenecks, bf16 autocast): about 35
minutes of one CPU thread, so roughly 20 minutes on 2 idle cores (estimated from measured
per-step times: an autoencoder step of 128 images ~0.33 s, a classifier step of 64 ~0.125 s,
a 10,000-image test pass ~5 s, on one thread of the 2-core development machine; six
autoencoders of 400 steps, 24 fine-tuned and 12 linear-probe classifiers of 300 steps).
``--quick`` (1 seed, 2 sizes, 3 bottlenecks, fewer steps): about 4 minutes of one thread.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.splits import SplitDataModule
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments import fashion_mnist_name as _dataset
from cnnzoo.models.generative.autoencoder import ConvAutoencoder
from cnnzoo.models.weights import LoadReport, load_weights
from cnnzoo.registry import create_model
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.finetune import HEAD, FineTunePlan, FineTuning, apply_plan, parameter_stages
from cnnzoo.tasks.reconstruction import ReconstructionTask, to_unit
from cnnzoo.workflows.train import fit_and_test

NUM_CLASSES = 10
METHODS = ("scratch", "ae-finetune", "ae-linear")
COLUMNS = ["part", "per_class", "method", "accuracy", "latent", "test_psnr_db", "test_ssim",
           "seeds"]  # fmt: skip


@dataclass(frozen=True)
class AEPretrainingSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    backbone: str = "resnet20"
    latent: int = 32
    """Bottleneck of the autoencoder whose encoder initialises the classifiers."""
    ae_steps: int = 400
    ae_batch_size: int = 128
    ae_lr: float = 3e-3
    sizes: tuple[int, ...] = (10, 50, 250, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    batch_size: int = 64
    lr: float = 0.05
    latents: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    """Bottlenecks of the compression curve (``latent`` is among them or added)."""
    strip_images: int = 8
    precision: str = "bf16-mixed"


QUICK = AEPretrainingSettings(
    ae_steps=150, sizes=(10, 250), seeds=(0,), steps=100, latents=(2, 8, 32)
)


# -- unlabelled data ------------------------------------------------------------------------
class ImagesOnly(Dataset):
    """uint8 images (N, C, H, W) without labels; a batch is fetched as one tensor."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]

    def __getitems__(self, indices: list[int]) -> Tensor:
        return self.images[torch.as_tensor(indices)]


def _stack(batch: Tensor | list[Tensor]) -> Tensor:
    return batch if isinstance(batch, Tensor) else torch.stack(batch)


class UnlabelledImages(SplitDataModule):
    """``train`` and ``test`` splits of images only: batches are uint8 tensors (N, C, H, W),
    never ``(images, labels)`` pairs, so an autoencoder trained on them cannot see a label.

    Args:
        dataset: ``"fashion-mnist"`` or ``"fashion-mnist-mini"``: every training image is
            kept (no class selection, no validation split); the labels are dropped here.
        batch_size: images per batch.
        seed: seed of the shuffling.

    Attributes:
        mean, std: the dataset's normalisation constants (the classifier's).

    Raises:
        CnnzooError: if the dataset cannot be loaded.
    """

    collate_fn = staticmethod(_stack)

    def __init__(self, dataset: str, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__()
        labelled = ClassificationData(dataset, batch_size=batch_size, val_fraction=0,
                                      augment=False, seed=seed)  # fmt: skip
        self.data = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = 0
        self.mean, self.std = labelled.spec.mean, labelled.spec.std
        self.splits: dict[str, Dataset] = {
            split: ImagesOnly(labelled.splits[split].images)  # type: ignore[attr-defined]
            for split in ("train", "test")
        }


class StandardisedInput(nn.Module):
    """An autoencoder fed standardised images, reconstructing them in [0, 1].

    ``forward(x)`` takes images in [0, 1], standardises them with ``mean`` and ``std`` (as the
    classifier's data module does) and returns ``ae``'s reconstruction in [0, 1], so the
    encoder learns on the classifier's own input. ``loss`` is the autoencoder's.
    """

    def __init__(self, ae: ConvAutoencoder, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.ae = ae
        self.mean, self.std = mean, std

    def forward(self, x: Tensor) -> Tensor:
        """Return the reconstruction (N, C, H, W) in [0, 1] of images ``x`` in [0, 1]."""
        return self.ae(normalize_batch(x, self.mean, self.std))

    def loss(self, x_hat: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Return the autoencoder's ``{"loss", "mse", "psnr"}`` against ``target``."""
        return self.ae.loss(x_hat, target)


# -- the three parts ------------------------------------------------------------------------
def train_autoencoder(
    latent: int, data: UnlabelledImages, s: AEPretrainingSettings
) -> tuple[ConvAutoencoder, dict[str, float], Tensor]:
    """Train a ``conv_ae`` (encoder ``s.backbone``, bottleneck ``latent``) for ``s.ae_steps``.

    Returns:
        The autoencoder, its test metrics (``test/psnr`` in dB, ``test/ssim``, ``test/mse``)
        and the reconstructions of the first ``s.strip_images`` test images, in [0, 1].
    """
    L.seed_everything(0, verbose=False)
    ae = create_model("conv_ae", in_channels=1, image_size=28, latent=latent,
                      backbone=s.backbone)  # fmt: skip
    wrapped = StandardisedInput(ae, data.mean, data.std)  # type: ignore[arg-type]
    task = ReconstructionTask(wrapped, lr=s.ae_lr)
    metrics = fit_and_test(task, data, s.ae_steps, s.precision)  # type: ignore[arg-type]
    wrapped.eval()
    with torch.no_grad():
        x = to_unit(data.splits["test"][list(range(s.strip_images))])  # type: ignore[index]
        strip = wrapped(x).float().clamp(0, 1)
    return ae, metrics, strip  # type: ignore[return-value]


def transfer_encoder(ae: ConvAutoencoder, classifier: nn.Module) -> LoadReport:
    """Copy the autoencoder's encoder weights (BN statistics included) into ``classifier``.

    Returns:
        The load report: every classifier tensor but the head's is loaded.

    Raises:
        CnnzooError: if the encoder does not fill every non-head tensor of ``classifier``
            (another backbone or other widths).
    """
    report = load_weights(classifier, ae.encoder_state(), strict_body=False)
    stages = parameter_stages(classifier)
    body_missing = [k for k in report.missing if stages.get(k) != HEAD]
    if body_missing or report.unexpected or report.mismatched:
        bad = (body_missing + report.unexpected + report.mismatched)[:3]
        raise CnnzooError(
            f"the autoencoder's encoder does not fit {type(classifier).__name__} ({', '.join(bad)} "
            "differ); build the autoencoder with the classifier's backbone and options"
        )
    return report


def build_classifier(
    method: str, seed: int, ae: ConvAutoencoder | None, s: AEPretrainingSettings
) -> tuple[nn.Module, FineTunePlan | None]:
    """Build the classifier of ``method`` (one of :data:`METHODS`) with seed ``seed``.

    Returns:
        The model (head freshly initialised; body random for ``scratch``, the AE encoder's
        otherwise) and the fine-tuning plan (``head`` for ``ae-linear``, else None).

    Raises:
        CnnzooError: for an unknown method, or an AE method without an autoencoder.
    """
    if method not in METHODS:
        raise CnnzooError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    L.seed_everything(seed, verbose=False)
    model = create_model(s.backbone, num_classes=NUM_CLASSES, in_channels=1)
    if method == "scratch":
        return model, None
    if ae is None:
        raise CnnzooError(f"method {method!r} needs the pre-trained autoencoder")
    transfer_encoder(ae, model)
    if method == "ae-finetune":
        return model, None
    plan = FineTunePlan("head")
    apply_plan(model, plan)
    return model, plan


def train_classifier(
    method: str,
    per_class: int,
    seed: int,
    ae: ConvAutoencoder | None,
    s: AEPretrainingSettings,
    dataset: str,
) -> float:
    """Train one classifier on ``per_class`` labels per class; return its test accuracy."""
    model, plan = build_classifier(method, seed, ae, s)
    data = ClassificationData(dataset, per_class=per_class, seed=seed, val_fraction=0,
                              batch_size=s.batch_size)  # fmt: skip
    task = ClassificationTask(model, num_classes=NUM_CLASSES, lr=s.lr, channels_last=True)
    callbacks = [FineTuning(plan, model)] if plan is not None else []
    return fit_and_test(task, data, s.steps, s.precision, callbacks)["test/accuracy"]


# -- figures ----------------------------------------------------------------------------------
def plot_accuracy(rows: list[dict[str, Any]], sizes: tuple[int, ...], path: Path) -> Path:
    """Test accuracy vs labelled images per class (log x), one line per method, std bars."""
    from cnnzoo.viz.labels import plot_accuracy_vs_labels

    return plot_accuracy_vs_labels(
        rows, METHODS, sizes, path, xlabel="labelled training images per class",
        ylabel="test accuracy (10 classes)",
        title="Fashion-MNIST: autoencoder pre-training vs scratch",
    )  # fmt: skip


def plot_compression(rows: list[dict[str, Any]], path: Path) -> Path:
    """Test PSNR vs bottleneck size (log2 x)."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    latents = [r["latent"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(latents, [r["psnr"] for r in rows], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(latents, [str(v) for v in latents])
    ax.set_xlabel("bottleneck size (numbers per 28x28 image)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("Compression: reconstruction quality vs bottleneck")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


# -- the experiment -----------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _notes(acc_rows: list[dict[str, Any]], curve: list[dict[str, Any]], latent: int) -> str:
    by = {(r["per_class"], r["method"]): r for r in acc_rows}
    lines = []
    for n in sorted({r["per_class"] for r in acc_rows}):
        sc, ft, lin = by[n, "scratch"], by[n, "ae-finetune"], by[n, "ae-linear"]
        gap = ft["mean"] - sc["mean"]
        overlap = abs(gap) <= ft["std"] + sc["std"]
        lines.append(
            f"- {n}/class: ae-finetune {ft['mean']:.3f} vs scratch {sc['mean']:.3f} "
            f"({100 * gap:+.1f} points{', within one std of each other' if overlap else ''}); "
            f"ae-linear {lin['mean']:.3f}."
        )
    psnr = ", ".join(f"{r['latent']}: {r['psnr']:.1f} dB" for r in curve)
    lines.append(f"- Test PSNR by bottleneck size: {psnr}.")
    rising = all(a["psnr"] < b["psnr"] for a, b in itertools.pairwise(curve))
    lines.append(
        "- PSNR rises with every larger bottleneck."
        if rising
        else "- PSNR does not rise at every step of the bottleneck size (same training budget)."
    )
    lines.append(
        f"- The classifiers' encoder comes from the bottleneck-{latent} autoencoder; the AE "
        "saw every training image but no label."
    )
    return "\n".join(lines)


@register_experiment(
    "ae-pretraining",
    "a conv AE trained on all Fashion-MNIST images without labels initialises a ResNet-20 "
    "trained on 10-1000 labels per class (vs scratch, vs frozen encoder); PSNR vs bottleneck",
)
def ae_pretraining(out: Path, quick: bool) -> ExperimentResult:
    """Run the autoencoder pre-training experiment (see the module docstring)."""
    from cnnzoo.viz.grids import save_rows

    s = QUICK if quick else AEPretrainingSettings()
    dataset = _dataset()
    data = UnlabelledImages(dataset, batch_size=s.ae_batch_size)
    test_images = to_unit(data.splits["test"][list(range(s.strip_images))])  # type: ignore[index]
    # The labelled draws need per_class images of each class (the mini set has 500).
    available = 500 if dataset == "fashion-mnist-mini" else 6000
    sizes = tuple(n for n in s.sizes if n <= available)

    curve, strips, pretrained = [], [("input", test_images)], None
    for latent in sorted({*s.latents, s.latent}):
        ae, metrics, strip = train_autoencoder(latent, data, s)
        if latent == s.latent:
            pretrained = ae
        strips.append((f"latent {latent}", strip))
        psnr, ssim = metrics["test/psnr"], metrics["test/ssim"]
        curve.append({
            "part": "compression", "method": f"conv_ae ({s.backbone} encoder)", "latent": latent,
            "psnr": round(psnr, 3), "ssim": round(ssim, 4), "test_psnr_db": f"{psnr:.2f}",
            "test_ssim": f"{ssim:.3f}", "compression": round(784 / latent, 1), "seeds": 1,
        })  # fmt: skip

    acc_rows = []
    for per_class in sizes:
        for method in METHODS:
            accs = [train_classifier(method, per_class, seed, pretrained, s, dataset)
                    for seed in s.seeds]  # fmt: skip
            mean, std = _mean_std(accs)
            acc_rows.append({
                "part": "classifier", "per_class": per_class, "method": method,
                "mean": round(mean, 4), "std": round(std, 4),
                "accuracy": f"{mean:.3f} ± {std:.3f}", "seeds": len(accs),
                "runs": [round(a, 4) for a in accs],
            })  # fmt: skip

    figures = [
        plot_accuracy(acc_rows, sizes, out / "ae_pretraining.png"),
        plot_compression(curve, out / "ae_compression.png"),
        save_rows(strips, out / "ae_reconstructions.png",
                  "test images and their reconstructions per bottleneck size"),
    ]  # fmt: skip
    return ExperimentResult(
        title="Autoencoder pre-training and compression on Fashion-MNIST",
        columns=COLUMNS,
        rows=acc_rows + curve,
        figures=figures,
        notes=_notes(acc_rows, curve, s.latent),
        settings={
            **asdict(s), "sizes": sizes, "dataset": dataset,
            "ae_images": len(data.splits["train"]), "ae_labels": "none (images only)",
            "test_images": len(data.splits["test"]),
            "ae_epochs": round(s.ae_steps * s.ae_batch_size / len(data.splits["train"]), 2),
            "metric": "test accuracy (10 classes); test PSNR (dB) and SSIM of reconstructions",
        },
    )  # fmt: skip
