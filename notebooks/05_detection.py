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
# # 5 · Object detection
#
# This notebook follows the lecture's **OBJECT DETECTION** slides in order: the task
# (bounding boxes and their classes, a compound loss), the naive sliding window and why it is
# slow, Fast R-CNN ("only classify some proposals", RoI pooling), and the one-pass detectors
# YOLO (a grid of cells, base boxes, $b = \sigma(t) + c$ and $b_w = p_w e^{t_w}$) and SSD
# (default boxes at several scales). Then the tools every detector needs: IoU,
# non-maximum suppression (NMS) and mean average precision (mAP).
#
# You will run the three detectors that ship with cnnzoo (`yolov3.scenes`, `ssd.scenes`,
# `fast_rcnn.scenes`) on cnnzoo's test scenes, draw their boxes next to the true ones,
# decode one YOLO box by hand, draw the anchors and default boxes, see what NMS removes,
# compute mAP and mAP@0.5 with cnnzoo's metric code, read precision-recall curves, and
# measure what each detector costs against the naive sliding window.
#
# Nothing is trained here. Runs in about 60 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# All imports are here. PyTorch runs on one thread, so that the times measured in section 9
# stay comparable when other programs share the two cores.
#
# The three settings in capitals are used by every detection below; the exercises change
# them.

# %%
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

import cnnzoo
from cnnzoo.data.det_sources import open_det_dataset
from cnnzoo.data.detection import detection_collate
from cnnzoo.data.scenes import generate_scenes
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.experiments.detector_cost import DetCostSettings, macs_per_image, network_evaluations
from cnnzoo.experiments.timing import inference_ms
from cnnzoo.models.base import count_params
from cnnzoo.models.detection.fast_rcnn import pool_rois
from cnnzoo.models.detection.ops import box_convert, box_iou
from cnnzoo.models.detection.postprocess import score_candidates
from cnnzoo.models.detection.ssd import ssd_match
from cnnzoo.models.detection.windows import sliding_windows
from cnnzoo.tasks.detection import class_ap_list, map_metric, metric_preds, metric_targets
from cnnzoo.tasks.voc_ap import voc_ap
from cnnzoo.viz.detection import draw_detections

START = time.perf_counter()
torch.manual_seed(0)
torch.set_flush_denormal(True)  # as cnnzoo's own timings do: subnormal floats are slow on x86
torch.set_num_threads(1)

N_TEST = 120  # test scenes used for mAP (the catalog's figures use all 400)
SCORE_THRESHOLD = 0.01  # detections kept for mAP (cnnzoo eval's default)
NMS_IOU = 0.5  # NMS removes a box overlapping a better one of its class by more than this
SHOW_SCORE = 0.3  # detections drawn in the pictures
SIZE = (96, 96)
SHOW = [0, 3, 5, 8]  # test scenes shown in the figures

# %% [markdown]
# ## 1 · The data and the task
#
# Detection predicts, for every object, a **bounding box** and its **class**. cnnzoo's
# scenes (see notebook 4) come with COCO boxes of the visible part of each item: 10
# classes, 1-6 items per 96 x 96 scene, often overlapping. `generate_scenes` writes the
# first `N_TEST` of the 400 test scenes that `--data scenes` uses, and cnnzoo's COCO reader
# (`open_det_dataset`) reads them back as `(image, {"boxes": xyxy pixels, "labels"})`.
# Which detection weights ship with cnnzoo:

# %%
listing = subprocess.run(
    [sys.executable, "-m", "cnnzoo", "weights", "list", "--task", "detection"],
    check=True,
    capture_output=True,
    text=True,
)
print(listing.stdout)

# written into the current folder, one folder per N_TEST (an existing one is reused)
root = generate_scenes(f"scenes-{N_TEST}", n_train=0, n_test=N_TEST, seed=0)
test = open_det_dataset(f"scenes:{root}", split="test")
CLASSES = test.class_names
images, targets = detection_collate([test[i] for i in range(len(test))])
prep = cnnzoo.weights.get("yolov3.scenes").preprocessing
x = normalize_batch(images, prep.mean, prep.std)
boxes_per_scene = torch.tensor([len(t["boxes"]) for t in targets])
print(f"{len(test)} test scenes, {int(boxes_per_scene.sum())} boxes ({CLASSES})")
mean, most = boxes_per_scene.float().mean(), boxes_per_scene.max()
print(f"boxes per scene: {mean:.2f} on average, up to {most}")
print(f"scene {SHOW[1]}:", {k: v.tolist() for k, v in targets[SHOW[1]].items()})

# %% [markdown]
# The lecture's loss is **compound**: a classification term and a box-regression term,
#
# $$L(y_c, y_{coord}) = \alpha\, L_c(y_c) + \beta\, L_{coord}(y_{coord}),\qquad
# L_c = -\log p(y_c),\quad L_{coord} = (y_{coord} - y_{truecoord})^2 .$$
#
# Every cnnzoo detector has `loss(outputs, targets, image_size)` with `cls_weight`
# ($\alpha$) and `box_weight` ($\beta$). The shipped models on 16 test scenes (YOLOv3 adds
# an objectness term, Fast R-CNN the terms of its region proposal network):

# %%
yolo = cnnzoo.create_model("yolov3", weights="yolov3.scenes").eval()
ssd = cnnzoo.create_model("ssd", weights="ssd.scenes").eval()
frcnn = cnnzoo.create_model("fast_rcnn", weights="fast_rcnn.scenes").eval()
DETECTORS = {"YOLOv3": yolo, "SSD": ssd, "Fast R-CNN": frcnn}

torch.manual_seed(0)  # Fast R-CNN samples the RPN's anchors for its loss
with torch.inference_mode():
    for name, model in DETECTORS.items():
        losses = model.loss(model(x[:16]), targets[:16], SIZE)
        parts = ", ".join(f"{k} {float(v):.3f}" for k, v in losses.items() if k != "loss")
        print(
            f"{name:<10} alpha={model.cls_weight:g} beta={model.box_weight:g}  "
            f"loss {float(losses['loss']):.3f} = {parts}"
        )

# %% [markdown]
# ## 2 · The naive approach: a CNN on many crops
#
# "Apply a CNN to many different crops of the image, CNN classifies each crop as object or
# background." cnnzoo's `sliding_window` detector crops windows of 3 scales (1/4, 1/2 and
# 3/4 of the image side) and 3 aspect ratios (1:2, 1:1, 2:1), sliding by a quarter of the
# window, and classifies each crop (resized to 32 x 32) into the 10 classes or background.
# We build it, untrained, as cnnzoo's `detector-cost` experiment does (`DetCostSettings`:
# a small VGG-style `convnet` backbone, widths 16-128), with the experiment's YOLOv3 on the
# same backbone to compare. The windows of each shape on one scene
# (`cnnzoo.models.detection.windows.sliding_windows`), one of them highlighted:

# %%
experiment = DetCostSettings().models
print("detector-cost settings:", experiment)
window_model = cnnzoo.create_model(
    "sliding_window", num_classes=10, **experiment["sliding_window"]
).eval()
small_yolo = cnnzoo.create_model("yolov3", num_classes=10, **experiment["yolov3"]).eval()
print(f"windows per 96 x 96 image: {window_model.num_windows(SIZE)}")
scales, ratios = window_model.window_sizes, window_model.aspect_ratios
fig, axes = plt.subplots(len(scales), len(ratios), figsize=(7.5, 7.9))
for r, s in enumerate(scales):
    for c, a in enumerate(ratios):
        windows = sliding_windows(SIZE, (s,), (a,), window_model.stride_fraction)
        ax = axes[r, c]
        ax.imshow(images[SHOW[1]].permute(1, 2, 0).numpy())
        for x1, y1, x2, y2 in windows.tolist():
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=0.6, color="white", alpha=0.6)
            )
        x1, y1, x2, y2 = windows[len(windows) // 2].tolist()
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, color="tab:red"))
        w, h = windows[0, 2] - windows[0, 0], windows[0, 3] - windows[0, 1]
        ax.set_title(f"{w:.0f} x {h:.0f} px: {len(windows)} windows", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if c == 0:
            ax.set_ylabel(f"scale {s:g}")
        if r == len(scales) - 1:
            ax.set_xlabel(f"width:height = {a:g}")
fig.suptitle("Sliding windows: each one is cropped and classified by the CNN")
fig.tight_layout()
plt.show()

# %% [markdown]
# 627 crops, hence 627 CNN evaluations for one small image, and still only 9 box shapes:
# a real detector would need many more scales and ratios ("huge number of locations,
# scales, and aspect ratios, very computationally expensive!"). Its cost next to YOLOv3
# on the same backbone, counted with the experiment's own functions on a real test image:

# %%
macs = {}
for name, model in (("sliding window", window_model), ("YOLOv3", small_yolo)):
    with torch.inference_mode():
        evaluations = network_evaluations(model, model(x[:1]), SIZE)
    macs[name] = macs_per_image(model, x[:1])
    print(
        f"{name:<15} {evaluations:>6.0f} network evaluations, "
        f"{macs[name] / 1e9:.3f} GMACs per image"
    )
print(f"ratio: {macs['sliding window'] / macs['YOLOv3']:.0f}x the MACs")

# %% [markdown]
# These are the docs' figures exactly (`docs/detection.md`: 8.415 and 0.153 GMACs, 55x):
# MACs are counted, not timed, so they do not depend on the machine. Section 9 times them.

# %% [markdown]
# ## 3 · Fast R-CNN: only classify some proposals
#
# Girshick (ICCV 2015): the backbone runs **once** on the image; a few region proposals
# (here 100, from a learned region proposal network) are cut out of that *shared feature
# map* by **RoI pooling**: each proposal's window on the map is divided into a 7 x 7 grid
# and each cell max-pooled, so every proposal gives a fixed-size $C\times 7\times 7$ block,
# whatever its size. Two fully-connected layers then give $C+1$ class scores and box
# refinements per proposal. (cnnzoo uses RoI *Align*, bilinear sampling without rounding,
# by default, and `roi_op="pool"` for the paper's max pooling.)

# %%
i = SHOW[1]
with torch.inference_mode():
    out = frcnn(x[i : i + 1])
    features = frcnn.backbone(x[i : i + 1])[0]
    detections = frcnn.decode(out, SIZE, SHOW_SCORE, NMS_IOU, 100)[0]
    truth = targets[i]["boxes"]
    pooled = {op: pool_rois(features, [truth], 7, frcnn.stride, op) for op in ("pool", "align")}
proposals = out["proposals"][0]
print(f"shared feature map {tuple(features.shape)} (stride {frcnn.stride:g})")
print(f"{len(proposals)} proposals -> RoI pooling -> {tuple(pooled['pool'].shape)}")
print(
    f"head: {frcnn.head[1].in_features} -> {frcnn.head[1].out_features} -> "
    f"{frcnn.head[3].out_features} -> {frcnn.cls_score.out_features} class scores "
    f"+ {frcnn.bbox_pred.out_features} box deltas per proposal"
)

fig = plt.figure(figsize=(11, 6.2))
grid = fig.add_gridspec(3, 5)
ax = fig.add_subplot(grid[:, :2])
ax.imshow(images[i].permute(1, 2, 0).numpy())
for x1, y1, x2, y2 in proposals[:40].tolist():
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=0.7, color="white"))
ax.set_title(f"the 40 best of {len(proposals)} RPN proposals, scene {i}")
ax.set_axis_off()
for row, box in enumerate(truth[:3].tolist()):
    x1, y1, x2, y2 = (round(v) for v in box)
    panels = [
        (f"true box {CLASSES[targets[i]['labels'][row]]}", images[i][:, y1:y2, x1:x2]),
        ("RoI max pooling", pooled["pool"][row].mean(0)),
        ("RoI Align", pooled["align"][row].mean(0)),
    ]
    for col, (title, picture) in enumerate(panels, start=2):
        a = fig.add_subplot(grid[row, col])
        if picture.dim() == 3:
            a.imshow(picture.permute(1, 2, 0).numpy())
        else:
            a.imshow(picture.numpy(), cmap="viridis")
        a.set_title(title, fontsize=9)
        a.set_axis_off()
fig.suptitle("Fast R-CNN: proposals, and 7 x 7 pooled features (mean over channels) per box")
fig.tight_layout()
plt.show()
print(f"detections scoring >= {SHOW_SCORE}: {len(detections['boxes'])}")

# %% [markdown]
# Whatever the box size (a 20 px sandal or a 45 px pullover), the head sees $128\times 7
# \times 7$ numbers. The expensive part, the backbone, runs once; each proposal only costs
# the pooling and the head. The lecture's remaining issue: "independently processing each
# cropped feature block is very costly"; "ideally, we would like to obtain both the
# bounding boxes and the classes in a single pass" — the one-pass detectors below.
#
# ## 4 · YOLO: a grid of cells, base boxes, and $\sigma(t) + c$
#
# One-pass detectors predict all boxes in one forward pass: at every cell of a grid and for
# each of $B$ base boxes (anchors) the network outputs box offsets, a confidence and $C$
# class scores. YOLOv3 (Redmon & Farhadi 2018) parameterises the box relative to the cell
# $(c_x, c_y)$ and the anchor $(p_w, p_h)$:
#
# $$b_x = \sigma(t_x) + c_x,\quad b_y = \sigma(t_y) + c_y,\quad
# b_w = p_w\, e^{t_w},\quad b_h = p_h\, e^{t_h},$$
#
# the centre in cells (times the stride for pixels): the sigmoid keeps the centre inside its
# cell, the exponential keeps the size positive. The shipped YOLOv3 predicts at three
# scales, each with three anchors:

# %%
with torch.inference_mode():
    raw = yolo(x[:N_TEST])  # kept for sections 6 and 8
print(
    f"{'scale':<6} {'stride':>6} {'grid':>8}  output (N, anchors, H, W, 5 + C)   anchors (w x h px)"
)
for k, o in enumerate(raw):
    anchors = ", ".join(f"{w:g}x{h:g}" for w, h in yolo.scale_anchors(k).tolist())
    grid = f"{o.shape[2]} x {o.shape[3]}"
    print(f"{k:<6} {yolo.strides[k]:>6} {grid:>8}  {tuple(o.shape)!s:<32} {anchors}")
print(f"candidate boxes per image: {sum(o[0, ..., 0].numel() for o in raw):,}")

# %% [markdown]
# The lecture's YOLO output is $7\times 7\times(5B + C)$; here the backbone's maps of
# stride 2, 4 and 8 give grids of 48, 24 and 12 cells, each cell $3\times(5 + 10)$ numbers.
# (The paper's strides are 8, 16 and 32 on 416 px images; cnnzoo's scenes are 96 px with
# 20-48 px items.) Below, the three anchors of each scale centred on the cell that holds the
# centre of one true box, on the grid of that scale:

# %%
i = SHOW[2]
box = targets[i]["boxes"][0]
centre = (box[:2] + box[2:]) / 2
fig, axes = plt.subplots(1, 3, figsize=(11, 3.9))
for k, ax in enumerate(axes):
    stride = yolo.strides[k]
    ax.imshow(images[i].permute(1, 2, 0).numpy())
    for line in range(0, 97, stride):
        ax.axhline(line - 0.5, color="white", lw=0.3, alpha=0.5)
        ax.axvline(line - 0.5, color="white", lw=0.3, alpha=0.5)
    cell = (centre // stride) * stride
    ax.add_patch(Rectangle(cell.tolist(), stride, stride, color="yellow", alpha=0.8))
    x1, y1, x2, y2 = box.tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, ls="--", color="white"))
    cx, cy = (cell + stride / 2).tolist()
    for a, (w, h) in enumerate(yolo.scale_anchors(k).tolist()):
        ax.add_patch(
            Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, lw=1.5, color=plt.cm.tab10(a))
        )
    ax.set_title(f"scale {k}: stride {stride}, {96 // stride} x {96 // stride} cells", fontsize=10)
    ax.set_axis_off()
name = CLASSES[targets[i]["labels"][0]]
fig.suptitle(f"YOLOv3 anchors (colours) at the centre cell (yellow) of a true {name} (dashed)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Now the formulas on a real prediction: the highest-scoring candidate of that scene,
# decoded by hand from the raw outputs $t$ and checked against cnnzoo's decoding.

# %%
boxes_all, scores_all = yolo.candidates([o[i : i + 1] for o in raw], SIZE)
best = int(scores_all[0].max(1).values.argmax())
sizes = [o[0, ..., 0].numel() for o in raw]
k = next(s for s in range(3) if best < sum(sizes[: s + 1]))
a, row, col = np.unravel_index(best - sum(sizes[:k]), raw[k].shape[1:4])
t = raw[k][i, a, row, col]
stride = yolo.strides[k]
p_w, p_h = yolo.scale_anchors(k)[a].tolist()
b_x = (torch.sigmoid(t[0]) + col) * stride
b_y = (torch.sigmoid(t[1]) + row) * stride
b_w, b_h = p_w * torch.exp(t[2]), p_h * torch.exp(t[3])
label = int(scores_all[0, best].argmax())
print(f"scale {k} (stride {stride}), anchor {a} = {p_w:g} x {p_h:g} px, cell c_x={col}, c_y={row}")
print(f"t = ({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}, {t[3]:.3f}), objectness logit {t[4]:.2f}")
print(f"b_x = (sigmoid({t[0]:.3f}) + {col}) * {stride} = {b_x:.2f} px")
print(f"b_y = (sigmoid({t[1]:.3f}) + {row}) * {stride} = {b_y:.2f} px")
print(f"b_w = {p_w:g} * exp({t[2]:.3f}) = {b_w:.2f} px")
print(f"b_h = {p_h:g} * exp({t[3]:.3f}) = {b_h:.2f} px")
by_hand = box_convert(torch.stack([b_x, b_y, b_w, b_h]), "cxcywh", "xyxy")
print(f"by hand:  {[round(v, 2) for v in by_hand.tolist()]}")
library = yolo.decode_boxes(raw[k][i : i + 1], k)[0, a, row, col]
print(f"cnnzoo:   {[round(v, 2) for v in library.tolist()]}")
print(
    f"score = sigmoid(objectness) x sigmoid(class logit) = {scores_all[0, best, label]:.3f} "
    f"for {CLASSES[label]}; IoU with the best true box "
    f"{box_iou(by_hand[None], targets[i]['boxes']).max():.3f}"
)

# %% [markdown]
# ## 5 · SSD: default boxes at several scales
#
# Liu et al. (ECCV 2016) put **default boxes** on several feature maps, coarser maps getting
# larger boxes: map $k$ of $m$ has scale
# $s_k = s_{min} + \frac{s_{max} - s_{min}}{m - 1}(k - 1)$ (0.2 to 0.9 of the image side)
# and aspect ratios $\{1, 2, \tfrac12\}$ (and $3, \tfrac13$), plus one extra square of scale
# $\sqrt{s_k s_{k+1}}$. A default box is trained to predict an object when their IoU is
# above 0.5, so one object has several positive default boxes, on several maps. The
# shipped SSD's default boxes at the location nearest the image centre of each map, and
# (last panel) all default boxes matched to one true box by `ssd_match`:

# %%
with torch.inference_mode():
    maps = list(ssd.backbone(x[:1]))
    for extra in ssd.extras:
        maps.append(extra(maps[-1]))
    priors = ssd(x[:1])["priors"]  # (P, 4) cxcywh pixels
map_sizes = [tuple(m.shape[-2:]) for m in maps]
print(f"{len(priors)} default boxes: maps {map_sizes}, boxes per location {ssd.boxes_per_location}")
print("scales s_k:", [round(s, 3) for s in ssd.scales], "ratios:", ssd.aspect_ratios)

i = SHOW[2]
_, matched = ssd_match(targets[i]["boxes"], targets[i]["labels"], priors)
positives = (matched > 0).nonzero().flatten()
starts = np.cumsum(
    [0] + [h * w * b for (h, w), b in zip(map_sizes, ssd.boxes_per_location, strict=True)]
)
fig, axes = plt.subplots(1, len(map_sizes) + 1, figsize=(13, 3.1))
for k, ax in enumerate(axes[:-1]):
    h, w = map_sizes[k]
    loc = (h // 2) * w + (w // 2)
    first = starts[k] + loc * ssd.boxes_per_location[k]
    chosen = priors[first : first + ssd.boxes_per_location[k]]
    ax.imshow(images[i].permute(1, 2, 0).numpy())
    for j, (x1, y1, x2, y2) in enumerate(box_convert(chosen, "cxcywh", "xyxy").tolist()):
        ax.add_patch(
            Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.3, color=plt.cm.tab10(j))
        )
    ax.set_title(f"map {k}: {h} x {w}, s = {ssd.scales[k]:.2f}", fontsize=10)
    ax.set_axis_off()
ax = axes[-1]
ax.imshow(images[i].permute(1, 2, 0).numpy())
for p in positives.tolist():
    k = int(np.searchsorted(starts, p, side="right") - 1)
    x1, y1, x2, y2 = box_convert(priors[p], "cxcywh", "xyxy").tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1, color=plt.cm.tab10(k)))
ax.set_title(f"{len(positives)} positives for {len(targets[i]['boxes'])} objects", fontsize=10)
ax.set_axis_off()
fig.tight_layout()
plt.show()
for k in range(len(map_sizes)):
    n = int(((positives >= starts[k]) & (positives < starts[k + 1])).sum())
    print(f"positives on map {k} ({map_sizes[k][0]} x {map_sizes[k][1]}): {n}")

# %% [markdown]
# The colours in the last panel are the maps. One object has many positive default boxes,
# on neighbouring locations and on more than one map; on these scenes almost all are on the
# two finest maps, because the items are 20-48 px and those maps' boxes have scales 0.2
# and 0.43 of the 96 px side (19 and 42 px). The coarse maps' boxes are for objects that
# fill most of the image, which these scenes rarely have. (Boxes near the border are
# clipped to the image.)
#
# ## 6 · IoU and non-maximum suppression
#
# **Intersection over union** measures how well two boxes agree:
#
# $$\mathrm{IoU}(A, B) = \frac{|A\cap B|}{|A\cup B|}\in[0, 1].$$
#
# A detector proposes many overlapping boxes for one object (neighbouring cells, several
# anchors, several scales). **Non-maximum suppression** keeps the best: sort the boxes by
# score, keep the first, remove every box *of the same class* whose IoU with it exceeds
# the threshold (`NMS_IOU`), repeat with the next box left. cnnzoo's `score_candidates`
# does it (threshold, class-aware NMS, top-k); an IoU threshold of 1.0 suppresses nothing,
# which gives the "before" picture. YOLOv3, boxes scoring at least `SHOW_SCORE`:


# %%
def detect(model, batch, score=SCORE_THRESHOLD, iou=NMS_IOU, top=100, chunk=40):
    """Decoded detections of a batch, one dict per image."""
    found = []
    with torch.inference_mode():
        for b in batch.split(chunk):
            found += model.decode(model(b), SIZE, score, iou, top)
    return found


def draw(ax, i, boxes, labels, scores=None, title="", scale=3):
    """Scene i, enlarged, with boxes drawn by cnnzoo's draw_detections."""
    big = images[i].repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    ax.imshow(draw_detections(big, boxes * scale, labels, CLASSES, scores, width=2))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


boxes_all, scores_all = yolo.candidates([o[:N_TEST] for o in raw], SIZE)
before = score_candidates(boxes_all, scores_all, SIZE, SHOW_SCORE, 1.0, 1000)
after = score_candidates(boxes_all, scores_all, SIZE, SHOW_SCORE, NMS_IOU, 100)
rows = SHOW[1:]
fig, axes = plt.subplots(len(rows), 3, figsize=(9.6, 3.3 * len(rows)))
for r, i in enumerate(rows):
    t = targets[i]
    draw(axes[r, 0], i, t["boxes"], t["labels"], title=f"truth: {len(t['boxes'])} boxes")
    b = before[i]
    draw(axes[r, 1], i, b["boxes"], b["labels"], title=f"before NMS: {len(b['boxes'])} boxes")
    p = after[i]
    draw(
        axes[r, 2],
        i,
        p["boxes"],
        p["labels"],
        p["scores"],
        title=f"after NMS ({NMS_IOU}): {len(p['boxes'])} boxes",
    )
fig.tight_layout()
plt.show()

kept = sum(len(p["boxes"]) for p in after)
total = sum(len(b["boxes"]) for b in before)
print(f"on {N_TEST} scenes: {total} boxes score >= {SHOW_SCORE}; NMS keeps {kept / total:.0%}")
i = rows[0]
iou = box_iou(after[i]["boxes"], targets[i]["boxes"])
for g, label in enumerate(targets[i]["labels"].tolist()):
    same = after[i]["labels"] == label
    others = ", ".join(
        f"{CLASSES[int(after[i]['labels'][j])]} {after[i]['scores'][j]:.2f}"
        for j in (~same & (iou[:, g] > NMS_IOU)).nonzero().flatten().tolist()
    )
    if same.any():
        j = int(torch.where(same, iou[:, g], -1.0).argmax())
        found = f"kept {CLASSES[label]} box: score {after[i]['scores'][j]:.2f}, IoU {iou[j, g]:.2f}"
    else:
        found = f"no kept {CLASSES[label]} box"
    print(f"scene {i}, true {CLASSES[label]:<11} {found}; other classes on it: {others or 'none'}")

# %% [markdown]
# Before NMS every object is covered by a stack of near-identical boxes; after it, one box
# per object and class remains. NMS is class-aware: a box of another class on the same
# item survives (an item half-way between "Shirt" and "Coat" keeps one box of each), which
# the metric then counts as a false positive.
#
# ## 7 · Three detectors on the test scenes
#
# Truth, then the boxes of each shipped detector that score at least `SHOW_SCORE`:

# %%
found = {
    name: detect(model, x[: max(SHOW) + 1], score=SHOW_SCORE) for name, model in DETECTORS.items()
}
fig, axes = plt.subplots(len(SHOW), 4, figsize=(12.4, 3.25 * len(SHOW)))
for r, i in enumerate(SHOW):
    draw(axes[r, 0], i, targets[i]["boxes"], targets[i]["labels"], title=f"truth, scene {i}")
    for c, (name, dets) in enumerate(found.items(), start=1):
        d = dets[i]
        draw(
            axes[r, c],
            i,
            d["boxes"],
            d["labels"],
            d["scores"],
            title=f"{name}: {len(d['boxes'])} boxes",
        )
fig.tight_layout()
plt.show()

# %% [markdown]
# All three find the items; what they get wrong is mostly the class of a half-hidden
# garment (T-shirt, Shirt, Pullover and Coat look alike once tinted), and sometimes an extra
# box of a second class on the same item.
#
# ## 8 · Mean average precision
#
# For one class, sort all its detections on the test set by score. Walking down the list,
# a detection is a **true positive** if its IoU with a not-yet-matched true box of that
# class is at least a threshold (0.5 for mAP@0.5), otherwise a **false positive**. After
# each detection,
#
# $$\text{precision} = \frac{TP}{TP + FP},\qquad \text{recall} = \frac{TP}{\#\text{true boxes}} .$$
#
# The **average precision** (AP) is the area under this precision-recall curve; **mAP** is
# its mean over the classes. COCO's mAP (written mAP or mAP@[.5:.95]) also averages over the
# IoU thresholds 0.50, 0.55, ..., 0.95, so it rewards tight boxes. cnnzoo computes both with
# `map_metric` (torchmetrics, pycocotools backend) and the Pascal VOC AP with `voc_ap`:

# %%
results = {}
for name, model in DETECTORS.items():
    preds = detect(model, x)
    metric = map_metric()
    metric.extended_summary = True  # also keep the precision-recall curves
    metric.update(metric_preds(preds), metric_targets(targets))
    result = metric.compute()
    results[name] = {
        "map": float(result["map"]),
        "map_50": float(result["map_50"]),
        "map_75": float(result["map_75"]),
        "class_ap": class_ap_list(result, len(CLASSES)),
        "voc_ap50": voc_ap(preds, targets, len(CLASSES), 0.5, eleven_point=False),
        "precision": result["precision"],  # (IoU thresholds, 101 recalls, classes, areas, max dets)
        "detections": sum(len(p["boxes"]) for p in preds),
    }

weights_of = {"YOLOv3": "yolov3.scenes", "SSD": "ssd.scenes", "Fast R-CNN": "fast_rcnn.scenes"}
print(f"{N_TEST} test scenes, score > {SCORE_THRESHOLD}, NMS IoU {NMS_IOU}")
header = f"{'model':<11} {'mAP':>7} {'mAP@0.5':>8} {'mAP@0.75':>9} {'VOC mAP@0.5':>12}"
print(f"{header}   catalog (400 scenes)")
for name, r in results.items():
    catalog = cnnzoo.weights.get(weights_of[name]).metrics
    print(
        f"{name:<11} {r['map']:>7.4f} {r['map_50']:>8.4f} {r['map_75']:>9.4f} "
        f"{np.nanmean(r['voc_ap50']):>12.4f}   mAP {catalog['test/map']:.4f}, "
        f"mAP@0.5 {catalog['test/map_50']:.4f}"
    )

fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
for ax, (name, r) in zip(axes, results.items(), strict=True):
    y = np.arange(len(CLASSES))
    ax.barh(y - 0.2, r["voc_ap50"], 0.4, color="tab:blue", label="AP@0.5 (VOC)")
    ax.barh(y + 0.2, r["class_ap"], 0.4, color="tab:orange", label="AP@[.5:.95] (COCO)")
    ax.set_yticks(y, CLASSES, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.set_title(f"{name}: mAP@0.5 {r['map_50']:.3f}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
axes[0].invert_yaxis()
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# On these `N_TEST` scenes the numbers are within a few hundredths of the catalog's,
# measured on all 400 (`cnnzoo eval yolov3.scenes` reproduces those), and the ranking is
# the catalog's: Fast R-CNN first, YOLOv3 and SSD within 0.01 of each other behind it.
# AP@0.5 is far higher than AP@[.5:.95] for every class: the detectors find the items, but
# their boxes are rarely tight to within 0.8-0.9 IoU. And the classes matter more than
# the boxes: the weakest classes (Shirt, Coat, Dress) are garments that look alike, and
# the docs report that a yolov3 run with 0.433 mAP@0.5 scores 0.785 when the class labels
# are ignored.
#
# ### How to read a precision-recall curve
#
# cnnzoo has no plot for these curves, but its metric keeps them (`extended_summary`:
# pycocotools' precision at 101 recall levels, already made monotone). One panel per class
# for YOLOv3, at IoU 0.5 and 0.75:

# %%
precision = results["YOLOv3"]["precision"]
recall_levels = np.linspace(0, 1, 101)
fig, axes = plt.subplots(2, 5, figsize=(13, 5.4), sharex=True, sharey=True)
for c, ax in enumerate(axes.flat):
    for t_index, iou_t, colour in ((0, 0.5, "tab:blue"), (5, 0.75, "tab:red")):
        curve = precision[t_index, :, c, 0, -1].numpy()  # all areas, 100 detections
        valid = curve >= 0
        ax.plot(recall_levels[valid], curve[valid], color=colour, label=f"IoU {iou_t}")
        ax.fill_between(recall_levels[valid], curve[valid], color=colour, alpha=0.08)
    ax.set_title(f"{CLASSES[c]}: AP@0.5 {results['YOLOv3']['voc_ap50'][c]:.2f}", fontsize=9)
    ax.grid(alpha=0.3)
for ax in axes[1]:
    ax.set_xlabel("recall")
for ax in axes[:, 0]:
    ax.set_ylabel("precision")
axes[0, 0].legend(fontsize=8, loc="lower left")
axes[0, 0].set_xlim(0, 1)
axes[0, 0].set_ylim(0, 1.05)
fig.suptitle(f"YOLOv3 precision-recall curves, {N_TEST} test scenes")
fig.tight_layout()
plt.show()

# %% [markdown]
# Read a curve from left to right: it is traced by lowering the score threshold. At the
# left only the most confident detections count, and precision is high. Moving right,
# more true boxes are found (recall grows) but more false positives come in (precision
# falls). Where a curve **drops to zero** is the recall reached with every detection kept:
# the true boxes to its right were never found at that IoU. The shaded area is the AP. At
# IoU 0.75 (red) the same detections match fewer true boxes, so the curve stops earlier
# and lower. Classes whose curve stays near 1 for long (Trouser, Ankle boot) are easy;
# those whose precision drops early (Shirt, Coat, Dress) are confused with other classes:
# Shirt's confident detections are mostly wrong.
#
# ## 9 · What each detector costs
#
# The lecture's argument, measured with the `detector-cost` experiment's functions:
# network evaluations per image (`network_evaluations`), MACs on a real test image
# (`macs_per_image`) and milliseconds per image, forward pass and decoding with NMS, in a
# small batch and for a single image (`inference_ms`: fp32, one thread, this CPU). First
# the experiment's three designs on the same small backbone (untrained: their cost does not
# depend on their weights; the decoding keeps boxes scoring at least `SHOW_SCORE`, so the
# untrained models, whose scores are all about 1/11, are not charged for suppressing
# thousands of meaningless boxes), then the three shipped detectors.


# %%
def decode_run(model, batch):
    """What inference costs: the forward pass and the decoding with NMS."""
    return model.decode(model(batch), SIZE, SHOW_SCORE, NMS_IOU, 100)


def measure(model, batch=8, repeats=2):
    """Parameters, evaluations and MACs per image, ms per image in a batch and alone."""
    with torch.inference_mode():
        evaluations = network_evaluations(model, model(x[:batch]), SIZE)
    batch_ms, _ = inference_ms(model, x[:batch], repeats=repeats, run=decode_run)
    single_ms, _ = inference_ms(model, x[:1], repeats=repeats + 1, run=decode_run)
    return {
        "params": count_params(model),
        "evaluations": evaluations,
        "gmacs": macs_per_image(model, x[:1]) / 1e9,
        "batch_ms": batch_ms,
        "single_ms": single_ms,
    }


small_frcnn = cnnzoo.create_model("fast_rcnn", num_classes=10, **experiment["fast_rcnn"]).eval()
cost = {
    "sliding window": measure(window_model, batch=4, repeats=1),
    "Fast R-CNN (small)": measure(small_frcnn),
    "YOLOv3 (small)": measure(small_yolo),
}
cost.update({f"{name} (shipped)": measure(model) for name, model in DETECTORS.items()})
header = f"{'model':<21} {'params':>10} {'evals/image':>12} {'GMACs':>7} {'ms/image':>9}"
print(f"{header} {'ms, 1 image':>12}")
for name, c in cost.items():
    print(
        f"{name:<21} {c['params']:>10,} {c['evaluations']:>12.1f} {c['gmacs']:>7.3f} "
        f"{c['batch_ms']:>9.2f} {c['single_ms']:>12.2f}"
    )
sw, yo, fr = cost["sliding window"], cost["YOLOv3 (small)"], cost["Fast R-CNN (small)"]
print(
    f"\nsame backbone: the sliding window needs {sw['gmacs'] / yo['gmacs']:.0f}x the MACs of "
    f"YOLOv3, {sw['batch_ms'] / yo['batch_ms']:.0f}x its time per image in a batch and "
    f"{sw['single_ms'] / yo['single_ms']:.0f}x for a single image; Fast R-CNN "
    f"{fr['gmacs'] / yo['gmacs']:.1f}x the MACs and {fr['batch_ms'] / yo['batch_ms']:.1f}x "
    "the time"
)

names = list(cost)
family = {"sliding": 0, "Fast": 1, "YOLOv3": 2, "SSD": 3}
colours = [plt.cm.tab10(family[n.split()[0]]) for n in names]
fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.3), sharey=True)
for ax, key, label in zip(
    axes,
    ("gmacs", "batch_ms", "single_ms"),
    ("GMACs per image", "ms per image, in a batch", "ms for one image"),
    strict=True,
):
    ax.barh(range(len(names)), [cost[n][key] for n in names], color=colours)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.grid(axis="x", alpha=0.3)
axes[0].set_yticks(range(len(names)), names)
axes[0].invert_yaxis()
fig.suptitle("What a detection costs on a 96 x 96 scene")
fig.tight_layout()
plt.show()
print(f"notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# Compare with the docs' `detector-cost` experiment (bf16 on the 2-core development CPU,
# trained models): the sliding window needed 627 evaluations, **55x the MACs** of YOLOv3,
# 48x its time per image in batches of 8 and 18x for a single image; Fast R-CNN, 1 + 100
# evaluations, sat in between (6x the MACs of YOLOv3, 7x its time). The MACs above are the
# same (Fast R-CNN's depend on how many proposals its RPN keeps); the times depend on the
# CPU, the precision and on what else runs on the machine (here, in fp32 on one thread,
# the sliding window's time ratio even exceeds its MAC ratio). For a single small image a
# one-pass detector pays a fixed per-call cost (Python, operator launches, NMS), so its
# advantage is smaller than in a batch.
#
# The shipped detectors are wider (widths 32-128 instead of 16-128) and cost 3-5x the MACs
# of the small YOLOv3, still a tenth of the sliding window's.
#
# ## Exercises
#
# 1. **NMS threshold.** Set `NMS_IOU = 0.9` in the setup cell and re-run the notebook.
#    In section 6, how many boxes survive NMS on scene 3, which has 4 true boxes? In
#    section 8, what happens to mAP@0.5 and mAP of each detector? Explain the drop: what
#    does a duplicate box of a found object count as, and what happens to the lower-scoring
#    true detections when at most 100 detections per image are kept? Then try
#    `NMS_IOU = 0.2`: why does mAP hardly move, although scene 3 has two overlapping
#    Ankle boots?
# 2. **Score threshold and the PR curve.** Set `SCORE_THRESHOLD = 0.3` in the setup cell
#    and re-run both cells of section 8. Which numbers change, and where do the curves now
#    end? Explain why `cnnzoo eval` keeps detections down to a score of 0.01 although a user
#    would never look at them.
# 3. **RoI max pooling vs RoI Align.** In section 3, add `frcnn.roi_op = "pool"` at the top
#    of the cell (the paper's RoI max pooling; the shipped model was trained with RoI
#    Align) and re-run sections 3 and 8. How much mAP@0.5 and mAP does Fast R-CNN lose?
#    Compare the two 7 x 7 maps of the figure: why does a head trained on one kind of
#    pooled features fail on the other, and what would it take to use the paper's RoI
#    pooling?
# 4. **Anchors and $p\,e^{t}$.** In section 4, add `yolo.anchors *= 1.5` at the top of the
#    worked example's cell (run it once: every run multiplies the anchors again) and re-run
#    that cell and section 8. How does the decoded box of the worked example change, and
#    by what factor? What happens to YOLOv3's mAP@0.5 and mAP@0.75, and which of the two
#    falls more? Why?
