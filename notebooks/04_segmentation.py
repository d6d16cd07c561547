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
# (a class per pixel, the loss of classification), the slow naive patch-wise approach, the
# "impractical" full-resolution network, the encoder-decoder with transposed convolutions,
# FCN (skips, FCN-32s/16s/8s), SegNet (max-unpooling), PSPNet (pyramid pooling), U-Net.
#
# You will run the shipped `fcn8s.scenes` and `unet.scenes` on cnnzoo's *scenes* and
# measure their per-class IoU and mIoU, and open up the architectures: what the upsampling
# layers learned, what FCN's skips add, what max-unpooling and pyramid pooling do to a map,
# what each segmenter costs. Nothing is trained here. Runs in about 55 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# All imports are here. PyTorch runs on one thread: measured times then stay comparable
# when other programs share the two cores.

# %%
import copy
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
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
from cnnzoo.viz.panels import class_bars, class_colours, class_legend, cost_bars, image_grid
from cnnzoo.viz.segmentation import to_rgb

START = time.perf_counter()
torch.manual_seed(0)
torch.set_flush_denormal(True)  # as cnnzoo's own timings do: subnormal floats are slow on x86
torch.set_num_threads(1)

N_TEST = 160  # test scenes used for every metric below (the catalog's figures use all 400)
SHOW = [0, 3, 5, 8, 12]  # the test scenes shown in the figures
# One distinct colour per class, background near-black (in the Pascal VOC palette of
# cnnzoo.viz.segmentation.colorize, Sneaker is (64, 0, 0): almost invisible on black).
COLOURS = class_colours(len(SCENE_CLASSES))
LEGEND = class_legend(SCENE_CLASSES, COLOURS)


def colorize(mask):
    """The (H, W, 3) colour picture of a label map."""
    return COLOURS[np.asarray(mask)]


# %% [markdown]
# ## 1 · The data: scenes with a label for every pixel
#
# The lecture's example is Cityscapes (30 classes of street scenes); cnnzoo's *scenes* are
# 96 x 96 RGB canvases with 1-6 Fashion-MNIST items, each tinted with a random colour (only
# its **shape** tells its class), later items occluding earlier ones. Labels: 0 background,
# 1-10 the items. These are the first `N_TEST` of the 400 test scenes of `--data scenes`
# (`generate_scenes` is deterministic), on which the shipped weights were measured. First,
# which segmentation weights ship with cnnzoo (the command line, from Python):

# %%
command = [sys.executable, "-m", "cnnzoo", "weights", "list", "--task", "segmentation"]
print(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

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
percent = [f"{name} {100 * s:.1f} %" for name, s in zip(SCENE_CLASSES, share, strict=True)]
print("share of the pixels:", ", ".join(percent))

rows = [[(f"test scene {i}", to_rgb(images[i])) for i in SHOW]]
rows.append([("label map", colorize(masks[i])) for i in SHOW])
image_grid(rows, legend=LEGEND, title="Semantic segmentation: one class per pixel")
plt.show()

# %% [markdown]
# Background covers over 80 % of the pixels: "background" everywhere would score over 80 %
# pixel accuracy. Hence the **intersection over union** per class, averaged (mIoU, sec. 9).
#
# ## 2 · The task: per-pixel classification
#
# "Semantic segmentation → per-pixel classification → we can use similar loss functions":
# $C$ scores per pixel, a softmax gives $p(y_{u}\mid x;\theta)$, and the loss is the
# classification loss averaged over the labelled pixels $u$:
#
# $$L(y) = -\frac{1}{|\Omega|}\sum_{u\in\Omega}\log p(y_u \mid x;\theta).$$
#
# cnnzoo's `segmentation_loss` is exactly this (cross-entropy, 255 = ignore). The shipped
# FCN-8s on one scene, and the same loss **before** averaging, one number per pixel:

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

guess = logits[0].argmax(0)
present = sorted(set(masks[i].unique().tolist()) | set(guess.unique().tolist()))
panels = [("input", to_rgb(images[i])), ("ground truth", colorize(masks[i]))]
panels += [("FCN-8s prediction", colorize(guess)), (r"per-pixel loss $-\log p(y_u)$", pixel_loss)]
legend = class_legend(SCENE_CLASSES, COLOURS, present)
image_grid([panels], size=2.8, cmap="magma", legend=legend, legend_columns=len(present))
plt.show()

# %% [markdown]
# The loss is near zero on the background and inside the items; it concentrates on the
# items' outlines and on the pixels whose class the net confuses. Every pixel is one
# classification example: one 96 x 96 scene gives 9,216 of them.
#
# ## 3 · The naive approach: classify a patch around every pixel
#
# Farabet et al. (2013) and Pinheiro & Collobert (2014) run a small classification CNN on
# the window around each pixel; cnnzoo's `patchwise` does exactly that (15 x 15 windows):
# neighbouring windows overlap by 14 of their 15 columns, yet share **no** computation.
# Next in the lecture: all pixels at once with convolutions and no downsampling
# (`fullres_fcn`, "impractical"), then the encoder-decoder (`encdec`) and FCN. The four
# models of cnnzoo's `segmentation-cost` experiment (`SegCostSettings`), untrained (cost
# does not depend on the weights): parameters, MACs per 96 x 96 image (`count_macs`) and
# ms per image in a small batch (`inference_ms`: fp32, one thread, after a warm-up).


# %%
def measure(model, n_images=4, repeats=2):
    """Parameters, MACs per 96x96 image, ms per image (batch of n_images), output shape."""
    macs = count_macs(model, (3, 96, 96))
    ms, out = inference_ms(model, x[:n_images], repeats=repeats)
    return dict(params=count_params(model), gmacs=macs / 1e9, ms=ms, out=tuple(out.shape[1:]))


def cost_table(names):
    """Print parameters, GMACs, MACs per pixel, ms per image and output shape of each model."""
    print(f"{'model':<15} {'params':>11} {'GMACs':>7} {'MACs/pixel':>11} {'ms/image':>9}  output")
    for n, c in ((n, costs[n]) for n in names):
        macs_per_pixel = c["gmacs"] * 1e9 / 96**2
        print(f"{n:<15} {c['params']:>11,} {c['gmacs']:>7.3f} {macs_per_pixel:>11,.0f} ", end="")
        print(f"{c['ms']:>9.2f}  {c['out']}")


torch.manual_seed(0)
settings = SegCostSettings().models
costs = {}
for name, options in settings.items():
    model = cnnzoo.create_model(name, num_classes=11, **options)
    costs[name] = measure(model, n_images=2, repeats=1) if name == "patchwise" else measure(model)
cost_table(costs)
p, e = costs["patchwise"], costs["encdec"]
print(f"\npatch-wise vs encoder-decoder: {p['gmacs'] / e['gmacs']:.1f}x the MACs,", end=" ")
print(f"{p['ms'] / e['ms']:.1f}x the time per image")

# %% [markdown]
# `docs/segmentation.md` ("segmentation-cost", 2-core CPU, bf16): patchwise 6.338 GMACs and
# 84.5 ms per image, fullres_fcn 0.436 GMACs, encdec 0.213, fcn8s 0.126; 29.7x the MACs of
# the encoder-decoder, 48x slower. The MACs match (counted, not timed); the times depend on
# the CPU, the precision and the load. The full-resolution FCN is cheap in parameters but
# costs twice the MACs per pixel of the encoder-decoder, and after six 3x3 layers sees only
# $1 + 6\cdot 2 = 13$ pixels, not a whole 20-48 px item. Trained for 120 s in the docs it
# reached mIoU 0.112, patch-wise 0.078 (23 steps!), encoder-decoder 0.347, FCN-8s 0.472.
#
# ## 4 · The encoder-decoder: downsample, then upsample inside the network
#
# "Design network as a bunch of convolutional layers, with **downsampling** and
# **upsampling** inside the network." The encoder is a classification backbone (it "can be
# pre-trained on image classification"); the decoder brings the map back to $H\times W$,
# one x2 step at a time. Every block of `encdec` (`cnnzoo.summary.summarize`):

# %%
encdec = cnnzoo.create_model("encdec", num_classes=11, **settings["encdec"])
print(f"{'block':<22} {'output (N, C, H, W)':<22} {'params':>9}")
print(f"{'input':<22} {(1, 3, 96, 96)!s:<22}")
for row in summarize(encdec, (3, 96, 96), max_depth=2):
    if row.name.count(".") == 0 or row.name.startswith("decoder."):
        print(f"{row.name:<22} {row.output_shape!s:<22} {row.params:>9,}")

# %% [markdown]
# The encoder shrinks 96 x 96 to 6 x 6 (stride 16) while the channels grow to 128; four
# x2 steps, each an upsampling and a 3x3 convolution, bring it back.
#
# ### Transposed convolution and the other upsampling choices
#
# The lecture's upsampling is the **transposed convolution** ("deconvolution"): it has
# parameters, so it can be trained. FCN initialises it to bilinear interpolation: for a
# factor $f$ a $2f\times 2f$ kernel, $w_{ij}=\left(1-\frac{|i-c|}{f}\right)\left(1-\frac{|j-c|}
# {f}\right)$, $c=f-\tfrac12$, per channel (`bilinear_kernel`). The alternatives, bilinear or
# nearest interpolation, are fixed. What did training do to those kernels? The shipped
# FCN-8s's final x4 kernel (section 5) for one class, next to its bilinear initialisation:

# %%
for mode in ("transposed", "bilinear", "nearest"):
    model = cnnzoo.create_model("encdec", num_classes=11, upsample=mode, **settings["encdec"])
    print(f"encdec with {mode:<10} upsampling: {count_params(model):>9,} parameters")

final = fcn.up_final.deconv.weight.detach()  # (classes in, classes out, 8, 8)
init = bilinear_kernel(final.shape[0], final.shape[-1])
c = SCENE_CLASSES.index("Trouser")
off = final * (1 - torch.eye(11)[:, :, None, None])  # the weights between two classes
print(
    f"\nfinal x{fcn.up_final.factor} kernel: relative change from bilinear "
    f"{(final - init).norm() / init.norm():.2f}; largest weight between two different "
    f"classes {off.abs().max():.3f} (0 at the start)"
)
lim = float(max(final[c, c].abs().max(), init[c, c].abs().max()))
panels = [("bilinear initialisation", init[c, c]), ("after training", final[c, c])]
panels.append(("difference", final[c, c] - init[c, c]))
title = f"FCN-8s final x4 transposed convolution, {SCENE_CLASSES[c]} → {SCENE_CLASSES[c]}"
image_grid([panels], 3.0, "RdBu_r", -lim, lim, title=title, colorbar=True)
plt.show()

# %% [markdown]
# Training kept the kernel's bilinear shape but scaled it up and, more important, made it
# mix the classes (up to 0.88 between two classes, where bilinear has zeros): one class's
# upsampled score depends on the others' coarse scores. Does it matter? Swap FCN-8s's three
# trained transposed convolutions for fixed `Upsample(..., "bilinear")` or `"nearest"`
# and measure mIoU on the `N_TEST` scenes (no retraining: only the upsampling changes).


# %%
def predict(model, batch=x, size=40):
    """Per-pixel classes (N, H, W) of a batch, in chunks."""
    with torch.inference_mode():
        return torch.cat([model(b).argmax(1) for b in batch.split(size)])


def scores(prediction, truth=masks):
    """(confusion matrix, IoU per class) over all pixels of the test scenes."""
    confusion = MulticlassConfusionMatrix(len(SCENE_CLASSES), ignore_index=255)(prediction, truth)
    return confusion, iou_from_confusion(confusion)


def with_fixed_upsampling(model, mode):
    """A copy of an FCN whose transposed convolutions are replaced by fixed ones."""
    copy_ = copy.deepcopy(model)
    copy_.up_skips = torch.nn.ModuleList(Upsample(11, up.factor, mode) for up in model.up_skips)
    copy_.up_final = Upsample(11, model.up_final.factor, mode)
    return copy_


def prediction_rows(scenes, predictions, lead=("truth",)):
    """One row per scene: the scene's input and/or truth (`lead`), then each prediction."""
    pictures = {"input": lambda i: to_rgb(images[i]), "truth": lambda i: colorize(masks[i])}
    return [
        [(f"{k}, scene {i}", pictures[k](i)) for k in lead]
        + [(name, colorize(p[i])) for name, p in predictions.items()]
        for i in scenes
    ]


up_pred = {"learned (shipped)": predict(fcn)}
up_pred |= {mode: predict(with_fixed_upsampling(fcn, mode)) for mode in ("bilinear", "nearest")}
for name, prediction in up_pred.items():
    print(f"FCN-8s, {name:<18} upsampling: mIoU {scores(prediction)[1].nanmean():.4f}")
image_grid(prediction_rows(SHOW[:3], up_pred), legend=LEGEND, legend_columns=4)
plt.show()

# %% [markdown]
# For this FCN the learned upsampling matters a lot: fixed interpolation costs 0.15-0.21
# mIoU. The outlines shift and grow bands of a wrong class (bilinear) or turn into blocks of
# the coarse grid (nearest): in FCN the upsampling is the **last** layer, with nothing after
# it to correct it. In the docs' `upsampling` experiment, by contrast, `encdec` *trained*
# from scratch with each mode (1,500 steps) reached 0.388 mIoU with transposed convolutions
# (741,675 parameters), 0.394 bilinear and 0.419 nearest (393,515 parameters): there each
# upsampling is followed by a 3x3 convolution that learns to refine the map. "Should obtain
# better results than standard interpolation methods" depends on what comes after it.
#
# ## 5 · FCN: skip connections (FCN-32s, FCN-16s, FCN-8s)
#
# Long, Shelhamer & Darrell (CVPR 2015): a 1x1 "score" convolution turns the deepest map
# into class scores, upsampled to the input in one x32 step by FCN-32s (coarse outlines).
# FCN-16s upsamples x2 and **adds** the stride-16 map's scores, FCN-8s also the stride-8's:
#
# $$s_{8s} = \mathrm{up}_{\times 8}\Big(\mathrm{up}_{\times 2}\big(\mathrm{up}_{\times 2}
# (s_{32}) + s_{16}\big) + s_{8}\Big).$$
#
# The shipped `fcn8s.scenes` sits on a 4-stage VGG-style `convnet` (deepest map: stride 16,
# 6 x 6), so its score maps have strides 16, 8 and 4 (the paper's 32, 16, 8 on a VGG16);
# the names count the skips, not the strides. The three variants on this backbone:

# %%
fcn_options = cnnzoo.weights.get("fcn8s.scenes").spec["kwargs"]
print("shipped FCN-8s options:", fcn_options)
for name in ("fcn32s", "fcn16s", "fcn8s"):
    model = cnnzoo.create_model(name, **fcn_options)
    costs[name] = measure(model)
    maps = [r.output_shape[-2:] for r in summarize(model, (3, 96, 96), 2) if "score" in r.name]
    print(f"{name}: score maps {maps}")
cost_table(["fcn32s", "fcn16s", "fcn8s"])

# %% [markdown]
# The skips cost almost nothing (a 1x1 score convolution and a small x2 transposed
# convolution each); FCN-32s even has the *most* parameters: its single final x16
# upsampling has $11\times 11$ kernels of $32\times 32$, FCN-8s's final x4 $8\times 8$.
#
# What do the skips add? The paper initialises the skip score layers to zero, so FCN-8s
# *starts* from the coarse net's prediction and the skips only add detail. Undo that on
# the trained model: zero the finer score layers and see what the coarse path alone
# predicts (ablations of one FCN-8s; separately trained FCN-32s/16s would do better).


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
image_grid(prediction_rows(SHOW[2:5], skip_pred, ["input"]), legend=LEGEND)
plt.show()

# %% [markdown]
# The coarse path finds *where* the items are but draws them as blobs of the 6 x 6 grid;
# each skip brings back the outlines from a finer map, the lecture's reason for skip
# connections. Which classes gain most from the skips? Per-class IoU of the three:

# %%
title = f"FCN-8s with its skips removed, {N_TEST} test scenes"
class_bars({title: skip_iou}, SCENE_CLASSES)
plt.show()

# %% [markdown]
# ## 6 · SegNet: max-unpooling with the pooling indices
#
# Badrinarayanan, Kendall & Cipolla (2015): the decoder does not *learn* its upsampling.
# Each 2x2 max-pool of the encoder remembers **where** each maximum was; the matching
# decoder stage puts the values back at exactly those positions (zeros elsewhere) and
# densifies the sparse map with 3x3 convolutions. It keeps the positions of strong
# responses (edges) without storing the encoder's feature maps, as U-Net does.
#
# Below, `segnet`'s first pooling and unpooling layers applied three times to a map we can
# read: a scene's edge strength (the gradient magnitude of its gray image, the kind of map
# a first convolution layer computes), next to nearest upsampling of the same 12 x 12 map.

# %%
segnet = cnnzoo.create_model("segnet", num_classes=11)  # the paper's VGG16-bn encoder
pool, unpool = segnet.encoder[0].pool, segnet.decoder[0].unpool
i = SHOW[1]
gray = images[i : i + 1].float().mean(1, keepdim=True)
padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")  # no false edges at the border
sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
gradient = F.conv2d(padded, torch.stack([sobel, sobel.t()])[:, None])  # d/dx and d/dy
edges = gradient.square().sum(1, keepdim=True).sqrt()
y, stored = edges, []
for _ in range(3):
    size = tuple(y.shape[-2:])
    y, indices = pool(y)
    stored.append((indices, size))
pooled = unpooled = y
for indices, size in reversed(stored):
    unpooled = unpool(unpooled, indices, output_size=size)
nearest = F.interpolate(pooled, size=edges.shape[-2:], mode="nearest")
print(f"pooled {tuple(pooled.shape)}, unpooled {tuple(unpooled.shape)}")
print(f"non-zero pixels after max-unpooling: {(unpooled > 0).float().mean():.1%} (1/64 = 1.6 %)")
panels = [(f"scene {i}", to_rgb(images[i])), ("edge strength (96 x 96)", edges[0, 0])]
panels += [("3 max-pools (12 x 12)", pooled[0, 0]), ("3 max-unpools", unpooled[0, 0])]
panels.append(("nearest upsampling", nearest[0, 0]))
image_grid([panels], 2.5, "magma", 0, float(edges.max()))
plt.show()

# %% [markdown]
# Each maximum lands back on the pixel it came from: the sparse dots lie on the outlines,
# where nearest upsampling smears every value over an 8 x 8 block; the decoder's 3x3
# convolutions fill in the zeros. The paper's SegNet (VGG16 widths 64-512) on a scene:

# %%
costs["segnet"] = measure(segnet, n_images=2, repeats=1)
cost_table(["segnet"])
print(f"\n{'stage':<10} {'output (N, C, H, W)':<20} {'params':>10}")
for row in summarize(segnet, (3, 96, 96), max_depth=2):
    if row.name.count(".") == 1 or row.name == "classifier":
        print(f"{row.name:<10} {row.output_shape!s:<20} {row.params:>10,}")

# %% [markdown]
# The decoder mirrors the encoder (the same widths, almost the same parameters, no weights
# in the unpooling). The docs' CPU benchmark trained a narrow SegNet (widths 16-128, 1.85 M
# parameters): only 0.10 mIoU in 5 minutes.
#
# ## 7 · PSPNet: pyramid pooling for global context
#
# Zhao et al. (CVPR 2017): the deepest feature map is average-pooled to grids of 1 x 1,
# 2 x 2, 3 x 3 and 6 x 6 cells; each is reduced by a 1x1 convolution, upsampled bilinearly
# and concatenated with the map, so a pixel's prediction sees the whole scene (1 x 1), its
# quadrant (2 x 2), and so on. The four pooling grids of `pspnet`'s `PyramidPooling`,
# applied to a scene's pixels to show the context each branch provides:

# %%
psp = cnnzoo.create_model("pspnet", num_classes=11)  # ResNet-18 backbone, bins 1, 2, 3, 6
i = SHOW[4]
picture = images[i : i + 1].float() / 255
panels = [("scene", to_rgb(images[i]))]
for bins, stage in zip(psp.ppm.bins, psp.ppm.stages, strict=True):
    pooled = stage[0](picture)  # the branch's AdaptiveAvgPool2d
    back = F.interpolate(pooled, size=picture.shape[-2:], mode="bilinear", align_corners=False)
    panels.append((f"bin {bins}: {tuple(pooled.shape[-2:])} grid", back[0].clamp(0, 1)))
image_grid([panels])
plt.show()

# %% [markdown]
# In PSPNet the pyramid runs on the backbone's deepest map: 3 x 3 for a 96 x 96 scene with
# ResNet-18's strides (`dilated=False`, the default); the paper's dilated ResNet
# (`dilated=True`) keeps stride 8, a 12 x 12 map, at about 6x the MACs:

# %%
psp_dilated = cnnzoo.create_model("pspnet", num_classes=11, dilated=True)
for name, model in (("pspnet", psp), ("pspnet dilated", psp_dilated)):
    costs[name] = measure(model)
    shape = {r.name: r.output_shape for r in summarize(model, (3, 96, 96), max_depth=1)}
    print(f"{name}: backbone {shape['backbone']} -> pyramid {shape['ppm']} -> head", end=" ")
    print(f"{shape['head']} -> logits {costs[name]['out']}")
cost_table(["pspnet", "pspnet dilated"])

# %% [markdown]
# The pyramid doubles the channels (512 + 4 x 128 = 1024); its bins of 6 on a 3 x 3 map
# just repeat cells. The logits, at stride 32 (or 8), are upsampled bilinearly with
# nothing learned: in the docs' sweep PSPNet's coarse output "loses the items' outlines"
# on these small scenes (0.530 mIoU against 0.624 for FCN-8s on the same encoder).
#
# ## 8 · U-Net: skips that concatenate
#
# Ronneberger, Fischer & Brox (2015): a contracting path (two 3x3 convolutions and a
# max-pool per level, the channels doubling) and a symmetric expanding path (a 2x2
# up-convolution, **concatenation** with the contracting map of the same size, two 3x3
# convolutions). Where FCN *adds* class scores and SegNet reuses pooling *indices*, U-Net
# passes the encoder's whole feature maps on. `unet.scenes` has 4 levels of width 16-256:

# %%
print("shipped U-Net options:", cnnzoo.weights.get("unet.scenes").spec["kwargs"])
print(f"{'level':<12} {'output (N, C, H, W)':<20} {'params':>9}")
for row in summarize(unet, (3, 96, 96), max_depth=2):
    if "." not in row.name or (row.name.count(".") == 1 and not row.name.startswith("inc.")):
        print(f"{row.name:<12} {row.output_shape!s:<20} {row.params:>9,}")
costs["unet"] = measure(unet)

# %% [markdown]
# `up.0` upsamples the 6 x 6 x 256 bottom to 12 x 12 x 128, concatenates `down.2`'s 128
# channels and convolves back to 128, and so on up to the full-resolution `inc`, which
# gives the decoder the input's sharp outlines.
#
# ## 9 · Measuring: per-class IoU and mIoU on the test scenes
#
# For a class $c$, with TP, FP and FN counted over all pixels of all test scenes,
#
# $$\mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c},\qquad
# \mathrm{mIoU} = \frac{1}{|C'|}\sum_{c\in C'}\mathrm{IoU}_c,$$
#
# over the classes $C'$ in the labels or the predictions (`iou_from_confusion`, from one
# confusion matrix). The shipped models on five test scenes, then on all `N_TEST`:

# %%
pred = {"FCN-8s": up_pred["learned (shipped)"], "U-Net": predict(unet)}
weight_names = {"FCN-8s": "fcn8s.scenes", "U-Net": "unet.scenes"}
rows = prediction_rows(SHOW, pred, ["input", "truth"])
image_grid(rows, 2.1, legend=LEGEND, legend_columns=4)
plt.show()

# %%
tables = {}
for name, prediction in pred.items():
    confusion, iou = scores(prediction)
    tables[name] = class_table(confusion, iou, SCENE_CLASSES)
    catalog = cnnzoo.weights.get(weight_names[name]).metrics
    accuracy = float(confusion.diagonal().sum() / confusion.sum())
    print(f"{name}: mIoU {iou.nanmean():.4f}, pixel accuracy {accuracy:.4f} ({N_TEST} scenes)")
    print(f"  catalog, all 400: {catalog['test/miou']:.4f}, {catalog['test/pixel_accuracy']:.4f}")
print(f"\n{'class':<12} {'pixels':>8} " + " ".join(f"{n + ' IoU':>11}" for n in tables))
for k, row in enumerate(tables["FCN-8s"]):
    ious = " ".join(f"{t[k].iou:>11.3f}" for t in tables.values())
    print(f"{row.name:<12} {row.pixels:>8,} {ious}")
iou = {f"{name}, {N_TEST} test scenes": {"IoU": [r.iou for r in t]} for name, t in tables.items()}
class_bars(iou, SCENE_CLASSES, mean=True)
plt.show()

# %% [markdown]
# The models are within about 0.01 of each other and of the catalog's figures on all 400
# scenes (0.6301, 0.6295; `cnnzoo eval fcn8s.scenes` reproduces those). Background is
# almost perfect; telling garments apart by shape costs IoU: Shirt, Coat and Dress lowest,
# Trouser, Bag and Ankle boot highest, as in the docs ("Shirt stays at 0.30-0.47 IoU in
# every recipe"); the mistakes are whole items of the wrong class, rarely wrong outlines.
#
# ## 10 · Every segmenter side by side
#
# Every architecture measured above (fp32, one thread, this CPU): `fcn8s` and `unet` as
# shipped, `patchwise`, `fullres_fcn` and `encdec` as in the docs' experiment, `segnet` and
# `pspnet` as in the papers (VGG16-bn and ResNet-18).

# %%
order = sorted(costs, key=lambda n: costs[n]["gmacs"])
cost_table(order)
family = {"patchwise": 0, "fullres_fcn": 1, "encdec": 2, "segnet": 4, "unet": 6}
colours = [plt.cm.tab10(family.get(n, 3 if n.startswith("fcn") else 5)) for n in order]
metrics = {"params": "parameters", "gmacs": "GMACs per image", "ms": "ms per image"}
title = "What each segmenter costs on a 96 x 96 scene (sorted by MACs)"
cost_bars({n: costs[n] for n in order}, metrics, colours, title)
plt.show()
print(f"notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# Every model returns logits of the input's size. Patch-wise classification costs the most
# per image by far with the fewest parameters: cost is about how often the weights are
# applied, not how many. The papers' SegNet and PSPNet carry 17-30 M parameters; FCN-8s
# and U-Net (1.2 and 1.9 M) score 0.63 mIoU, where the docs' CPU runs of SegNet (narrow,
# 0.10) and PSPNet (0.26-0.53) on these scenes stayed lower.
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
