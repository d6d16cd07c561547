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
# # 4 · Semantic segmentation
#
# This notebook follows the lecture's **SEMANTIC SEGMENTATION** slides in order: the task
# (a class for every pixel, trained with the loss of classification), the naive patch-wise
# approach and why it is slow, the "impractical" full-resolution network, the
# encoder-decoder with transposed convolutions, FCN (skip connections, FCN-32s/16s/8s),
# SegNet (max-unpooling with the pooling indices), PSPNet (pyramid pooling), and U-Net.
#
# You will:
#
# - look at cnnzoo's *scenes* (Fashion-MNIST items pasted on textured backgrounds) and their
#   label maps;
# - run the two segmenters that ship with cnnzoo, `fcn8s.scenes` and `unet.scenes`, and
#   measure their per-class IoU and mIoU on a small test set;
# - open up the architectures: what the upsampling layers learned, what FCN's skips add,
#   what max-unpooling and pyramid pooling do to a map, and what each segmenter costs
#   (parameters, MACs, output shapes, milliseconds).
#
# Nothing is trained here: every number comes from the shipped weights or from measuring
# the architectures. Runs in about 55 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# All imports are here. PyTorch runs on one thread: the times measured below
# then stay comparable when other programs share the two cores (with two threads on a busy
# CPU, every layer waits for the slower thread and the times become meaningless).

# %%
import copy
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter
from torchmetrics.classification import MulticlassConfusionMatrix

import cnnzoo
from cnnzoo.data.scenes import SCENE_CLASSES, generate_scenes, scenes_dataset
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.experiments.seg_cost import SegCostSettings
from cnnzoo.experiments.timing import inference_ms
from cnnzoo.families.segmentation.evaluate import class_table
from cnnzoo.layers.upsample import Upsample, bilinear_kernel
from cnnzoo.models.base import count_params
from cnnzoo.summary import count_macs, summarize
from cnnzoo.tasks.segmentation import iou_from_confusion, segmentation_loss
from cnnzoo.viz.segmentation import to_rgb

START = time.perf_counter()
torch.manual_seed(0)
torch.set_flush_denormal(True)  # as cnnzoo's own timings do: subnormal floats are slow on x86
torch.set_num_threads(1)

N_TEST = 160  # test scenes used for every metric below (the catalog's figures use all 400)
SHOW = [0, 3, 5, 8, 12]  # the test scenes shown in the figures
# One distinct colour per class: background near-black, the ten items tab10's colours.
# (cnnzoo.viz.segmentation.colorize uses the Pascal VOC palette, in which Sneaker is
# (64, 0, 0): almost invisible on a black background.)
COLOURS = np.vstack([[0.12, 0.12, 0.12], plt.cm.tab10(np.arange(10))[:, :3]])


def colorize(mask):
    """The (H, W, 3) colour picture of a label map."""
    return COLOURS[np.asarray(mask)]


# %% [markdown]
# ## 1 · The data: scenes with a label for every pixel
#
# The lecture's example is Cityscapes (30 classes of street scenes). Here we use cnnzoo's
# *scenes*: 96 x 96 RGB canvases with 1-6 Fashion-MNIST items, each tinted with a random
# colour (so only its **shape** tells its class), later items occluding earlier ones. The
# label map holds 0 for background and 1-10 for the item classes: 11 classes.
#
# `generate_scenes` is deterministic: the test scenes written here are the first `N_TEST`
# of the 400 that `--data scenes` uses, which is what the shipped weights were measured on.
# First, which segmentation weights ship with cnnzoo (the command line, from Python):

# %%
listing = subprocess.run(
    [sys.executable, "-m", "cnnzoo", "weights", "list", "--task", "segmentation"],
    check=True,
    capture_output=True,
    text=True,
)
print(listing.stdout)

# written into the current folder, one folder per N_TEST (an existing one is reused)
root = generate_scenes(f"scenes-{N_TEST}", n_train=0, n_test=N_TEST, seed=0)
test = scenes_dataset(root, "test")
images = torch.stack([test[i][0] for i in range(len(test))])  # uint8 (N, 3, 96, 96)
masks = torch.stack([test[i][1] for i in range(len(test))])  # int64 (N, 96, 96)
prep = cnnzoo.weights.get("fcn8s.scenes").preprocessing  # what the shipped weights expect
x = normalize_batch(images, prep.mean, prep.std)
print(f"{len(test)} test scenes, images {tuple(images.shape)}, masks {tuple(masks.shape)}")
print("preprocessing:", prep.describe())
share = masks.flatten().bincount(minlength=len(SCENE_CLASSES)).float() / masks.numel()
for name, s in zip(SCENE_CLASSES, share.tolist(), strict=True):
    print(f"  {name:<12} {100 * s:5.1f} % of the pixels")


# %%
def class_legend(fig, classes=range(len(SCENE_CLASSES)), ncol=6):
    """One legend for a figure: a colour patch per class."""
    handles = [Patch(color=COLOURS[c], label=SCENE_CLASSES[c]) for c in classes]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)


fig, axes = plt.subplots(2, len(SHOW), figsize=(2.1 * len(SHOW), 5.0))
for col, i in enumerate(SHOW):
    axes[0, col].imshow(to_rgb(images[i]))
    axes[0, col].set_title(f"test scene {i}", fontsize=9)
    axes[1, col].imshow(colorize(masks[i]))
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("image")
axes[1, 0].set_ylabel("label map")
class_legend(fig)
fig.suptitle("Semantic segmentation: one class per pixel")
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# Background covers over 80 % of the pixels: a model predicting "background" everywhere
# has over 80 % pixel accuracy and is useless. That is why segmentation is scored by the
# **intersection over union** of each class, averaged over classes (mIoU, section 9).
#
# ## 2 · The task: per-pixel classification
#
# "Semantic segmentation → per-pixel classification → we can use similar loss functions":
# the network outputs $C$ scores for every pixel, a softmax turns them into
# $p(y_{u}\mid x;\theta)$, and the loss is the classification loss averaged over the
# labelled pixels $u$:
#
# $$L(y) = -\frac{1}{|\Omega|}\sum_{u\in\Omega}\log p(y_u \mid x;\theta).$$
#
# cnnzoo's `segmentation_loss` is exactly this (cross-entropy with 255 = ignore). Below,
# the shipped FCN-8s on one scene, and the same loss **before** averaging: one number per
# pixel.

# %%
fcn = cnnzoo.create_model("fcn8s", weights="fcn8s.scenes").eval()
unet = cnnzoo.create_model("unet", weights="unet.scenes").eval()

i = SHOW[1]
with torch.inference_mode():
    logits = fcn(x[i : i + 1])
pixel_loss = F.cross_entropy(logits, masks[i : i + 1], reduction="none")[0]
print("input", tuple(x[i : i + 1].shape), "-> logits", tuple(logits.shape))
print(f"segmentation_loss (cnnzoo):  {segmentation_loss(logits, masks[i : i + 1]):.4f}")
print(f"mean of the per-pixel losses: {pixel_loss.mean():.4f}")

fig, axes = plt.subplots(1, 4, figsize=(11, 3.2))
panels = [
    ("input", to_rgb(images[i])),
    ("ground truth", colorize(masks[i])),
    ("FCN-8s prediction", colorize(logits[0].argmax(0))),
]
for ax, (title, picture) in zip(axes, panels, strict=False):
    ax.imshow(picture)
    ax.set_title(title)
    ax.set_axis_off()
shown = axes[3].imshow(pixel_loss, cmap="magma")
axes[3].set_title(r"per-pixel loss $-\log p(y_u)$")
axes[3].set_axis_off()
fig.colorbar(shown, ax=axes[3], fraction=0.046)
present = sorted(set(masks[i].unique().tolist()) | set(logits[0].argmax(0).unique().tolist()))
class_legend(fig, present, ncol=len(present))
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# The loss is near zero on the background and inside the items; it concentrates on the
# items' outlines and on the pixels whose class the net confuses. Every pixel is one
# classification example, so a single 96 x 96 scene gives 9,216 of them.
#
# ## 3 · The naive approach: classify a patch around every pixel
#
# Farabet et al. (2013) and Pinheiro & Collobert (2014) label each pixel by running a small
# classification CNN on the window around it. cnnzoo's `patchwise` model does exactly that,
# window by window (15 x 15 windows, one per pixel). Neighbouring windows overlap by 14 of
# their 15 columns, yet they share **no** computation. The lecture's next step is a network
# of convolutions that predicts all pixels at once, without downsampling (`fullres_fcn`,
# "impractical"), and then the encoder-decoder (`encdec`) and FCN.
#
# We build the four models of cnnzoo's `segmentation-cost` experiment with the same settings
# (`SegCostSettings`) and measure them here. Cost does not depend on the weights, so no
# training is needed for this part: parameters, MACs for one 96 x 96 image
# (`cnnzoo.summary.count_macs`), and milliseconds per image in a small batch
# (`cnnzoo.experiments.timing.inference_ms`: fp32, one thread, after a warm-up pass).


# %%
def measure(model, n_images=4, repeats=2):
    """Parameters, MACs per 96x96 image, ms per image (batch of n_images), output shape."""
    macs = count_macs(model, (3, 96, 96))
    ms, out = inference_ms(model, x[:n_images], repeats=repeats)
    return {
        "params": count_params(model),
        "gmacs": macs / 1e9,
        "macs_per_pixel": macs / (96 * 96),
        "ms": ms,
        "out": tuple(out.shape[1:]),
    }


torch.manual_seed(0)
settings = SegCostSettings().models
costs = {}
for name, options in settings.items():
    model = cnnzoo.create_model(name, num_classes=11, **options)
    costs[name] = measure(model, n_images=2, repeats=1) if name == "patchwise" else measure(model)
print(f"{'model':<12} {'params':>9} {'GMACs':>7} {'MACs/pixel':>11} {'ms/image':>9}  output")
for name, c in costs.items():
    print(
        f"{name:<12} {c['params']:>9,} {c['gmacs']:>7.3f} {c['macs_per_pixel']:>11,.0f} "
        f"{c['ms']:>9.2f}  {c['out']}"
    )
p, e = costs["patchwise"], costs["encdec"]
print(
    f"\npatch-wise vs encoder-decoder: {p['gmacs'] / e['gmacs']:.1f}x the MACs, "
    f"{p['ms'] / e['ms']:.1f}x the time per image"
)

# %% [markdown]
# Compare with `docs/segmentation.md` ("segmentation-cost", measured on the 2-core
# development CPU with bf16): patchwise 6.338 GMACs and 84.5 ms per image, fullres_fcn 0.436 GMACs,
# encdec 0.213, fcn8s 0.126; there patch-wise needed 29.7x the MACs of the encoder-decoder
# and was 48x slower. The MACs above match exactly (they are counted, not timed); the
# milliseconds depend on the CPU, the precision (fp32 and one thread here) and on what else
# runs on the machine, so the time ratio differs from the docs' while the MAC ratio does not.
#
# The full-resolution FCN is cheap in parameters (every layer is a 3x3 convolution at
# 96 x 96) but costs twice the MACs per pixel of the encoder-decoder, and after six 3x3
# layers its receptive field is only $1 + 6\cdot 2 = 13$ pixels: it cannot see a whole
# 20-48 px item. Trained for the same 120 s in the docs' experiment, it reached mIoU 0.112,
# patch-wise 0.078 (23 optimisation steps!), the encoder-decoder 0.347 and FCN-8s 0.472.
#
# ## 4 · The encoder-decoder: downsample, then upsample inside the network
#
# "Design network as a bunch of convolutional layers, with **downsampling** and
# **upsampling** inside the network." The encoder is a classification backbone (it "can be
# pre-trained on image classification"); the decoder brings the map back to $H\times W$,
# one x2 step at a time. The output shape of every block of `encdec` (the experiment's
# configuration), from `cnnzoo.summary.summarize`:

# %%
encdec = cnnzoo.create_model("encdec", num_classes=11, **settings["encdec"])
print(f"{'block':<22} {'output (N, C, H, W)':<22} {'params':>9}")
print(f"{'input':<22} {(1, 3, 96, 96)!s:<22}")
for row in summarize(encdec, (3, 96, 96), max_depth=2):
    if row.name.count(".") == 0 or row.name.startswith("decoder."):
        print(f"{row.name:<22} {row.output_shape!s:<22} {row.params:>9,}")

# %% [markdown]
# The encoder shrinks 96 x 96 to 6 x 6 (stride 16) while the channels grow to 128; four
# x2 steps bring it back. Each step is an upsampling followed by a 3x3 convolution.
#
# ### Transposed convolution and the other upsampling choices
#
# The lecture's upsampling is the **transposed convolution** ("deconvolution"): it is
# parameterised, so it can be trained. FCN initialises it to bilinear interpolation; for a
# factor $f$ the kernel is $k\times k$ with $k=2f$ and weights
# $w_{ij}=\left(1-\frac{|i-c|}{f}\right)\left(1-\frac{|j-c|}{f}\right)$, $c=f-\tfrac12$,
# one channel at a time (`cnnzoo.layers.upsample.bilinear_kernel`). The alternatives are
# fixed: bilinear or nearest interpolation, no parameters.
#
# What did training do to those kernels? The shipped FCN-8s has three transposed
# convolutions (x2, x2 and a final x4, section 5). Below, the final one's kernel for one
# class next to its bilinear initialisation.

# %%
for mode in ("transposed", "bilinear", "nearest"):
    model = cnnzoo.create_model("encdec", num_classes=11, upsample=mode, **settings["encdec"])
    print(f"encdec with {mode:<10} upsampling: {count_params(model):>9,} parameters")

final = fcn.up_final.deconv.weight.detach()  # (classes in, classes out, 8, 8)
init = bilinear_kernel(final.shape[0], final.shape[-1])
c = SCENE_CLASSES.index("Trouser")
off = final.clone()
off[range(11), range(11)] = 0
print(
    f"\nfinal x{fcn.up_final.factor} kernel: relative change from bilinear "
    f"{(final - init).norm() / init.norm():.2f}; largest weight between two different "
    f"classes {off.abs().max():.3f} (0 at the start)"
)
fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.1), sharey=True)
lim = float(max(final[c, c].abs().max(), init[c, c].abs().max()))
for ax, (title, kernel) in zip(
    axes,
    [
        ("bilinear initialisation", init[c, c]),
        ("after training", final[c, c]),
        ("difference", final[c, c] - init[c, c]),
    ],
    strict=True,
):
    shown = ax.imshow(kernel, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(f"{title}", fontsize=10)
    ax.set_xlabel("kernel column")
axes[0].set_ylabel("kernel row")
fig.colorbar(shown, ax=axes, fraction=0.02)
fig.suptitle(f"FCN-8s final x4 transposed convolution, {SCENE_CLASSES[c]} → {SCENE_CLASSES[c]}")
plt.show()

# %% [markdown]
# Training kept the bilinear shape of the kernel but scaled it up, and, more important, the
# kernel now mixes the classes (weights up to 0.88 between two different classes, where the
# bilinear kernel has zeros): the upsampled score of one class depends on the coarse scores
# of the others.
#
# Does that learned upsampling matter? Swap the three trained transposed convolutions of
# the shipped FCN-8s for cnnzoo's fixed `Upsample(..., "bilinear")` or `"nearest"` and
# measure mIoU on the `N_TEST` scenes (no retraining: only the upsampling changes).


# %%
def predict(model, batch=x, size=40):
    """Per-pixel classes (N, H, W) of a batch, in chunks."""
    with torch.inference_mode():
        return torch.cat([model(b).argmax(1) for b in batch.split(size)])


def scores(prediction, truth=masks):
    """(confusion matrix, IoU per class) over all pixels of the test scenes."""
    metric = MulticlassConfusionMatrix(len(SCENE_CLASSES), ignore_index=255)
    metric.update(prediction, truth)
    confusion = metric.compute()
    return confusion, iou_from_confusion(confusion)


def with_fixed_upsampling(model, mode):
    """A copy of an FCN whose transposed convolutions are replaced by fixed ones."""
    copy_ = copy.deepcopy(model)
    copy_.up_skips = torch.nn.ModuleList(Upsample(11, up.factor, mode) for up in model.up_skips)
    copy_.up_final = Upsample(11, model.up_final.factor, mode)
    return copy_


variants = {
    "learned (shipped)": fcn,
    "bilinear": with_fixed_upsampling(fcn, "bilinear"),
    "nearest": with_fixed_upsampling(fcn, "nearest"),
}
up_pred = {name: predict(model) for name, model in variants.items()}
for name, prediction in up_pred.items():
    print(f"FCN-8s, {name:<18} upsampling: mIoU {scores(prediction)[1].nanmean():.4f}")

fig, axes = plt.subplots(3, 1 + len(variants), figsize=(2.3 * (1 + len(variants)), 7.3))
for row, i in enumerate(SHOW[:3]):
    axes[row, 0].imshow(colorize(masks[i]))
    axes[row, 0].set_title(f"truth, scene {i}", fontsize=9)
    for col, (name, prediction) in enumerate(up_pred.items(), start=1):
        axes[row, col].imshow(colorize(prediction[i]))
        axes[row, col].set_title(name, fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
class_legend(fig, ncol=4)
fig.tight_layout(rect=(0, 0.1, 1, 1))
plt.show()

# %% [markdown]
# For this FCN the learned upsampling matters a lot: with fixed interpolation the mIoU
# drops by 0.15-0.21. The outlines shift and grow bands of a wrong class along the items'
# edges (bilinear), or turn into blocks of the coarse grid (nearest). In FCN the upsampling
# is the **last** layer, with nothing after it to correct it, so what the transposed
# convolutions learned (including how the classes' scores combine) cannot be thrown away.
#
# Compare with the docs' `upsampling` experiment, where the same encoder-decoder was
# *trained* from scratch with each mode (1,500 steps each): transposed 0.388 mIoU
# (741,675 parameters), bilinear 0.394 and nearest 0.419 (393,515 parameters). There the
# fixed modes lose nothing, because each upsampling is followed by a 3x3 convolution that
# learns to refine the upsampled map, and the transposed convolutions only add 47 % of the
# parameters. "Should obtain better results than standard interpolation methods" depends on
# what comes after the upsampling.
#
# ## 5 · FCN: skip connections (FCN-32s, FCN-16s, FCN-8s)
#
# Long, Shelhamer & Darrell (CVPR 2015): a 1x1 "score" convolution turns the deepest map
# into class scores, which are upsampled to the input. FCN-32s does this in one x32 step,
# which gives coarse outlines. FCN-16s first upsamples x2 and **adds** the scores of the
# stride-16 map, FCN-8s also those of the stride-8 map:
#
# $$s_{8s} = \mathrm{up}_{\times 8}\Big(\mathrm{up}_{\times 2}\big(\mathrm{up}_{\times 2}
# (s_{32}) + s_{16}\big) + s_{8}\Big).$$
#
# The shipped `fcn8s.scenes` sits on a 4-stage VGG-style `convnet` whose deepest map has
# stride 16 on the 96 x 96 scenes (6 x 6), so its three score maps have strides 16, 8 and 4
# (the paper's 32, 16, 8 on a VGG16); the naming counts the skips, not the strides.
# Parameters, MACs and output shapes of the three variants on the same backbone:

# %%
fcn_options = cnnzoo.weights.get("fcn8s.scenes").spec["kwargs"]
print("shipped FCN-8s options:", fcn_options)
for name in ("fcn32s", "fcn16s", "fcn8s"):
    model = cnnzoo.create_model(name, **fcn_options)
    costs[name] = measure(model)
    score_shapes = [
        r.output_shape[-2:] for r in summarize(model, (3, 96, 96), 2) if "score" in r.name
    ]
    print(
        f"{name}: {costs[name]['params']:,} parameters, {costs[name]['gmacs']:.3f} GMACs, "
        f"score maps {score_shapes} -> logits {costs[name]['out']}"
    )

# %% [markdown]
# The skips cost almost nothing: a 1x1 score convolution and a small x2 transposed
# convolution each. FCN-32s even has the *most* parameters, because its single final
# upsampling (x16 here) is a transposed convolution with $11\times 11$ kernels of
# $32\times 32$, against $8\times 8$ for FCN-8s's final x4.
#
# What do the skips add? The paper initialises the skip score layers to zero, so FCN-8s
# *starts* from the coarse net's prediction and the skips only add detail. We can undo
# that on the trained model: zero the finer score layers and look at what the coarse path
# alone predicts. (These are ablations of one trained FCN-8s, not separately trained
# FCN-32s and FCN-16s, which would do better than their ablated versions.)


# %%
def without_skips(model, keep):
    """A copy of an FCN whose score layers after the first `keep` skips output zero."""
    copy_ = copy.deepcopy(model)
    for layer in copy_.score_skips[keep:]:
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return copy_


skip_pred = {
    "coarse only (stride 16)": predict(without_skips(fcn, 0)),
    "+ stride-8 skip": predict(without_skips(fcn, 1)),
    "+ stride-4 skip (FCN-8s)": up_pred["learned (shipped)"],
}
skip_iou = {name: scores(prediction)[1] for name, prediction in skip_pred.items()}
for name, iou in skip_iou.items():
    print(f"{name:<26} mIoU {iou.nanmean():.4f}")

fig, axes = plt.subplots(3, 4, figsize=(9.4, 7.3))
for row, i in enumerate(SHOW[2:5]):
    axes[row, 0].imshow(to_rgb(images[i]))
    axes[row, 0].set_title(f"scene {i}", fontsize=9)
    for col, (name, prediction) in enumerate(skip_pred.items(), start=1):
        axes[row, col].imshow(colorize(prediction[i]))
        axes[row, col].set_title(name, fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
class_legend(fig, ncol=6)
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# The coarse path finds *where* the items are but draws them as blobs of the 6 x 6 grid;
# each skip brings back the outlines from a finer map, the lecture's reason for skip
# connections. Which classes gain most from the skips? Per-class IoU of the three:

# %%
fig, ax = plt.subplots(figsize=(9, 3.4))
width = 0.27
for k, (name, iou) in enumerate(skip_iou.items()):
    ax.bar(np.arange(11) + (k - 1) * width, iou.numpy(), width, label=name)
ax.set_xticks(range(11), SCENE_CLASSES, rotation=30, ha="right", fontsize=8)
ax.set_ylabel("IoU")
ax.set_ylim(0, 1)
ax.set_title(f"FCN-8s with its skips removed, {N_TEST} test scenes")
ax.legend(fontsize=8, ncol=3, loc="upper left")
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · SegNet: max-unpooling with the pooling indices
#
# Badrinarayanan, Kendall & Cipolla (2015): an encoder-decoder whose decoder does not
# *learn* its upsampling. Each 2x2 max-pool of the encoder remembers **where** each maximum
# was; the matching decoder stage puts the values back at exactly those positions (zeros
# elsewhere) and then densifies the sparse map with 3x3 convolutions. The encoder pays
# nothing for it, and the decoder keeps the positions of strong responses (edges) without
# storing the encoder's feature maps, as U-Net does.
#
# Below, the first pooling and unpooling layers of cnnzoo's `segnet` applied three times
# to a map we can read: the edge strength of a scene (the gradient magnitude of its gray
# image, the kind of map a first convolution layer computes). Three poolings (stride 8),
# then three max-unpoolings with the stored indices, next to nearest-neighbour upsampling
# of the same 12 x 12 map.

# %%
segnet = cnnzoo.create_model("segnet", num_classes=11)  # the paper's VGG16-bn encoder
pool, unpool = segnet.encoder[0].pool, segnet.decoder[0].unpool
i = SHOW[1]
gray = images[i : i + 1].float().mean(1, keepdim=True)
sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")  # no false edges at the border
gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
gy = F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))
edges = (gx.square() + gy.square()).sqrt()
y, stored = edges, []
for _ in range(3):
    size = tuple(y.shape[-2:])
    y, indices = pool(y)
    stored.append((indices, size))
pooled = y
unpooled = pooled
for indices, size in reversed(stored):
    unpooled = unpool(unpooled, indices, output_size=size)
nearest = F.interpolate(pooled, size=edges.shape[-2:], mode="nearest")
print(f"pooled {tuple(pooled.shape)}, unpooled {tuple(unpooled.shape)}")
print(f"non-zero pixels after max-unpooling: {(unpooled > 0).float().mean():.1%} (1/64 = 1.6 %)")

fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.9))
axes[0].imshow(to_rgb(images[i]))
axes[0].set_title(f"scene {i}", fontsize=10)
top = float(edges.max())
for ax, (title, picture) in zip(
    axes[1:],
    [
        ("edge strength (96 x 96)", edges),
        ("3 max-pools (12 x 12)", pooled),
        ("3 max-unpools with indices", unpooled),
        ("nearest upsampling", nearest),
    ],
    strict=True,
):
    ax.imshow(picture[0, 0], cmap="magma", vmin=0, vmax=top)
    ax.set_title(title, fontsize=10)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# Each maximum lands back on the pixel it came from: the sparse dots lie on the items'
# outlines, where nearest upsampling smears every value over an 8 x 8 block. The
# decoder's 3x3 convolutions then fill in the zeros. The cost of the paper's SegNet (VGG16
# widths 64-512) on a 96 x 96 scene:

# %%
costs["segnet"] = measure(segnet, n_images=2, repeats=1)
print(
    f"segnet (VGG16-bn): {costs['segnet']['params']:,} parameters, "
    f"{costs['segnet']['gmacs']:.2f} GMACs per 96 x 96 image, {costs['segnet']['ms']:.1f} ms"
)
print(f"{'stage':<10} {'output (N, C, H, W)':<20} {'params':>10}")
for row in summarize(segnet, (3, 96, 96), max_depth=2):
    if row.name.count(".") == 1 or row.name == "classifier":
        print(f"{row.name:<10} {row.output_shape!s:<20} {row.params:>10,}")

# %% [markdown]
# The decoder mirrors the encoder: the same widths and almost the same parameters, and no
# weights at all in the unpooling. (The docs' CPU benchmark trained a narrow SegNet, widths
# 16-128 and 1.85 M parameters, which reached only 0.10 mIoU in 5 minutes.)
#
# ## 7 · PSPNet: pyramid pooling for global context
#
# Zhao et al. (CVPR 2017): the deepest feature map is average-pooled to grids of 1 x 1,
# 2 x 2, 3 x 3 and 6 x 6 cells, each pooled map is reduced by a 1x1 convolution, upsampled
# back bilinearly and concatenated with the map itself. A pixel's prediction then sees the
# whole scene (1 x 1 bin), its quadrant (2 x 2), and so on. Below, the four pooling grids of
# cnnzoo's `PyramidPooling` (the module inside `pspnet`), applied to a scene's pixels so
# that we can see the context each branch provides, upsampled back as the module does.

# %%
psp = cnnzoo.create_model("pspnet", num_classes=11)  # ResNet-18 backbone, bins 1, 2, 3, 6
i = SHOW[4]
picture = images[i : i + 1].float() / 255
fig, axes = plt.subplots(1, 1 + len(psp.ppm.bins), figsize=(11, 2.6))
axes[0].imshow(to_rgb(images[i]))
axes[0].set_title("scene", fontsize=10)
for ax, bins, stage in zip(axes[1:], psp.ppm.bins, psp.ppm.stages, strict=True):
    pooled = stage[0](picture)  # the branch's AdaptiveAvgPool2d
    back = F.interpolate(pooled, size=picture.shape[-2:], mode="bilinear", align_corners=False)
    ax.imshow(back[0].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(f"bin {bins}: {tuple(pooled.shape[-2:])} grid", fontsize=10)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# In PSPNet the pyramid runs on the backbone's deepest feature map, not on pixels. How big
# is that map for a 96 x 96 scene? With ResNet-18's strides (cnnzoo's default,
# `dilated=False`) the map is 3 x 3; the paper's dilated ResNet (`dilated=True`) keeps
# stride 8, a 12 x 12 map, at about 6x the MACs:

# %%
psp_dilated = cnnzoo.create_model("pspnet", num_classes=11, dilated=True)
for name, model in (("pspnet", psp), ("pspnet dilated", psp_dilated)):
    costs[name] = measure(model)
    rows = {r.name: r for r in summarize(model, (3, 96, 96), max_depth=1)}
    print(
        f"{name:<15} backbone {rows['backbone'].output_shape} -> pyramid "
        f"{rows['ppm'].output_shape} -> head {rows['head'].output_shape} -> logits "
        f"{costs[name]['out']}; {costs[name]['params'] / 1e6:.2f} M parameters, "
        f"{costs[name]['gmacs']:.2f} GMACs"
    )

# %% [markdown]
# The pyramid doubles the channels (512 + 4 x 128 = 1024); its bins of 6 on a 3 x 3 map
# just repeat cells. The logits come out at stride 32 (or 8) and are upsampled bilinearly
# by 32 (or 8) with nothing learned: the docs' sweep found that PSPNet's coarse output
# "loses the items' outlines" on these small scenes (0.530 mIoU against 0.624 for FCN-8s
# on the same encoder).
#
# ## 8 · U-Net: skips that concatenate
#
# Ronneberger, Fischer & Brox (2015): a contracting path (two 3x3 convolutions and a
# max-pool per level, the channels doubling) and a symmetric expanding path (a 2x2
# up-convolution, **concatenation** with the contracting map of the same size, two 3x3
# convolutions). Where FCN *adds* class scores and SegNet reuses pooling *indices*, U-Net
# passes the encoder's whole feature maps to the decoder. The shipped `unet.scenes` has 4
# levels of width 16-256:

# %%
print("shipped U-Net options:", cnnzoo.weights.get("unet.scenes").spec["kwargs"])
print(f"{'level':<12} {'output (N, C, H, W)':<20} {'params':>9}")
for row in summarize(unet, (3, 96, 96), max_depth=2):
    if "." not in row.name or (row.name.count(".") == 1 and not row.name.startswith("inc.")):
        print(f"{row.name:<12} {row.output_shape!s:<20} {row.params:>9,}")
costs["unet"] = measure(unet)

# %% [markdown]
# `up.0` upsamples the 6 x 6 bottom (256 channels) to 12 x 12 x 128, concatenates the
# 128 channels of `down.2` (256 in all) and convolves back to 128; each level repeats this.
# The full-resolution level `inc` gives the decoder the sharp outlines of the input.
#
# ## 9 · Measuring: per-class IoU and mIoU on the test scenes
#
# For a class $c$, with TP, FP and FN counted over all pixels of all test scenes,
#
# $$\mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c},\qquad
# \mathrm{mIoU} = \frac{1}{|C'|}\sum_{c\in C'}\mathrm{IoU}_c,$$
#
# over the classes $C'$ that occur in the labels or the predictions (cnnzoo's
# `iou_from_confusion`, from one confusion matrix). First the shipped models on five test
# scenes, then their scores on all `N_TEST`.

# %%
pred = {"FCN-8s": up_pred["learned (shipped)"], "U-Net": predict(unet)}
weight_names = {"FCN-8s": "fcn8s.scenes", "U-Net": "unet.scenes"}
fig, axes = plt.subplots(len(SHOW), 4, figsize=(8.4, 2.1 * len(SHOW) + 0.6))
for row, i in enumerate(SHOW):
    panels = [("input", to_rgb(images[i])), ("ground truth", colorize(masks[i]))]
    panels += [(name, colorize(p[i])) for name, p in pred.items()]
    for ax, (title, picture) in zip(axes[row], panels, strict=True):
        ax.imshow(picture)
        ax.set_axis_off()
        if row == 0:
            ax.set_title(title)
class_legend(fig, ncol=4)
fig.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()

# %%
tables = {}
for name, prediction in pred.items():
    confusion, iou = scores(prediction)
    tables[name] = class_table(confusion, iou, SCENE_CLASSES)
    catalog = cnnzoo.weights.get(weight_names[name]).metrics
    accuracy = float(confusion.diagonal().sum() / confusion.sum())
    print(
        f"{name}: mIoU {iou.nanmean():.4f}, pixel accuracy {accuracy:.4f} on {N_TEST} scenes "
        f"(catalog, all 400: mIoU {catalog['test/miou']:.4f}, "
        f"pixel accuracy {catalog['test/pixel_accuracy']:.4f})"
    )
print(f"\n{'class':<12} {'pixels':>8} " + " ".join(f"{n + ' IoU':>11}" for n in tables))
for k, cls in enumerate(SCENE_CLASSES):
    row = tables["FCN-8s"][k]
    print(f"{cls:<12} {row.pixels:>8,} " + " ".join(f"{t[k].iou:>11.3f}" for t in tables.values()))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (name, table) in zip(axes, tables.items(), strict=True):
    values = [r.iou for r in table]
    ax.barh(range(11), values, color=COLOURS.clip(0.15, 0.85))
    mean = float(np.mean(values))
    ax.axvline(mean, color="black", ls="--", lw=1, label=f"mIoU {mean:.3f}")
    ax.set_yticks(range(11), SCENE_CLASSES, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.set_title(f"{name}, {N_TEST} test scenes")
    ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Both models are within about 0.01 of each other, and on these 160 scenes within about
# 0.01 of the catalog's figures measured on all 400 (0.6301 and 0.6295; `cnnzoo eval
# fcn8s.scenes` reproduces those). Background is almost perfect; what costs IoU is telling
# the clothing classes apart from their shape alone: Shirt, Coat and Dress have the lowest
# IoU in both models, Trouser, Bag and Ankle boot the highest, as in the docs' sweep
# ("Shirt stays at 0.30-0.47 IoU in every recipe"). In the pictures above, the mistakes are
# whole items given the wrong class (Shirt read as Coat or Dress), rarely wrong outlines.
#
# ## 10 · Every segmenter side by side
#
# Parameters, MACs per 96 x 96 image, milliseconds per image (fp32, one thread, this CPU)
# and the output shape of every architecture measured above. `fcn8s` and `unet` are the
# shipped configurations; `patchwise`, `fullres_fcn` and `encdec` those of the docs'
# experiment; `segnet` and `pspnet` the papers' (VGG16-bn and ResNet-18).

# %%
order = sorted(costs, key=lambda n: costs[n]["gmacs"])
print(f"{'model':<15} {'params':>11} {'GMACs':>7} {'ms/image':>9}  output")
for name in order:
    c = costs[name]
    print(f"{name:<15} {c['params']:>11,} {c['gmacs']:>7.3f} {c['ms']:>9.2f}  {c['out']}")

family = {"patchwise": 0, "fullres_fcn": 1, "encdec": 2, "segnet": 4, "unet": 6}
colours = [plt.cm.tab10(family.get(n, 3 if n.startswith("fcn") else 5)) for n in order]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
for ax, key, label in zip(
    axes,
    ("params", "gmacs", "ms"),
    ("parameters", "GMACs per image", "ms per image"),
    strict=True,
):
    ax.barh(range(len(order)), [costs[n][key] for n in order], color=colours)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.grid(axis="x", alpha=0.3)
axes[0].set_yticks(range(len(order)), order, fontsize=9)
axes[0].invert_yaxis()
fig.suptitle("What each segmenter costs on a 96 x 96 scene (sorted by MACs)")
fig.tight_layout()
plt.show()
print(f"notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# Every model returns logits of the input's size: (11, 96, 96). Patch-wise classification
# is the most expensive per image by far, although it has the fewest parameters: cost is
# about how often the weights are applied, not how many there are. The papers' SegNet and
# PSPNet carry 17-30 M parameters for a 96 x 96 image; the shipped FCN-8s and U-Net, with
# 1.2 and 1.9 M, score 0.63 mIoU, where the docs' CPU runs of SegNet (narrow, 0.10) and
# PSPNet (0.26-0.53) on the same scenes stayed lower.
#
# ## Exercises
#
# 1. **Which upsampling matters?** In section 4, change `with_fixed_upsampling` so that it
#    replaces only `up_final` (keep the two learned x2 steps in `up_skips`), and re-run that
#    cell. How much of the mIoU drop comes from the final x4 step? Why would the last
#    upsampling of an FCN matter more than the same layer inside `encdec`, whose fixed
#    modes trained as well as the learned one in the docs' experiment?
# 2. **Which skip matters?** In section 5, zero only the stride-4 skip but keep the
#    stride-8 one, then the other way round (edit `without_skips` to take the list of
#    layers to zero). Re-run the cell with the per-class bars: which classes lose most IoU
#    without the finest skip, and what do they have in common (look at their size and
#    shape in the scenes)?
# 3. **Context at 96 pixels.** In section 7, print the output shape of each pooling branch
#    `stage[0]` applied to the backbone's feature map of `psp` and of `psp_dilated`
#    (`model.backbone(x[:1])[0]`). What does a 6 x 6 bin compute on a 3 x 3 map? Which of
#    the two models would you train on these scenes, and what does it cost in GMACs?
# 4. **How many test scenes?** Set `N_TEST = 64` in the setup cell, then `N_TEST = 400`,
#    and re-run the notebook. How much do the mIoU of FCN-8s and U-Net and the IoU of each
#    class move? Which class is the least stable, and how does its pixel count explain it?
#    Which `N_TEST` would you need to rank the two models with confidence?
