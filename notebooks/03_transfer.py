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
# # 3 · Transfer learning
#
# This notebook follows the lecture's last two classification slides, **Training problem**
# and **Transfer learning**: training a large CNN with gradient descent needs a lot of
# labelled data, labels are expensive, so pre-train the feature extractor on a big dataset
# and re-use it — *1. train on ImageNet; 2. small dataset (C classes): retrain the
# classifier on top; 3. bigger dataset: fine-tune more of the network.*
#
# The notebooks run offline, so ImageNet weights (`resnet50.tv_in1k`, a download) are not
# used: the roles are played by what ships with cnnzoo. The **source** network is
# `resnet20.fmnist`, a ResNet-20 trained on the 60,000 Fashion-MNIST images (clothes); the
# **target** is a new task with new classes, handwritten digits. You will:
#
# 1. build a small digit dataset as an image folder (the layout `cnnzoo train` and
#    `cnnzoo finetune` read for your own data);
# 2. see which parameters each fine-tuning strategy trains (`head`, `partial`, `full`);
# 3. train from scratch and fine-tune with 10 and with 100 labelled images per class, on the
#    same short budget, and compare the test accuracies.
#
# Runs in about 90 s on 2 CPU cores.

# %%
import warnings
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Image, display
from PIL import Image as PILImage
from sklearn.datasets import load_digits

import cnnzoo
from cnnzoo.cli.terminal import setup_terminal
from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist_mini
from cnnzoo.data.transforms import BatchAugment
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.finetune import FineTunePlan, FineTuning, apply_plan, parameter_stages
from cnnzoo.viz.labels import plot_accuracy_vs_labels
from cnnzoo.workflows.train import fit_and_test

setup_terminal(verbose=False)  # hide Lightning's banners, as the `cnnzoo` command does
# frozen stages keep their BatchNorm in eval mode on purpose; Lightning warns about it
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
torch.set_num_threads(1)  # small batches: one thread is as fast, and other processes on
# the same cores cannot stall it (two threads waiting for each other can be 10x slower)
_ = torch.manual_seed(0)

# %% [markdown]
# ## Step 1 — the pre-trained source network
#
# The shipped weight set, by name. Its catalog entry says what it was trained on and how
# well it does; `create_model(..., weights=...)` builds the network with those weights
# (1 input channel, 10 classes, from the entry).

# %%
SOURCE = "resnet20.fmnist"
entry = cnnzoo.weights.get(SOURCE)
print(f"{SOURCE}: {entry.trained_on}")
print(f"  test accuracy {entry.metrics['test/accuracy']}, input {entry.preprocessing.describe()}")
print(f"  recipe: {entry.recipe}")
source = cnnzoo.create_model("resnet20", weights=SOURCE)
print(f"  {sum(p.numel() for p in source.parameters()):,} parameters; classes: "
      f"{', '.join(entry.classes)}")  # fmt: skip

# %% [markdown]
# ## The target task: handwritten digits, few labels
#
# scikit-learn (installed with cnnzoo, through its Grad-CAM dependency) bundles the UCI
# optical-recognition digits: 1,797 handwritten digits of 8x8 pixels, 0-9. We upscale them
# to 20x20 and centre them in 28x28, like MNIST, so they have the source's input size, and
# write them as PNG files into an image folder in the working directory, one sub-folder per
# class: 60 test images per class, and training folders with **10** (a small dataset) and
# **100** (a bigger one) labelled images per class.

# %%
digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16  # (1797, 1, 8, 8)
images = F.pad(F.interpolate(images, size=(20, 20), mode="bilinear"), (4, 4, 4, 4))
images = (images.clamp(0, 1) * 255).round().to(torch.uint8)  # (1797, 1, 28, 28)
labels = torch.tensor(digits.target)
order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
SIZES = (10, 100)
N_TEST = 60


def write_split(folder: str, indices: list[int]) -> None:
    """Write the digits ``indices`` as ``folder/<class>/<index>.png``."""
    for k in indices:
        path = Path(folder) / str(int(labels[k])) / f"{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(images[k, 0].numpy()).save(path)


per_class = {c: [int(k) for k in order if labels[k] == c] for c in range(10)}
test_idx = [k for c in range(10) for k in per_class[c][:N_TEST]]
for n in SIZES:
    write_split(f"digits_{n}/test", test_idx)
    write_split(
        f"digits_{n}/train", [k for c in range(10) for k in per_class[c][N_TEST : N_TEST + n]]
    )
print(f"{len(labels)} digits; per class {min(map(len, per_class.values()))}-"
      f"{max(map(len, per_class.values()))}; test {len(test_idx)}; train folders: "
      f"{', '.join(f'digits_{n}/train ({10 * n} images)' for n in SIZES)}")  # fmt: skip

# %%
fmnist, fmnist_labels = load_fashion_mnist_mini("test")
fig, axes = plt.subplots(2, 10, figsize=(12, 3.2), layout="constrained")
for c in range(10):
    k = int((fmnist_labels == c).nonzero()[0])
    axes[0, c].imshow(fmnist[k, 0], cmap="gray")
    axes[0, c].set_title(FASHION_MNIST_CLASSES[c], fontsize=8)
    axes[1, c].imshow(images[per_class[c][N_TEST], 0], cmap="gray")
    axes[1, c].set_title(f"digit {c}", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(
    "source task (top, 60,000 labelled images) and target task (bottom, 10 or 100 per class)"
)
plt.show()

# %% [markdown]
# ## Steps 2 and 3 — which parameters learn
#
# cnnzoo's fine-tuning strategies (`cnnzoo finetune --strategy`, `cnnzoo.tasks.finetune`)
# work on the model's stages (its `feature_info`): `head` trains only the new classifier —
# the lecture's step 2, a linear classifier on frozen features, BatchNorm statistics
# included; `partial` also the last stage; `full` everything, the backbone at a tenth of the
# learning rate (the lecture's step 3). `apply_plan` freezes the rest and reports the counts:

# %%
stage_of = parameter_stages(source)
sizes = {}
for name, p in source.named_parameters():
    sizes[stage_of[name]] = sizes.get(stage_of[name], 0) + p.numel()
print("parameters per stage:", ", ".join(f"{s} {n:,}" for s, n in sizes.items()))
for strategy in ("head", "partial", "full"):
    model = cnnzoo.create_model("resnet20", num_classes=10, weights=SOURCE)
    report = apply_plan(model, FineTunePlan(strategy, unfreeze=1))
    learning = [s for s, on in report.stages.items() if on]
    print(f"{strategy:<8} trains {report.trainable_params:>7,} parameters, freezes "
          f"{report.frozen_params:>7,}  ({', '.join(learning)})")  # fmt: skip

# %% [markdown]
# ## Scratch vs head vs partial vs full, with 10 and 100 labels per class
#
# Each run takes the same 100 optimisation steps of 32 images (SGD with Nesterov momentum,
# one-cycle learning rate peaking at 0.05, random 3-pixel crops; no horizontal flips, which
# would turn a 2 into a mirrored 2), and is tested on the 600 test digits. `scratch` starts
# from random weights; the others load the source weights and replace its 10-way clothing
# classifier by a fresh 10-way digit classifier (`reset_classifier`). The training loop is
# cnnzoo's `fit_and_test`, the one the `transfer` experiment uses.

# %%
STEPS = 100
METHODS = ("scratch", "head", "partial", "full")


def run(method: str, n: int, seed: int = 0) -> float:
    """Train one target model and return its test accuracy on the 600 test digits."""
    L.seed_everything(seed, verbose=False)
    data = ClassificationData(f"digits_{n}", image_size=28, channels=1, val_fraction=0,
                              batch_size=32, seed=seed)  # fmt: skip
    data.augment = BatchAugment(crop_padding=3, hflip=False)
    callbacks, scale = [], 1.0
    if method == "scratch":
        model = cnnzoo.create_model("resnet20", num_classes=10, in_channels=1)
    else:
        model = cnnzoo.create_model("resnet20", num_classes=10, weights=SOURCE)
        model.reset_classifier(10)
        plan = FineTunePlan(method, unfreeze=1, backbone_lr_scale=0.1 if method == "full" else 1.0)
        apply_plan(model, plan)
        callbacks, scale = [FineTuning(plan, model)], plan.backbone_lr_scale
    task = ClassificationTask(model, num_classes=10, lr=0.05, backbone_lr_scale=scale)
    metrics = fit_and_test(task, data, STEPS, callbacks=callbacks, accelerator="cpu")
    return metrics["test/accuracy"]


rows = []
for n in SIZES:
    for method in METHODS:
        acc = run(method, n)
        rows.append({"per_class": n, "method": method, "mean": acc, "std": 0.0})
        print(f"{n:3d} labels per class, {method:<8} test accuracy {acc:.3f}")

# %%
png = plot_accuracy_vs_labels(
    rows, METHODS, SIZES, "transfer_digits.png", xlabel="labelled images per digit",
    ylabel="test accuracy (600 digits)", title=f"resnet20.fmnist -> digits, {STEPS} steps",
)  # fmt: skip
display(Image(filename=str(png), width=520))
acc = {(r["per_class"], r["method"]): r["mean"] for r in rows}
for n in SIZES:
    best = max(("head", "partial", "full"), key=lambda m: acc[n, m])
    gain = 100 * (acc[n, best] - acc[n, "scratch"])
    print(f"{n:3d}/class: best transfer ({best}) {acc[n, best]:.3f} vs scratch "
          f"{acc[n, 'scratch']:.3f}: {gain:+.1f} points")  # fmt: skip

# %% [markdown]
# What to read in it (one seed; a second seed moved single accuracies by up to 0.05 at 10
# labels per class, so only large gaps count):
#
# - **Pre-training helps most where labels are few.** Fine-tuning the clothing network beats
#   training from scratch on the same 100 or 1,000 digits and the same 100 steps: the
#   source's edge and stroke detectors are useful for digits too.
# - **Retraining only the head is not enough here.** A linear classifier on ResNet-20's 64
#   frozen clothing features stays far below the others, with 10 labels per class and with
#   100: digits are too far from clothes for the last stage's features to separate them.
#   The lecture's step 2 assumes a source like ImageNet, whose features are general;
#   Fashion-MNIST's are not.
# - **More data, fine-tune more.** Unfreezing the last stage (`partial`) is the best choice
#   with 10 labels per class; with 100, training everything (`full`) is as good or better —
#   the lecture's step 3.
#
# The `transfer` experiment (`cnnzoo experiment transfer`, [transfer.md](../docs/transfer.md))
# measured the same pattern, 3 seeds, between two halves of Fashion-MNIST (classes 0-4 as
# source, 5-9 as target): `head` stalls at about 0.79 whatever the number of labels,
# `partial` is the best at every size (0.868 at 10 per class vs 0.802 from scratch, +6.6
# points) and the gap to scratch closes as labels grow (about 1 point at 250-1,000).
#
# From the command line the same runs are `cnnzoo finetune resnet20.fmnist --data digits_100
# --strategy partial --image-size 28 --out runs/partial` (and `--strategy head`, `full
# --backbone-lr-scale 0.1`); note that for an image folder the command loads 3 colour
# channels (it has no channel option), so it adapts the first convolution of the grey source
# and normalises with ImageNet's statistics — the Python route above keeps the source's
# grey input and its normalisation.

# %% [markdown]
# ## Exercises
#
# 1. **A closer source task.** Replace the digits by Fashion-MNIST itself: in `run`, use
#    `ClassificationData("fashion-mnist-mini", classes=[5, 6, 7, 8, 9], per_class=n,
#    val_fraction=0, batch_size=32, seed=seed)` with `num_classes=5` everywhere (model,
#    `reset_classifier`, task). Re-run the comparison: how good is `head` now, and why is
#    this comparison unfair to `scratch` (what did the source network already see)?
# 2. **Flips.** In `run`, set `hflip=True` in `BatchAugment` and re-run with 100 labels per
#    class. Which methods lose accuracy, and which digits would you expect to be confused
#    most? (Add a confusion matrix with `cnnzoo.viz.confusion.plot_confusion_matrix`.)
# 3. **Budget.** Set `STEPS = 300`. Does `scratch` catch up with the fine-tuned networks at
#    100 labels per class? At 10? What does this say about when pre-training pays off?
# 4. **How far to unfreeze.** Add a method `"partial2"` to `METHODS` and, in `run`, build
#    `FineTunePlan("partial", unfreeze=2)` for it (the last two stages and the head). Print
#    its trainable parameter count with `apply_plan` and re-run the comparison: where does
#    it fall between `partial` and `full` at 10 and at 100 labels per class?
