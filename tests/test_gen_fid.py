"""FID with cnnzoo's shipped Fashion-MNIST features: the extractor (weights in the package,
a working classifier), the distance's behaviour (zero for a set with itself, growing with
corruption), bad inputs, and ``test/fid`` written by VAE and DCGAN runs and ``cnnzoo eval``."""

from __future__ import annotations

import json
import logging
import math
from importlib import resources
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from cnnzoo.data.fashion_mnist import load_fashion_mnist_mini
from cnnzoo.errors import CnnzooError
from cnnzoo.families.generative.evaluate import evaluate_reconstruction
from cnnzoo.families.generative.job import fid_samples_for
from cnnzoo.models.generative.vae import VAE
from cnnzoo.tasks.fid import (
    FID_NAME,
    WEIGHTS_FILE,
    as_fid_images,
    compute_fid,
    extractor_metadata,
    fid_extractor,
    fid_metric,
)
from cnnzoo.workflows.train import TrainConfig, train


@pytest.fixture(scope="module")
def mini_test() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_fashion_mnist_mini("test")
    return images.float() / 255, labels


def test_extractor_weights_ship_with_the_package_small_and_described() -> None:
    path = resources.files("cnnzoo.data").joinpath("bundled", WEIGHTS_FILE)
    with resources.as_file(path) as file:
        assert file.is_file() and file.stat().st_size < 1_000_000
    meta = extractor_metadata()
    assert meta["model"] == "convnet" and float(meta["test_accuracy"]) >= 0.85
    assert {"seed", "kwargs", "date"} <= set(meta)


def test_extractor_classifies_the_mini_test_set(mini_test) -> None:
    images, labels = mini_test
    extractor = fid_extractor()
    with torch.no_grad():
        accuracy = (extractor.logits(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.85  # the shipped weights are a trained Fashion-MNIST classifier


def test_extractor_is_frozen_and_gives_penultimate_features(mini_test) -> None:
    extractor = fid_extractor()
    extractor.train()  # torchmetrics / Lightning may call this: dropout must stay off
    assert not extractor.training and not extractor.classifier.fc1[3].training
    assert all(not p.requires_grad for p in extractor.parameters())
    x = mini_test[0][:8]
    with torch.no_grad():
        a, b = extractor(x), extractor(x)
    assert extractor.num_features == 128 and a.shape == (8, 128)
    assert torch.equal(a, b) and (a >= 0).all()  # after ReLU, deterministic
    uint8 = (x * 255).round().to(torch.uint8)
    with torch.no_grad():
        assert torch.allclose(extractor(uint8), a, atol=1e-4)


def test_fid_of_a_set_with_itself_is_zero_and_of_two_real_halves_is_small(mini_test) -> None:
    images = mini_test[0]
    assert abs(compute_fid(images, images)) < 1e-3
    halves = compute_fid(images[::2], images[1::2])
    noisy = (images[1::2] + 0.3 * torch.randn(images[1::2].shape,
             generator=torch.Generator().manual_seed(0))).clamp(0, 1)  # fmt: skip
    assert 0 < halves < compute_fid(images[::2], noisy) / 5


@pytest.mark.parametrize("kind", ["noise", "blur"])
def test_fid_grows_with_the_corruption(mini_test, kind: str) -> None:
    images = mini_test[0][:500]
    gen = torch.Generator().manual_seed(1)
    fids = []
    for level in (0.05, 0.15, 0.4) if kind == "noise" else (0.6, 1.2, 2.4):
        if kind == "noise":
            corrupted = (images + level * torch.randn(images.shape, generator=gen)).clamp(0, 1)
        else:
            corrupted = TF.gaussian_blur(images, kernel_size=9, sigma=level)
        fids.append(compute_fid(images, corrupted))
    assert fids[0] > 0 and fids[0] < fids[1] < fids[2]


def test_fid_resizes_other_sizes_of_grey_images(mini_test) -> None:
    images = mini_test[0][:300]
    larger = torch.nn.functional.interpolate(images, size=(56, 56), mode="nearest")
    assert as_fid_images(larger).shape == (300, 1, 28, 28)
    assert compute_fid(images, larger) < compute_fid(images, TF.gaussian_blur(images, 9, 1.2))


def test_bad_inputs_are_clear_errors(mini_test) -> None:
    images = mini_test[0][:10]
    with pytest.raises(CnnzooError, match=r"\(N, 1, 28, 28\).*\(10, 3, 28, 28\)"):
        compute_fid(images, images.expand(-1, 3, -1, -1))
    with pytest.raises(CnnzooError, match=r"\[0, 1\]"):
        compute_fid(images, images * 2 - 1)  # a GAN's tanh range
    with pytest.raises(CnnzooError, match="at least 2 fake"):
        compute_fid(images, images[:1])
    with pytest.raises(CnnzooError, match="grey images"):
        compute_fid(images[0], images)


def test_metric_is_a_torchmetrics_fid_on_the_shipped_features(mini_test) -> None:
    metric = fid_metric()
    assert type(metric).__name__ == "FrechetInceptionDistance"
    images = mini_test[0][:200]
    metric.update(images[:100], real=True)
    metric.update(images[100:], real=False)
    assert float(metric.compute()) == pytest.approx(compute_fid(images[:100], images[100:]),
                                                    rel=1e-4)  # fmt: skip


def test_fid_is_skipped_with_a_warning_for_colour_data(caplog) -> None:
    vae = VAE(in_channels=3, image_size=28, latent=2, widths=(4, 8))
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        samples, note = fid_samples_for(vae, "generation", 3, True, 2000)
    assert samples == 0 and "3 channels" in note and FID_NAME in caplog.text
    assert fid_samples_for(vae, "generation", 1, True, 2000) == (2000, None)
    assert fid_samples_for(vae, "reconstruction", 1, True, 2000)[0] == 0


def _cfg(model: str, out: Path, **overrides) -> TrainConfig:
    base = dict(model=model, data="fashion-mnist-mini", out=str(out), epochs=1, subset=128,
                batch_size=32, progress=False, accelerator="cpu", snapshots=0)  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())["metrics"]


def test_vae_run_writes_test_fid_that_eval_reproduces(tmp_path: Path) -> None:
    result = train(_cfg("vae", tmp_path / "vae", latent=4, model_kwargs={"widths": [8, 16]}))
    metrics = _metrics(result.run_dir)
    assert math.isfinite(metrics["test/fid"]) and metrics["test/fid"] > 0
    assert metrics["test/fid_samples"] == 1000  # the mini test set, below the 2000 default
    assert metrics["test/elbo"] < 0  # the existing keys stay
    again = evaluate_reconstruction(result.run_dir, accelerator="cpu", fid_samples=2000)
    assert again["fid"] == pytest.approx(metrics["test/fid"], rel=1e-3)
    fewer = evaluate_reconstruction(result.run_dir, accelerator="cpu", fid_samples=300)
    assert fewer["fid_samples"] == 300 and fewer["fid"] != pytest.approx(again["fid"])


def test_dcgan_run_writes_test_fid_and_eval_measures_it(tmp_path: Path) -> None:
    result = train(_cfg("dcgan", tmp_path / "gan", latent=8, model_kwargs={
        "ngf": 8, "ndf": 8, "num_classes": 10}))  # fmt: skip
    metrics = _metrics(result.run_dir)
    assert math.isfinite(metrics["test/fid"]) and metrics["test/fid"] > 0
    assert metrics["test/fid_samples"] == 1000
    assert "FID (cnnzoo-fmnist features)" in (result.run_dir / "config.yaml").read_text()
    again = evaluate_reconstruction(result.run_dir, accelerator="cpu")
    assert set(again) == {"fid", "fid_samples"}
    assert again["fid"] == pytest.approx(metrics["test/fid"], rel=1e-3)
    with pytest.raises(CnnzooError, match="FID only"):
        evaluate_reconstruction(result.run_dir, accelerator="cpu", fid_samples=0)
