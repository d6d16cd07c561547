"""Unsupervised training as a LightningModule: autoencoders (plain and denoising) and VAEs.

Labels are ignored. Images (uint8) become floats in [0, 1]; with ``noise`` (e.g.
``"gaussian:0.3"``, see :mod:`cnnzoo.models.generative.noise`) the model sees a corrupted
copy during training *and* evaluation, and is scored against the clean image (Vincent et al.
2008's denoising criterion); evaluation noise is seeded by the batch index, so an evaluation
is reproducible.

- An autoencoder's ``forward(x) -> x_hat`` and ``loss(x_hat, x) -> {"loss", ...}`` (MSE);
- a VAE's ``forward(x) -> {"logits", "mu", "logvar", "z"}`` and ``loss(outputs, x) ->
  {"loss", "recon", "kl", "elbo"}`` (nats per image); its reconstruction is
  ``sigmoid(logits)``.

Metrics (torchmetrics, on [0, 1] images): ``psnr`` (dB), ``ssim`` and ``mse``, plus for a VAE
``elbo``, ``recon`` and ``kl`` averaged over the images — logged as ``val/...``, ``test/...``.
With ``fid_samples > 0`` a VAE's test loop also measures ``test/fid``
(:data:`cnnzoo.tasks.fid.FID_NAME`) between that many clean test images and as many samples,
and logs the count as ``test/fid_samples``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from cnnzoo.errors import NonFiniteLossError
from cnnzoo.tasks.budget import budgeted
from cnnzoo.tasks.fid import TestFID, log_test_fid
from cnnzoo.tasks.optim import optimizer_config


def to_unit(x: Tensor) -> Tensor:
    """Return uint8 images as floats in [0, 1]; float images unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x


class ReconstructionTask(L.LightningModule):
    """Train and evaluate an autoencoder or a VAE.

    Args:
        model: the autoencoder or VAE.
        noise: corruption of the input (denoising), e.g. ``"saltpepper:0.1"``; None: none.
        optimizer, lr, weight_decay, scheduler: as for classification (default Adam 1e-3).
        fid_samples: test images (and samples) of the test FID; 0, or a model without
            ``sample`` (a plain autoencoder): no FID.

    Raises:
        CnnzooError: for a bad ``noise`` spec.
    """

    def __init__(
        self,
        model: nn.Module,
        noise: str | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        scheduler: str = "onecycle",
        fid_samples: int = 0,
    ) -> None:
        super().__init__()
        if noise is not None:
            from cnnzoo.models.generative.noise import parse_noise

            parse_noise(noise)  # fails early on a bad spec
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict(
                    {
                        "psnr": PeakSignalNoiseRatio(data_range=1.0),
                        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
                    }
                )
                for split in ("val", "test")
            }
        )
        self._fid: TestFID | None = None

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return the model's input for clean images ``x`` in [0, 1]."""
        if self.hparams.noise is None:
            return x
        from cnnzoo.models.generative.noise import corrupt

        return corrupt(x, self.hparams.noise, generator)

    def run(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Return ``(losses, reconstruction in [0, 1])`` of uint8 or [0, 1] ``images``."""
        x = to_unit(images)
        out = self.model(self.corrupt(x, generator))
        if isinstance(out, dict):  # VAE
            return self.model.loss(out, x), torch.sigmoid(out["logits"])
        return self.model.loss(out, x), out

    def forward(self, x: Tensor) -> Tensor:
        """Return the reconstruction of ``x`` (no corruption)."""
        out = self.model(to_unit(x))
        return torch.sigmoid(out["logits"]) if isinstance(out, dict) else out

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        losses, _ = self.run(images)
        if not torch.isfinite(losses["loss"]):
            raise NonFiniteLossError(self.global_step, self.current_epoch, float(losses["loss"]))
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", on_step=False,
                     on_epoch=True, batch_size=len(images))  # fmt: skip
        return losses["loss"]

    def _evaluate(self, batch: Any, split: str, batch_idx: int) -> None:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = to_unit(images)
        # evaluation noise is seeded per batch: the same images get the same corruption
        gen = torch.Generator(device=x.device).manual_seed(batch_idx)
        losses, x_hat = self.run(images, gen)
        x_hat = x_hat.float().clamp(0, 1)
        n = len(images)
        for name, value in losses.items():
            if name not in ("mse", "psnr", "ssim"):  # measured below on the clamped output
                self.log(f"{split}/{name}", value.detach(), sync_dist=True, batch_size=n)
        self.log(f"{split}/mse", F.mse_loss(x_hat, x), sync_dist=True, batch_size=n)
        for name, metric in self.metrics[split].items():
            metric(x_hat, x)
            self.log(f"{split}/{name}", metric, batch_size=n)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)
        if self._fid is not None:
            self._fid.add_real(batch[0] if isinstance(batch, (tuple, list)) else batch)

    def on_test_epoch_start(self) -> None:
        samples = self.hparams.get("fid_samples", 0)
        self._fid = None
        if samples > 0 and hasattr(self.model, "sample"):
            self._fid = TestFID(samples, self.device, self.trainer.world_size, self.global_rank)

    def on_test_epoch_end(self) -> None:
        if self._fid is None:
            return
        fid, self._fid = self._fid, None
        log_test_fid(self, fid, lambda n, labels, gen: self.model.sample(n, generator=gen))

    def configure_optimizers(self) -> Any:
        return optimizer_config(
            self.model, self.hparams, lambda: int(self.trainer.estimated_stepping_batches),
            retargetable=budgeted(self._trainer),
        )  # fmt: skip
