"""The autoencoder pre-training experiment (tiny settings on the bundled mini Fashion-MNIST)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import cnnzoo.experiments.ae_pretraining as aep
from cnnzoo import CnnzooError
from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.transforms import normalize_batch, prepare_batch
from cnnzoo.experiments import list_experiments, run_experiment
from cnnzoo.registry import create_model
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.reconstruction import ReconstructionTask

TINY = aep.AEPretrainingSettings(
    latent=4, ae_steps=3, ae_batch_size=16, sizes=(10, 20), seeds=(0, 1), steps=2,
    batch_size=16, latents=(2, 4), strip_images=4, precision="32-true",
)  # fmt: skip


@pytest.fixture(scope="module")
def mini() -> aep.UnlabelledImages:
    return aep.UnlabelledImages("fashion-mnist-mini", batch_size=16)


@pytest.fixture(scope="module")
def trained_ae(mini):
    ae, metrics, strip = aep.train_autoencoder(TINY.latent, mini, TINY)
    return ae, metrics, strip


def test_ae_pretraining_is_listed():
    assert "ae-pretraining" in [e.name for e in list_experiments()]


def test_the_autoencoder_data_are_all_training_images_without_labels(mini):
    batch = next(iter(mini.train_dataloader()))
    assert isinstance(batch, torch.Tensor)  # not an (images, labels) pair
    assert batch.dtype == torch.uint8 and batch.shape == (16, 1, 28, 28)
    assert isinstance(mini.splits["train"][0], torch.Tensor)
    labelled = ClassificationData("fashion-mnist-mini", val_fraction=0, augment=False)
    # every training image (none held out, no class or per-class selection), same pixels
    assert torch.equal(mini.splits["train"].images, labelled.splits["train"].images)
    assert set(mini.splits) == {"train", "test"}
    assert (mini.mean, mini.std) == (labelled.spec.mean, labelled.spec.std)


def test_the_encoder_sees_the_classifiers_standardised_input(mini):
    torch.manual_seed(0)
    ae = create_model("conv_ae", latent=4, backbone="resnet20").eval()
    wrapped = aep.StandardisedInput(ae, mini.mean, mini.std)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = ae(normalize_batch(x, mini.mean, mini.std))
        assert torch.allclose(wrapped(x), expected)
        assert not torch.allclose(wrapped(x), ae(x), atol=1e-3)


def test_encoder_weights_reach_the_classifier_and_only_the_head_is_fresh(trained_ae):
    ae, _, _ = trained_ae
    encoder = ae.encoder_state()
    model, plan = aep.build_classifier("ae-finetune", 0, ae, TINY)
    scratch, _ = aep.build_classifier("scratch", 0, None, TINY)
    assert plan is None
    state, fresh = model.state_dict(), scratch.state_dict()
    assert set(state) - set(encoder) == {"fc.weight", "fc.bias"}
    for key, value in encoder.items():
        assert torch.equal(state[key], value), key
    # three Adam steps moved the encoder away from the (same-seed) random init ...
    assert not torch.equal(state["stem.conv.weight"], fresh["stem.conv.weight"])
    assert not torch.equal(state["stem.bn.running_mean"], fresh["stem.bn.running_mean"])
    # ... while the head is the scratch model's
    assert torch.equal(state["fc.weight"], fresh["fc.weight"])


def test_the_linear_probe_trains_the_head_only(trained_ae):
    ae, _, _ = trained_ae
    model, plan = aep.build_classifier("ae-linear", 1, ae, TINY)
    assert plan is not None and plan.strategy == "head"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    key = "stem.conv.weight"
    assert torch.equal(model.state_dict()[key], ae.encoder_state()[key])


def test_an_encoder_of_another_backbone_is_refused():
    ae = create_model("conv_ae", latent=4, backbone="convnet")
    with pytest.raises(CnnzooError, match="does not fit"):
        aep.transfer_encoder(ae, create_model("resnet20", num_classes=10, in_channels=1))
    with pytest.raises(CnnzooError, match="unknown method"):
        aep.build_classifier("finetune", 0, ae, TINY)


def test_autoencoder_metrics_and_strip(trained_ae):
    _, metrics, strip = trained_ae
    assert math.isfinite(metrics["test/psnr"]) and metrics["test/psnr"] > 0
    assert 0 < metrics["test/mse"] < 1
    assert strip.shape == (4, 1, 28, 28) and 0 <= float(strip.min()) <= float(strip.max()) <= 1


@pytest.mark.slow
def test_experiment_end_to_end_with_tiny_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(aep, "QUICK", TINY)
    monkeypatch.setattr(aep, "_dataset", lambda: "fashion-mnist-mini")
    batches = []
    original = ReconstructionTask.training_step

    def spy(self, batch, batch_idx):
        batches.append(batch)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ReconstructionTask, "training_step", spy)
    classifiers = []
    fit_and_test = aep.fit_and_test

    def fit_test_and_keep(task, data, *args, **kwargs):
        metrics = fit_and_test(task, data, *args, **kwargs)
        if isinstance(task, ClassificationTask):
            classifiers.append((task.model, data))
        return metrics

    monkeypatch.setattr(aep, "fit_and_test", fit_test_and_keep)
    result = run_experiment("ae-pretraining", out=tmp_path / "a", quick=True)

    # two autoencoders (latents 2 and 4) of 3 steps each, fed image tensors only
    assert len(batches) == 6
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.uint8 for b in batches)

    classifier = [r for r in result.rows if r["part"] == "classifier"]
    curve = [r for r in result.rows if r["part"] == "compression"]
    assert [(r["per_class"], r["method"]) for r in classifier] == [
        (n, m) for n in (10, 20) for m in ("scratch", "ae-finetune", "ae-linear")
    ]
    for row in classifier:
        assert row["seeds"] == 2 and len(row["runs"]) == 2
        assert row["mean"] == pytest.approx(sum(row["runs"]) / 2, abs=1e-4)
        # The text is formatted from the unrounded figures: equal to 3 decimals, +- one unit.
        mean_text, std_text = row["accuracy"].split(" ± ")
        assert abs(float(mean_text) - row["mean"]) <= 6e-4
        assert abs(float(std_text) - row["std"]) <= 6e-4
    # every row's seeds in order; one run (10/class, ae-finetune, seed 1) by hand: its
    # model's accuracy on the test images
    assert len(classifiers) == 6 * 2
    model, data = classifiers[3]
    test = data.splits["test"]
    with torch.no_grad():
        x = prepare_batch(test.images, data.spec.mean, data.spec.std)
        right = model.eval()(x).argmax(1) == test.labels
    assert classifier[1]["runs"][1] == pytest.approx(right.float().mean().item(), abs=1e-4)
    assert [r["latent"] for r in curve] == [2, 4]  # one point per bottleneck
    assert all(math.isfinite(r["psnr"]) and r["psnr"] > 0 for r in curve)

    out = tmp_path / "a"
    payload = json.loads((out / "results.json").read_text())
    assert payload["columns"] == aep.COLUMNS
    assert payload["figures"] == ["ae_pretraining.png", "ae_compression.png",
                                  "ae_reconstructions.png"]  # fmt: skip
    assert payload["settings"]["ae_images"] == 5000
    assert payload["settings"]["ae_labels"] == "none (images only)"
    for name in payload["figures"]:
        assert (out / name).stat().st_size > 5000
    markdown = (out / "results.md").read_text()
    assert "| " + " | ".join(aep.COLUMNS) + " |" in markdown
    assert "| classifier | 10 | ae-finetune |" in markdown
    assert "| compression |  | conv_ae (resnet20 encoder) |  | 2 |" in markdown
    assert "10/class: ae-finetune" in result.notes
