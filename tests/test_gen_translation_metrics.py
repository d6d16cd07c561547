"""Test metrics of translation runs: L1, PSNR and SSIM against the true targets (paired data),
FID against the target domain and the classifier score (unpaired data), written by
``cnnzoo train`` into metrics.json and reproduced by ``cnnzoo eval``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from typer.testing import CliRunner

from cnnzoo.cli import app
from cnnzoo.data.translation import SHOES_CLASSES, TranslationData, builtin_task
from cnnzoo.errors import CnnzooError
from cnnzoo.families.generative.evaluate import evaluate_reconstruction, evaluate_translation
from cnnzoo.families.generative.job import translation_scores_for
from cnnzoo.tasks.fid import compute_fid, fid_extractor
from cnnzoo.tasks.gan import GANTask, to_signed
from cnnzoo.tasks.translation_metrics import UnpairedTranslationScores, grey
from cnnzoo.workflows.train import TrainConfig, train

SNEAKER, ANKLE_BOOT = SHOES_CLASSES


class StubTranslator(nn.Module):
    """A model of the GAN contract whose translations ([-1, 1]) a function gives."""

    def __init__(
        self, fn: Callable[[Tensor, str], Tensor], directions: tuple[str, ...] = ("AB", "BA")
    ) -> None:
        super().__init__()
        self.fn = fn
        self.directions = directions

    def translate(self, x: Tensor, direction: str = "AB") -> Tensor:
        return self.fn(x, direction)

    def generator_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError  # never trained

    discriminator_parameters = generator_step = discriminator_step = generator_parameters


class Bank:
    """Hands out real images of the target domain in order, as a perfect-looking translator
    of unpaired data would (held-out images: never the test images themselves)."""

    def __init__(self, ab: Tensor, ba: Tensor) -> None:
        self.images = {"AB": ab, "BA": ba}
        self.next = {"AB": 0, "BA": 0}

    def __call__(self, x: Tensor, direction: str) -> Tensor:
        start = self.next[direction]
        self.next[direction] += len(x)
        return to_signed(self.images[direction][start : start + len(x)])


def _test_scores(model: nn.Module, dataset: Dataset, **task_args) -> dict[str, float]:
    """Run GANTask's test loop over ``dataset`` in order; return the ``test/`` metrics."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    task = GANTask(model, **task_args)
    trainer.test(task, dataloaders=DataLoader(dataset, batch_size=50), verbose=False)
    return {k[5:]: float(v) for k, v in trainer.callback_metrics.items()}


# -- grey for the FID ----------------------------------------------------------------------
def test_grey_is_itu_r_601_luma_and_keeps_grey_images() -> None:
    rgb = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    assert grey(rgb).item() == pytest.approx(0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6)
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert grey(red).dtype == torch.uint8 and grey(red).item() == 76  # 0.299 * 255 = 76.2
    one = torch.rand(2, 1, 5, 5)
    assert grey(one) is one
    with pytest.raises(CnnzooError, match=r"1 or 3"):
        grey(torch.rand(2, 4, 5, 5))


# -- paired: L1, PSNR, SSIM ----------------------------------------------------------------
def test_perfect_translator_scores_zero_l1_and_the_top_psnr_and_ssim() -> None:
    items = builtin_task("fmnist-edges", "test", limit=100).b
    pairs = builtin_task("fmnist-edges", "test", limit=100)
    pairs.a, pairs.b = items, 255 - items  # B is the negative of A ...
    perfect = StubTranslator(lambda x, d: -x)  # ... and -x in [-1, 1] is exactly that
    scores = _test_scores(perfect, pairs, translation="paired")
    assert set(scores) == {"l1", "psnr", "ssim"}
    assert scores["l1"] == pytest.approx(0, abs=1e-6)
    assert scores["psnr"] > 100  # float rounding only: an exact match is +inf dB
    assert scores["ssim"] == pytest.approx(1, abs=1e-4)


def test_identity_translator_on_edges_scores_the_independent_values() -> None:
    pairs = builtin_task("fmnist-edges", "test", limit=200)
    scores = _test_scores(StubTranslator(lambda x, d: x), pairs, translation="paired")
    a, b = pairs.a.double() / 255, pairs.b.double() / 255
    assert scores["l1"] == pytest.approx(float((a - b).abs().mean()), rel=1e-5)
    mse = float((a - b).square().mean())  # pooled over all pixels, as the reconstruction task
    assert scores["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert scores["l1"] > 0.1 and scores["psnr"] < 15 and scores["ssim"] < 0.5


# -- unpaired: FID and the classifier score ------------------------------------------------
@pytest.fixture(scope="module")
def shoes() -> dict[str, Tensor | Dataset]:
    train_split = builtin_task("fmnist-shoes", "train")
    return {"test": builtin_task("fmnist-shoes", "test"), "boots": train_split.b[:200],
            "sneakers": train_split.a[:200]}  # fmt: skip


def test_real_target_images_as_translations_score_the_classifiers_accuracy(shoes) -> None:
    bank = StubTranslator(Bank(ab=shoes["boots"], ba=shoes["sneakers"]))
    scores = _test_scores(bank, shoes["test"], translation="unpaired", fid_samples=200,
                          domain_classes=SHOES_CLASSES)  # fmt: skip
    n = int(scores["fid_samples"])
    assert n == min(200, *shoes["test"].domain_sizes)
    extractor = fid_extractor()
    with torch.no_grad():
        predicted = {d: extractor.logits(shoes[d][:n]).argmax(1) for d in ("boots", "sneakers")}
    boot_accuracy = float((predicted["boots"] == ANKLE_BOOT).float().mean())
    sneaker_accuracy = float((predicted["sneakers"] == SNEAKER).float().mean())
    assert scores["target_class_ab"] == pytest.approx(boot_accuracy, abs=0.011)
    assert scores["target_class_ba"] == pytest.approx(sneaker_accuracy, abs=0.011)
    assert scores["target_class_ab"] > 0.8 and scores["target_class_ba"] > 0.8


def test_untranslated_images_are_rarely_the_target_class_and_far_in_fid(shoes) -> None:
    bank = StubTranslator(Bank(ab=shoes["boots"], ba=shoes["sneakers"]))
    args = {"translation": "unpaired", "fid_samples": 200, "domain_classes": SHOES_CLASSES}
    real = _test_scores(bank, shoes["test"], **args)
    identity = _test_scores(StubTranslator(lambda x, d: to_signed(x)), shoes["test"], **args)
    assert identity["target_class_ab"] < 0.1 and identity["target_class_ba"] < 0.1
    # real B vs other real B (disjoint sets) against A vs B; the bundled mini set (100 images
    # per class) gives 2 to 3.3 vs about 150
    assert real["fid_ab"] < 8 and identity["fid_ab"] > 15 * real["fid_ab"]
    assert real["fid_ba"] < 8 and identity["fid_ba"] > 15 * real["fid_ba"]


def test_fid_ab_is_the_fid_of_the_translations_against_the_test_b_images(shoes) -> None:
    bank = StubTranslator(Bank(ab=shoes["boots"], ba=shoes["sneakers"]))
    scores = _test_scores(bank, shoes["test"], translation="unpaired", fid_samples=100)
    assert "target_class_ab" not in scores  # no domain classes given
    test_b = torch.stack([shoes["test"][i]["B"] for i in range(100)])
    assert scores["fid_ab"] == pytest.approx(compute_fid(test_b, shoes["boots"][:100]), rel=1e-3)


def test_one_way_models_get_fid_ab_only(shoes) -> None:
    one_way = StubTranslator(lambda x, d: to_signed(x), directions=("AB",))
    scores = _test_scores(one_way, shoes["test"], translation="unpaired", fid_samples=50)
    assert set(scores) == {"fid_ab", "fid_samples"}


def test_colour_images_enter_the_fid_as_luma() -> None:
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(40, 3, 28, 28, generator=g) for _ in range(2))
    scores = UnpairedTranslationScores(40, directions=("AB",))
    scores.update(real, real, fake, None)
    assert scores.compute()["fid_ab"] == pytest.approx(
        compute_fid(grey(real), grey(fake)), rel=1e-3
    )
    assert compute_fid(real[:, :1], fake[:, :1]) != pytest.approx(scores.compute()["fid_ab"])


def _unpaired_folder(root: Path, test_b: int) -> str:
    for folder, n in (("trainA", 2), ("trainB", 2), ("testA", 3), ("testB", test_b)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(
                root / folder / f"{i}.png")  # fmt: skip
    return f"unpaired:{root}"


def test_which_scores_each_data_get(tmp_path: Path, caplog) -> None:
    assert translation_scores_for(TranslationData("fmnist-edges", subset=1), "test", 2000) == (
        "paired", 0, None)  # fmt: skip
    three = TranslationData(_unpaired_folder(tmp_path / "three", 3))
    assert translation_scores_for(three, "test", 2000) == ("unpaired", 3, None)
    assert translation_scores_for(three, "test", 2) == ("unpaired", 2, None)
    assert translation_scores_for(three, "test", 0) == (None, 0, None)
    one = TranslationData(_unpaired_folder(tmp_path / "one", 1))
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        scores, samples, note = translation_scores_for(one, "test", 2000)
    assert (scores, samples) == (None, 0) and "fewer than 2" in note and note in caplog.text


# -- runs: metrics.json, cnnzoo eval -------------------------------------------------------
def _cfg(model: str, out: Path, **overrides) -> TrainConfig:
    base = dict(model=model, out=str(out), epochs=1, progress=False, accelerator="cpu",
                snapshots=0)  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())["metrics"]


def test_pix2pix_run_writes_paired_scores_that_eval_reproduces(tmp_path: Path) -> None:
    result = train(_cfg("pix2pix", tmp_path / "p2p", data="fmnist-edges", subset=64,
                        batch_size=64, model_kwargs={"ngf": 4, "ndf": 4, "depth": 3}))  # fmt: skip
    metrics = _metrics(result.run_dir)
    assert {"test/l1", "test/psnr", "test/ssim"} <= set(metrics)
    assert 0 < metrics["test/l1"] < 1 and 0 < metrics["test/psnr"] < 40
    assert -1 <= metrics["test/ssim"] < 1
    again = evaluate_translation(result.run_dir, accelerator="cpu")
    assert set(again) == {"l1", "psnr", "ssim"}
    for name, value in again.items():
        assert value == pytest.approx(metrics[f"test/{name}"], rel=1e-4)
    with pytest.raises(CnnzooError, match="use evaluate_translation"):
        evaluate_reconstruction(result.run_dir, accelerator="cpu")


def test_cyclegan_run_writes_fids_and_class_scores_that_eval_reproduces(tmp_path: Path) -> None:
    result = train(_cfg("cyclegan", tmp_path / "cg", data="fmnist-shoes", subset=16,
                        batch_size=16, fid_samples=100,
                        model_kwargs={"ngf": 4, "ndf": 4, "n_blocks": 1}))  # fmt: skip
    metrics = _metrics(result.run_dir)
    assert metrics["test/fid_samples"] == 100
    assert metrics["test/fid_ab"] > 0 and metrics["test/fid_ba"] > 0
    assert 0 <= metrics["test/target_class_ab"] <= 1 and 0 <= metrics["test/target_class_ba"] <= 1
    assert "ITU-R BT.601" in (result.run_dir / "config.yaml").read_text()
    again = evaluate_translation(result.run_dir, accelerator="cpu", fid_samples=100)
    assert set(again) == {"fid_ab", "fid_ba", "fid_samples", "target_class_ab",
                          "target_class_ba"}  # fmt: skip
    for name, value in again.items():
        assert value == pytest.approx(metrics[f"test/{name}"], rel=1e-3)
    with pytest.raises(CnnzooError, match="FID only"):
        evaluate_translation(result.run_dir, accelerator="cpu", fid_samples=0)
    printed = CliRunner().invoke(app, ["eval", str(result.run_dir), "--fid-samples", "100"])
    assert printed.exit_code == 0, printed.output
    assert "fid_ab" in printed.output and "target_class_ba" in printed.output
    assert "100 images each" in printed.output
