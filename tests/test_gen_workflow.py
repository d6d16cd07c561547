"""Autoencoders, VAE, GANs and translation end to end: cnnzoo train into a run directory,
pictures per epoch, sample and translate from the saved run, and errors of bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.translation import PairedFolders, parse_translation_data, sobel_edges
from cnnzoo.errors import CnnzooError
from cnnzoo.families.generative.evaluate import evaluate_reconstruction
from cnnzoo.workflows.sample import sample, translate
from cnnzoo.workflows.train import TrainConfig, train


def _cfg(model: str, out: Path, **overrides) -> TrainConfig:
    base = dict(model=model, data="fashion-mnist-mini", out=str(out), epochs=2, subset=256,
                batch_size=32, progress=False, accelerator="cpu", snapshots=4)  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def _rows(run: Path) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader((run / "metrics.csv").open()))


def test_denoising_autoencoder_run(tmp_path: Path) -> None:
    result = train(_cfg("conv_ae", tmp_path / "ae", latent=8, denoise="gaussian:0.3",
                        model_kwargs={"widths": [8, 16]}, epochs=3))  # fmt: skip
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["task"] == "reconstruction"
    assert 5 < metrics["metrics"]["test/psnr"] < 40 and 0 < metrics["metrics"]["test/ssim"] <= 1
    rows = _rows(result.run_dir)
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["kwargs"]["latent"] == 8 and spec["kwargs"]["image_size"] == 28
    assert (result.run_dir / "plots" / "samples" / "epoch_003.png").stat().st_size > 1000
    assert "denoise: gaussian:0.3" in (result.run_dir / "config.yaml").read_text()
    again = evaluate_reconstruction(result.run_dir, accelerator="cpu")
    assert again["psnr"] == pytest.approx(metrics["metrics"]["test/psnr"], abs=1e-4)


def test_vae_run_then_sample_and_interpolate(tmp_path: Path) -> None:
    result = train(_cfg("vae", tmp_path / "vae", latent=4, model_kwargs={"widths": [8, 16]}))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["test/elbo"] < 0 and metrics["test/kl"] >= 0
    assert metrics["test/elbo"] == pytest.approx(-(metrics["test/recon"] + metrics["test/kl"]),
                                                 rel=1e-3)  # fmt: skip
    grid = sample(result.run_dir, tmp_path / "g.png", n=16)
    assert np.asarray(Image.open(grid)).shape[:2] == (2 + 4 * 30, 2 + 4 * 30)
    rows = sample(result.run_dir, tmp_path / "i.png", n=10, interpolate=True, steps=5)
    assert np.asarray(Image.open(rows)).shape[:2] == (2 + 2 * 30, 2 + 5 * 30)
    with pytest.raises(CnnzooError, match="exists"):
        sample(result.run_dir, tmp_path / "g.png", n=16)


def test_conditional_dcgan_run_and_sample(tmp_path: Path) -> None:
    result = train(_cfg("dcgan", tmp_path / "gan", latent=16, model_kwargs={
        "ngf": 8, "ndf": 8, "num_classes": 10}))  # fmt: skip
    rows = _rows(result.run_dir)
    assert {"train/g_loss", "train/d_loss"} <= set(rows[0])
    assert all(float(r["train/d_loss"]) > 0 for r in rows)
    assert (result.run_dir / "plots" / "samples.png").is_file()
    grid = sample(result.run_dir, tmp_path / "s.png", n=4, label=3)
    assert np.asarray(Image.open(grid)).shape[:2] == (2 + 2 * 30, 2 + 2 * 30)
    with pytest.raises(CnnzooError, match="conditional on 10 classes"):
        sample(result.run_dir, tmp_path / "t.png", n=4, label=12)


def test_cyclegan_on_builtin_unpaired_task_then_translate(tmp_path: Path) -> None:
    tiny = {"ngf": 4, "ndf": 4, "n_blocks": 1}
    result = train(_cfg("cyclegan", tmp_path / "cg", data="fmnist-shoes", epochs=1, subset=16,
                        batch_size=4, model_kwargs=tiny))  # fmt: skip
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["task"] == "translation" and spec["kwargs"]["in_channels"] == 1
    image = tmp_path / "shoe.png"
    Image.fromarray(np.full((40, 30), 128, dtype=np.uint8)).save(image)
    [out] = translate(result.run_dir, [image], tmp_path / "boot.png", direction="BA")
    assert Image.open(out).size == (30, 40)  # the image's own size
    with pytest.raises(CnnzooError, match="not 'AC'"):
        translate(result.run_dir, [image], tmp_path / "x.png", direction="AC")


def test_pix2pix_on_paired_folders(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for split, n in (("train", 8), ("test", 2)):
        for i in range(n):
            for side, value in (("A", 30 * i), ("B", 255 - 20 * i)):
                folder = root / f"{split}_{side}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(
                    folder / f"{i}.png")  # fmt: skip
    tiny = {"ngf": 4, "ndf": 4, "depth": 3}
    result = train(_cfg("pix2pix", tmp_path / "p2p", data=f"paired:{root}", epochs=1,
                        batch_size=4, subset=None, model_kwargs=tiny))  # fmt: skip
    assert json.loads((result.run_dir / "model.json").read_text())["kwargs"]["in_channels"] == 3
    assert (result.run_dir / "plots" / "samples.png").is_file()


def test_paired_folders_report_mismatches(tmp_path: Path) -> None:
    a, b = tmp_path / "train_A", tmp_path / "train_B"
    a.mkdir()
    b.mkdir()
    Image.new("RGB", (8, 8)).save(a / "x.png")
    Image.new("RGB", (8, 8)).save(b / "y.png")
    with pytest.raises(CnnzooError, match="x.png has no partner"):
        PairedFolders(a, b)
    Image.new("RGB", (8, 8)).save(a / "y.png")
    (a / "x.png").unlink()
    Image.new("RGB", (9, 8)).save(a / "y.png")
    with pytest.raises(CnnzooError, match="differ in size"):
        PairedFolders(a, b)[0]


def test_translation_specs_and_edges() -> None:
    assert parse_translation_data("fmnist-edges") == ("fmnist-edges", "")
    assert parse_translation_data("unpaired:/d") == ("unpaired", "/d")
    with pytest.raises(CnnzooError, match="paired:PATH"):
        parse_translation_data("horses")
    square = torch.zeros(1, 1, 9, 9, dtype=torch.uint8)
    square[..., 3:6, 3:6] = 255
    edges = sobel_edges(square)
    assert edges[0, 0, 4, 4] == 0 and edges[0, 0, 3, 4] == 255 and edges[0, 0, 0, 0] == 0


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        ("vae", {"denoise": "gaussian:0.1"}, "--denoise applies to autoencoders"),
        ("conv_ae", {"denoise": "blur:2"}, "blur:2"),
        (
            "dcgan",
            {"classes": [0, 1]},
            "--classes is a classification option; dcgan is a generation model",
        ),
        ("cyclegan", {"data": "horses"}, "not understood"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path: Path, model, overrides, message) -> None:
    with pytest.raises(CnnzooError, match=message):
        train(_cfg(model, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()
