# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7 · Generative models
#
# This notebook follows the lecture's **GENERATIVE** slides in order: the variational
# autoencoder (VAE) and its objective, the ELBO; generating new images from it; the
# generative adversarial network (GAN) and its minimax game; and image-to-image
# translation — CycleGAN's cycle consistency, UNIT's shared latent space and
# pix2pix / pix2pixHD.
#
# You will:
#
# - open the shipped `vae.fmnist`, look at the reparameterisation trick at work and
#   measure the two terms of the ELBO (reconstruction and KL) on test images;
# - draw samples and latent interpolations from the VAE and from the shipped DCGAN
#   (`dcgan.fmnist`), and watch its discriminator judge real and generated items;
# - measure both with the FID the library computes (with its own bundled Fashion-MNIST
#   feature extractor, so no download), after checking what FID values mean;
# - translate edge maps of test items back into items with the shipped `pix2pix.fmnist_edges`
#   and score the translations;
# - build CycleGAN and UNIT by name and compute their losses on a batch (they ship no
#   weights: untrained, a demonstration of the objectives only).
#
# Data: the bundled mini Fashion-MNIST (1,000 test images, 100 per class). Nothing is
# trained. Runs in about 20 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# One PyTorch thread (on a shared CPU two threads wait for each other), seeds, and
# `setup_terminal` to hide Lightning's banners, as the `cnnzoo` command does.

# %%
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo.cli.terminal import setup_terminal
from cnnzoo.data.fashion_mnist import load_fashion_mnist_mini
from cnnzoo.data.translation import SHOES_CLASSES, sobel_edges
from cnnzoo.families.generative.evaluate import evaluate_reconstruction
from cnnzoo.tasks.fid import FID_NAME, compute_fid, extractor_metadata
from cnnzoo.tasks.gan import to_signed
from cnnzoo.tasks.translation_metrics import PairedTranslationScores
from cnnzoo.viz.tile import tile

START = time.perf_counter()
setup_terminal(verbose=False)
torch.manual_seed(0)
torch.set_num_threads(1)
torch.set_flush_denormal(True)

SHORT = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]  # fmt: skip
COLOURS = plt.cm.tab10(np.arange(10))


def show_grid(ax, images, nrow, title=""):
    """Draw (N, C, H, W) images in [0, 1] as one grid with cnnzoo's `tile`."""
    grid = tile(images.float().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def params(module):
    return sum(p.numel() for p in module.parameters())


test_images, test_labels = load_fashion_mnist_mini("test")
train_images, _ = load_fashion_mnist_mini("train")
x_test = test_images.float() / 255
picks = torch.stack([torch.nonzero(test_labels == c)[0, 0] for c in range(10)])

vae = cnnzoo.create_model("vae", weights="vae.fmnist").eval()
dcgan = cnnzoo.create_model("dcgan", weights="dcgan.fmnist").eval()
pix2pix = cnnzoo.create_model("pix2pix", weights="pix2pix.fmnist_edges").eval()
for name, model in (("vae.fmnist", vae), ("dcgan.fmnist", dcgan),
                    ("pix2pix.fmnist_edges", pix2pix)):  # fmt: skip
    print(f"{name:<22} {params(model):>10,} params; catalog: {cnnzoo.weights.get(name).metrics}")

# %% [markdown]
# ## 1 · The variational autoencoder: a distribution per image
#
# A plain autoencoder maps an image to one code. The VAE's encoder $q_\phi(z \mid x)$ gives
# a Gaussian per image, $\mathcal N(\mu(x), \operatorname{diag} \sigma^2(x))$ (here 16
# dimensions), and the decoder $p_\theta(x \mid z)$ gives each pixel's Bernoulli
# probability. Training samples one code per image with the **reparameterisation trick**
# $z = \mu + \sigma \odot \varepsilon$, $\varepsilon \sim \mathcal N(0, I)$, so the sample
# is a differentiable function of $\mu$ and $\sigma$ (Kingma & Welling 2014). The
# objective is the lecture's evidence lower bound, maximised:
#
# $$\mathrm{ELBO}(x) = \mathbb{E}_{z \sim q_\phi(z|x)}\left[\log p_\theta(x \mid z)\right]
#   - D_{KL}\left(q_\phi(z \mid x) \,\|\, p(z)\right), \qquad p(z) = \mathcal N(0, I).$$
#
# The first term rewards good reconstructions; the second pulls every image's Gaussian
# towards the prior, so the whole prior is filled with codes the decoder understands —
# which is what makes *sampling* possible. Below: one test item, its posterior's $\sigma$,
# and eight reparameterised samples $z$ decoded.

# %%
x = x_test[picks[[0, 7, 9]]]  # a T-shirt, a sneaker, a boot
with torch.no_grad():
    mu, logvar = vae.encode(x)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([vae.reparameterize(mu, logvar, gen) for _ in range(8)], 1)
    decoded = vae.decode(draws.flatten(0, 1))
    means = vae.decode(mu)

fig, axes = plt.subplots(3, 1, figsize=(9, 4.6))
for i, ax in enumerate(axes):
    row = torch.cat([x[i : i + 1], means[i : i + 1], decoded[8 * i : 8 * (i + 1)]])
    show_grid(ax, row, nrow=10)
    ax.set_ylabel(["T-shirt", "Sneaker", "Boot"][i], fontsize=9)
axes[0].set_title("input | decode(mu) | decode(mu + sigma * eps) for 8 draws of eps", fontsize=10)
fig.tight_layout()
plt.show()
sigma = (0.5 * logvar).exp()
print("posterior sigma of the sneaker, per latent dimension:", sigma[1].numpy().round(2))

# %% [markdown]
# Each draw is the same item with small changes of shape and brightness: the posterior is
# narrow in the dimensions that matter for this item (small $\sigma$) and wide in others.
# Averaged over the test set, the KL term shows how much each of the 16 dimensions is
# used: a dimension whose posterior equals the prior ($\mu = 0$, $\sigma = 1$) costs 0 nats
# and carries no information. The closed form per dimension (Kingma & Welling, appendix B):
# $D_{KL} = \tfrac12 (\mu^2 + \sigma^2 - 1 - \log \sigma^2)$.

# %%
with torch.no_grad():
    mu_all, logvar_all = vae.encode(x_test)
kl_dim = 0.5 * (mu_all.pow(2) + logvar_all.exp() - 1 - logvar_all).mean(0)
sigma_dim = (0.5 * logvar_all).exp().mean(0)
order = kl_dim.argsort(descending=True)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
ax1.bar(range(16), kl_dim[order].numpy(), color="tab:purple")
ax1.set_xticks(range(16), [str(int(i)) for i in order])
ax1.set_xlabel("latent dimension (sorted by KL)")
ax1.set_ylabel("mean KL (nats per image)")
ax1.set_title(f"KL per dimension: total {kl_dim.sum():.1f} nats")
ax2.bar(range(16), sigma_dim[order].numpy(), color="tab:cyan")
ax2.axhline(1, color="black", ls="--", lw=1, label="prior sigma = 1")
ax2.set_xticks(range(16), [str(int(i)) for i in order])
ax2.set_xlabel("latent dimension (same order)")
ax2.set_ylabel("mean posterior sigma")
ax2.set_title("how sure the encoder is per dimension")
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# All 16 dimensions are in use (none has collapsed to the prior), some much more than
# others: the high-KL dimensions have small $\sigma$ — the encoder pins them down
# precisely — and carry most of the information about the item.
#
# ## 2 · The ELBO on test images
#
# `evaluate_reconstruction` is what `cnnzoo eval vae.fmnist --data fashion-mnist-mini` runs:
# the negative ELBO split into its two terms, in nats per image (reconstruction = the
# binary cross-entropy summed over the 784 pixels, i.e. $-\log p_\theta(x \mid z)$ for one
# sampled $z$), the PSNR/SSIM of the reconstructions from $\mu$, and the FID of 1,000 samples
# against the 1,000 test images (section 5).

# %%
torch.manual_seed(0)  # the ELBO uses one random z per image
vae_metrics = evaluate_reconstruction("vae.fmnist", data="fashion-mnist-mini", fid_samples=1000)
catalog = cnnzoo.weights.get("vae.fmnist").metrics
elbo, recon, kl = (vae_metrics[k] for k in ("elbo", "recon", "kl"))
print(f"mini test set: ELBO {elbo:.1f} nats = -(reconstruction {recon:.1f} + KL {kl:.1f}); "
      f"PSNR {vae_metrics['psnr']:.2f} dB")  # fmt: skip
print(f"catalog (10,000 test images): ELBO {catalog['test/elbo']:.1f} nats, "
      f"PSNR {catalog['test/psnr']:.2f} dB; docs/generative.md benchmark: ELBO -242.2")  # fmt: skip

# The loss the VAE trains on, for the same forward pass, at three values of beta:
torch.manual_seed(0)
with torch.no_grad():
    out = vae(x_test)
    for beta in (0.0, 1.0, 4.0):
        parts = vae.loss(out, x_test, beta=beta)
        print(f"beta = {beta}: loss = recon + beta * KL = {parts['loss']:.1f}  (recon "
              f"{parts['recon']:.1f}, KL {parts['kl']:.1f}, ELBO {parts['elbo']:.1f})")  # fmt: skip

# %% [markdown]
# The KL term is small (about 17 of 241 nats) but it shapes the whole latent space. The
# `beta` of $\beta$-VAE (Higgins et al. 2017, `cnnzoo train vae --beta B`) weights it in the
# training loss; on an already trained model it changes the loss value only, not the ELBO
# (exercise 1 trains with another $\beta$). Per class:

# %%
recon_c, kl_c = [], []
torch.manual_seed(0)
with torch.no_grad():
    for c in range(10):
        xc = x_test[test_labels == c]
        parts = vae.loss(vae(xc), xc)
        recon_c.append(float(parts["recon"]))
        kl_c.append(float(parts["kl"]))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
for ax, values, title in ((ax1, recon_c, "reconstruction term -log p(x|z)"),
                          (ax2, kl_c, "KL term D_KL(q(z|x) || p(z))")):  # fmt: skip
    ax.bar(range(10), values, color=COLOURS)
    ax.set_xticks(range(10), SHORT, rotation=45, ha="right")
    ax.set_ylabel("nats per image")
    ax.set_title(title)
fig.tight_layout()
plt.show()

# %% [markdown]
# Large, textured items (pullovers, shirts, bags) cost the most reconstruction nats: the
# Bernoulli cross-entropy of a grey pixel is never 0, they have many of them, and their
# prints are not in the code. Trousers and sneakers are cheapest. The KL term varies less;
# bags, sandals and boots, whose shapes vary most, need the most information in the code,
# sneakers and trousers the least.
#
# ## 3 · Generating new images
#
# To generate, skip the encoder: draw $z \sim \mathcal N(0, I)$ and decode it (the lecture's
# "to generate new images use" slide). A DCGAN's generator does the same with its own
# $z \sim \mathcal N(0, I)$ of 100 numbers. The two models' samples, 32 each, seeded:

# %%
gen = torch.Generator().manual_seed(0)
vae_samples = vae.sample(32, generator=gen)
gan_samples = (dcgan.sample(32, generator=torch.Generator().manual_seed(0)) + 1) / 2
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 3.8))
show_grid(ax1, vae_samples, nrow=8, title="VAE: decode(z), z ~ N(0, I) (16-D)")
show_grid(ax2, gan_samples, nrow=8, title="DCGAN: G(z), z ~ N(0, I) (100-D)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The VAE's samples are smooth and blurred: its Bernoulli likelihood is best served by
# the *average* of the items a code could mean. The GAN's are sharper and have texture
# (stripes, prints, sole patterns) but some are malformed — the trade-off the docs
# describe. Walking in a straight line through each latent space (VAE: between the
# posterior means of two test items with `vae.interpolate`; DCGAN: between two random
# codes, as `cnnzoo sample dcgan.fmnist --interpolate` does):

# %%
pairs = [(7, 9), (0, 1), (2, 8)]
fig, axes = plt.subplots(3, 2, figsize=(13, 4.2))
for row, (ca, cb) in enumerate(pairs):
    walk = vae.interpolate(x_test[picks[ca]], x_test[picks[cb]], steps=8)
    show_grid(axes[row, 0], walk, nrow=8)
    axes[row, 0].set_ylabel(f"{SHORT[ca]}->{SHORT[cb]}", rotation=0, ha="right", fontsize=8)
    g = torch.Generator().manual_seed(row)
    z0, z1 = torch.randn(1, 100, generator=g), torch.randn(1, 100, generator=g)
    t = torch.linspace(0, 1, 8).view(-1, 1)
    with torch.no_grad():
        frames = (dcgan((1 - t) * z0 + t * z1) + 1) / 2
    show_grid(axes[row, 1], frames, nrow=8)
    axes[row, 1].set_ylabel(f"seed {row}", rotation=0, ha="right", fontsize=8)
axes[0, 0].set_title("VAE: between two test items", fontsize=10)
axes[0, 1].set_title("DCGAN: between two random codes", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# Both walks change gradually and mostly through item-like images — the property a plain
# autoencoder does not promise. The VAE morphs shapes (the sneaker's shaft rises into a
# boot); the GAN's walks can change class within a frame or two and pass odd hybrids
# (seed 0's third frame): nothing forces its latent space to be organised like the VAE's.
#
# ## 4 · The GAN game
#
# A GAN trains two networks against each other (Goodfellow et al. 2014):
#
# $$\min_G \max_D \; \mathbb{E}_{x \sim p_{\text{data}}}\left[\log D(x)\right]
#   + \mathbb{E}_{z \sim p_z}\left[\log\left(1 - D(G(z))\right)\right].$$
#
# The discriminator $D$ outputs the probability that its input is real; the generator $G$
# tries to make $D$ wrong. DCGAN (Radford et al. 2016) builds both from strided (transposed)
# convolutions with batch norm, ReLU / LeakyReLU and a tanh output; like most
# implementations cnnzoo trains $G$ with the *non-saturating* loss $-\log D(G(z))$ (strong
# gradients while $D$ still wins easily). The shipped model keeps its discriminator, so we
# can ask it what it thinks of 1,000 real test items and 1,000 generated ones, and run one
# step of each player's loss on a batch (`generator_step`, `discriminator_step`, on a copy,
# since a training-mode pass updates the batch-norm statistics):

# %%
with torch.no_grad():
    d_real = torch.sigmoid(dcgan.discriminator(to_signed(test_images)))
    fakes = dcgan.sample(1000, generator=torch.Generator().manual_seed(1))
    d_fake = torch.sigmoid(dcgan.discriminator(fakes))
print(f"mean D(x) on real test items {d_real.mean():.3f}; on generated items {d_fake.mean():.3f}")

game = copy.deepcopy(dcgan).train()
torch.manual_seed(0)
batch = {"image": to_signed(test_images[:64]), "label": test_labels[:64]}
with torch.no_grad():  # the losses only: no optimiser step
    g_losses, fake_batch = game.generator_step(batch)
    d_losses = game.discriminator_step(batch, fake_batch)
print(f"generator loss -log D(G(z)) = {g_losses['loss']:.3f}")
print(f"discriminator loss -log D(x) - log(1 - D(G(z))) = {d_losses['loss_real']:.3f} + "
      f"{d_losses['loss_fake']:.3f}")  # fmt: skip
print(f"(at the game's equilibrium D = 1/2 everywhere: each term would be log 2 = {np.log(2):.3f})")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharex=True, sharey=True)
panels = ((axes[0], d_real, "1,000 real test items", "tab:green"),
          (axes[1], d_fake, "1,000 generated items", "tab:red"))  # fmt: skip
for ax, values, name, colour in panels:
    ax.hist(values.numpy(), bins=30, range=(0, 1), color=colour)
    ax.axvline(0.5, color="black", ls="--", lw=1)
    ax.set_title(f"D on {name}: mean {values.mean():.2f}")
    ax.set_xlabel("D(input) = P(real)")
axes[0].set_ylabel("images")
fig.tight_layout()
plt.show()

# %% [markdown]
# At the end of training the game is close to, but not at, the equilibrium: $D$ still
# scores real items somewhat higher than generated ones, with heavily overlapping
# distributions. $D$'s own score is no quality measure, though (it is only as good as the
# last discriminator); the field uses FID.
#
# ## 5 · FID: how close are the generated images to the real ones?
#
# The Fréchet Inception Distance (Heusel et al. 2017) fits a Gaussian to the features of
# real images and one to the features of generated images and measures
# $\mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2
#   + \operatorname{Tr}\left(\Sigma_r + \Sigma_g - 2 (\Sigma_r \Sigma_g)^{1/2}\right)$ (lower
# is better, 0 for identical sets). cnnzoo's features are not Inception's but the 128
# penultimate units of a small Fashion-MNIST classifier that ships with the package, so the
# numbers compare only with each other, at the same sample count (FID is biased upwards
# for small sets). First, what values mean — real images against real images, and test
# images with Gaussian noise:

# %%
meta = extractor_metadata()
print(f"{FID_NAME}: extractor {meta['model']}, test accuracy {float(meta['test_accuracy']):.4f}")
gen = torch.Generator().manual_seed(0)
noisy = (x_test + 0.15 * torch.randn(x_test.shape, generator=gen)).clamp(0, 1)
sanity = {
    "test vs 1,000 training images (both real)": compute_fid(test_images, train_images[:1000]),
    "test vs test + noise sigma 0.15": compute_fid(test_images, noisy),
}
dcgan_metrics = evaluate_reconstruction("dcgan.fmnist", data="fashion-mnist-mini", fid_samples=1000)
fids = {**sanity, "test vs 1,000 VAE samples": vae_metrics["fid"],
        "test vs 1,000 DCGAN samples": dcgan_metrics["fid"]}  # fmt: skip
for name, value in fids.items():
    print(f"  {name:<44} FID {value:6.1f}")
print(
    "docs (2,000 full test images vs 2,000 samples): real vs real 0.48, noise 0.15: 66, "
    "VAE 29.2, DCGAN 11.1"
)

fig, ax = plt.subplots(figsize=(8, 2.8))
ax.barh(range(len(fids)), list(fids.values()),
        color=["tab:gray", "tab:brown", "tab:blue", "tab:orange"])  # fmt: skip
ax.set_yticks(range(len(fids)), list(fids))
ax.invert_yaxis()
ax.set_xlabel(f"{FID_NAME}, 1,000 vs 1,000 images (lower is closer)")
for i, v in enumerate(fids.values()):
    ax.text(v + 0.5, i, f"{v:.1f}", va="center", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The DCGAN's samples are much closer to the real items than the VAE's (as in the docs and
# the literature), though neither reaches two real sets. At 1,000 images the values are a
# few points above the docs' 2,000-image figures: the small-sample bias, and why FIDs are
# compared at the same count only.
#
# ## 6 · Image-to-image translation: pix2pix
#
# pix2pix (Isola et al. 2017) is a *conditional* GAN for **paired** data: the generator, a
# U-Net, maps an input image $A$ to an output $B$, and a PatchGAN discriminator judges
# pairs $(A, B)$ patch by patch. The loss adds an L1 term to the adversarial one:
# $G^* = \arg\min_G \max_D \mathcal L_{cGAN}(G, D) + \lambda \lVert B - G(A) \rVert_1$,
# $\lambda = 100$. The shipped `pix2pix.fmnist_edges` learned `fmnist-edges`: $A$ = the
# item's Sobel edges (`cnnzoo.data.translation.sobel_edges`), $B$ = the item. We make the
# edge maps of the mini test set, translate them, and score them as `cnnzoo eval` does
# (`PairedTranslationScores`: L1, PSNR, SSIM against the true items):

# %%
edges = sobel_edges(test_images)
scores, baseline = PairedTranslationScores(), PairedTranslationScores()
translated = []
with torch.no_grad():
    for i in range(0, len(edges), 250):
        out = (pix2pix.translate(to_signed(edges[i : i + 250])) + 1) / 2
        scores.update(out, test_images[i : i + 250])
        translated.append(out)
translated = torch.cat(translated)
baseline.update(edges.float() / 255, test_images)  # "translation" = the edge map itself
got, base = scores.compute(), baseline.compute()
entry = cnnzoo.weights.get("pix2pix.fmnist_edges").metrics
print(f"pix2pix on 1,000 mini test items: L1 {got['l1']:.4f}, PSNR {got['psnr']:.2f} dB, "
      f"SSIM {got['ssim']:.3f}")  # fmt: skip
print(f"catalog (full test split):        L1 {entry['test/l1']:.4f}, "
      f"PSNR {entry['test/psnr']:.2f} dB, SSIM {entry['test/ssim']:.3f}")  # fmt: skip
print(f"the edge map itself as output:    L1 {base['l1']:.4f}, PSNR {base['psnr']:.2f} dB, "
      f"SSIM {base['ssim']:.3f}  (docs: L1 0.35, 5.7 dB, SSIM 0.16)")  # fmt: skip

fig, axes = plt.subplots(3, 1, figsize=(11, 4.4))
for ax, images, name in ((axes[0], edges[picks].float() / 255, "A: edges"),
                         (axes[1], translated[picks], "G(A)"),
                         (axes[2], x_test[picks], "B: real item")):  # fmt: skip
    show_grid(ax, images, nrow=10)
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
axes[0].set_title("pix2pix.fmnist_edges on one test item per class", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The generator fills each outline with a plausible body, shading and even some texture;
# what edges cannot tell (the exact grey level, prints inside a uniform region) it has to
# guess, which limits PSNR. **pix2pixHD** (Wang et al. 2018) scales the same idea to
# 2048x1024 label maps: a global generator plus a local enhancer, discriminators at several
# scales and a feature-matching loss. It ships no weights; built by name:

# %%
hd = cnnzoo.create_model("pix2pixhd", in_channels=1)
print(f"pix2pixhd (untrained, defaults): {params(hd):,} parameters;",
      ", ".join(f"{name} {params(m):,}" for name, m in hd.named_children()))  # fmt: skip

# %% [markdown]
# ## 7 · Unpaired translation: CycleGAN and UNIT (untrained, objectives only)
#
# Without pairs, nothing says what the translation of a given sneaker should be.
# **CycleGAN** (Zhu et al. 2017) trains two generators $G: A \to B$, $F: B \to A$ and two
# discriminators, and adds **cycle consistency**: translating there and back must return
# the input,
# $\mathcal L_{cyc} = \lVert F(G(a)) - a \rVert_1 + \lVert G(F(b)) - b \rVert_1$, weight
# $\lambda = 10$ (plus an identity loss and least-squares GAN losses). **UNIT** (Liu et al.
# 2017) assumes a **shared latent space**: a pair of corresponding images has one code $z$,
# enforced by making the last encoder layers and the first generator layers of the two
# domains' VAE-GANs the *same* modules.
#
# cnnzoo ships no weights for them, so these are freshly initialised networks: the point
# is to see their losses on a real batch of `fmnist-shoes` (A = sneakers, B = ankle boots,
# here from the mini test set). Their translations are noise until trained
# (`cnnzoo train cyclegan --data fmnist-shoes`).

# %%
torch.manual_seed(0)
a = to_signed(test_images[test_labels == SHOES_CLASSES[0]][:8])
b = to_signed(test_images[test_labels == SHOES_CLASSES[1]][:8])
shoes = {"A": a, "B": b}
cyclegan = cnnzoo.create_model("cyclegan", in_channels=1, seed=0)
unit = cnnzoo.create_model("unit", in_channels=1)
for name, model in (("CycleGAN", cyclegan), ("UNIT", unit)):
    with torch.no_grad():
        g_losses, fakes = model.generator_step(shoes)
        d_losses = model.discriminator_step(shoes, fakes)
    terms = ", ".join(f"{k} {float(v):.2f}" for k, v in g_losses.items() if k != "loss")
    print(f"{name} (untrained, {params(model):,} params): generator loss "
          f"{float(g_losses['loss']):.2f} = {terms}")  # fmt: skip
    print(f"    discriminators' loss {float(d_losses['loss']):.2f}")

with torch.no_grad():
    cyc_a = cyclegan.G_BA(cyclegan.G_AB(a))
    manual = 10 * (F.l1_loss(cyc_a, a) + F.l1_loss(cyclegan.G_AB(cyclegan.G_BA(b)), b))
print(f"CycleGAN's cycle term recomputed by hand: 10 x (|F(G(a)) - a|_1 + |G(F(b)) - b|_1) "
      f"= {manual:.2f}")  # fmt: skip
shared = (
    unit.encoder("A")[1] is unit.encoder("B")[1],
    unit.generator("A")[0] is unit.generator("B")[0],
)
print(f"UNIT: encoder('A')[1] is encoder('B')[1]: {shared[0]}; "
      f"generator('A')[0] is generator('B')[0]: {shared[1]}")  # fmt: skip
print(f"UNIT parameters: shared encoder tail {params(unit.enc_shared):,}, shared generator "
      f"head {params(unit.gen_shared):,}, private {params(unit.enc_A) + params(unit.gen_A):,} per "
      "domain")  # fmt: skip

fig, axes = plt.subplots(1, 3, figsize=(12, 1.9))
with torch.no_grad():
    rows = [((a + 1) / 2, "a: sneakers"), ((cyclegan.G_AB(a) + 1) / 2, "G(a), untrained"),
            ((cyc_a + 1) / 2, "F(G(a)), untrained")]  # fmt: skip
for ax, (images, title) in zip(axes, rows, strict=True):
    show_grid(ax, images[:4], nrow=4, title=title)
fig.tight_layout()
plt.show()

# %% [markdown]
# With random weights the cycle term (about 17 of CycleGAN's 29) dominates the generator
# loss: $F(G(a))$ is nowhere near $a$. Training drives it down, and that is what keeps the
# translated boot *this* sneaker's boot rather than any boot — the adversarial loss alone
# only asks for *some* image of domain B. UNIT gets the same effect from the shared layers:
# a sneaker and its boot must meet in one code.
#
# The docs (docs/generative.md) list how the library scores trained unpaired runs: FID of
# the translations against the target domain and the share that the FID extractor's own
# classifier assigns to the target class.

# %%
print(f"notebook run time: {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. **β in the VAE loss.** In the section 2 cell, add `beta` values 0.1 and 10 to the
#    loop and re-run: which term of the printed loss changes, and why does the ELBO stay
#    the same? Then train one yourself, `cnnzoo train vae --data fashion-mnist-mini --beta 0
#    --epochs 3 --out vae-b0` (2-3 minutes on 2 cores), and sample it with `cnnzoo sample
#    vae-b0 -n 64 --out b0.png`. What happens to the samples with β = 0, and why (think about what
#    the KL term did to the codes)?
# 2. **Where does the VAE put information?** In the section 1 cell, replace
#    `picks[[0, 7, 9]]` by three items of one class (e.g. the first three shirts,
#    `torch.nonzero(test_labels == 6)[:3, 0]`) and re-run the first two cells. Are the same
#    latent dimensions narrow (small σ) for all three? Decode $\mu$ with only the two
#    highest-KL dimensions changed by ±2 to see what they encode.
# 3. **FID and sample size.** In the section 5 cell, compute the DCGAN's FID with
#    `fid_samples=200` and `fid_samples=500` as well (and the real-vs-real value with 200
#    and 500 training images). How do the values move with the count? Which conclusion
#    about VAE vs DCGAN is safe at 200 samples?
# 4. **How much does pix2pix rely on its input?** In the section 6 cell, thin the edge
#    maps before translating them, e.g. `edges = sobel_edges(test_images, threshold=0.5)`
#    (fewer edge pixels), and re-run. How do L1, PSNR and SSIM change, and which classes'
#    translations break first?
