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
# # 6 · Autoencoders
#
# This notebook follows the lecture's **AUTOENCODERS** slides: an autoencoder needs no
# labels (unsupervised learning), squeezes every image through an *information bottleneck*
# (compression), can be used for compression and denoising, and its encoder can
# **pre-train** a supervised model.
#
# You will:
#
# - open the shipped convolutional autoencoder `conv_ae.fmnist` (encoder, a bottleneck of 32
#   numbers, decoder) and look at its reconstructions of Fashion-MNIST test items;
# - measure its PSNR and SSIM on the bundled test subset and compare with the docs;
# - walk its latent space (a 2-D view of the codes, interpolations between two items);
# - measure the bottleneck-size trade-off three ways: PCA (the best *linear* autoencoder),
#   a few steps of the library's own `ae-pretraining` experiment code, and the docs' figures;
# - use the autoencoder for denoising and compression, and its frozen encoder as features
#   for a classifier that sees only a few labels.
#
# Nothing large is trained here: the shipped weights do the work, and the bundled mini
# Fashion-MNIST (5,000 training and 1,000 test images, 100 per class) is the data.
# Runs in about 50 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# Imports, seeds, and one PyTorch thread: on a CPU shared with other programs, two threads
# wait for each other and everything gets many times slower. `setup_terminal` hides
# Lightning's banners, as the `cnnzoo` command does.

# %%
import io
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import cnnzoo
from cnnzoo.cli.terminal import setup_terminal
from cnnzoo.data.fashion_mnist import load_fashion_mnist_mini
from cnnzoo.experiments.ae_pretraining import (
    AEPretrainingSettings,
    UnlabelledImages,
    train_autoencoder,
)
from cnnzoo.experiments.bottleneck import VARIANTS, build_variant
from cnnzoo.families.generative.evaluate import evaluate_reconstruction
from cnnzoo.models.generative.noise import corrupt
from cnnzoo.summary import count_macs, summarize
from cnnzoo.viz.tile import tile

START = time.perf_counter()
setup_terminal(verbose=False)
torch.manual_seed(0)
torch.set_num_threads(1)
torch.set_flush_denormal(True)

SHORT = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]  # fmt: skip
COLOURS = plt.cm.tab10(np.arange(10))


def unit(images):
    """uint8 images as floats in [0, 1], the autoencoder's input and output range."""
    return images.float() / 255


def psnr_per_image(x_hat, x):
    """10 log10(1 / MSE) in dB for each image (peak value 1)."""
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def pooled_psnr(x_hat, x):
    """PSNR of the MSE pooled over all images: what `cnnzoo eval` reports (torchmetrics)."""
    return float(10 * torch.log10(1 / F.mse_loss(x_hat, x)))


def show_grid(ax, images, nrow, title=""):
    """Draw (N, 1, H, W) images in [0, 1] as one grid with cnnzoo's `tile`."""
    grid = tile(images.clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


test_images, test_labels = load_fashion_mnist_mini("test")
train_images, train_labels = load_fashion_mnist_mini("train")
x_test, x_train = unit(test_images), unit(train_images)
print(f"mini Fashion-MNIST: train {tuple(train_images.shape)}, test {tuple(test_images.shape)}")

ae = cnnzoo.create_model("conv_ae", weights="conv_ae.fmnist").eval()
entry = cnnzoo.weights.get("conv_ae.fmnist")
print(f"{entry.name}: trained on {entry.dataset}, listed metrics {entry.metrics}")
for row in summarize(ae, (1, 28, 28), max_depth=1):
    print(f"  {row.name:<10} {row.kind:<12} out {row.output_shape!s:<16} "
          f"{row.params:>8,} params {row.macs / 1e6:6.2f} M MACs")  # fmt: skip

# %% [markdown]
# ## 1 · Encoder, bottleneck, decoder
#
# The table above is the lecture's picture of an autoencoder. The **encoder** $f_\phi$
# (two stride-2 3x3 conv-BN-ReLU stages, 28 → 14 → 7 pixels, 64 channels) and a linear layer
# map a 784-pixel image to a **code** $z = f_\phi(x)$ of only 32 numbers: the bottleneck.
# The **decoder** $g_\theta$ mirrors it (a linear layer back to 64x7x7, two 4x4 transposed
# convolutions, a sigmoid) and draws the image again, $\hat x = g_\theta(z)$. Training
# needs no labels: it minimises the reconstruction error
# $\mathcal{L} = \lVert x - g_\theta(f_\phi(x)) \rVert^2$ (Hinton & Salakhutdinov 2006).
#
# Everything the decoder knows about an image must pass through the 32 numbers: 784 / 32
# = 24.5 times fewer than the pixels. Below, one test item of each class (top), its
# reconstruction (middle) and the absolute error (bottom, dark = large). Look at what is
# lost: the prints on the shirts and bags, the sandal straps, sharp edges.

# %%
picks = torch.stack([torch.nonzero(test_labels == c)[0, 0] for c in range(10)])
with torch.no_grad():
    recon = ae.reconstruct(x_test[picks])
error = (recon - x_test[picks]).abs()

fig, axes = plt.subplots(3, 10, figsize=(12, 4.2))
rows = [("original", x_test[picks], "gray"), ("reconstruction", recon, "gray"),
        ("|error|", error, "gray_r")]  # fmt: skip
for r, (name, images, cmap) in enumerate(rows):
    for c in range(10):
        ax = axes[r, c]
        ax.imshow(images[c, 0], cmap=cmap, vmin=0, vmax=1 if r < 2 else 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(SHORT[c], fontsize=9)
    axes[r, 0].set_ylabel(name, fontsize=9)
fig.suptitle("conv_ae.fmnist: 784 pixels -> 32 numbers -> 784 pixels (error scale 0-0.5)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · How good are the reconstructions? PSNR on the test subset
#
# The peak signal-to-noise ratio of a reconstruction is
# $\mathrm{PSNR} = 10 \log_{10} \frac{1}{\mathrm{MSE}}$ dB for pixels in [0, 1]: every 10 dB
# is 10x less squared error; 20 dB is an RMS error of 0.1 (a tenth of the grey range). SSIM
# (structural similarity, 1 = identical) compares local means, contrasts and correlations,
# closer to what we see.
#
# `evaluate_reconstruction` is what `cnnzoo eval conv_ae.fmnist --data fashion-mnist-mini`
# runs: the Lightning test loop with torchmetrics' PSNR (MSE pooled over all test pixels) and
# SSIM.

# %%
metrics = evaluate_reconstruction("conv_ae.fmnist", data="fashion-mnist-mini")
print(f"conv_ae.fmnist on the 1,000 mini test images: PSNR {metrics['psnr']:.2f} dB, "
      f"SSIM {metrics['ssim']:.3f}, MSE {metrics['mse']:.4f}")  # fmt: skip
print(f"catalog (all 10,000 test images):             PSNR {entry.metrics['test/psnr']:.2f} dB, "
      f"SSIM {entry.metrics['test/ssim']:.3f}")  # fmt: skip
print("docs/autoencoders.md benchmark (3 min of training): PSNR 21.03 dB")

with torch.no_grad():
    x_hat_test = ae.reconstruct(x_test)
per_image = psnr_per_image(x_hat_test, x_test)
print(f"check: pooled PSNR recomputed here {pooled_psnr(x_hat_test, x_test):.2f} dB; "
      f"mean of per-image PSNRs {per_image.mean():.2f} dB")  # fmt: skip

# %% [markdown]
# The mini test set (a balanced 1,000-image subset of the official test set) gives the
# catalog's figure within a few hundredths of a dB. The *pooled* PSNR and the *mean of
# per-image* PSNRs differ: dB is a logarithm, so an easy image with a tiny error adds a
# large dB value, and the mean of the dB values is always at least the dB of the mean error
# (Jensen's inequality). Quote which one you use. Which classes are hard?

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
class_psnr = [float(per_image[test_labels == c].mean()) for c in range(10)]
ax1.bar(range(10), class_psnr, color=COLOURS)
ax1.set_xticks(range(10), SHORT, rotation=45, ha="right")
ax1.set_ylabel("mean PSNR (dB)")
ax1.set_ylim(min(class_psnr) - 2, max(class_psnr) + 1)
ax1.set_title("per class (100 test images each)")
ax2.hist(per_image.numpy(), bins=40, color="tab:gray")
ax2.axvline(metrics["psnr"], color="tab:red", label=f"pooled {metrics['psnr']:.1f} dB")
ax2.set_xlabel("PSNR of one image (dB)")
ax2.set_ylabel("test images")
ax2.set_title("per image")
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Trousers (one simple, uniform shape) reconstruct best. Bags and sandals are worst: a
# sandal is mostly background, but its thin, high-contrast straps and a bag's handles and
# prints must be placed to the pixel, and 32 numbers cannot do that — a strap drawn one
# pixel off costs twice (missing where it was, present where it was not).
#
# ## 3 · The latent space
#
# The autoencoder never saw a label. Still, its codes are organised by what the items look
# like. Left: the 1,000 test codes (32-D) projected on their two principal directions,
# coloured by the (unused) class. Right: walking in a straight line between the codes of
# two items, $z_t = (1 - t)\, z_a + t\, z_b$, and decoding each point, against simply
# blending the two images' pixels, $(1 - t)\, x_a + t\, x_b$.

# %%
with torch.no_grad():
    codes = ae.encode(x_test)
centred = codes - codes.mean(0)
_, _, v = torch.pca_lowrank(centred, q=2, center=False)
xy = (centred @ v).numpy()

pairs = [(7, 9), (0, 1), (2, 8)]  # sneaker -> boot, T-shirt -> trouser, pullover -> bag
steps = 8
t = torch.linspace(0, 1, steps).view(-1, 1)
fig = plt.figure(figsize=(13, 6.2))
grid = fig.add_gridspec(6, 2, width_ratios=[1, 1.45], hspace=0.12, wspace=0.3)
ax = fig.add_subplot(grid[:, 0])
for c in range(10):
    m = (test_labels == c).numpy()
    ax.scatter(xy[m, 0], xy[m, 1], s=7, color=COLOURS[c], label=SHORT[c])
ax.set_xlabel("principal direction 1 of the codes")
ax.set_ylabel("principal direction 2")
ax.set_title("1,000 test codes (the AE saw no labels)")
fig.suptitle("Latent space of conv_ae.fmnist; right: decoded latent walks vs pixel blends")
ax.legend(fontsize=7, markerscale=2, ncol=2, loc="lower left")
for i, (ca, cb) in enumerate(pairs):
    a, b = picks[ca], picks[cb]
    with torch.no_grad():
        walk = ae.decode((1 - t) * codes[a] + t * codes[b])
    blend = (1 - t.view(-1, 1, 1, 1)) * x_test[a] + t.view(-1, 1, 1, 1) * x_test[b]
    for j, (images, name) in enumerate([(walk, "latent"), (blend, "pixels")]):
        sub = fig.add_subplot(grid[2 * i + j, 1])
        show_grid(sub, images, nrow=steps)
        label = f"{SHORT[ca]} -> {SHORT[cb]}\n{name}" if j == 0 else name
        sub.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
fig.subplots_adjust(left=0.05, right=0.99, top=0.9, bottom=0.08)
plt.show()

# %% [markdown]
# Trousers, bags and footwear form their own regions; the tops (T-shirt, pullover, coat,
# shirt) overlap, as they do in pixel space. Along a latent walk every frame is drawn by
# the decoder, so shapes morph (the sneaker's shaft rises into a boot) instead of two
# ghosts cross-fading. A plain autoencoder does not promise that *every* point of the
# latent space decodes to a plausible item, though — halfway frames can be blurry
# mixtures. The VAE of the next notebook adds exactly that promise.
#
# ## 4 · The bottleneck size trade-off
#
# How many numbers does an item need? Three measurements:
#
# 1. **PCA**, the best *linear* autoencoder (Baldi & Hornik 1989: a linear AE trained with
#    squared error spans the principal subspace): encode $z = W^\top (x - \mu)$ with the top
#    $k$ principal directions of the training images, decode $\hat x = W z + \mu$. Fitted on
#    the 5,000 mini training images in a fraction of a second.
# 2. **The library's experiment code**: `cnnzoo experiment ae-pretraining` trains the same
#    autoencoder with bottlenecks 2 ... 64 and reports test PSNR (its part 3). Its
#    `train_autoencoder` function is called here for three bottlenecks with the plain
#    `conv_ae` encoder (the shipped model's architecture), only 40 steps of 128 images each
#    (one pass over the mini set) — about 10 s each, so expect much lower PSNRs than a full
#    training.
# 3. **The docs' measured curve** (docs/autoencoders.md: the experiment's default run, a
#    ResNet-20 encoder, 400 steps on all 60,000 images) and the shipped model (latent 32,
#    12 epochs).

# %%
mean = x_train.flatten(1).mean(0)
_, _, directions = torch.linalg.svd(x_train.flatten(1) - mean, full_matrices=False)
ks = [2, 4, 8, 16, 32, 64]
pca_psnr, pca_strips = [], {}
for k in ks:
    w = directions[:k].T  # (784, k)
    z = (x_test.flatten(1) - mean) @ w
    x_pca = (z @ w.T + mean).clamp(0, 1).view_as(x_test)
    pca_psnr.append(pooled_psnr(x_pca, x_test))
    pca_strips[k] = x_pca[:8]

data = UnlabelledImages("fashion-mnist-mini", batch_size=128)
settings = AEPretrainingSettings(backbone=None, ae_steps=40, precision="32-true")
quick = {}
for k in (2, 8, 32):
    seconds = time.perf_counter()
    _, m, strip = train_autoencoder(k, data, settings)
    quick[k] = (m["test/psnr"], strip)
    print(f"train_autoencoder(latent={k:2d}, 40 steps): test PSNR {m['test/psnr']:.2f} dB "
          f"({time.perf_counter() - seconds:.0f} s)")  # fmt: skip

DOCS_CURVE = {2: 15.06, 4: 16.55, 8: 17.58, 16: 18.45, 32: 19.26, 64: 19.69}  # autoencoders.md
print("\nbottleneck      " + "".join(f"{k:>7}" for k in ks))
print("PCA (dB)        " + "".join(f"{p:7.2f}" for p in pca_psnr))
print("docs conv AE    " + "".join(f"{DOCS_CURVE[k]:7.2f}" for k in ks))
print(f"shipped conv_ae (latent 32, 12 epochs): {metrics['psnr']:.2f} dB")

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.4))
ax.plot(ks, pca_psnr, "o-", color="tab:blue", label="PCA = linear AE (mini train, live)")
ax.plot(ks, [DOCS_CURVE[k] for k in ks], "s-", color="tab:green",
        label="conv AE, ResNet-20 encoder, 400 steps (docs)")  # fmt: skip
ax.plot(list(quick), [v[0] for v in quick.values()], "^-", color="tab:orange",
        label="conv AE, 40 steps on the mini set (live)")  # fmt: skip
ax.plot([32], [metrics["psnr"]], "*", ms=16, color="tab:red", label="shipped conv_ae.fmnist")
ax.set_xscale("log", base=2)
ax.set_xticks(ks, [str(k) for k in ks])
ax.set_xlabel("bottleneck size k (numbers per 784-pixel image)")
ax.set_ylabel("test PSNR (dB)")
ax.set_title("Reconstruction quality vs bottleneck size")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

fig, axes = plt.subplots(len(ks) + 1, 1, figsize=(7, 7.5))
show_grid(axes[0], x_test[:8], nrow=8)
axes[0].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=9)
for ax, k in zip(axes[1:], ks, strict=True):
    show_grid(ax, pca_strips[k], nrow=8)
    ax.set_ylabel(f"PCA k={k}", rotation=0, ha="right", va="center", fontsize=9)
fig.suptitle("PCA reconstructions of the first 8 test images")
fig.tight_layout()
plt.show()

# %% [markdown]
# Every larger bottleneck reconstructs better: the bottleneck is a compression knob. With 2
# numbers an item keeps little more than its mean silhouette; details and prints need
# 16-64. Two things to read from the curves:
#
# - **Non-linearity pays at small codes.** At k = 2-16 the docs' convolutional autoencoder
#   beats PCA by 1.5-2 dB; at k = 64 PCA overtakes that 400-step run (on 28x28 items PCA is
#   a strong baseline). The shipped model, trained for 12 epochs, is best at 32 by far.
# - **Budget matters as much as size**: the live 40-step runs sit well below the curves
#   of longer trainings, and a short training barely uses a large code (latent 8 and 32
#   end about 1 dB apart, PCA's are 2.5 dB apart). Exercise 2 asks you to change the
#   budget.
#
# *A different "bottleneck".* The lecture uses the word twice. The library's
# `bottleneck` experiment (src/cnnzoo/experiments/bottleneck.py) is about ResNet's
# **bottleneck blocks** (1x1 reduce, 3x3, 1x1 expand), which squeeze *channels* inside a
# block to save computation, not to learn a code. Its three variants, counted here
# (gallery.md reports 2.3 vs 31.0 M MACs at the same output width and 4.8 points lower
# accuracy after 1,200 steps):

# %%
for variant in VARIANTS:
    net = build_variant(variant, width=16, blocks=3)
    params = sum(p.numel() for p in net.parameters())
    print(f"{variant:<20} {params:>9,} params {count_macs(net, (1, 28, 28)) / 1e6:7.1f} M MACs")

# %% [markdown]
# ## 5 · Denoising
#
# A denoising autoencoder (Vincent et al. 2008) sees a corrupted input $\tilde x$ and is
# trained to give back the *clean* $x$: $\min \lVert x - g(f(\tilde x)) \rVert^2$
# (`cnnzoo train conv_ae --denoise gaussian:0.3`). The shipped model was trained on clean
# images only, yet the bottleneck already removes much noise: 32 numbers cannot describe
# random pixels, so the decoder draws the nearest clean-looking item. Three corruptions
# from `cnnzoo.models.generative.noise.corrupt` (seeded):

# %%
noises = ["gaussian:0.3", "saltpepper:0.15", "mask:0.4"]
shown = picks[[0, 3, 5, 7, 9]]
fig, axes = plt.subplots(len(noises), 2, figsize=(11, 5.6))
for row, spec in enumerate(noises):
    gen = torch.Generator().manual_seed(0)
    noisy = corrupt(x_test, spec, gen)
    with torch.no_grad():
        cleaned = ae.reconstruct(noisy)
    before, after = pooled_psnr(noisy, x_test), pooled_psnr(cleaned, x_test)
    print(f"{spec:<16} noisy input {before:5.2f} dB -> reconstruction {after:5.2f} dB "
          f"(clean input: {metrics['psnr']:.2f} dB)")  # fmt: skip
    show_grid(axes[row, 0], noisy[shown], nrow=5, title=f"{spec}: input, {before:.1f} dB")
    show_grid(axes[row, 1], cleaned[shown], nrow=5, title=f"reconstruction, {after:.1f} dB")
fig.tight_layout()
plt.show()

# %% [markdown]
# The reconstructions gain 3-5 dB over their noisy inputs for Gaussian and salt-and-pepper
# noise: the speckles are gone and the silhouettes stay. They stay far below the
# clean-input 21.5 dB, though: details go with the noise (the sandal becomes a blob).
# Masking 40 % of the pixels is hardest: the model was never shown holes, reads the
# item as a darker, different one, and gains least. Training with `--denoise mask:0.4`
# (Vincent et al.'s masking noise) teaches it to fill holes.
#
# ## 6 · Compression
#
# As a codec the autoencoder sends 32 numbers per image (64 bytes in fp16) and the receiver
# runs the decoder (153,057 parameters, shipped once). How does that compare with the
# standard image codecs on the same 1,000 test images? (PIL's PNG is lossless; JPEG at
# quality 50 is lossy.)

# %%
png_bytes, jpeg_bytes, jpeg_images = [], [], []
for img in test_images[:, 0].numpy():
    for fmt, store, kwargs in (("PNG", png_bytes, {}), ("JPEG", jpeg_bytes, {"quality": 50})):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, **kwargs)
        store.append(buf.tell())
        if fmt == "JPEG":
            jpeg_images.append(np.asarray(Image.open(buf)))
jpeg = torch.from_numpy(np.stack(jpeg_images)).unsqueeze(1).float() / 255
with torch.no_grad():
    fp16 = ae.decode(codes.half().float())  # the code sent in 16 bits
table = [
    ("raw uint8 pixels", 784, float("inf")),
    ("PNG (lossless)", np.mean(png_bytes), float("inf")),
    ("JPEG quality 50", np.mean(jpeg_bytes), pooled_psnr(jpeg, x_test)),
    ("conv_ae code, 32 x fp16", 64, pooled_psnr(fp16, x_test)),
]
print(f"{'codec':<26}{'bytes/image':>12}{'ratio':>8}{'PSNR (dB)':>11}")
for name, size, psnr in table:
    print(f"{name:<26}{size:12.0f}{784 / size:8.1f}{psnr:11.2f}")

# %% [markdown]
# On images this small the generic codecs hardly compress: PNG saves a third, and JPEG's
# headers and tables alone take hundreds of bytes, so at quality 50 it is no smaller than
# PNG (at a much higher PSNR). The learned code is 8x smaller than either, at 21.5 dB. The
# price: it works only for the kind of images it was trained on (a photograph would come
# out as a Fashion-MNIST item), and the decoder is part of the codec — learned codecs pay
# off when many similar images are sent.
#
# ## 7 · Pre-training: the encoder as a feature extractor
#
# The lecture's last autoencoder slide: the encoder, trained without labels, can
# initialise a **supervised** model. The cheapest test is a *linear probe*: freeze the
# encoder, and train only a linear classifier (multinomial logistic regression) on its
# 32-number codes, with 10, 50 or 500 labelled training images per class. Against the same
# classifier on the 784 raw pixels and on 32 PCA components.


# %%
def linear_probe(features_train, y_train, features_test, y_test, steps=100):
    """Test accuracy of an L2-regularised logistic regression fitted with L-BFGS."""
    mu, sd = features_train.mean(0), features_train.std(0) + 1e-6
    a, b = (features_train - mu) / sd, (features_test - mu) / sd
    layer = torch.nn.Linear(a.shape[1], 10)
    opt = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(layer(a), y_train) + 1e-3 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((layer(b).argmax(1) == y_test).float().mean())


with torch.no_grad():
    train_codes = ae.encode(x_train)
pca32 = directions[:32].T
features = {
    "raw pixels (784)": (x_train.flatten(1), x_test.flatten(1)),
    "PCA (32)": ((x_train.flatten(1) - mean) @ pca32, (x_test.flatten(1) - mean) @ pca32),
    "frozen AE encoder (32)": (train_codes, codes),
}
gen = torch.Generator().manual_seed(0)
sizes, draws = [10, 50, 500], 5
probe = {name: torch.zeros(len(sizes), draws) for name in features}
for i, n in enumerate(sizes):
    for d in range(draws):  # each draw: n random training images of every class
        chosen = torch.cat([
            torch.nonzero(train_labels == c)[:, 0][torch.randperm(500, generator=gen)[:n]]
            for c in range(10)
        ])  # fmt: skip
        for name, (f_train, f_test) in features.items():
            probe[name][i, d] = linear_probe(
                f_train[chosen], train_labels[chosen], f_test, test_labels
            )
print(f"test accuracy, mean ± std over {draws} draws of the labelled images")
print(f"{'features':<24}" + "".join(f"{n:>10}/class" for n in sizes))
for name, accs in probe.items():
    cells = "".join(f"{m:9.3f} ± {s:.3f}" for m, s in zip(accs.mean(1), accs.std(1), strict=True))
    print(f"{name:<24}{cells}")

# %% [markdown]
# The codes learned without labels carry the class well: with 10 labels per class a
# linear classifier on them is about 4 points better than on the raw pixels and 10 points
# better than on 32 PCA numbers, more than the spread between draws. The gap shrinks as
# labels grow, and with 500 per class (the whole mini training set, hence no spread) the
# pixels have caught up: enough labels make the unsupervised pre-training unnecessary.
#
# The library's full experiment (`cnnzoo experiment ae-pretraining`, about 30 minutes;
# docs/autoencoders.md) copies an autoencoder's ResNet-20 encoder into a ResNet-20
# classifier (`transfer_encoder`, which loads `ae.encoder_state()`) and fine-tunes it. Its
# measured result is more sobering:
#
# | labels per class | scratch | ae-finetune | ae-linear (frozen encoder) |
# |---|---|---|---|
# | 10 | 0.638 ± 0.008 | 0.655 ± 0.020 | 0.564 ± 0.017 |
# | 1000 | 0.796 ± 0.008 | 0.788 ± 0.001 | 0.622 ± 0.011 |
#
# A small gain with 10 labels, within one standard deviation, and none with more: a
# reconstruction objective keeps what is needed to *redraw* pixels (intensity,
# silhouette), not necessarily what separates a shirt from a T-shirt.

# %%
print(f"notebook run time: {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. **Bottleneck in the latent walk.** In the cell of section 3, change `pairs` to
#    `[(6, 0), (4, 2), (5, 7)]` (shirt → T-shirt, coat → pullover, sandal → sneaker) and
#    re-run it. Which walks pass through plausible items and which through blurry
#    mixtures? Relate your answer to where these classes lie in the scatter plot.
# 2. **Budget vs size.** In the section 4 cell, set `ae_steps=200` in
#    `AEPretrainingSettings` and re-run (about 3x longer). How much does the PSNR of each
#    bottleneck improve? Does the gap between latent 8 and 32 grow or shrink, and does the
#    conv AE now beat PCA at k = 32?
# 3. **Denoising limits.** In section 5, set `noises = ["gaussian:0.1", "gaussian:0.3",
#    "gaussian:0.6"]` and re-run. Plot (or tabulate) the PSNR gain (reconstruction minus
#    input) against the noise level. Why does the gain grow with the noise, and why can the
#    reconstruction never exceed the clean-input PSNR printed on the right?
# 4. **How much label information is in the code?** In section 7, add
#    `"frozen AE encoder (first 8)": (train_codes[:, :8], codes[:, :8])` to `features` and
#    re-run. Then compare with 8 PCA components. Are the AE's 32 code dimensions ordered by
#    importance like PCA's? What does that tell you about how the bottleneck is used?
