"""The generative family: autoencoders (reconstruction), VAEs and GANs (generation) and
image-to-image translation. Evaluated by PSNR/SSIM, the ELBO, FID and translation scores;
used by ``sample`` and ``translate`` rather than ``predict``."""

from __future__ import annotations

from cnnzoo.families.base import (
    NOT_EXPORTED,
    EvalOptions,
    Evaluation,
    Family,
    Job,
    TrainConfig,
    TrainResult,
)
from cnnzoo.rundir import RunDir


class GenerativeFamily(Family):
    """Autoencoders, VAEs, GANs and translation models."""

    name = "generative"
    tasks = ("reconstruction", "generation", "translation")
    defaults = {
        "reconstruction": {"batch_size": 128, "optimizer": "adam", "weight_decay": 0.0,
                           "aux_weight": 0.0},
        "generation": {"batch_size": 64, "optimizer": "adam", "weight_decay": 0.0,
                       "aux_weight": 0.0},
        "translation": {"batch_size": 4, "optimizer": "adam", "weight_decay": 0.0,
                        "aux_weight": 0.0},
    }  # fmt: skip
    """The learning rate is the model's: 1e-3 for autoencoders and VAEs, 2e-4 for GANs."""
    options = frozenset({"image_size", "input_size", "backbone", "latent", "beta", "denoise",
                         "decay_start", "fid_samples", "snapshots"})  # fmt: skip
    instead = {
        "predict": "use cnnzoo sample (VAE, GAN), cnnzoo translate (translation) or cnnzoo "
                   "eval (reconstructions)",
        **NOT_EXPORTED,
    }  # fmt: skip

    def job(self, cfg: TrainConfig) -> Job:
        from cnnzoo.families.generative.job import generative_job

        return generative_job(cfg)

    def write_plots(self, run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
        from cnnzoo.families.generative.job import write_generative_plots

        write_generative_plots(run, cfg, result, job)

    def evaluate(self, run: RunDir, options: EvalOptions) -> Evaluation:
        from cnnzoo.families.generative.evaluate import (
            evaluate_reconstruction,
            evaluate_translation,
        )
        from cnnzoo.tasks.fid import FID_NAME

        o = options
        translation = run.read_spec().get("task") == "translation"
        measure = evaluate_translation if translation else evaluate_reconstruction
        values = measure(run, o.data, o.data_dir, o.split, o.batch_size, fid_samples=o.fid_samples)
        notes = {}
        if "fid" in values or "fid_ab" in values:
            notes["fid"] = f"{FID_NAME}, {int(values.pop('fid_samples', 0))} images each"
        return Evaluation(title=f"{run.label} ({o.split})", metrics=values, notes=notes)
