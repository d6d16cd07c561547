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
# # 2 · Image classification
#
# This notebook follows the lecture's **IMAGE CLASSIFICATION** part: the task and its loss,
# the prototypical AlexNet and VGG, GoogLeNet's Inception block and auxiliary classifiers,
# ResNet's residual and bottleneck blocks, and the issue that motivated them, vanishing
# gradients in deep plain stacks. The lecture's last two classification slides — the
# *training problem* (large CNNs need much labelled data) and its solution, transfer
# learning — are notebook 3.
#
# You will:
#
# 1. compute the classification loss of a real prediction three ways (NLL, cross-entropy, KL);
# 2. put the lecture's architectures side by side: parameters, MACs and ImageNet accuracy;
# 3. take VGG-16, an Inception module and residual blocks apart and count where the cost is;
# 4. evaluate the classifiers that ship with cnnzoo on the bundled Fashion-MNIST test
#    images: accuracy, confusion matrix, predictions;
# 5. measure the gradient reaching every layer of plain and residual networks, and train
#    them for a few seconds.
#
# Runs in about 60 s on 2 CPU cores.

# %%
import copy
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display
from matplotlib.ticker import FuncFormatter, NullFormatter

import cnnzoo
from cnnzoo.cli.terminal import setup_terminal
from cnnzoo.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist_mini
from cnnzoo.data.transforms import prepare_batch
from cnnzoo.experiments.aux_loss import (
    LOWER,
    AuxLossSettings,
    build_pair,
    group_norm,
    strip_batchnorm,
    trunk_norms,
)
from cnnzoo.experiments.bottleneck import build_variant
from cnnzoo.experiments.gradients import mean_gradient_norms
from cnnzoo.experiments.vanishing_gradients import (
    VanishingSettings,
    load_data,
    parse_net,
    train_net,
)
from cnnzoo.explain.top_losses import split_losses, worst_mistakes
from cnnzoo.families.classification.evaluate import evaluate
from cnnzoo.layers import BasicBlock, Bottleneck, Inception
from cnnzoo.summary import count_macs, model_cost, summarize
from cnnzoo.tasks.classification import classification_loss
from cnnzoo.viz.confusion import plot_confusion_matrix

setup_terminal(verbose=False)  # hide Lightning's banners, as the `cnnzoo` command does
torch.set_num_threads(1)  # small batches: one thread is as fast, and other processes on
# the same cores cannot stall it (two threads waiting for each other can be 10x slower)
torch.manual_seed(0)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# %% [markdown]
# ## The task and its loss
#
# A classifier maps an image to one probability per class; the prediction is the most
# probable class. Training minimises the negative log-likelihood of the true class,
# $L(y) = -\log p(y \mid \boldsymbol{\theta})$. With a one-hot target, the lecture's three
# names are one number: the NLL, the cross-entropy $-\sum_c q_c \log p_c$ and the KL
# divergence $\sum_c q_c \log(q_c / p_c)$ (the target's entropy is 0).
#
# The shipped `resnet20.fmnist` (ResNet-20 trained on the full Fashion-MNIST) on one test
# image of the bundled mini set (1,000 test images, 100 per class). Images are normalised with
# the weight set's own preprocessing (`cnnzoo.weights.get(...).preprocessing`).

# %%
test_images, test_labels = load_fashion_mnist_mini("test")
r20_weights = cnnzoo.weights.get("resnet20.fmnist")
prep = r20_weights.preprocessing
print("resnet20.fmnist:", prep.describe(), "| listed test accuracy", r20_weights.metrics)
test_x = prepare_batch(test_images, prep.mean, prep.std)  # float, normalised (1000, 1, 28, 28)

r20 = cnnzoo.create_model("resnet20", weights="resnet20.fmnist").eval()
i = 0
with torch.no_grad():
    logits = r20(test_x[i : i + 1])
probs = logits.softmax(1)[0]
print(f"\ntest image {i}, true class: {FASHION_MNIST_CLASSES[int(test_labels[i])]}")
for c in probs.argsort(descending=True)[:5].tolist():
    print(f"  {FASHION_MNIST_CLASSES[c]:<12} {float(probs[c]):.4f}")
y = test_labels[i : i + 1]
print(f"\n-log p(y)     = {-math.log(float(probs[y])):.6f}")
for loss in ("nll", "cross_entropy", "kl"):
    print(f"{loss:<13} = {float(classification_loss(logits, y, loss)):.6f}")

# %% [markdown]
# ## The architectures side by side
#
# `cnnzoo.list_models` lists every registered model; `cnnzoo.summary.model_cost` counts the
# parameters and multiply-accumulates (MACs) of one at its default input size, building it
# on PyTorch's meta device (no memory, so VGG's 138 M parameters cost nothing). The ImageNet
# top-1 accuracies are torchvision's published figures, read from cnnzoo's weight catalog
# (`cnnzoo.weights.get("vgg16.tv_in1k").metrics`); nothing is downloaded here.

# %%
classifiers = cnnzoo.list_models("classification")
print(f"{len(classifiers)} classification models:", ", ".join(classifiers))

lecture = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "resnet152"]
cost = {}
print(f"\n{'model':<10} {'input':<12} {'params':>9} {'GMACs':>7} {'ImageNet top-1':>15}  paper")
for name in lecture:
    info = cnnzoo.model_info(name)
    params, macs = model_cost(name)
    top1 = None
    if name != "lenet5":
        top1 = cnnzoo.weights.get(f"{name}.tv_in1k").metrics["imagenet_val/acc1"]
    cost[name] = (params, macs, top1)
    size = "x".join(map(str, info.input_size))
    acc = f"{top1:.3f}" if top1 else "-"
    print(f"{name:<10} {size:<12} {params / 1e6:8.2f}M {macs / 1e9:7.2f} {acc:>15}  {info.paper}")

# %%
offsets = {"googlenet": (-8, 8), "resnet18": (6, -12)}  # keep the two 0.698s apart
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, index, label in ((axes[0], 1, "GMACs per image"), (axes[1], 0, "parameters (M)")):
    for k, (name, values) in enumerate((n, v) for n, v in cost.items() if v[2] is not None):
        scale = 1e9 if index == 1 else 1e6
        ax.scatter(values[index] / scale, values[2], s=60, color=f"C{k}", zorder=3)
        ax.annotate(name, (values[index] / scale, values[2]), textcoords="offset points",
                    xytext=offsets.get(name, (6, -4)), fontsize=9)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks([0.5, 1, 2, 5, 10, 20] if index == 1 else [10, 20, 50, 100, 200])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label} (log scale, 224x224 input)")
    ax.grid(alpha=0.3, which="both")
axes[0].set_ylabel("ImageNet top-1 (torchvision)")
axes[0].set_title("accuracy vs computation")
axes[1].set_title("accuracy vs size")
fig.tight_layout()
plt.show()

# %% [markdown]
# GoogLeNet comes within 2 points of VGG-16 with a tenth of its computation and a tenth of
# its parameters; ResNet-50 beats both at a quarter of VGG's MACs. The sections below look at
# how.
#
# ## AlexNet and VGG: feature extractor + decision layers
#
# The lecture: these are the *prototypical* classifiers, a **feature extractor** of
# convolutions and pooling that shrinks height and width while adding channels (more
# abstract features), and **decision layers** (fully connected) on top. cnnzoo's
# `summarize` (behind `cnnzoo info vgg16`) gives each stage's output shape, parameters and
# MACs, again on the meta device.

# %%
with torch.device("meta"):
    vgg = cnnzoo.create_model("vgg16")
    rows = summarize(vgg, (3, 224, 224), max_depth=2)
print(f"{'module':<12} {'output shape':<20} {'params':>12} {'MMACs':>9}")
for r in rows:
    if r.name.startswith("stages.") or r.name in ("fc6", "fc7", "fc8"):
        print(f"{r.name:<12} {r.output_shape!s:<20} {r.params:>12,} {r.macs / 1e6:9.0f}")

print(f"\n{'model':<8} {'params in features':>19} {'params in FC':>13} {'MACs in features':>17}")
for name in ("alexnet", "vgg16"):
    with torch.device("meta"):
        m = cnnzoo.create_model(name)
        feat_rows = summarize(m, (3, 224, 224), max_depth=1)
    total_p, total_m = count(m), sum(r.macs for r in feat_rows)
    fc_p = sum(
        r.params
        for r in feat_rows
        if r.kind in ("Sequential", "Linear") and r.name.startswith("fc")
    )
    conv_m = sum(r.macs for r in feat_rows if not r.name.startswith("fc"))
    print(f"{name:<8} {1 - fc_p / total_p:19.1%} {fc_p / total_p:13.1%} {conv_m / total_m:17.1%}")

# %%
stages = [r for r in rows if r.name.startswith("stages.")]
labels = [r.name.replace("stages.", "stage ") for r in stages]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].bar(labels, [r.output_shape[-1] for r in stages], color="C0")
axes[0].set_title("VGG-16: feature-map side shrinks")
axes[0].set_ylabel("height = width (pixels)")
axes[1].bar(labels, [r.output_shape[1] for r in stages], color="C1")
axes[1].set_title("... while the channels grow")
axes[1].set_ylabel("channels")
for ax in axes:
    ax.tick_params(axis="x", rotation=30)
    ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# Almost all of the **parameters** sit in the decision layers (fc6 alone: 25,088 x 4,096
# weights), almost all of the **computation** in the convolutions. The lecture's issue with
# these plain stacks — *vanishing gradients: lower layers are difficult to train* — and its
# historical fix, step-by-step (greedy layer-wise) training, are measured by
# `cnnzoo experiment layerwise` (291 s, so not run here): with sigmoid and no BatchNorm a
# 10-level stack trained end to end stays at chance (0.099) while greedy training reaches
# 0.626; with ReLU + BN end-to-end training wins (0.924 vs 0.860)
# ([gallery](../docs/gallery.md#step-by-step-greedy-layer-wise-training)). The last section
# of this notebook measures the gradients themselves.
#
# ## GoogLeNet: the Inception block
#
# Each Inception module runs 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool on the same
# input and concatenates the results along the channels. The 1x1 convolutions in front of
# the 3x3 and 5x5 (and after the pool) *reduce* the channels first ("careful output
# dimension management"), which keeps the module cheap enough to stack nine of them.
# `cnnzoo.layers.Inception` takes the columns of the paper's Table 1; here inception (3a),
# which sees 192 channels at 28x28.

# %%
block = Inception(192, ch1x1=64, ch3x3_reduce=96, ch3x3=128, ch5x5_reduce=16, ch5x5=32,
                  pool_proj=32).eval()  # fmt: skip
no_reduce = Inception(192, ch1x1=64, ch3x3_reduce=192, ch3x3=128, ch5x5_reduce=192, ch5x5=32,
                      pool_proj=192).eval()  # fmt: skip
feature_map = torch.randn(1, 192, 28, 28)
with torch.no_grad():
    for name in ("branch1x1", "branch3x3", "branch5x5", "branch_pool"):
        print(f"{name:<12} -> {tuple(getattr(block, name)(feature_map).shape)}")
    print(f"{'concatenated':<12} -> {tuple(block(feature_map).shape)}")

one_conv = torch.nn.Conv2d(192, 256, 5, padding=2)
print(f"\n{'192 -> 256 channels at 28x28':<42} {'params':>9} {'MMACs':>8}")
for label, module in (("inception (3a), 1x1 reductions", block),
                      ("the same branches without reductions", no_reduce),
                      ("one 5x5 convolution", one_conv)):  # fmt: skip
    macs = count_macs(module, (192, 28, 28))
    print(f"{label:<42} {count(module):>9,} {macs / 1e6:8.0f}")

# %% [markdown]
# (The variant without reductions keeps a 192-channel 1x1 convolution in each place, so its
# outputs are the same 256 channels; the paper's naive module would pass the pool's 192
# channels straight through and grow to 416.) cnnzoo's GoogLeNet follows torchvision's
# variant: BatchNorm after every convolution and a 3x3 convolution in the "5x5" branch, so
# that torchvision's ImageNet weights load unchanged.
#
# ## GoogLeNet: auxiliary classifiers
#
# *"The loss is computed at multiple levels for stronger gradients"*: two auxiliary
# classifiers, on inception (4a) and (4d), add their losses with weight 0.3 during training,
# $L = L_{main} + 0.3\,(L_{aux1} + L_{aux2})$. In training mode the model returns all three
# outputs. The `aux-loss` experiment's functions build two GoogLeNets from the same initial
# weights (with and without heads) and measure the weight-gradient norm of the layers below
# inception (4a) — conv1-3, inception (3a) and (3b) — for the main loss alone and for the
# total; here at initialisation on one batch of 64 Fashion-MNIST images (ImageNet stem on
# the 28-pixel images, as in the experiment).

# %%
train_x, train_y, _, _ = load_data("fashion-mnist-mini")  # normalised mini training set
batch_x, batch_y = train_x[:64], train_y[:64]
with_aux, _ = build_pair(AuxLossSettings())
out = with_aux.train()(batch_x)
print("training-mode output:", type(out).__name__, "logits", tuple(out.logits.shape),
      "aux", [tuple(a.shape) for a in out.aux])  # fmt: skip
print(f"lower layers: {', '.join(LOWER)}")
no_bn = strip_batchnorm(copy.deepcopy(with_aux))
for label, model in (("with BatchNorm", with_aux), ("BatchNorm removed", no_bn)):
    main = group_norm(trunk_norms(model, batch_x, batch_y, "main"))
    total = group_norm(trunk_norms(model, batch_x, batch_y, "total"))
    print(f"{label:<18}: lower-layer gradient, main loss {main:8.3f}, with the heads "
          f"{total:8.3f}  (x{total / main:.3f})")  # fmt: skip

# %% [markdown]
# At initialisation the heads add almost nothing to the lower layers' gradient — the
# [gallery](../docs/gallery.md#googlenets-auxiliary-classifiers) measured x1.000 with BN and
# x1.010 without, on the full dataset. The `aux-loss` experiment then trains both nets for
# 1,500 steps: the heads add 47 % to the lower layers' gradient late in training, but the
# test accuracy is the same (0.8688 with heads, 0.8693 without): with BatchNorm the lower
# layers already learn. The paper's GoogLeNet had no BatchNorm, which is where the extra
# gradient mattered.
#
# ## ResNet: residual blocks and the bottleneck
#
# A residual block adds its input back: $\mathbf{y} = \mathrm{ReLU}(F(\mathbf{x}) +
# \mathbf{x})$, where $F$ is two 3x3 conv-BN layers. If $F$ outputs zero the block is the
# identity (for the non-negative inputs a ReLU network feeds it), so a deep stack can
# always do at least as well as a shallower one, and the gradient has a direct path back
# through every `+`. Zeroing the last BN's scale makes $F = 0$:

# %%
basic = BasicBlock(64, 64, zero_init_residual=True).eval()
h = torch.relu(torch.randn(1, 64, 14, 14))
with torch.no_grad():
    print("BasicBlock with F = 0: max |block(x) - x| =", float((basic(h) - h).abs().max()))

# %% [markdown]
# The **bottleneck** block (ResNet-50 and deeper) replaces the two 3x3 convolutions by
# 1x1 (reduce to 1/4 of the channels), 3x3, 1x1 (expand back). For a 256-channel map at 14x14:

# %%
pair = {
    "basic: 3x3 256 -> 3x3 256": BasicBlock(256, 256),
    "bottleneck: 1x1 64, 3x3 64, 1x1 256": Bottleneck(256, 64),
}
print(f"{'block (256 channels in and out)':<38} {'params':>10} {'MMACs':>8}")
for label, module in pair.items():
    print(f"{label:<38} {count(module):>10,} {count_macs(module, (256, 14, 14)) / 1e6:8.0f}")

# %% [markdown]
# About 17 times fewer parameters and MACs for the same input and output. The `bottleneck`
# experiment builds three small ResNets for 28x28 images (width 16, 3 blocks per stage) with
# `build_variant`: basic blocks, bottleneck blocks in He et al.'s pairing (same 3x3 widths,
# 4x wider outputs), and bottleneck blocks with the basic net's output widths. Counted here;
# the [gallery](../docs/gallery.md#basic-vs-bottleneck-blocks) lists 0.272 M / 31.0 MMACs
# for `basic` and 0.313 M / 35.8 MMACs for `bottleneck`.

# %%
print(f"{'variant':<20} {'weighted layers':>15} {'params':>9} {'MMACs':>7}")
for variant in ("basic", "bottleneck", "bottleneck-same-out"):
    net = build_variant(variant, width=16, blocks=3)
    layers = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and ".shortcut" not in n
                 for n, m in net.named_modules())  # fmt: skip
    macs = count_macs(net, (1, 28, 28))
    print(f"{variant:<20} {layers:>15} {count(net) / 1e6:8.3f}M {macs / 1e6:7.1f}")

# %% [markdown]
# At equal output width the bottleneck net is 13x cheaper, and in the experiment it lost
# 4.8 points after 1,200 steps (0.839 vs 0.887); in the paper's pairing it costs about the
# same parameters and MACs as the basic net — that is how ResNet-50 gets 50 layers at
# ResNet-34's cost — though on a CPU it ran 5.6x slower at inference: its 4x wider
# activations cost memory traffic that MACs do not count.
#
# ## The shipped classifiers on Fashion-MNIST
#
# cnnzoo ships Fashion-MNIST weights for three of the lecture's families: the VGG-style
# `convnet`, GoogLeNet and ResNet-20 (`cnnzoo weights list`). `evaluate` (behind
# `cnnzoo eval`) runs each on the bundled 1,000 test images; the listed accuracy is on the
# full 10,000-image test set; the mini set's 1,000 give the same to within half a point.

# %%
results = {}
print(f"{'weights':<18} {'params':>9} {'MMACs':>7} {'mini test acc.':>15} {'listed (10k)':>13}")
for weights in ("convnet.fmnist", "googlenet.fmnist", "resnet20.fmnist"):
    entry = cnnzoo.weights.get(weights)
    model = cnnzoo.create_model(entry.model, weights=weights)
    macs = count_macs(model, (1, 28, 28))
    results[weights] = evaluate(weights, data="fashion-mnist-mini", plot=False, accelerator="cpu")
    listed = entry.metrics["test/accuracy"]
    print(f"{weights:<18} {count(model) / 1e6:8.2f}M {macs / 1e6:7.1f} "
          f"{results[weights].accuracy:15.3f} {listed:13.4f}")  # fmt: skip

# %% [markdown]
# The confusion matrix of `resnet20.fmnist` (row: true class, column: predicted; drawn by
# `cnnzoo.viz.confusion`, the plot `cnnzoo eval` writes), and its per-class recall and
# precision.

# %%
r20_eval = results["resnet20.fmnist"]
png = plot_confusion_matrix(
    r20_eval.confusion, list(FASHION_MNIST_CLASSES), "confusion_resnet20.png",
    "resnet20.fmnist on the mini test set",
)  # fmt: skip
display(Image(filename=str(png), width=520))
print(f"{'class':<12} {'recall':>7} {'precision':>10}")
for row in r20_eval.per_class:
    print(f"{row.name:<12} {row.recall:7.2f} {row.precision:10.2f}")

# %% [markdown]
# As in the [classification docs](../docs/classification.md) for the demo convnet, **Shirt**
# is the hard class: here it is taken for T-shirt/top, Coat and Dress, which differ from it
# in details a 28-pixel image barely shows. Below, 8 correct predictions and the 8 most
# confident mistakes (largest loss, found with `cnnzoo.explain.top_losses`' functions), with
# the predicted class and its probability.

# %%
losses, preds, labels = split_losses(r20, [(test_x, test_labels)])
mistakes = worst_mistakes(losses, preds, labels, 8)
correct = (preds == labels).nonzero().flatten()[:8].tolist()
shown = correct + mistakes
with torch.no_grad():
    shown_probs = r20(test_x[shown]).softmax(1)
fig, axes = plt.subplots(2, 8, figsize=(13, 4.4))
for ax, k, p in zip(axes.flat, shown, shown_probs, strict=True):
    ok = bool(preds[k] == labels[k])
    ax.imshow(test_images[k, 0], cmap="gray")
    ax.set_title(f"{FASHION_MNIST_CLASSES[int(preds[k])]} {float(p[preds[k]]):.2f}\n"
                 f"(true: {FASHION_MNIST_CLASSES[int(labels[k])]})", fontsize=8,
                 color="C2" if ok else "C3")  # fmt: skip
    ax.axis("off")
fig.suptitle("resnet20.fmnist: predicted class and probability (green: right, red: wrong)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Vanishing gradients: plain vs residual networks
#
# The issue the lecture raises for AlexNet and VGG, and that skip connections tackle.
# Backpropagation multiplies one factor per layer on the way down; if they are below 1 the
# gradient reaching the first layers vanishes, and those layers stop learning. The
# `vanishing-gradients` experiment's functions build He et al.'s CIFAR nets for 28x28 images
# — ResNet-20/56 and the *plain* nets with the same layers and no skip connections — with a
# choice of activation and BatchNorm (`parse_net("plain56-sigmoid-nobn")`), and
# `mean_gradient_norms` measures every weight layer's gradient norm in one forward/backward
# pass, at initialisation, on one batch of 64 training images.

# %%
gen = torch.Generator().manual_seed(1)
pick = torch.randperm(len(train_y), generator=gen)[:64]
probes = [(train_x[pick], train_y[pick])]
init_norms = {}
for variant in ("", "-sigmoid-nobn"):
    for family in ("plain", "resnet"):
        for depth in (20, 56):
            spec = parse_net(f"{family}{depth}{variant}")
            torch.manual_seed(0)
            init_norms[spec.label] = mean_gradient_norms(spec.build(), probes)

print(f"{'net':<24} {'first layer':>12} {'last layer':>11} {'first / last':>13}")
for label, norms in init_norms.items():
    v = list(norms.values())
    ratio = v[0] / v[-1] if v[-1] > 0 else float("nan")
    print(f"{label:<24} {v[0]:12.2e} {v[-1]:11.2e} {ratio:13.2e}")

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 6.4), sharex="col")
for row, (variant, what) in enumerate(
    (("", "ReLU + BatchNorm"), (" sigmoid no-BN", "sigmoid, no BN"))
):
    for col, depth in enumerate((20, 56)):
        ax = axes[row, col]
        for family, colour in (("plain", "C3"), ("resnet", "C0")):
            label = f"{family}-{depth}{variant}"
            values = [v for v in init_norms[label].values()]
            xs = [k + 1 for k, v in enumerate(values) if v > 0]
            ax.semilogy(xs, [v for v in values if v > 0], ".-", color=colour, label=label)
        ax.set_title(f"{depth} layers, {what}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[row, 0].set_ylabel("weight-gradient norm")
for ax in axes[1]:
    ax.set_xlabel("weight layer (1 = input side)")
fig.suptitle("gradient norm per layer at initialisation (log scale)")
fig.tight_layout()
plt.show()

# %% [markdown]
# - **Sigmoid without BatchNorm** (the setting of the lecture's "issues" slide): the
#   gradient falls geometrically towards the input, by 12 orders of magnitude over the
#   plain-20 and down to exactly zero (float32 underflow) in the first layers of the
#   plain-56. The skip connections slow the fall (about 4 orders of magnitude less over 20
#   layers) but do not stop it with the sigmoid: ResNet-56's first layers underflow too. The
#   [gallery](../docs/gallery.md) (*vanishing gradients*) measured the same on the full
#   set: first/last 1.9e-12 for plain-20, 0 for plain-56, 2.1e-20 for ResNet-56 (all
#   sigmoid, no BN).
# - **ReLU + BatchNorm** (how these nets are built today): nothing vanishes, plain nets
#   included — in the plain-56 the gradient even *grows* towards the input (first/last
#   about 135 here, 163 in the gallery), while in the residual nets it stays nearly flat
#   below the classifier.
#
# So ReLU and BN fix the gradient's *size*, and yet He et al. found deep plain nets harder
# to optimise than residual ones. A few seconds of training of plain-20 and ResNet-20 (ReLU
# + BN, the same 19 convolutions, with and without the skips) with the experiment's own
# loop (`train_net`: SGD with Nesterov momentum, lr 0.05, batch 32, cosine decay) on the
# 5,000 mini training images; the training error is the running error of the batches since
# the previous point, the test error is on the 1,000 test images.

# %%
data = load_data("fashion-mnist-mini")
settings = VanishingSettings(steps=100, batch_size=32, eval_points=5, test_images=1000)
curves = {}
for name in ("plain20", "resnet20"):
    spec = parse_net(name)
    torch.manual_seed(settings.seed)
    curves[spec.label] = train_net(spec.build(), data, settings)
    c = curves[spec.label]
    train_err, test_err = c["train_error"], c["test_error"]
    print(f"{spec.label:<9} training error {' '.join(f'{e:.3f}' for e in train_err)}")
    print(f"{'':<9} test error     {' '.join(f'{e:.3f}' for e in test_err)}  (steps {c['steps']})")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, key, what in (
    (axes[0], "train_error", "training error"),
    (axes[1], "test_error", "test error"),
):
    for label, colour in (("plain-20", "C3"), ("resnet-20", "C0")):
        ax.plot(curves[label]["steps"], curves[label][key], "o-", color=colour, label=label)
    ax.set_title(what)
    ax.set_xlabel("optimisation step (batch of 32)")
    ax.grid(alpha=0.3)
    ax.legend()
axes[0].set_ylabel("error")
fig.tight_layout()
plt.show()

# %% [markdown]
# With the skip connections the same layers learn about twice as fast at the start (the
# test error jumps around early on: BatchNorm's running statistics, used at test time, lag
# behind weights that change fast). Over
# longer runs the gap narrows for 20 layers and opens for deeper nets: the experiment's
# 800-step run ([gallery](../docs/gallery.md), *vanishing gradients*) ends with training
# errors of 0.148 (plain-20) and 0.123 (ResNet-20), but 0.299 for plain-56 against 0.142
# for ResNet-56 — the deeper plain net trains *worse* than the shallower one (the
# **degradation problem**), the deeper residual net does not. One seed and a short budget:
# compare the direction, not the digits.

# %% [markdown]
# ## Exercises
#
# 1. **ReLU or BatchNorm?** In the gradient-norm cell, replace the variants
#    `("", "-sigmoid-nobn")` by `("-sigmoid", "-nobn")` (sigmoid *with* BN, ReLU *without*
#    BN) and the figure's labels by `(" sigmoid", "sigmoid + BN")` and
#    `(" no-BN", "ReLU, no BN")`. For the plain-56, which of the two ingredients keeps the
#    first layers' gradient from vanishing? Compare your first/last ratios with the
#    gallery's table (`docs/vanishing-gradients-results.json`).
# 2. **Degradation.** In the training cell, set `steps=200` and train `plain20` and
#    `plain56` (about a minute on a quiet 2-core CPU). Does the deeper plain net reach a
#    *lower* or a *higher* training error than the shallow one? Why is this surprising, given
#    that plain-56 could copy plain-20 and set its extra layers to the identity? Add
#    `resnet56`: does it?
# 3. **Inception's 1x1 reductions.** In the Inception cell, set `ch5x5_reduce=4` and then
#    `ch5x5_reduce=64` in `block`. How do the parameters and MACs change, and which branch
#    dominates the module's cost? What is the risk of reducing too much?
# 4. **Another family.** In the shipped-classifier cell, add `"mobilenet_v2.fmnist"` and
#    `"shufflenet_v2_x1_0.fmnist"` (the embedded part of the lecture) and draw their
#    confusion matrices as for ResNet-20. Which model gives the best accuracy per MAC, and do
#    they all confuse the same classes?
