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
# # 8 · Optimizing for embedded
#
# This notebook follows the lecture's last section, **OPTIMIZING FOR EMBEDDED**, and its
# list of methods: filter design (1x1 and depthwise convolutions: MobileNet, ShuffleNet),
# pruning (remove "unimportant" weights or neurons), weight quantization (int8, down to
# ternary and binary) and knowledge distillation (teacher / student).
#
# You will:
#
# - count what a depthwise-separable convolution saves, and compare the parameters, MACs,
#   accuracy and CPU latency of standard and mobile architectures (ImageNet sizes from the
#   catalog, Fashion-MNIST models that ship with cnnzoo);
# - prune the shipped `resnet20.fmnist` by weight magnitude (unstructured) and by whole
#   channels (structured), with and without a short fine-tuning;
# - quantize it to int8 with `cnnzoo compress`, run the shipped `resnet20.fmnist_int8` ONNX
#   model with ONNX Runtime against the fp32 model, and bench them with `cnnzoo bench`;
# - put accuracy, size and latency of every variant in one table and one plot;
# - see what a teacher's soft targets look like (distillation, explained; no training).
#
# Data: the bundled mini Fashion-MNIST (5,000 training and 1,000 test images). Latencies
# are measured on one thread of a CPU that other programs may share: read them as rough
# ratios, not as the device's speed. Runs in about 110 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# Two environment variables keep everything in this notebook's working folder and make
# every cnnzoo command use the bundled data:
#
# - `CNNZOO_DATA` is where cnnzoo looks for Fashion-MNIST first. We write the bundled mini
#   set there with the official file names (`write_idx`), so `cnnzoo compress` and
#   `cnnzoo bench`, which evaluate a run on "its" test split, use the 1,000 mini test
#   images and 5,000 mini training images (int8 calibration) on every machine, quickly and
#   without a download. Their accuracies are therefore on the mini test set, as are ours.
# - `CNNZOO_HOME` is where cnnzoo writes what belongs to a named weight set (plots, cache).
#
# One PyTorch thread: on a shared CPU two threads wait for each other, and the times get
# much slower and noisier. `setup_terminal` hides Lightning's banners, as `cnnzoo` does.

# %%
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.cli.terminal import setup_terminal
from cnnzoo.compress.distill import kd_loss
from cnnzoo.compress.lowbit import apply_lowbit, bake_lowbit, packed_size_bytes
from cnnzoo.compress.prune import sparsity_report, structured_prune, unstructured_prune
from cnnzoo.compress.runtime import median_latency_ms, ort_logits, ort_session
from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.fashion_mnist import SPLIT_FILES, load_fashion_mnist_mini, write_idx
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.layers.mobile import DepthwiseSeparableConv
from cnnzoo.rundir import RunDir
from cnnzoo.summary import count_macs
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.workflows.bench import bench
from cnnzoo.workflows.compress import KeepZeros
from cnnzoo.workflows.export import export_run
from cnnzoo.workflows.train import fit_and_test

START = time.perf_counter()
setup_terminal(verbose=False)
torch.manual_seed(0)
torch.set_num_threads(1)
torch.set_flush_denormal(True)

data_dir = Path("fashion-mnist-mini").resolve()
data_dir.mkdir(exist_ok=True)
for split, (images_file, labels_file) in SPLIT_FILES.items():
    images, labels = load_fashion_mnist_mini(split)
    write_idx(data_dir / f"{images_file}.gz", images[:, 0].numpy())
    write_idx(data_dir / f"{labels_file}.gz", labels.to(torch.uint8).numpy())
os.environ["CNNZOO_DATA"] = str(data_dir)
os.environ["CNNZOO_HOME"] = str(Path("cnnzoo-home").resolve())

test_images, test_labels = load_fashion_mnist_mini("test")
PREP = cnnzoo.weights.get("resnet20.fmnist").preprocessing  # mean/std the weights expect
x_test = normalize_batch(test_images, PREP.mean, PREP.std)
print(f"test inputs {tuple(x_test.shape)}; preprocessing: {PREP.describe()}")


def accuracy(model, x=x_test, batch=250):
    """Top-1 accuracy of a PyTorch model on the mini test set (eval mode, in chunks)."""
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == test_labels).float().mean())


def latency_ms(model, batch=1, repeats=30):
    """Median wall-clock ms of one forward pass (cnnzoo's `median_latency_ms`)."""
    model.eval()
    xb = x_test[:batch].contiguous()
    with torch.inference_mode():
        return median_latency_ms(lambda: model(xb), repeats=repeats)


def cli(*args):
    """Run a cnnzoo command as a user would, and print what it prints."""
    result = subprocess.run([sys.executable, "-m", "cnnzoo", *args], check=True,
                            capture_output=True, text=True)  # fmt: skip
    print(result.stdout.rstrip())


def params(model):
    return sum(p.numel() for p in model.parameters())


SHORT = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]  # fmt: skip


# %% [markdown]
# ## 1 · Filter design: depthwise-separable convolutions
#
# A standard $k \times k$ convolution from $C_{in}$ to $C_{out}$ channels on an
# $H \times W$ map costs $k^2 C_{in} C_{out} H W$ multiply-accumulates (MACs). MobileNet
# (Howard et al. 2017) splits it in two: a **depthwise** $k \times k$ convolution that
# filters each input channel on its own ($k^2 C_{in} H W$) and a **pointwise** 1x1
# convolution that mixes channels ($C_{in} C_{out} H W$). The ratio of the costs is
#
# $$\frac{k^2 C_{in} HW + C_{in} C_{out} HW}{k^2 C_{in} C_{out} HW}
#   = \frac{1}{C_{out}} + \frac{1}{k^2},$$
#
# about 8-9x fewer MACs and parameters for 3x3 kernels. cnnzoo's `DepthwiseSeparableConv`
# (MobileNet's block, with BatchNorm and ReLU) against a plain 3x3 convolution, 128 → 128
# channels on a 14x14 map:

# %%
c, hw = 128, 14
standard = nn.Conv2d(c, c, 3, padding=1, bias=False)
separable = DepthwiseSeparableConv(c, c)
for name, layer in (("standard 3x3 conv", standard), ("depthwise-separable", separable)):
    layer.eval()
    macs = count_macs(layer, (c, hw, hw))
    with torch.inference_mode():
        xb = torch.randn(32, c, hw, hw)
        ms = median_latency_ms(lambda layer=layer, xb=xb: layer(xb), repeats=20)
    print(f"{name:<22} {params(layer):>8,} params {macs / 1e6:6.1f} M MACs   {ms:6.2f} ms "
          "(batch 32)")  # fmt: skip
print(f"predicted MAC ratio 1/C_out + 1/k^2 = {1 / c + 1 / 9:.3f} (1/{1 / (1 / c + 1 / 9):.1f})")

# %% [markdown]
# The MACs drop 8.4x as the formula says; the measured time drops much less. A depthwise
# convolution does only 9 MACs per input value it reads, so it is limited by memory
# traffic rather than arithmetic, and CPU libraries optimise it less than dense
# convolutions. Keep this in mind for the whole networks.
#
# **Whole networks at ImageNet size.** `count_macs` (torch's FLOP counter, halved) on the
# 224x224 architectures, with the ImageNet top-1 accuracy of torchvision's weights as the
# catalog lists them (nothing is downloaded; MobileNetV1 has no torchvision weights, its
# count is checked against the paper's 4.2 M parameters and 569 M MACs in docs/embedded.md):

# %%
imagenet = ["vgg16", "resnet50", "resnet18", "mobilenet_v1", "mobilenet_v2",
            "shufflenet_v2_x1_0", "squeezenet1_1"]  # fmt: skip
rows_in1k = []
for name in imagenet:
    net = cnnzoo.create_model(name, num_classes=1000)
    top1 = cnnzoo.weights.get(f"{name}.tv_in1k").metrics["imagenet_val/acc1"] \
        if name != "mobilenet_v1" else float("nan")  # fmt: skip
    rows_in1k.append((name, params(net), count_macs(net, (3, 224, 224)), top1))
    del net
print(f"{'model (224x224)':<20}{'params':>12}{'MACs':>10}{'top-1':>8}")
for name, p, m, top1 in rows_in1k:
    print(f"{name:<20}{p / 1e6:10.2f} M{m / 1e9:8.2f} G{top1:8.3f}")

# %% [markdown]
# MobileNetV2 reaches VGG-16's ImageNet accuracy with 1/40 of its parameters and 1/50 of
# its MACs; ShuffleNetV2 (channel split and shuffle instead of expensive grouped 1x1
# convolutions) halves MobileNetV2's MACs again.
#
# **The shipped Fashion-MNIST classifiers** at 28x28: parameters, MACs, accuracy on the
# mini test set and the PyTorch latency of one image, measured here.

# %%
fmnist = ["resnet20.fmnist", "convnet.fmnist", "mobilenet_v2.fmnist",
          "shufflenet_v2_x1_0.fmnist", "googlenet.fmnist"]  # fmt: skip
rows_fm = []
for name in fmnist:
    net = cnnzoo.create_model(name.split(".")[0], weights=name).eval()
    rows_fm.append((name, params(net), count_macs(net, (1, 28, 28)), accuracy(net),
                    latency_ms(net, repeats=10)))  # fmt: skip
print(f"{'weight set':<28}{'params':>10}{'MACs':>9}{'acc (mini)':>12}{'ms, batch 1':>13}")
for name, p, m, acc, ms in rows_fm:
    print(f"{name:<28}{p / 1e3:8.0f} k{m / 1e6:7.1f} M{acc:12.3f}{ms:13.2f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
ax = axes[0]
for i, (name, _, m, top1) in enumerate(rows_in1k):
    if np.isfinite(top1):
        ax.scatter(m / 1e9, top1, s=60, color=plt.cm.tab10(i))
        ax.annotate(name, (m / 1e9, top1), xytext=(5, -3), textcoords="offset points", fontsize=8)
ax.set_xscale("log")
ax.set_xlabel("GMACs per 224x224 image (log)")
ax.set_ylabel("ImageNet top-1 (torchvision weights)")
ax.set_title("ImageNet: accuracy vs computation")
ax.set_xlim(0.1, 60)
for ax, col, label in ((axes[1], 3, "test accuracy (mini Fashion-MNIST)"),
                       (axes[2], 4, "PyTorch latency, batch 1 (ms, 1 thread)")):  # fmt: skip
    for i, row in enumerate(rows_fm):
        ax.scatter(row[2] / 1e6, row[col], s=60, color=plt.cm.Dark2(i))
        below = col == 3 and row[0].startswith("convnet")  # keep it off resnet20's label
        ax.annotate(row[0].split(".")[0], (row[2] / 1e6, row[col]), fontsize=8,
                    xytext=(5, -10 if below else 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("MMACs per 28x28 image")
    ax.set_ylabel(label)
    ax.set_xlim(10, 50)
axes[1].set_title("Fashion-MNIST: accuracy vs MACs")
axes[2].set_title("Fashion-MNIST: latency vs MACs")
fig.tight_layout()
plt.show()

# %% [markdown]
# On Fashion-MNIST all five reach 90-94 %, and fewer MACs do **not** mean less time on
# this CPU: the mobile networks are the *slowest* per image, despite MobileNetV2 x0.5
# having fewer MACs than ResNet-20. Their many thin depthwise and 1x1 layers are
# memory-bound and carry per-layer overhead; their savings show on hardware and runtimes
# built for them (mobile NPUs, ONNX Runtime / TFLite kernels), and at large inputs. The
# lecture's filter-design methods cut *computation*; whether that becomes *speed* must be
# measured on the target.
#
# ## 2 · Pruning: remove "unimportant" weights
#
# **Unstructured magnitude pruning** (Han et al. 2015) sets the weights of smallest $|w|$
# to zero — here with one global threshold over all convolutions (`unstructured_prune`;
# the first convolution and the classifier stay dense). No fine-tuning first:

# %%
base = cnnzoo.create_model("resnet20", weights="resnet20.fmnist").eval()
base_acc = accuracy(base)
sparsities = [0.5, 0.6, 0.7, 0.8, 0.9]
sweep = []
for s in sparsities:
    pruned = copy.deepcopy(base)
    report = unstructured_prune(pruned, s)
    sweep.append(accuracy(pruned))
    print(f"sparsity {report.sparsity:.2f}: {report.zeros:,} of {report.total:,} weights zero, "
          f"accuracy {sweep[-1]:.3f}")  # fmt: skip
print(f"(unpruned: {base_acc:.3f})")
pruned80 = copy.deepcopy(base)
layers80 = unstructured_prune(pruned80, 0.8).layers

# %% [markdown]
# Half of the weights can go with almost no loss; beyond that accuracy falls off a cliff.
# The global threshold prunes layers unevenly, and a short fine-tuning with the zeros held
# (cnnzoo's `KeepZeros` callback, which `cnnzoo compress --prune unstructured:S` uses)
# lets the remaining weights take over. `fit_and_test` is the library's lean training
# loop; 25 steps of 128 mini training images, SGD at a tenth of the source's learning
# rate, fp32 (the shipped recipe's bf16 is very slow on CPUs without native bf16):


# %%
def fine_tune(model, steps=25, callbacks=()):
    """A short fine-tuning on the mini training set; returns the mini test accuracy."""
    model.train()  # BatchNorm must update its statistics (the model came in eval mode)
    data = ClassificationData("fashion-mnist-mini", batch_size=128, val_fraction=0, seed=0)
    task = ClassificationTask(model, num_classes=10, lr=0.01)
    return fit_and_test(task, data, steps, "32-true", list(callbacks))["test/accuracy"]


names = list(layers80)
acc80_ft = fine_tune(pruned80, callbacks=[KeepZeros(pruned80, names)])
after = sparsity_report(pruned80, names)
print(f"80 % sparse: {sweep[sparsities.index(0.8)]:.3f} -> {acc80_ft:.3f} after 25 fine-tuning "
      f"steps (sparsity still {after.sparsity:.3f})")  # fmt: skip

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 2]})
ax1.plot([0, *sparsities], [base_acc, *sweep], "o-", color="tab:blue", label="no fine-tuning")
ax1.plot([0.8], [acc80_ft], "*", ms=14, color="tab:red", label="80 %, 25 steps fine-tuned")
ax1.set_xlabel("fraction of weights set to zero")
ax1.set_ylabel("test accuracy (mini)")
ax1.set_title("Unstructured pruning of ResNet-20")
ax1.legend(fontsize=8, loc="lower left")
ax1.grid(alpha=0.3)
layer_sparsity = [after.layers[n].sparsity for n in names]
ax2.bar(range(len(names)), layer_sparsity, color="tab:blue")
ax2.axhline(0.8, color="black", ls="--", lw=1, label="overall 0.8")
short = [n.replace("stages.", "").replace(".conv", ".").replace("..", ".").rstrip(".")
         for n in names]  # "stages.1.2.conv2.conv" -> "1.2.2"  # fmt: skip
ax2.set_xticks(range(len(names)), short, rotation=90, fontsize=8)
ax2.set_xlabel("convolution (stage.block.conv)")
ax2.set_ylabel("fraction of zeros")
ax2.set_title("Per-layer sparsity at 80 % (one global threshold)")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The wide last stage (64 channels, most of the weights) loses up to 90 % of its weights,
# the thin first stage less than half. But the zeros are stored in dense tensors: the
# model is exactly as large and as slow as before (`sparsity_report`'s note). Only sparse
# storage or sparse kernels turn them into savings.
#
# **Structured pruning** removes whole channels instead (Li et al. 2017, L1 norm of each
# filter; torch-pruning keeps coupled layers consistent — the residual additions, BN),
# giving a smaller *dense* network. `structured_prune` grows the fraction of removed
# channels until the MACs halve:

# %%
slim = copy.deepcopy(base)
report = structured_prune(slim, torch.zeros(1, 1, 28, 28), 0.5)
slim_acc0 = accuracy(slim)
print(f"{report.pruning_ratio:.0%} of the channels of every group removed: MACs "
      f"{report.macs_before / 1e6:.1f} M -> {report.macs_after / 1e6:.1f} M, params "
      f"{report.params_before:,} -> {report.params_after:,}")  # fmt: skip
for name in ("stem.conv", "stages.1.0.conv1.conv", "stages.2.2.conv2.conv"):
    print(f"  {name:<24} channels (in, out) {report.layers[name]['before']} -> "
          f"{report.layers[name]['after']}")  # fmt: skip
slim_acc = fine_tune(slim)
print(f"accuracy {base_acc:.3f} -> {slim_acc0:.3f} right after pruning -> {slim_acc:.3f} "
      "after 25 fine-tuning steps")  # fmt: skip

# %% [markdown]
# Right after pruning the network is at chance: removing a channel removes its
# BatchNorm's shift too (a filter with small weights still outputs a constant), so every
# following layer sees shifted inputs. A few fine-tuning steps bring most of the accuracy
# back. The docs (docs/embedded.md) fine-tune 3 full epochs on all 60,000 images and lose
# only 0.84 points (0.9141 → 0.9057) for 2.08x fewer MACs; there unstructured 80 % costs
# 0.48 points.
#
# ## 3 · Quantization: int8 with `cnnzoo compress`
#
# Post-training static quantization stores weights as int8 (symmetric, one scale per
# output channel) and computes with uint8 activations whose ranges are calibrated on a
# few hundred training images: a value $x$ is represented as
# $x \approx s\,(q - z)$ with an 8-bit integer $q$, a scale $s$ and a zero point $z$.
# `cnnzoo compress` exports the model to ONNX, quantizes it with ONNX Runtime (QDQ
# format) and scores the int8 and the fp32 graph on the test split — here the mini one,
# with 256 calibration images from the mini training set:

# %%
cli("compress", "resnet20.fmnist", "--quantize", "int8", "--calibration", "256",
    "--no-progress", "--out", "r20-int8")  # fmt: skip

# %% [markdown]
# The int8 model is 3.3x smaller and scores the same. cnnzoo also **ships** such a model,
# `resnet20.fmnist_int8` (calibrated on 512 images of the full training set). A device
# app needs no cnnzoo to run it: ONNX Runtime, the preprocessing from the manifest
# (`(pixel / 255 - mean) / std`), and an argmax. `cnnzoo export` writes the same manifest
# for the fp32 model (here its Python function, `export_run`, which also checks the ONNX
# file against PyTorch):

# %%
exported = export_run("resnet20.fmnist", "resnet20_fp32.onnx")
manifest = json.loads(exported.manifest.read_text())
kib = exported.onnx.stat().st_size / 1024
print(f"cnnzoo export: {exported.onnx} ({kib:.0f} KiB), max |ONNX - PyTorch| "
      f"{exported.max_abs_diff:.1e} on {exported.images_checked} images")  # fmt: skip
pre = manifest["preprocessing"]
print(f"manifest: input {manifest['input']['shape']}, {pre['formula']}, mean {pre['mean']}, "
      f"std {pre['std']}, output: {manifest['output']['meaning']}")  # fmt: skip

int8_file = RunDir.open("resnet20.fmnist_int8").int8_file  # the shipped ONNX file
sessions = {"ONNX Runtime fp32": ort_session(exported.onnx, threads=1),
            "ONNX Runtime int8 (shipped)": ort_session(int8_file, threads=1)}  # fmt: skip
with torch.inference_mode():
    torch_pred = base(x_test).argmax(1)
print(f"\n{'runtime':<30}{'accuracy':>9}{'same class as PyTorch fp32':>28}")
print(f"{'PyTorch fp32 (eager)':<30}{base_acc:9.3f}{1.0:28.3f}")
for name, session in sessions.items():
    pred = torch.from_numpy(ort_logits(session, x_test.numpy()).argmax(1))
    acc = float((pred == test_labels).float().mean())
    agree = float((pred == torch_pred).float().mean())
    print(f"{name:<30}{acc:9.3f}{agree:28.3f}")

# %% [markdown]
# The fp32 ONNX graph gives PyTorch's class on every test image; the int8 model on all
# but about 1 %, with the same accuracy. How fast are they? **`cnnzoo bench`** measures
# any runs the same way: the metric on the test split, parameters, MACs, file size and
# latency (median of repeated calls) at batch 1 and 32, for PyTorch, ONNX Runtime fp32 and
# ONNX Runtime int8. Its Python function, on one thread, for the shipped fp32 and int8 sets
# and our `r20-int8` run:

# %%
report = bench(["resnet20.fmnist", "resnet20.fmnist_int8", "r20-int8"], threads=1, repeats=20)
print(report.markdown())

# %% [markdown]
# Compare with the docs' figures (docs/embedded.md: 2 threads on a quiet Zen 5 CPU with
# AVX512 VNNI int8 instructions): PyTorch fp32 1.82 ms, ONNX Runtime fp32 0.303 ms, int8
# 0.175 ms per call at batch 1; 7.64, 5.71 and 2.94 ms at batch 32. Our absolute times are
# higher (one thread, a shared CPU: repeat the cell and they move by tens of percent), but
# two lessons hold:
#
# - most of the gain over PyTorch comes from leaving PyTorch's eager mode (per-module
#   Python overhead) for a compiled graph, before any quantization;
# - int8 pays most on CPUs with int8 dot-product instructions (VNNI). On a CPU with only
#   AVX2 (check `grep -o 'avx512_vnni\|avx_vnni' /proc/cpuinfo`), int8 is only moderately
#   faster than fp32 ONNX, and the docs report slightly different int8 accuracies there
#   (0.9340 instead of 0.9366 on the full test set).

# %% [markdown]
# ## 4 · Ternary and binary weights
#
# The lecture's extreme end of quantization: ternary weights $\{-\alpha, 0, +\alpha\}$
# (TWN: threshold $\Delta = 0.7 \cdot \mathrm{mean}|W|$ per layer) and binary weights
# $\alpha \cdot \mathrm{sign}(W)$ (BinaryConnect / XNOR-Net), 2 and 1 bits per weight.
# `apply_lowbit` + `bake_lowbit` are what `cnnzoo compress --quantize ternary|binary` uses
# (it then fine-tunes; here we only look at the model right after quantizing):

# %%
lowbit = {}
for mode in ("ternary", "binary"):
    net = copy.deepcopy(base)
    quantized = apply_lowbit(net, mode)
    bake_lowbit(net)
    size = packed_size_bytes(net, mode, quantized)
    lowbit[mode] = (accuracy(net), size["packed_bytes"])
    packed, full = size["packed_bytes"] / 1024, size["fp32_bytes"] / 1024
    print(f"{mode:<8} {len(quantized)} layers at {size['bits_per_weight']} bits per weight: "
          f"packed {packed:.0f} KiB vs fp32 {full:.0f} KiB ({size['ratio']:.1f}x), "
          f"accuracy {lowbit[mode][0]:.3f} without fine-tuning")  # fmt: skip

# %% [markdown]
# Quantized without fine-tuning, both wreck the model (close to chance): the network's
# other layers were tuned to the exact weights. The straight-through fine-tuning of
# `cnnzoo compress --quantize ternary --finetune-epochs 3` repairs that: in the docs,
# ternary ends 0.08 points and binary 0.79 points below full precision, at 13.5x and 21.7x
# smaller packed sizes. (Exercise 3 of the *fine-tuning budget* kind applies here too.)
#
# ## 5 · Everything side by side
#
# Accuracy on the same 1,000 mini test images, the size of what a device would store, and
# the batch-1 latency on one thread of this CPU (PyTorch for the pruned and low-bit models,
# which run as float32; ONNX Runtime for the ONNX rows, from `cnnzoo bench`).

# %%
bench_rows = {(r.run, r.variant): r for r in report.rows}
fp32_bytes = exported.onnx.stat().st_size
summary = [
    ("PyTorch fp32", base_acc, 4 * params(base), latency_ms(base)),
    ("ONNX Runtime fp32", bench_rows["resnet20.fmnist", "onnxruntime fp32"].score, fp32_bytes,
     bench_rows["resnet20.fmnist", "onnxruntime fp32"].latency_ms[1]),
    ("int8, shipped", bench_rows["resnet20.fmnist_int8", "onnxruntime int8"].score,
     bench_rows["resnet20.fmnist_int8", "onnxruntime int8"].size_bytes,
     bench_rows["resnet20.fmnist_int8", "onnxruntime int8"].latency_ms[1]),
    ("int8, ours (256 cal.)", bench_rows["r20-int8", "onnxruntime int8"].score,
     bench_rows["r20-int8", "onnxruntime int8"].size_bytes,
     bench_rows["r20-int8", "onnxruntime int8"].latency_ms[1]),
    ("80 % sparse + FT", acc80_ft, 4 * params(pruned80), latency_ms(pruned80)),
    ("channels -50 % MACs + FT", slim_acc, 4 * params(slim), latency_ms(slim)),
    ("ternary, no FT", lowbit["ternary"][0], lowbit["ternary"][1], float("nan")),
    ("binary, no FT", lowbit["binary"][0], lowbit["binary"][1], float("nan")),
]  # fmt: skip
print(f"{'variant':<26}{'accuracy':>9}{'size (KiB)':>12}{'ms, batch 1':>13}")
for name, acc, size, ms in summary:
    print(f"{name:<26}{acc:9.3f}{size / 1024:12.0f}{ms:13.2f}")

# %%
shown = [row for row in summary if row[1] > 0.5]  # the low-bit rows without FT: see above
markers = ["o", "s", "D", "^", "v", "P"]
fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
for ax, col, xlabel in ((axes[0], 2, "stored size (KiB, log)"),
                        (axes[1], 3, "latency, batch 1, 1 thread (ms, log)")):  # fmt: skip
    for i, row in enumerate(shown):
        x = row[col] / 1024 if col == 2 else row[col]
        ax.scatter(x, row[1], s=80, marker=markers[i], color=plt.cm.tab10(i), label=row[0],
                   alpha=0.85)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (mini)")
    ax.grid(alpha=0.3)
axes[0].set_title("Accuracy vs size: int8 shrinks, zeros in dense tensors do not")
axes[1].set_title("Accuracy vs latency (ONNX rows: cnnzoo bench)")
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=len(shown), fontsize=9, frameon=False)
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# int8 is the one "free lunch": 3.3x smaller and the fastest, at the same accuracy
# (the docs reach the same conclusion on the full test set: +0.09 points). Structured
# pruning halves the size and the MACs but, after our 25 steps, costs accuracy (the docs'
# 3 epochs cost 0.84 points) and saves less time than MACs. The 80 % sparse model is
# exactly as large and as fast as the dense one. Ternary and binary weights would be the
# smallest by far (79 and 49 KiB packed, left out of the plot), but they need fine-tuning,
# and are fast only on hardware with such kernels.
#
# ## 6 · Knowledge distillation (explained)
#
# A small **student** is trained on the **teacher's** output distribution softened by a
# temperature $T$, $p_i = \exp(z_i / T) / \sum_j \exp(z_j / T)$, besides the true labels
# (Hinton et al. 2015):
#
# $$\mathcal L = \alpha\, T^2\, \mathrm{KL}\left(p^{teacher}_T \,\|\, p^{student}_T\right)
#   + (1 - \alpha)\, \mathrm{CE}(p^{student}_1, y).$$
#
# The soft targets carry the teacher's "dark knowledge": *which* wrong classes look
# similar. Here are the shipped ResNet-20's soft targets for one test shirt at three
# temperatures, and `kd_loss` (what `cnnzoo compress --distill-from` trains with) for an
# untrained student, the small convnet of the docs' experiment:

# %%
shirt = int(torch.nonzero(test_labels == 6)[0, 0])
with torch.no_grad():
    teacher_logits = base(x_test)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4), sharey=True)
for ax, temp in zip(axes, (1, 4, 10), strict=True):
    p = F.softmax(teacher_logits[shirt] / temp, dim=0)
    ax.bar(range(10), p.numpy(), color=["tab:red" if i == 6 else "tab:gray" for i in range(10)])
    ax.set_xticks(range(10), SHORT, rotation=60, ha="right", fontsize=8)
    ax.set_title(f"teacher's soft targets, T = {temp}")
axes[0].set_ylabel("probability")
fig.tight_layout()
plt.show()

torch.manual_seed(0)
student = cnnzoo.create_model("convnet", num_classes=10, in_channels=1, widths=[8, 16],
                              hidden=64).eval()  # fmt: skip
with torch.no_grad():
    student_logits = student(x_test[:256])
s_macs, t_macs = (count_macs(m, (1, 28, 28)) / 1e6 for m in (student, base))
print(f"student: {params(student):,} params, {s_macs:.2f} M MACs "
      f"(teacher: {params(base):,} params, {t_macs:.1f} M MACs)")  # fmt: skip
for temp, alpha in ((4, 0.0), (4, 0.5), (4, 0.9), (1, 0.9)):
    loss = kd_loss(student_logits, teacher_logits[:256], test_labels[:256], temp, alpha)
    print(f"kd_loss of the untrained student, T = {temp}, alpha = {alpha}: {loss:.3f}")

# %% [markdown]
# At $T = 1$ the teacher is almost certain; at $T = 4$ it reveals that this shirt looks
# more like a T-shirt than like anything else — information the hard label "Shirt" does
# not give, and which a student can learn from; at $T = 10$ everything is nearly uniform.
# The factor $T^2$ keeps the soft term's gradients at the scale of the hard term's.
#
# Does it pay? The docs' measurements (docs/embedded.md, "Distillation: where it helps")
# are a useful warning: the 55 k-parameter convnet student gains **+2.2 points** (0.8730 →
# 0.8950) when it sees only 600 training images per class, where the teacher's soft
# targets act as a regulariser — but **nothing** on the full 60,000-image training set,
# where the students trained alone come within 1-3 points of the teacher anyway. A
# distillation run needs tens of epochs, so it is an exercise here rather than a cell.

# %%
print(f"notebook run time: {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. **Per-layer vs global pruning.** In the first cell of section 2, call
#    `unstructured_prune(pruned, s, scope="layer")` instead (the same fraction of every
#    layer) and re-run the cell. At which sparsity does accuracy collapse now, compared
#    with the global threshold? Use the per-layer sparsity plot to explain the difference.
# 2. **Calibration size.** In section 3, change `--calibration 256` to `--calibration 8`
#    and `--out r20-int8` to `--out r20-int8-cal8`, and re-run the cell. How much accuracy
#    does int8 lose with 8 calibration images? Which part of the quantization
#    ($s$ and $z$ of the weights, or of the activations) depends on the calibration set?
# 3. **Fine-tuning budget.** In the structured-pruning cell, ask for `0.3` and then `0.7`
#    MAC reduction instead of `0.5`, and call `fine_tune(slim, steps=60)`. Tabulate MACs,
#    accuracy before and after fine-tuning and batch-1 latency. Is the latency
#    proportional to the MACs? Why not?
# 4. **A distillation run.** From a terminal (about 5 minutes on 2 cores): train the
#    student alone, `cnnzoo train convnet --model-arg widths=[8,16] --model-arg hidden=64
#    --data fashion-mnist-mini --per-class 100 --no-augment --epochs 20 --val-fraction 0
#    --out small`, then `cnnzoo compress small --distill-from resnet20.fmnist --temperature 4
#    --alpha 0.5 --out small-kd`. Compare the two test accuracies. Does the teacher help
#    with 100 images per class? Repeat with `--alpha 0.9`: what changes?
