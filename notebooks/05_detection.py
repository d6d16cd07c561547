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
# This notebook follows the lecture's **OBJECT DETECTION** slides in order: the task (boxes
# and their classes, a compound loss), the slow naive sliding window, Fast R-CNN ("only
# classify some proposals", RoI pooling), the one-pass detectors YOLO (grid cells, base
# boxes, $b = \sigma(t) + c$, $b_w = p_w e^{t_w}$) and SSD (default boxes at several scales),
# then the tools every detector needs: IoU, non-maximum suppression (NMS) and mAP.
#
# You will run the shipped `yolov3.scenes`, `ssd.scenes` and `fast_rcnn.scenes` on cnnzoo's
# test scenes, decode a YOLO box by hand, draw anchors, default boxes and what NMS removes,
# compute mAP, read precision-recall curves, and measure what each detector costs against
# the sliding window. Nothing is trained here. Runs in about 60 s on 2 CPU cores.

# %% [markdown]
# ## Setup
#
# All imports are here. PyTorch runs on one thread, so that the times of section 9 stay
# comparable on shared cores. The exercises change the settings in capitals.

# %%
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image

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
from cnnzoo.tasks.voc_ap import pr_curves, voc_ap
from cnnzoo.viz.detection import draw_detections
from cnnzoo.viz.panels import add_boxes, class_bars, cost_bars, image_grid
from cnnzoo.viz.pr_curves import plot_pr_curves

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
# scenes (notebook 4) come with COCO boxes of each item's visible part: 10 classes, 1-6
# items per 96 x 96 scene, often overlapping; `open_det_dataset` reads the first `N_TEST`
# test scenes as `(image, {"boxes": xyxy pixels, "labels"})`. The shipped detection weights:

# %%
command = [sys.executable, "-m", "cnnzoo", "weights", "list", "--task", "detection"]
print(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

# written into the current folder, one folder per N_TEST (an existing one is reused)
root = generate_scenes(f"scenes-{N_TEST}", n_train=0, n_test=N_TEST, seed=0)
test = open_det_dataset(f"scenes:{root}", split="test")
CLASSES = test.class_names
images, targets = detection_collate([test[i] for i in range(len(test))])
prep = cnnzoo.weights.get("yolov3.scenes").preprocessing
x = normalize_batch(images, prep.mean, prep.std)
per_scene = torch.tensor([len(t["boxes"]) for t in targets]).float()
print(f"{len(test)} test scenes, {per_scene.sum():.0f} boxes ({CLASSES})")
print(f"boxes per scene: {per_scene.mean():.2f} on average, up to {per_scene.max():.0f}")
print(f"scene {SHOW[1]}:", {k: v.tolist() for k, v in targets[SHOW[1]].items()})

# %% [markdown]
# The lecture's loss is **compound**: a classification term and a box-regression term,
#
# $$L(y_c, y_{coord}) = \alpha\, L_c(y_c) + \beta\, L_{coord}(y_{coord}),\qquad
# L_c = -\log p(y_c),\quad L_{coord} = (y_{coord} - y_{truecoord})^2 .$$
#
# Every cnnzoo detector has `loss(outputs, targets, image_size)`, $\alpha$ = `cls_weight`,
# $\beta$ = `box_weight`. The shipped models on 16 test scenes (YOLOv3 adds an objectness
# term, Fast R-CNN the terms of its region proposal network):

# %%
WEIGHTS = {"YOLOv3": "yolov3.scenes", "SSD": "ssd.scenes", "Fast R-CNN": "fast_rcnn.scenes"}
DETECTORS = {n: cnnzoo.create_model(w.split(".")[0], weights=w) for n, w in WEIGHTS.items()}
yolo, ssd, frcnn = (model.eval() for model in DETECTORS.values())

torch.manual_seed(0)  # Fast R-CNN samples the RPN's anchors for its loss
with torch.inference_mode():
    for name, model in DETECTORS.items():
        losses = model.loss(model(x[:16]), targets[:16], SIZE)
        parts = ", ".join(f"{k} {float(v):.3f}" for k, v in losses.items() if k != "loss")
        print(f"{name:<10} alpha={model.cls_weight:g} beta={model.box_weight:g}", end="  ")
        print(f"loss {float(losses['loss']):.3f} = {parts}")

# %% [markdown]
# ## 2 · The naive approach: a CNN on many crops
#
# "Apply a CNN to many different crops of the image, CNN classifies each crop as object or
# background." cnnzoo's `sliding_window` slides windows of 3 scales (1/4, 1/2, 3/4 of the
# side) and 3 aspect ratios (1:2, 1:1, 2:1) by a quarter window and classifies each crop
# (resized to 32 x 32) into 10 classes or background. Built untrained as in the
# `detector-cost` experiment (`DetCostSettings`: a small VGG-style `convnet`, widths
# 16-128), with its YOLOv3 on the same backbone; the windows of each shape, one highlighted:

# %%
experiment = DetCostSettings().models
print("detector-cost settings:", experiment)
window_model = cnnzoo.create_model(
    "sliding_window", num_classes=10, **experiment["sliding_window"]
).eval()
small_yolo = cnnzoo.create_model("yolov3", num_classes=10, **experiment["yolov3"]).eval()
print(f"windows per 96 x 96 image: {window_model.num_windows(SIZE)}")
scales, ratios = window_model.window_sizes, window_model.aspect_ratios
step = window_model.stride_fraction
windows = [[sliding_windows(SIZE, (s,), (a,), step) for a in ratios] for s in scales]
caption = "{:.0f} x {:.0f} px: {} windows"  # the window's width and height, how many
rows = [
    [(caption.format(*(w[0, 2:] - w[0, :2]), len(w)), images[SHOW[1]]) for w in row]
    for row in windows
]
title = "Sliding windows (rows: scales, columns: aspect ratios), each cropped and classified"
fig = image_grid(rows, 2.7, title=title)
for ax, w in zip(fig.axes, [w for row in windows for w in row], strict=True):
    add_boxes(ax, w, lw=0.6, alpha=0.6)
    add_boxes(ax, w[len(w) // 2], "tab:red", lw=2)
plt.show()

# %% [markdown]
# 627 CNN evaluations for one small image, and only 9 box shapes: a real detector needs
# many more ("huge number of locations, scales, and aspect ratios, very computationally
# expensive!"). Its cost next to YOLOv3 on the same backbone (the experiment's functions):

# %%
macs = {}
for name, model in (("sliding window", window_model), ("YOLOv3", small_yolo)):
    with torch.inference_mode():
        evaluations = network_evaluations(model, model(x[:1]), SIZE)
    macs[name] = macs_per_image(model, x[:1])
    print(f"{name:<15} {evaluations:>4.0f} network evaluations, {macs[name] / 1e9:.3f} GMACs")
print(f"ratio: {macs['sliding window'] / macs['YOLOv3']:.0f}x the MACs")

# %% [markdown]
# The docs' figures exactly (`docs/detection.md`: 8.415 and 0.153 GMACs, 55x): MACs are
# counted, not timed, so they do not depend on the machine. Section 9 times them.
#
# ## 3 · Fast R-CNN: only classify some proposals
#
# Girshick (ICCV 2015): the backbone runs **once**; region proposals (100, from a learned
# region proposal network) are cut out of that *shared feature map* by **RoI pooling**: a
# 7 x 7 grid on each proposal's window, each cell max-pooled, so any proposal gives a
# $C\times 7\times 7$ block. Two fully-connected layers give $C+1$ class scores and box
# refinements per proposal. (cnnzoo's default is RoI *Align*, bilinear sampling without
# rounding; `roi_op="pool"` is the paper's.)

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
widths = [frcnn.head[1].in_features, frcnn.head[1].out_features, frcnn.head[3].out_features]
widths += [f"{frcnn.cls_score.out_features} class scores"]
print(f"head: {' -> '.join(map(str, widths))} + {frcnn.bbox_pred.out_features} box deltas")

rows = []
for row, box in enumerate(truth[:3].tolist()):
    x1, y1, x2, y2 = (round(v) for v in box)
    crop = (f"true box {CLASSES[targets[i]['labels'][row]]}", images[i][:, y1:y2, x1:x2])
    rows.append([crop, ("RoI max pooling", pooled["pool"][row].mean(0))])
    rows[-1].append(("RoI Align", pooled["align"][row].mean(0)))
rows[0].append((f"the 40 best of {len(proposals)} RPN proposals", images[i]))
title = f"Fast R-CNN on scene {i}: 7 x 7 pooled features (mean over channels) per box"
fig = image_grid(rows, 2.6, title=title)
add_boxes(fig.axes[3], proposals[:40], lw=0.7)
plt.show()
print(f"detections scoring >= {SHOW_SCORE}: {len(detections['boxes'])}")

# %% [markdown]
# Whatever the box size (a 20 px sandal, a 45 px pullover), the head sees $128\times 7\times
# 7$ numbers; the backbone runs once, each proposal costs the pooling and the head. Still,
# "independently processing each cropped feature block is very costly"; "ideally, we would
# like to obtain both the bounding boxes and the classes in a single pass": one-pass below.
#
# ## 4 · YOLO: a grid of cells, base boxes, and $\sigma(t) + c$
#
# One-pass detectors output, at every cell of a grid and for each of $B$ base boxes
# (anchors), box offsets, a confidence and $C$ class scores. YOLOv3 (Redmon & Farhadi 2018)
# parameterises the box relative to the cell $(c_x, c_y)$ and the anchor $(p_w, p_h)$:
#
# $$b_x = \sigma(t_x) + c_x,\quad b_y = \sigma(t_y) + c_y,\quad
# b_w = p_w\, e^{t_w},\quad b_h = p_h\, e^{t_h},$$
#
# the centre in cells (times the stride for pixels): the sigmoid keeps it inside its cell,
# the exponential keeps the size positive. The shipped YOLOv3 has three scales, three
# anchors each:

# %%
with torch.inference_mode():
    raw = yolo(x[:N_TEST])  # kept for sections 6 and 8
print("scale  stride  output (N, anchors, H, W, 5 + C)  anchors (w x h px)")
for k, o in enumerate(raw):
    anchors = ", ".join(f"{w:g}x{h:g}" for w, h in yolo.scale_anchors(k).tolist())
    print(f"{k:<6} {yolo.strides[k]:>6}  {tuple(o.shape)!s:<32} {anchors}")
print(f"candidate boxes per image: {sum(o[0, ..., 0].numel() for o in raw):,}")

# %% [markdown]
# The lecture's YOLO output is $7\times 7\times(5B + C)$; here maps of stride 2, 4 and 8
# give grids of 48, 24 and 12 cells, each cell $3\times(5 + 10)$ numbers (the paper's
# strides are 8, 16 and 32 on 416 px images; these scenes are 96 px with 20-48 px items).
# The three anchors of each scale on the cell that holds the centre of one true box:

# %%
i = SHOW[2]
box, name = targets[i]["boxes"][0], CLASSES[targets[i]["labels"][0]]
centre = (box[:2] + box[2:]) / 2
panels = [
    (f"scale {k}: stride {s}, {96 // s} x {96 // s} cells", images[i])
    for k, s in enumerate(yolo.strides)
]
title = f"YOLOv3 anchors (colours) at the centre cell (yellow) of a true {name} (dashed)"
fig = image_grid([panels], 3.6, title=title)
for k, ax in enumerate(fig.axes):
    stride = yolo.strides[k]
    for line in range(0, 97, stride):
        ax.axhline(line - 0.5, color="white", lw=0.3, alpha=0.5)
        ax.axvline(line - 0.5, color="white", lw=0.3, alpha=0.5)
    cell = (centre // stride) * stride
    add_boxes(ax, torch.cat([cell, cell + stride]), "yellow", fill=True, alpha=0.8)
    add_boxes(ax, box, lw=1.5, ls="--")
    half = yolo.scale_anchors(k) / 2  # (3, 2): the anchors' half widths and heights
    anchors = torch.cat([cell + stride / 2 - half, cell + stride / 2 + half], 1)
    add_boxes(ax, anchors, [plt.cm.tab10(a) for a in range(len(anchors))], lw=1.5)
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
iou = box_iou(by_hand[None], targets[i]["boxes"]).max()
print(f"score = sigmoid(objectness) x sigmoid(class logit) = {scores_all[0, best, label]:.3f}")
print(f"for {CLASSES[label]}; IoU with the best true box {iou:.3f}")

# %% [markdown]
# ## 5 · SSD: default boxes at several scales
#
# Liu et al. (ECCV 2016) put **default boxes** on several feature maps, larger on coarser
# maps: map $k$ of $m$ has scale $s_k = s_{min} + \frac{s_{max} - s_{min}}{m - 1}(k - 1)$
# (0.2 to 0.9 of the side), aspect ratios $\{1, 2, \tfrac12\}$ (and $3, \tfrac13$) and a
# square of scale $\sqrt{s_k s_{k+1}}$. A default box predicts an object when their IoU
# exceeds 0.5, so one object has several positives, on several maps. The shipped SSD's
# boxes at each map's centre, and (last panel, colour = map) those `ssd_match` matches:

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
per_map = [h * w * b for (h, w), b in zip(map_sizes, ssd.boxes_per_location, strict=True)]
starts = np.cumsum([0, *per_map])
panels = [
    (f"map {k}: {h} x {w}, s = {ssd.scales[k]:.2f}", images[i])
    for k, (h, w) in enumerate(map_sizes)
]
panels.append((f"{len(positives)} positives for {len(targets[i]['boxes'])} objects", images[i]))
fig = image_grid([panels], 1.9)
for k, ax in enumerate(fig.axes[:-1]):
    (h, w), b = map_sizes[k], ssd.boxes_per_location[k]
    first = starts[k] + ((h // 2) * w + (w // 2)) * b  # the location nearest the centre
    add_boxes(ax, box_convert(priors[first : first + b], "cxcywh", "xyxy"), plt.cm.tab10.colors[:b])
map_of = np.searchsorted(starts, positives.numpy(), side="right") - 1
add_boxes(fig.axes[-1], box_convert(priors[positives], "cxcywh", "xyxy"), plt.cm.tab10(map_of))
plt.show()
print("positives on each map:", np.bincount(map_of, minlength=len(map_sizes)).tolist())

# %% [markdown]
# One object has many positive default boxes, on neighbouring locations and on more than
# one map; here almost all are on the two finest maps, whose boxes (scales 0.2 and 0.43 of
# the 96 px side: 19 and 42 px) fit the 20-48 px items. The coarse maps' boxes are for
# objects that fill most of the image. (Boxes near the border are clipped to the image.)
#
# ## 6 · IoU and non-maximum suppression
#
# **Intersection over union** measures how well two boxes agree:
#
# $$\mathrm{IoU}(A, B) = \frac{|A\cap B|}{|A\cup B|}\in[0, 1].$$
#
# A detector proposes many overlapping boxes for one object (neighbouring cells, anchors,
# scales). **Non-maximum suppression** keeps the best: sort the boxes by score, keep the
# first, remove every box *of its class* whose IoU with it exceeds `NMS_IOU`, repeat with the
# next box left (`score_candidates`: threshold, class-aware NMS, top-k; IoU threshold 1.0
# suppresses nothing, the "before" picture). YOLOv3, boxes scoring at least `SHOW_SCORE`:


# %%
def detect(model, batch, score=SCORE_THRESHOLD, iou=NMS_IOU, top=100, chunk=40):
    """Decoded detections of a batch, one dict per image."""
    with torch.inference_mode():
        return [
            d for b in batch.split(chunk) for d in model.decode(model(b), SIZE, score, iou, top)
        ]


def panel(i, boxes, title, scores=True, scale=3):
    """(title and box count, scene i enlarged with the boxes of a detection or target dict)."""
    big = images[i].repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    shown = boxes["scores"] if scores and "scores" in boxes else None
    picture = draw_detections(big, boxes["boxes"] * scale, boxes["labels"], CLASSES, shown, 2)
    return f"{title}: {len(boxes['boxes'])} boxes", picture


boxes_all, scores_all = yolo.candidates([o[:N_TEST] for o in raw], SIZE)
before = score_candidates(boxes_all, scores_all, SIZE, SHOW_SCORE, 1.0, 1000)
after = score_candidates(boxes_all, scores_all, SIZE, SHOW_SCORE, NMS_IOU, 100)
rows = []
for i in SHOW[1:]:
    rows.append([panel(i, targets[i], "truth"), panel(i, before[i], "before NMS", scores=False)])
    rows[-1].append(panel(i, after[i], f"after NMS ({NMS_IOU})"))
image_grid(rows, 3.2)
plt.show()

kept = sum(len(p["boxes"]) for p in after)
total = sum(len(b["boxes"]) for b in before)
print(f"on {N_TEST} scenes: {total} boxes score >= {SHOW_SCORE}; NMS keeps {kept / total:.0%}")
i, d = SHOW[1], after[SHOW[1]]
iou = box_iou(d["boxes"], targets[i]["boxes"])
for g, label in enumerate(targets[i]["labels"].tolist()):
    same = d["labels"] == label
    hits = (~same & (iou[:, g] > NMS_IOU)).nonzero().flatten().tolist()
    others = ", ".join(f"{CLASSES[d['labels'][j]]} {d['scores'][j]:.2f}" for j in hits)
    found = f"no kept {CLASSES[label]} box"
    if same.any():
        j = int(torch.where(same, iou[:, g], -1.0).argmax())
        found = f"kept {CLASSES[label]} box: score {d['scores'][j]:.2f}, IoU {iou[j, g]:.2f}"
    print(f"scene {i}, true {CLASSES[label]:<11} {found}; other classes on it: {others or 'none'}")

# %% [markdown]
# Before NMS every object is covered by a stack of near-identical boxes; after it, one box
# per object and class remains. NMS is class-aware: a box of another class on the same item
# survives (an item between "Shirt" and "Coat" keeps one of each): a false positive.
#
# ## 7 · Three detectors on the test scenes
#
# Truth, then the boxes of each shipped detector that score at least `SHOW_SCORE`:

# %%
found = {
    name: detect(model, x[: max(SHOW) + 1], score=SHOW_SCORE) for name, model in DETECTORS.items()
}
rows = [[panel(i, targets[i], f"truth, scene {i}")] for i in SHOW]
for row, i in zip(rows, SHOW, strict=True):
    row += [panel(i, d[i], name) for name, d in found.items()]
image_grid(rows, 3.1)
plt.show()

# %% [markdown]
# All three find the items; they get wrong mostly the class of a half-hidden garment
# (T-shirt, Shirt, Pullover and Coat look alike tinted), sometimes adding a second class.
#
# ## 8 · Mean average precision
#
# For one class, sort all its detections on the test set by score. Walking down the list, a
# detection is a **true positive** if its IoU with a not-yet-matched true box of its class
# reaches a threshold (0.5 for mAP@0.5), else a **false positive**. After each detection,
#
# $$\text{precision} = \frac{TP}{TP + FP},\qquad \text{recall} = \frac{TP}{\#\text{true boxes}} .$$
#
# The **average precision** (AP) is the area under this precision-recall curve, **mAP** its
# mean over the classes. COCO's mAP (mAP@[.5:.95]) also averages over the IoU thresholds
# 0.50, 0.55, ..., 0.95: it rewards tight boxes. cnnzoo computes both with `map_metric`
# (torchmetrics, pycocotools) and the Pascal VOC AP with `voc_ap`:

# %%
results, yolo_preds = {}, detect(yolo, x)
for name, model in DETECTORS.items():
    preds = yolo_preds if model is yolo else detect(model, x)
    metric = map_metric()
    metric.update(metric_preds(preds), metric_targets(targets))
    result = metric.compute()
    results[name] = {key: float(result[key]) for key in ("map", "map_50", "map_75")}
    results[name]["class_ap"] = class_ap_list(result, len(CLASSES))  # COCO AP@[.5:.95]
    results[name]["voc_ap50"] = voc_ap(preds, targets, len(CLASSES), 0.5, eleven_point=False)

print(f"{N_TEST} test scenes, score > {SCORE_THRESHOLD}, NMS IoU {NMS_IOU}; catalog: 400 scenes")
print(f"{'model':<11} {'mAP':>7} {'mAP@0.5':>8} {'mAP@0.75':>9} {'VOC mAP@0.5':>12}   catalog")
panels = {}
for name, r in results.items():
    catalog = cnnzoo.weights.get(WEIGHTS[name]).metrics
    print(f"{name:<11} {r['map']:>7.4f} {r['map_50']:>8.4f} {r['map_75']:>9.4f}", end=" ")
    print(f"{np.nanmean(r['voc_ap50']):>12.4f}   mAP {catalog['test/map']:.4f}, ", end="")
    print(f"mAP@0.5 {catalog['test/map_50']:.4f}")
    ap = {"AP@0.5 (VOC)": r["voc_ap50"], "AP@[.5:.95] (COCO)": r["class_ap"]}
    panels[f"{name}: mAP@0.5 {r['map_50']:.3f}"] = ap
class_bars(panels, CLASSES, xlabel="average precision")
plt.show()

# %% [markdown]
# These are within a few hundredths of the catalog's figures on all 400 scenes (`cnnzoo eval
# yolov3.scenes` reproduces those), in the catalog's order: Fast R-CNN first, YOLOv3 and SSD
# within 0.01 of each other. AP@0.5 is far above AP@[.5:.95] for every class: the items are
# found, but the boxes are rarely tight to 0.8-0.9 IoU. And the classes matter more than the
# boxes: the weakest (Shirt, Coat, Dress) are garments that look alike, and in the docs a
# yolov3 run with 0.433 mAP@0.5 scores 0.785 when the class labels are ignored.
#
# ### How to read a precision-recall curve
#
# `cnnzoo eval` draws these curves for every detector (`pr_curves` matches the detections
# as the VOC devkit does, `plot_pr_curves` draws them): one panel per class for YOLOv3, at
# IoU 0.5 and 0.75, each curve made monotone (the precision envelope), its AP in the title.

# %%
curves = {iou: pr_curves(yolo_preds, targets, len(CLASSES), iou) for iou in (0.5, 0.75)}
title = f"YOLOv3 precision-recall curves, {N_TEST} test scenes"
Image(filename=plot_pr_curves(curves, CLASSES, "yolov3_pr_curves.png", title))

# %% [markdown]
# A curve is traced by lowering the score threshold: at the left only the most confident
# detections count and precision is high; moving right, recall grows but false positives
# come in. Where a curve **ends** is the recall with every detection kept: boxes to its
# right were never found at that IoU. The shaded area is the AP at IoU 0.5; at 0.75
# (orange) fewer true boxes match, so the curve ends earlier and lower. Easy classes stay
# near 1 for long (Trouser, Ankle boot); Shirt, Coat and Dress drop early, confused with
# other classes: Shirt's confident detections are mostly wrong.
#
# ## 9 · What each detector costs
#
# The lecture's argument, measured with the `detector-cost` experiment's functions: network
# evaluations and MACs per image, ms per image (forward pass, decoding, NMS) in a batch and
# alone (`inference_ms`: fp32, one thread). The experiment's three designs on one small
# backbone, untrained (decoding keeps scores >= `SHOW_SCORE`, so models scoring about 1/11
# are not charged for suppressing thousands of boxes), then the shipped detectors.


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
    gmacs = macs_per_image(model, x[:1]) / 1e9
    return dict(
        params=count_params(model),
        evaluations=evaluations,
        gmacs=gmacs,
        batch_ms=batch_ms,
        single_ms=single_ms,
    )


small_frcnn = cnnzoo.create_model("fast_rcnn", num_classes=10, **experiment["fast_rcnn"]).eval()
cost = {
    "sliding window": measure(window_model, batch=4, repeats=1),
    "Fast R-CNN (small)": measure(small_frcnn),
    "YOLOv3 (small)": measure(small_yolo),
}
cost.update({f"{name} (shipped)": measure(model) for name, model in DETECTORS.items()})
print(f"{'model':<21} {'params':>10} {'evals/image':>12} {'GMACs':>7} {'ms/image':>9}", end=" ")
print(f"{'ms, 1 image':>12}")
for name, c in cost.items():
    print(f"{name:<21} {c['params']:>10,} {c['evaluations']:>12.1f} {c['gmacs']:>7.3f}", end=" ")
    print(f"{c['batch_ms']:>9.2f} {c['single_ms']:>12.2f}")
print("\nsame backbone, times YOLOv3's: MACs, ms per image in a batch, ms for one image")
for name in ("sliding window", "Fast R-CNN (small)"):
    ratios = [cost[name][k] / cost["YOLOv3 (small)"][k] for k in ("gmacs", "batch_ms", "single_ms")]
    print(f"{name:<19}", "  ".join(f"{r:5.1f}x" for r in ratios))

family = {"sliding": 0, "Fast": 1, "YOLOv3": 2, "SSD": 3}
colours = [plt.cm.tab10(family[n.split()[0]]) for n in cost]
metrics = dict(gmacs="GMACs per image", batch_ms="ms per image, batch", single_ms="ms, 1 image")
cost_bars(cost, metrics, colours, "What a detection costs on a 96 x 96 scene")
plt.show()
print(f"notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# In the docs' `detector-cost` experiment (bf16, 2-core CPU, trained) the sliding window
# needed 627 evaluations, **55x the MACs** of YOLOv3, 48x its time per image in batches of 8
# and 18x alone; Fast R-CNN (1 + 100 evaluations) sat in between (6x the MACs, 7x the time).
# The MACs are the same here (Fast R-CNN's depend on how many proposals its RPN keeps); the
# times depend on CPU, precision and load (in fp32 on one thread the sliding window's time
# ratio even exceeds its MAC ratio). Alone, a one-pass detector pays a fixed per-call cost
# (Python, operator launches, NMS). The shipped detectors (widths 32-128) cost 3-5x the MACs
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
