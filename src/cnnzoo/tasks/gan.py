"""Adversarial training as a LightningModule: any model of the GAN contract (DCGAN, CycleGAN,
UNIT, pix2pix, pix2pixHD).

The contract (see :mod:`cnnzoo.models.generative`): ``generator_parameters()`` and
``discriminator_parameters()`` (two optimisers), ``generator_step(batch) -> (losses, fakes)``
and ``discriminator_step(batch, fakes) -> losses``, each ``losses`` holding ``"loss"`` (the
total to minimise) and its weighted components. One training step is the two players'
alternating updates of Goodfellow et al. 2014: the generator's step (``generator_step`` builds
its graph with the discriminators frozen, :func:`cnnzoo.layers.gan_training.frozen`) then the
discriminator's on the same batch and the fakes just made (Lightning's manual
optimisation). Both use Adam with ``betas = (0.5, 0.999)`` and lr 2e-4 (Radford et al. 2016;
Zhu et al. 2017). ``decay_start``: the fraction of the epochs after which both learning rates
decay linearly to 0 (CycleGAN: 100 constant + 100 decaying epochs is 0.5; 1.0 keeps them
constant).

Images arrive as uint8 and are scaled to [-1, 1] (the generators' tanh range) by
:func:`prepare`; label maps stay int64. The losses are logged as ``train/g_*`` and
``train/d_*``. The test loop of a sampling GAN (DCGAN, ``sample(n, labels, generator)``)
with ``fid_samples > 0`` measures ``test/fid`` (:data:`cnnzoo.tasks.fid.FID_NAME`) between
that many test images and as many samples (a conditional GAN draws the test images'
classes), and logs the count as ``test/fid_samples``. The test loop of a translation model
(``translation="paired"`` or ``"unpaired"``) logs the scores of
:mod:`cnnzoo.tasks.translation_metrics` as ``test/...``: ``l1``, ``psnr``, ``ssim`` against the
true targets, or ``fid_ab``, ``fid_ba`` (and ``target_class_ab``, ``target_class_ba`` given the
domains' classes) on ``fid_samples`` images per domain.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError, NonFiniteLossError
from cnnzoo.layers.gan_training import ImagePool
from cnnzoo.tasks.checkpointing import all_processes
from cnnzoo.tasks.fid import TestFID, log_test_fid
from cnnzoo.tasks.translation_metrics import PairedTranslationScores, UnpairedTranslationScores

REQUIRED = ("generator_parameters", "discriminator_parameters", "generator_step",
            "discriminator_step")  # fmt: skip
TRANSLATION_SCORES = ("paired", "unpaired")


def to_signed(x: Tensor) -> Tensor:
    """Return uint8 images as floats in [-1, 1]; other dtypes unchanged."""
    return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x


def prepare(batch: Any) -> dict[str, Tensor]:
    """Turn a loader batch into the contract's dict: ``(images, labels)`` becomes
    ``{"image", "label"}``; ``{"A", "B"}`` dicts are kept. uint8 images go to [-1, 1].

    Raises:
        CnnzooError: for any other batch form.
    """
    if isinstance(batch, dict):
        return {k: to_signed(v) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return {"image": to_signed(batch[0]), "label": batch[1]}
    raise CnnzooError(f"a GAN batch is (images, labels) or {{'A', 'B'}}, got {type(batch)}")


class GANTask(L.LightningModule):
    """Train a model of the GAN contract with two Adam optimisers.

    Args:
        model: the GAN (generator(s) + discriminator(s)).
        lr: both players' learning rate (``lr_d`` overrides the discriminator's).
        betas: Adam's betas.
        decay_start: fraction of the epochs after which the rates decay linearly to 0.
        fid_samples: test images (and samples) of the test FID; 0: none (the test loop then
            measures nothing); with ``translation="unpaired"``: the images per domain of
            ``fid_ab`` and ``fid_ba`` (at least 2).
        translation: the test scores of a translation model: ``"paired"`` (against the true
            B) or ``"unpaired"`` (FID against the target domain); None: none.
        domain_classes: with ``"unpaired"``: the Fashion-MNIST classes of the A and the B
            domain, to score the share of translations classified as the target's.

    Raises:
        CnnzooError: if the model lacks a method of the contract, or for an unknown
            ``translation``, or one the model cannot do (no ``translate``).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 2e-4,
        lr_d: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        decay_start: float = 1.0,
        fid_samples: int = 0,
        translation: str | None = None,
        domain_classes: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        missing = [m for m in REQUIRED if not hasattr(model, m)]
        if missing:
            raise CnnzooError(
                f"{type(model).__name__} is not a GAN of the cnnzoo contract: it has no "
                f"{', '.join(missing)}"
            )
        if not 0.0 <= decay_start <= 1.0:
            raise CnnzooError(f"decay_start must be in [0, 1], got {decay_start}")
        if translation is not None and translation not in TRANSLATION_SCORES:
            raise CnnzooError(
                f"translation scores are {' or '.join(TRANSLATION_SCORES)}, not {translation!r}"
            )
        if translation is not None and not hasattr(model, "translate"):
            raise CnnzooError(f"{type(model).__name__} does not translate: it has no translate()")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.automatic_optimization = False
        self._fid: TestFID | None = None
        self._scores: PairedTranslationScores | UnpairedTranslationScores | None = None

    def forward(self, batch: Any) -> Any:
        """Return the generator step's fakes for ``batch`` (no update)."""
        return self.model.generator_step(prepare(batch))[1]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()  # type: ignore[misc]
        data = prepare(batch)
        n = len(next(v for v in data.values() if isinstance(v, Tensor)))
        losses_g, fakes = self.model.generator_step(data)
        self._check(losses_g["loss"], "generator")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(losses_g["loss"])
        opt_g.step()
        losses_d = self.model.discriminator_step(data, fakes)
        self._check(losses_d["loss"], "discriminator")
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(losses_d["loss"])
        opt_d.step()
        for prefix, losses in (("g", losses_g), ("d", losses_d)):
            for name, value in losses.items():
                key = f"train/{prefix}_{name}"
                self.log(key, value.detach().float(), prog_bar=name == "loss", on_step=False,
                         on_epoch=True, batch_size=n)  # fmt: skip

    def _check(self, loss: Tensor, who: str) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self.global_step, self.current_epoch, float(loss))

    def _pools(self) -> dict[str, ImagePool]:
        found = ((f"{name}.{attr}", value) for name, module in self.named_modules()
                 for attr, value in vars(module).items())  # fmt: skip
        return {key: value for key, value in found if isinstance(value, ImagePool)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # CycleGAN's image pools: every process's, so a resumed run draws from the same history
        pools = {key: [t.cpu() for t in pool.images] for key, pool in self._pools().items()}
        if pools:
            checkpoint["image_pools"] = all_processes(self.trainer, pools)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("image_pools") or []
        trainer = self._trainer  # None when loaded outside a Trainer
        if trainer is not None and len(saved) == trainer.world_size:  # else they fill again
            for key, pool in self._pools().items():
                pool.images = [t.to(self.device) for t in saved[self.global_rank].get(key, [])]

    def _set_data_epoch(self, epoch: int) -> None:
        datasets = getattr(self.trainer, "datamodule", None)
        train = getattr(datasets, "splits", {}).get("train") if datasets is not None else None
        if hasattr(train, "set_epoch"):  # unpaired data: new partners every epoch
            train.set_epoch(epoch)

    def on_train_start(self) -> None:
        self._set_data_epoch(self.current_epoch)  # a resumed run: the partners of its epoch

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers() or []:  # type: ignore[union-attr]
            scheduler.step()
        self._set_data_epoch(self.current_epoch + 1)

    def on_test_epoch_start(self) -> None:
        samples = self.hparams.get("fid_samples", 0)
        self._fid = None
        self._scores = None
        translation = self.hparams.get("translation")
        if translation == "paired":
            self._scores = PairedTranslationScores(self.device)
        elif translation == "unpaired":
            directions = tuple(getattr(self.model, "directions", ("AB", "BA")))
            classes = self.hparams.get("domain_classes")
            self._scores = UnpairedTranslationScores(
                samples, self.device, self.trainer.world_size, directions,
                tuple(classes) if classes is not None else None,
            )  # fmt: skip
        elif samples > 0 and hasattr(self.model, "sample"):
            self._fid = TestFID(samples, self.device, self.trainer.world_size, self.global_rank)

    def translate_unit(self, source: Tensor, direction: str) -> Tensor:
        """Return the model's translation of a loaded batch (uint8 images or label maps) in
        ``direction``, as images in [0, 1]."""
        return ((self.model.translate(to_signed(source), direction).float() + 1) / 2).clamp(0, 1)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if self._scores is not None:
            if not isinstance(batch, dict):
                raise CnnzooError("translation scores need {'A', 'B'} test batches")
            self._scores.add(batch, self.translate_unit)
        if self._fid is not None:
            if not isinstance(batch, (tuple, list)):
                raise CnnzooError("the FID of a GAN needs (images, labels) test batches")
            labels = batch[1] if getattr(self.model, "num_classes", 0) else None
            self._fid.add_real(batch[0], labels)

    def on_test_epoch_end(self) -> None:
        if self._scores is not None:
            scores, self._scores = self._scores, None
            for name, value in scores.compute().items():
                count = name == "fid_samples"  # each rank's count: their sum is the total
                self.log(
                    f"test/{name}", value, sync_dist=True, reduce_fx="sum" if count else "mean"
                )
        if self._fid is None:
            return
        fid, self._fid = self._fid, None

        def generate(n: int, labels: Tensor | None, gen: torch.Generator) -> Tensor:
            return (self.model.sample(n, labels=labels, generator=gen).float() + 1) / 2

        log_test_fid(self, fid, generate)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_g = torch.optim.Adam(self.model.generator_parameters(), lr=hp.lr, betas=hp.betas)
        opt_d = torch.optim.Adam(
            self.model.discriminator_parameters(), lr=hp.lr_d or hp.lr, betas=hp.betas
        )
        epochs = max(1, int(self.trainer.max_epochs or 1))
        start = round(hp.decay_start * epochs)

        def factor(epoch: int) -> float:
            if epoch < start:
                return 1.0
            return max(0.0, 1.0 - (epoch - start + 1) / max(1, epochs - start + 1))

        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers
