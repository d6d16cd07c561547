"""Autoencoder, VAE, GAN and image-translation runs: the :class:`~cnnzoo.families.base.Job`
of ``cnnzoo train`` for the tasks ``reconstruction``, ``generation`` and ``translation``,
the run's pictures (reconstructions, samples, translations per epoch), and which runs get a
test FID (:func:`fid_samples_for`) or translation scores (:func:`translation_scores_for`)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.translation import TranslationData
from cnnzoo.errors import CnnzooError
from cnnzoo.families.base import Job, TrainConfig, TrainResult
from cnnzoo.registry import create_model, model_info
from cnnzoo.tasks.fid import FID_NAME
from cnnzoo.tasks.gan import GANTask
from cnnzoo.tasks.reconstruction import ReconstructionTask

if TYPE_CHECKING:
    from cnnzoo.rundir import RunDir

GENERATIVE_TASKS = ("reconstruction", "generation", "translation")
logger = logging.getLogger("cnnzoo")


class RawImages(ClassificationData):
    """Fashion-MNIST or an image folder served as uint8 ``(images, labels)``: no
    normalisation, no augmentation (the generative tasks scale images themselves)."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch


def is_gan(model: torch.nn.Module) -> bool:
    """Return whether ``model`` follows the GAN contract (trained by :class:`GANTask`)."""
    return hasattr(model, "generator_step") and hasattr(model, "discriminator_step")


def fid_samples_for(
    model: torch.nn.Module, task: str, in_channels: int, has_test: bool, samples: int
) -> tuple[int, str | None]:
    """Return ``(images per test FID, note)`` for a run: ``samples`` for a VAE or a
    sampling GAN (DCGAN) on 1-channel data with a test split, else 0 and, where a generator
    is skipped, the reason (also logged as a warning) — the FID's features come from a
    Fashion-MNIST classifier, meaningless for colour images.
    """
    if task != "generation" or not hasattr(model, "sample") or samples <= 0:
        return 0, None
    if in_channels != 1:
        note = (f"{FID_NAME} skipped: the data have {in_channels} channels, the extractor "
                "takes 1-channel Fashion-MNIST-like images")  # fmt: skip
    elif not has_test:
        note = f"{FID_NAME} skipped: the data have no test split"
    else:
        return samples, None
    logger.warning(note)
    return 0, note


def translation_scores_for(
    data: TranslationData, split: str, samples: int
) -> tuple[str | None, int, str | None]:
    """Return ``(scores, images per FID, note)`` for testing a translation run on ``split``
    of ``data`` (see :mod:`cnnzoo.tasks.translation_metrics`).

    Paired data get ``"paired"`` (L1, PSNR, SSIM on the whole split); unpaired data
    ``"unpaired"`` with ``min(samples, A images, B images)`` images per FID. Nothing can be
    measured without such a split (paired data: no note), with ``samples <= 0`` (no note: the
    user asked for it) or with fewer than 2 images in a domain: then ``(None, 0, note)``, the
    note also logged as a warning.
    """
    if data.paired:
        return ("paired", 0, None) if data.has_split(split) else (None, 0, None)
    if samples <= 0:
        return None, 0, None
    if not data.has_split(split):
        note = f"{FID_NAME} skipped: the data have no {split} split"
    elif min(data.splits[split].domain_sizes) < 2:  # type: ignore[attr-defined]
        note = f"{FID_NAME} skipped: the {split} split has fewer than 2 images in a domain"
    else:
        sizes = data.splits[split].domain_sizes  # type: ignore[attr-defined]
        return "unpaired", min(samples, *sizes), None
    logger.warning(note)
    return None, 0, note


def _model_args(cfg: TrainConfig, spec: Any, data: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    task = model_info(cfg.model).task
    if task == "translation":
        args["in_channels"] = data.channels_a
        args["out_channels"] = data.channels_b
        if data.label_nc:
            args["label_nc"] = data.label_nc
    else:
        args.update(in_channels=spec.in_channels, image_size=spec.image_size[0])
    for option, key in (("latent", "latent"), ("beta", "beta"), ("backbone", "backbone")):
        value = getattr(cfg, option)
        if value is not None:
            args[key] = value
    args.update(cfg.model_kwargs)
    return args


def generative_job(cfg: TrainConfig) -> Job:
    """Data, model and LightningModule of an autoencoder, VAE, GAN or translation run.

    Raises:
        CnnzooError: for bad data or options.
    """
    info = model_info(cfg.model)
    if cfg.denoise is not None and info.task != "reconstruction":
        raise CnnzooError(f"--denoise applies to autoencoders; {cfg.model} is a {info.task} model")
    if info.task == "translation":
        data: Any = TranslationData(
            cfg.data, data_dir=cfg.data_dir, batch_size=cfg.batch_size,  # type: ignore[arg-type]
            input_size=cfg.input_size, channels=3, label_nc=int(cfg.model_kwargs.get(
                "label_nc", 0)), subset=cfg.subset, seed=cfg.seed, num_workers=cfg.num_workers,
        )  # fmt: skip
    else:
        if cfg.input_size is not None:
            raise CnnzooError("--input-size is for translation data; use --image-size")
        data = RawImages(
            cfg.data, data_dir=cfg.data_dir, batch_size=cfg.batch_size,  # type: ignore[arg-type]
            val_fraction=cfg.val_fraction, augment=False, image_size=cfg.image_size,
            subset=cfg.subset, seed=cfg.seed, num_workers=cfg.num_workers,
        )  # fmt: skip
    spec = data.spec
    model_args = _model_args(cfg, spec, data)
    model = create_model(cfg.model, **model_args)
    scores = None
    if info.task == "translation":
        scores, fid_samples, fid_note = translation_scores_for(data, "test", cfg.fid_samples)
    else:
        fid_samples, fid_note = fid_samples_for(
            model, info.task, spec.in_channels, data.has_split("test"), cfg.fid_samples
        )
    if is_gan(model) and cfg.time_minutes is not None:
        raise CnnzooError(
            f"--time fits one learning-rate schedule into the budget; {cfg.model} trains two "
            "networks with a per-epoch decay (--decay-start): give --epochs (and --max-time)"
        )
    if is_gan(model):
        module: L.LightningModule = GANTask(
            model, lr=cfg.lr or 2e-4, decay_start=cfg.decay_start, fid_samples=fid_samples,
            translation=scores, domain_classes=data.domain_classes if scores else None,
        )  # fmt: skip
        monitor, columns, train_columns = None, ("g_loss", "d_loss"), ("g_loss", "d_loss")
    else:
        module = ReconstructionTask(
            model, noise=cfg.denoise, optimizer=cfg.optimizer or "adam", lr=cfg.lr or 1e-3,
            weight_decay=cfg.weight_decay or 0.0, scheduler=cfg.scheduler,
            fid_samples=fid_samples,
        )  # fmt: skip
        if info.task == "generation":  # VAE: the ELBO decides
            monitor, columns, train_columns = "val/elbo", ("loss", "elbo", "psnr"), ("loss",)
        else:
            monitor, columns, train_columns = "val/psnr", ("loss", "psnr", "ssim"), ("loss",)
    callbacks: list[Callback] = []
    if cfg.snapshots > 0:
        from cnnzoo.rundir import RunDir

        folder = RunDir(cfg.out).plots / "samples"
        callbacks.append(GenerativeSnapshots(folder, cfg.snapshots, cfg.model))
    notes: dict[str, Any] = {"denoise": cfg.denoise} if cfg.denoise else {}
    if scores == "unpaired":
        notes["fid"] = (f"{FID_NAME} of {fid_samples} A->B (B->A) translations against as "
                        "many test B (A) images; RGB as ITU-R BT.601 luma")  # fmt: skip
    elif fid_samples:
        notes["fid"] = f"{FID_NAME} on up to {fid_samples} test images and as many samples"
    elif fid_note:
        notes["fid"] = fid_note
    return Job(
        info.task, data, model, module, spec, model_args, None, monitor=monitor or "",
        columns=columns, callbacks=callbacks, notes=notes, train_columns=train_columns,
        test=not is_gan(model) or fid_samples > 0 or scores is not None,
    )  # fmt: skip


def _first_images(data: Any, split: str, count: int) -> Any:
    view = data.splits[split]
    items = [view[i] for i in range(min(count, len(view)))]
    if isinstance(items[0], dict):
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return torch.stack([torch.as_tensor(it[0]) for it in items])


@torch.no_grad()
def snapshot(module: L.LightningModule, data: Any, count: int, path: Path, title: str) -> Path:
    """Draw what the model makes now: reconstructions (autoencoder), samples and
    reconstructions (VAE), samples (GAN; one row per class when conditional) or translations.

    Returns:
        The PNG written.
    """
    from cnnzoo.viz.grids import save_rows

    model = module.model  # type: ignore[attr-defined]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    split = "test" if data.has_split("test") else "train"
    gen = torch.Generator().manual_seed(0)
    rows: list[tuple[str, Tensor]] = []
    try:
        if isinstance(data, TranslationData):
            batch = _first_images(data, split, count)
            a = batch["A"].to(device)
            b = batch["B"].to(device)
            from cnnzoo.tasks.gan import to_signed

            rows.append(("A", _unsigned(a) if a.dtype != torch.int64 else _labels_rgb(a)))
            rows.append(("A -> B", _unsigned(model.translate(to_signed(a), "AB"))))
            rows.append(("B", _unsigned(b)))
            if getattr(model, "bidirectional", True) and not data.label_nc:
                with contextlib.suppress(CnnzooError):  # one-way models (pix2pix)
                    rows.append(("B -> A", _unsigned(model.translate(to_signed(b), "BA"))))
        elif is_gan(model):
            z = torch.randn(count, model.latent, generator=gen).to(device)
            if getattr(model, "num_classes", 0):
                for c in range(min(model.num_classes, 10)):
                    labels = torch.full((count,), c, dtype=torch.long, device=device)
                    rows.append((f"class {c}", _unsigned(model(z, labels))))
            else:
                rows.append(("samples", _unsigned(model(z))))
        else:
            x = _first_images(data, split, count).to(device)
            from cnnzoo.tasks.reconstruction import to_unit

            rows.append(("input", to_unit(x)))
            noisy = module.corrupt(to_unit(x))  # type: ignore[operator]
            if module.hparams.get("noise"):
                rows.append(("corrupted", noisy))
            out = model(noisy)
            recon = torch.sigmoid(out["logits"]) if isinstance(out, dict) else out
            rows.append(("reconstruction", recon))
            if hasattr(model, "sample"):
                rows.append(("samples", model.sample(count, generator=gen).to(device)))
    finally:
        model.train(was_training)
    return save_rows([(name, t.float().cpu().clamp(0, 1)) for name, t in rows], path, title)


def _unsigned(x: Tensor) -> Tensor:
    return (x.float() + 1) / 2 if x.dtype != torch.uint8 else x.float() / 255


def _labels_rgb(labels: Tensor) -> Tensor:
    from cnnzoo.viz.segmentation import colorize

    return torch.stack([torch.from_numpy(colorize(m.cpu())).permute(2, 0, 1) for m in labels]) / 255


class GenerativeSnapshots(Callback):
    """After each training epoch, save :func:`snapshot` as ``plots/samples/epoch_NNN.png``."""

    def __init__(self, folder: Path, count: int, title: str) -> None:
        self.folder = folder
        self.count = count
        self.title = title

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.count <= 0:
            return
        epoch = trainer.current_epoch + 1
        path = self.folder / f"epoch_{epoch:03d}.png"
        data = trainer.datamodule  # type: ignore[attr-defined]
        snapshot(pl_module, data, self.count, path, f"{self.title}, epoch {epoch}")


def write_generative_plots(run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
    """Write ``plots/samples.png`` (the last snapshot, at more images) of a finished run."""
    snapshot(job.module, job.data, max(8, cfg.snapshots), run.plots / "samples.png",
             f"{cfg.model} on {cfg.data}")  # fmt: skip
