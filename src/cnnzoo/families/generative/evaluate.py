"""``cnnzoo eval`` of an autoencoder, VAE or DCGAN run: PSNR, SSIM, MSE (and the VAE's ELBO,
its reconstruction and KL terms) on a split, with the run's input noise when it was
denoising; for a VAE or DCGAN on 1-channel data, the FID with cnnzoo's Fashion-MNIST features
(:data:`cnnzoo.tasks.fid.FID_NAME`) between the split's images and as many samples. Of a
translation run (:func:`evaluate_translation`): L1, PSNR, SSIM against the true targets
(paired data) or the FIDs of the translations against the target domain (unpaired data), see
:mod:`cnnzoo.tasks.translation_metrics`."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from cnnzoo.errors import CnnzooError
from cnnzoo.families.assemble import flush_denormals
from cnnzoo.families.measure import match_training_data, run_test
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.fid import DEFAULT_FID_SAMPLES
from cnnzoo.tasks.gan import GANTask
from cnnzoo.tasks.reconstruction import ReconstructionTask


def evaluate_reconstruction(
    run_or_weights: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int | None = None,
    accelerator: str = "auto",
    fid_samples: int = DEFAULT_FID_SAMPLES,
) -> dict[str, float]:
    """Evaluate an autoencoder, VAE or DCGAN run on a split of its data (or ``data``).

    ``batch_size`` defaults to the training's: a denoising run's evaluation noise is seeded
    per batch, so the same batches reproduce its test metrics exactly. The FID takes the
    split's first ``fid_samples`` images and as many samples from fixed seeds, so it
    reproduces the run's ``test/fid``; it is skipped (with a warning) for data that are not
    1-channel, and ``fid_samples=0`` turns it off.

    Returns:
        ``{"psnr", "ssim", "mse", "loss", ...}`` (a VAE adds ``"elbo"``, ``"recon"``,
        ``"kl"`` in nats per image); a VAE or DCGAN adds ``"fid"`` and ``"fid_samples"``
        (a DCGAN has only those two).

    Raises:
        CnnzooError: for a translation run (:func:`evaluate_translation`), a GAN on data without FID
            (not 1-channel, or ``fid_samples=0``), a dataset of another number of channels,
            or a missing split.
    """
    from cnnzoo.families.generative.job import RawImages, fid_samples_for, is_gan

    flush_denormals()
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    if spec.get("task") not in ("reconstruction", "generation") or (
        is_gan(model) and not hasattr(model, "sample")
    ):
        raise CnnzooError(
            f"{run.label} holds a {spec['model']} ({spec.get('task')}): evaluate_reconstruction "
            "measures autoencoders, VAEs and DCGANs; use evaluate_translation for translation "
            "models"
        )
    config = run.read_config()
    trained_on = spec["data"]
    data = data or trained_on["name"]
    same = data == trained_on["name"]
    dm = RawImages(
        data, data_dir=data_dir if data_dir is not None else config.get("data_dir"),
        batch_size=batch_size or int(config.get("batch_size") or 256),
        val_fraction=config.get("val_fraction", 0.1) if same else 0.1,
        seed=config.get("seed", 0) if same else 0, augment=False,
        image_size=trained_on["image_size"][0], channels=trained_on["in_channels"],
    )  # fmt: skip
    match_training_data(dm, data, split, {**trained_on, "class_names": dm.spec.class_names})
    if dm.spec.in_channels != trained_on["in_channels"]:
        raise CnnzooError(
            f"{data!r} has {dm.spec.in_channels} channels; the model was trained on "
            f"{trained_on['in_channels']}"
        )
    samples, note = fid_samples_for(
        model, spec["task"], dm.spec.in_channels, dm.has_split(split), fid_samples
    )
    if is_gan(model):
        if not samples:
            why = note or "fid_samples=0"
            raise CnnzooError(f"{run.label}: a GAN is evaluated by its FID only; {why}")
        task: L.LightningModule = GANTask(model, fid_samples=samples)
    else:
        task = ReconstructionTask(model, noise=config.get("denoise"), fid_samples=samples)
    metrics = run_test(task, dm, accelerator)
    return {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("test/")}


def evaluate_translation(
    run_or_weights: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int | None = None,
    accelerator: str = "auto",
    fid_samples: int = DEFAULT_FID_SAMPLES,
) -> dict[str, float]:
    """Evaluate a translation run (pix2pix, pix2pixHD, CycleGAN, UNIT) on a split of its data
    (or ``data``), as its training's test loop did (:mod:`cnnzoo.tasks.translation_metrics`).

    Paired data are scored on the whole split; unpaired data on the first
    ``min(fid_samples, A images, B images)`` items of the split, so the default reproduces the
    run's test FIDs.

    Returns:
        Paired data: ``{"l1", "psnr", "ssim"}``; unpaired data: ``{"fid_ab", "fid_ba",
        "fid_samples"}`` (a one-way model has no ``"fid_ba"``), plus ``"target_class_ab"``,
        ``"target_class_ba"`` on ``fmnist-shoes``.

    Raises:
        CnnzooError: for a run that is not a translation model, data with other channel
            counts than the model's, a missing split, or unpaired data with nothing to measure
            (``fid_samples=0``, fewer than 2 images in a domain).
    """
    from cnnzoo.data.translation import TranslationData
    from cnnzoo.families.generative.job import translation_scores_for

    flush_denormals()
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    if spec.get("task") != "translation":
        raise CnnzooError(
            f"{run.label} holds a {spec['model']} ({spec.get('task')}), not a translation "
            "model: use evaluate_reconstruction"
        )
    config = run.read_config()
    kwargs = spec.get("kwargs", {})
    data = data or spec["data"]["name"]
    dm = TranslationData(
        data, data_dir=data_dir if data_dir is not None else config.get("data_dir"),
        batch_size=batch_size or int(config.get("batch_size") or 16),
        input_size=config.get("input_size"), channels=3,
        label_nc=int(kwargs.get("label_nc", 0)), seed=config.get("seed", 0),
        subset=1,  # the training split is only opened for its channels: one item will do
    )  # fmt: skip
    if not dm.has_split(split):
        raise CnnzooError(f"dataset {data!r} has no {split!r} split")
    dm.eval_split = split
    wanted = (int(kwargs.get("in_channels", dm.channels_a)),
              int(kwargs.get("out_channels", dm.channels_b)))  # fmt: skip
    if (dm.channels_a, dm.channels_b) != wanted:
        raise CnnzooError(
            f"{data!r} has {dm.channels_a} -> {dm.channels_b} channels; the model translates "
            f"{wanted[0]} -> {wanted[1]}"
        )
    scores, samples, note = translation_scores_for(dm, split, fid_samples)
    if scores is None:
        raise CnnzooError(f"{run.label}: unpaired translation is scored by FID only; "
                          f"{note or 'fid_samples=0'}")  # fmt: skip
    task = GANTask(model, fid_samples=samples, translation=scores,
                   domain_classes=dm.domain_classes)  # fmt: skip
    metrics = run_test(task, dm, accelerator)
    return {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("test/")}
