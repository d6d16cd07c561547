"""The segmentation peer: segmentation_models_pytorch ``Unet("resnet18")`` from scratch.

Runs in the peers' virtual environment (``python benchmarks/peers.py setup``), never in
cnnzoo's: ``python smp_peer.py train|evaluate JOB.json``. smp has no trainer, so this is a
plain, conventional loop that stops at the job's wall-clock budget:

- AdamW (weight decay 1e-4), batch 16, the learning rate on a schedule of the *elapsed time*
  (linear warm-up, then cosine), so it anneals to 0 exactly when the budget ends;
- augmentation: random rescale x0.75..1.25, random crop (padded with ignore) back to the crop
  size, horizontal flip; ImageNet normalisation (as cnnzoo's).

Two loops (the job's ``loop``, ``peers.py --peer-loop``): ``matched`` (default) trains
with ``cnnzoo train``'s segmentation defaults — lr 2e-3, 25 % warm-up then cosine (cnnzoo's
``onecycle``), cross-entropy only; ``plain`` is the first version of this loop — lr 1e-3,
2 % warm-up, cross-entropy + smp's multiclass Dice loss (255 ignored); the job's ``lr``
(``peers.py --peer-lr``) replaces the loop's learning rate, its ``batch_size``
(``--batch-size``) the batch of 16. The job's
``precision`` (``peers.py --peer-precision``): ``fp32`` (default) or ``bf16`` autocast for the
forward pass and loss, as cnnzoo's ``--precision auto`` trains on a CPU with bf16 instructions.

``train`` writes ``model.pt`` and ``peer_train.json``; ``evaluate`` writes
``predictions.npz`` (one label map per test image, key = its index in the job) and
``peer_speed.json``. Scoring happens in cnnzoo's environment, with the code that scores cnnzoo.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timing import SPEED_BATCH, onnx_speed, torch_images_per_second

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
IGNORE = 255
WEIGHT_DECAY = 1e-4
LOOPS: dict[str, dict[str, float]] = {
    "matched": {"lr": 2e-3, "warmup": 0.25, "dice": 0.0},
    "plain": {"lr": 1e-3, "warmup": 0.02, "dice": 1.0},
}
"""The training loops: learning rate, warm-up fraction of the budget, weight of the Dice loss."""


def build(num_classes: int) -> torch.nn.Module:
    """smp's U-Net on a ResNet-18 encoder, randomly initialised (``encoder_weights=None``)."""
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=num_classes)


def load_image(path: str) -> torch.Tensor:
    """An RGB image file as a float (3, H, W) tensor, normalised."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255 - MEAN) / STD


def load_mask(path: str) -> torch.Tensor:
    """A label PNG (mode L, or P: the palette index) as an int64 (H, W) tensor."""
    return torch.from_numpy(np.asarray(Image.open(path)).astype(np.int64))


def augment(
    image: torch.Tensor, mask: torch.Tensor, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rescale, random crop (or pad with ignore) to ``crop``, random flip."""
    h, w = image.shape[-2:]
    s = random.uniform(0.75, 1.25)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image = F.interpolate(image[None], (nh, nw), mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), (nh, nw), mode="nearest")[0, 0].long()
    ph, pw = max(0, crop - nh), max(0, crop - nw)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph))
        mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE)
    top = random.randint(0, image.shape[-2] - crop)
    left = random.randint(0, image.shape[-1] - crop)
    image = image[:, top : top + crop, left : left + crop]
    mask = mask[top : top + crop, left : left + crop]
    if random.random() < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    return image, mask


def pad_to(x: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right to a multiple of ``multiple`` (U-Net needs it)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple))


def schedule(fraction: float, warmup: float) -> float:
    """The learning-rate factor at ``fraction`` of the budget: linear warm-up to 1 over
    ``warmup``, then cosine from 1 to 0 at the end."""
    if fraction < warmup:
        return fraction / warmup
    return 0.5 * (1 + math.cos(math.pi * (fraction - warmup) / (1 - warmup)))


def train(job: dict[str, Any], out: Path) -> None:
    """Train until the budget is spent; save the weights."""
    import segmentation_models_pytorch as smp

    random.seed(job["seed"])
    torch.manual_seed(job["seed"])
    device = torch.device(job["device"])
    pairs = [(load_image(i), load_mask(m)) for i, m in job["train"]]
    model = build(job["num_classes"]).to(device)
    loop = LOOPS[job.get("loop", "matched")]
    lr = job.get("lr") or loop["lr"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE)
    bf16 = job.get("precision", "fp32") == "bf16"
    budget = job["minutes"] * 60
    batch_size, crop = job["batch_size"], job["crop"]
    start = time.perf_counter()
    steps = 0
    done = False
    while not done:
        order = list(range(len(pairs)))
        random.shuffle(order)
        for first in range(0, len(order) - batch_size + 1, batch_size):
            fraction = (time.perf_counter() - start) / budget
            if fraction >= 1:
                done = True
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * schedule(fraction, loop["warmup"])
            items = [augment(*pairs[i], crop) for i in order[first : first + batch_size]]
            x = torch.stack([a for a, _ in items]).to(device)
            y = torch.stack([b for _, b in items]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
                loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
                if loop["dice"]:
                    loss = loss + loop["dice"] * dice(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    seconds = time.perf_counter() - start
    torch.save(model.state_dict(), out / "model.pt")
    import segmentation_models_pytorch

    result = {
        "model": "segmentation_models_pytorch Unet(resnet18), encoder_weights=None",
        "loop": job.get("loop", "matched"),
        "precision": job.get("precision", "fp32"),
        "lr": lr,
        "batch_size": batch_size,
        "train_seconds": round(seconds, 1),
        "epochs": round(steps * batch_size / len(pairs), 2),
        "steps": steps,
        "threads": torch.get_num_threads(),
        "versions": {"segmentation_models_pytorch": segmentation_models_pytorch.__version__,
                     "torch": torch.__version__},
    }  # fmt: skip
    (out / "peer_train.json").write_text(json.dumps(result, indent=1) + "\n")


@torch.inference_mode()
def evaluate(job: dict[str, Any], out: Path) -> None:
    """Predict every test image at its own size (padded to a multiple of 32), then time."""
    device = torch.device(job["device"])
    model = build(job["num_classes"])
    model.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    model.eval().to(device)
    labels = {}
    dtype = np.uint8 if job["num_classes"] <= 256 else np.int32
    for index, path in enumerate(job["test_images"]):
        x = load_image(path)[None]
        h, w = x.shape[-2:]
        logits = model(pad_to(x).to(device))[..., :h, :w]
        labels[str(index)] = logits.argmax(1)[0].cpu().numpy().astype(dtype)
    np.savez_compressed(out / "predictions.npz", **labels)

    torch.set_num_threads(job["speed_threads"])
    model = model.cpu()
    images = (job["test_images"] * SPEED_BATCH)[:SPEED_BATCH]
    size = job["crop"]
    x = torch.stack([F.interpolate(load_image(p)[None], (size, size), mode="bilinear")[0]
                     for p in images])  # fmt: skip
    speed: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "images_per_s": round(torch_images_per_second(model, x, job["speed_repeats"]), 1),
    }
    onnx = out / "model.onnx"

    def export() -> Path:
        torch.onnx.export(model, (x,), str(onnx), input_names=["images"], dynamo=True)
        return onnx

    speed.update(onnx_speed(export, x.numpy(), job["speed_threads"], job["speed_repeats"]))
    (out / "peer_speed.json").write_text(json.dumps(speed, indent=1) + "\n")


def main() -> None:
    phase, job_file = sys.argv[1], Path(sys.argv[2]).resolve()
    job = json.loads(job_file.read_text())
    torch.set_num_threads(job["threads"])
    {"train": train, "evaluate": evaluate}[phase](job, job_file.parent)


if __name__ == "__main__":
    main()
