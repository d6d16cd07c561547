"""Variational autoencoder (vae) and DCGAN (dcgan), including the adversarial contract."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.models.generative import dcgan as dcgan_module  # registers dcgan
from cnnzoo.models.generative import vae as vae_module  # registers vae
from cnnzoo.models.generative.vae import kl_divergence


def rectangles(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """``n`` images in [0, 1]: a bright rectangle of random place and size on a dark ground."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 1, size, size), 0.05)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        images[i, :, top : top + h, left : left + w] = 0.95
    return images


def tiny_vae(**kwargs) -> vae_module.VAE:
    torch.manual_seed(0)
    return cnnzoo.create_model("vae", **{"widths": (8, 16), "latent": 4, **kwargs})


def tiny_gan(**kwargs) -> dcgan_module.DCGAN:
    torch.manual_seed(0)
    return cnnzoo.create_model("dcgan", **{"ngf": 8, "ndf": 8, "latent": 16, **kwargs})


def gan_batch(n: int = 8, size: int = 28) -> dict[str, torch.Tensor]:
    return {"image": rectangles(n, size) * 2 - 1, "label": torch.arange(n) % 10}


# -- registry -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vae", "dcgan"])
def test_generative_models_are_registered_for_generation(name):
    assert cnnzoo.registry.model_info(name).task == "generation"
    assert name in cnnzoo.registry.list_models("generation")


# -- VAE ------------------------------------------------------------------------------------
def test_kl_divergence_is_the_closed_form():
    mu = torch.tensor([[1.0, 0.0], [0.5, -2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 1.0]])
    by_hand = [
        0.5 * (1 + 0) + 0.5 * (2 - 1 - math.log(2.0)),
        0.5 * (0.25 + 0.5 - 1 - math.log(0.5)) + 0.5 * (4 + math.e - 1 - 1),
    ]
    assert kl_divergence(mu, logvar).tolist() == pytest.approx(by_hand, rel=1e-6)


def test_kl_divergence_of_the_prior_is_zero():
    assert torch.equal(kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))


def test_vae_forward_returns_logits_and_posterior():
    out = tiny_vae(latent=6)(rectangles(3))
    assert out["logits"].shape == (3, 1, 28, 28)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (3, 6)


def test_vae_loss_parts_add_up():
    model = tiny_vae(beta=4.0)
    x = rectangles(4)
    with torch.no_grad():
        out = model(x)
        parts = model.loss(out, x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], x, reduction="sum")
    assert float(parts["recon"]) == pytest.approx(float(bce) / 4, rel=1e-5)
    kl = float(kl_divergence(out["mu"], out["logvar"]).mean())
    assert float(parts["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(parts["loss"]) == pytest.approx(float(parts["recon"]) + 4 * kl, rel=1e-5)
    assert float(parts["elbo"]) == pytest.approx(-(float(parts["recon"]) + kl), rel=1e-5)
    assert float(model.loss(out, x, beta=0.0)["loss"]) == pytest.approx(float(parts["recon"]))


def test_vae_elbo_increases_with_training():
    model = tiny_vae()
    x = rectangles(8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    elbos = []
    for _ in range(30):
        parts = model.loss(model(x), x)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        elbos.append(float(parts["elbo"]))
    # Nats per image: ~545 (784 pixels at ~0.69) at the start; a clear gain over 30 steps.
    assert sum(elbos[-5:]) / 5 > elbos[0] + 100


def test_vae_sample_shape_range_and_reproducibility():
    model = tiny_vae()
    a = model.sample(5, generator=torch.Generator().manual_seed(0))
    b = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5, 1, 28, 28)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert model.training  # sampling does not leave the model in eval mode


def test_vae_interpolation_ends_at_the_decoded_posterior_means():
    model = tiny_vae().eval()
    x = rectangles(2)
    path = model.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5, 1, 28, 28)
    with torch.no_grad():
        mu_a = model.encode(x[:1])[0]
        mu_b = model.encode(x[1:])[0]
        assert torch.allclose(path[0], model.decode(mu_a)[0], atol=1e-6)
        assert torch.allclose(path[-1], model.decode(mu_b)[0], atol=1e-6)
    assert not torch.allclose(path[0], path[-1])


def test_vae_reconstruct_decodes_the_posterior_mean():
    model = tiny_vae().eval()
    x = rectangles(2)
    with torch.no_grad():
        expected = model.decode(model.encode(x)[0])
    assert torch.allclose(model.reconstruct(x), expected)


@pytest.mark.parametrize(
    "kwargs", [{"latent": 0}, {"beta": -1.0}, {"image_size": 2}, {"widths": (8, 0)}]
)
def test_vae_bad_arguments_raise(kwargs):
    with pytest.raises(CnnzooError):
        tiny_vae(**kwargs)


def test_vae_interpolate_needs_two_steps():
    with pytest.raises(CnnzooError, match="steps"):
        tiny_vae().interpolate(rectangles(1)[0], rectangles(1)[0], steps=1)


# -- DCGAN: architecture --------------------------------------------------------------------
@pytest.mark.parametrize("size", [28, 32, 64])
def test_generator_output_shape_and_tanh_range(size):
    model = tiny_gan(image_size=size, in_channels=3)
    with torch.no_grad():  # a huge output layer: only the tanh keeps the values bounded
        model.generator.up[-1].deconv.weight.mul_(1e4)
        fake = model(torch.randn(4, 16))
    assert fake.shape == (4, 3, size, size)
    assert float(fake.min()) >= -1 and float(fake.max()) <= 1
    assert float(fake.abs().max()) > 0.99


@pytest.mark.parametrize("size", [28, 32, 64])
def test_discriminator_gives_one_logit_per_image(size):
    model = tiny_gan(image_size=size)
    assert model.discriminator(torch.rand(5, 1, size, size) * 2 - 1).shape == (5,)


def test_dcgan_initialisation_follows_the_paper():
    model = tiny_gan(ngf=32, ndf=32)
    convs = [
        m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert float(weights.std()) == pytest.approx(0.02, rel=0.1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    scales = torch.cat([m.weight.detach() for m in bns])
    assert float(scales.mean()) == pytest.approx(1.0, abs=0.01)
    assert 0 < float(scales.std()) < 0.04


def test_discriminator_has_no_batch_norm_on_its_input_layer():
    first = tiny_gan().discriminator.features[0]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in first.modules())
    assert isinstance(first.act, torch.nn.LeakyReLU) and first.act.negative_slope == 0.2


# -- DCGAN: the adversarial contract --------------------------------------------------------
def test_parameter_groups_split_the_model():
    model = tiny_gan()
    g, d = model.generator_parameters(), model.discriminator_parameters()
    assert len(g) + len(d) == len(list(model.parameters()))
    assert not {id(p) for p in g} & {id(p) for p in d}


def test_generator_step_returns_a_finite_loss_and_fakes():
    model = tiny_gan()
    losses, fakes = model.generator_step(gan_batch())
    assert {"loss", "adversarial", "d_fake"} <= set(losses)
    assert torch.isfinite(losses["loss"]) and losses["loss"].requires_grad
    assert fakes["image"].shape == (8, 1, 28, 28)
    # Non-saturating loss: -mean log D(G(z)), so exp(-loss) is a geometric mean of D(G(z)).
    assert 0 < float(losses["loss"].detach()) < 5


def test_generator_loss_reaches_the_generator_only():
    model = tiny_gan()
    losses, _ = model.generator_step(gan_batch())
    losses["loss"].backward()
    assert all(p.grad is None for p in model.discriminator_parameters())
    assert all(p.grad is not None for p in model.generator_parameters())
    assert all(p.requires_grad for p in model.discriminator_parameters())


def test_discriminator_step_detaches_the_fakes():
    model = tiny_gan()
    batch = gan_batch()
    _, fakes = model.generator_step(batch)
    out = model.discriminator_step(batch, fakes)
    assert {"loss", "d_real", "d_fake"} <= set(out)
    assert torch.isfinite(out["loss"])
    assert 0 < float(out["d_real"]) < 1 and 0 < float(out["d_fake"]) < 1
    out["loss"].backward()
    assert all(p.grad is None for p in model.generator_parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator_parameters()
    )


def adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def test_alternating_steps_change_both_networks():
    model = tiny_gan()
    g_opt, d_opt = adam(model.generator_parameters()), adam(model.discriminator_parameters())
    g_before = [p.detach().clone() for p in model.generator_parameters()]
    d_before = [p.detach().clone() for p in model.discriminator_parameters()]
    batch = gan_batch()
    for _ in range(3):
        losses, fakes = model.generator_step(batch)
        g_opt.zero_grad()
        losses["loss"].backward()
        g_opt.step()
        d_losses = model.discriminator_step(batch, fakes)
        d_opt.zero_grad()
        d_losses["loss"].backward()
        d_opt.step()
        assert torch.isfinite(losses["loss"]) and torch.isfinite(d_losses["loss"])
    g_after, d_after = model.generator_parameters(), model.discriminator_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(g_before, g_after, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d_before, d_after, strict=True))


def test_discriminator_only_steps_lower_its_loss_and_separate_real_from_fake():
    model = tiny_gan()
    d_opt = adam(model.discriminator_parameters())
    batch = gan_batch()
    _, fakes = model.generator_step(batch)
    history = []
    for _ in range(8):
        out = model.discriminator_step(batch, fakes)
        d_opt.zero_grad()
        out["loss"].backward()
        d_opt.step()
        history.append(out)
    assert float(history[-1]["loss"].detach()) < float(history[0]["loss"].detach()) - 0.1
    assert float(history[-1]["d_real"]) > float(history[-1]["d_fake"])


# -- DCGAN: sampling and conditioning -------------------------------------------------------
def test_unconditional_sample_shape_range_and_reproducibility():
    model = tiny_gan(image_size=32)
    a = model.sample(3, generator=torch.Generator().manual_seed(0))
    b = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 32, 32)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert model.training


def test_conditional_samples_depend_on_the_labels():
    model = tiny_gan(num_classes=10)
    zeros = model.sample(
        4, labels=torch.zeros(4, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    ones = model.sample(
        4, labels=torch.ones(4, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    again = model.sample(
        4, labels=torch.zeros(4, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(zeros, again)  # same z, same labels
    # Same z, other labels: a difference of the order of the images themselves.
    assert float((zeros - ones).abs().max()) > 0.2 * float(zeros.abs().max())


def test_conditional_discriminator_depends_on_the_labels():
    model = tiny_gan(num_classes=10).eval()
    x = rectangles(4) * 2 - 1
    a = model.discriminator(x, torch.zeros(4, dtype=torch.long))
    b = model.discriminator(x, torch.full((4,), 3))
    assert not torch.allclose(a, b)


def test_conditional_steps_use_the_batch_labels():
    model = tiny_gan(num_classes=10)
    batch = gan_batch()
    _, fakes = model.generator_step(batch)
    assert torch.equal(fakes["label"], batch["label"])
    assert torch.isfinite(model.discriminator_step(batch, fakes)["loss"])


def test_conditional_model_needs_valid_labels():
    model = tiny_gan(num_classes=10)
    with pytest.raises(CnnzooError, match="label"):
        model.generator_step({"image": rectangles(2) * 2 - 1})
    with pytest.raises(CnnzooError, match="0..9"):
        model.sample(2, labels=torch.tensor([0, 10]))


def test_unconditional_sample_rejects_labels():
    with pytest.raises(CnnzooError, match="unconditional"):
        tiny_gan().sample(2, labels=torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs",
    [{"latent": 0}, {"image_size": 48}, {"image_size": 16}, {"ngf": 0}, {"num_classes": -1}],
)
def test_dcgan_bad_arguments_raise(kwargs):
    with pytest.raises(CnnzooError):
        tiny_gan(**kwargs)


def test_dcgan_rejects_images_of_another_size():
    with pytest.raises(CnnzooError, match="image_size"):
        tiny_gan().generator_step(gan_batch(size=32))
