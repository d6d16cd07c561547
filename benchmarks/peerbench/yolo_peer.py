"""The detection peer: ultralytics YOLOv8n from scratch (``yolov8n.yaml``, no weights).

Runs in the peers' virtual environment (``python benchmarks/peers.py setup``), never in
cnnzoo's: ``python yolo_peer.py train|evaluate JOB.json``. The job (written by
:mod:`peerbench.detection`) names the YOLO ``data.yaml``, the test images, the budget, the
threads and the device. ``train`` writes ``peer_train.json``; ``evaluate`` writes
``predictions.json`` (per test image, in the job's order: ``boxes`` xyxy in the image's own
pixels, ``scores``, ``labels`` 0..C-1) and ``peer_speed.json``. Scoring happens in cnnzoo's
environment, with the code that scores cnnzoo.

ultralytics' network features are off: settings ``sync=False`` and every integration off,
``YOLO_OFFLINE``, no plots (they fetch a font), ``pretrained=False``; AMP only on a GPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from timing import SPEED_BATCH, onnx_speed, torch_images_per_second

ULTRALYTICS_EVAL = {"conf": 0.001, "iou": 0.7, "max_det": 100}
"""ultralytics' own validation settings (``model.val``): its mAP protocol, here too."""


def quiet_ultralytics(out: Path) -> None:
    """Keep ultralytics off the network and its settings file inside ``out``."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out / "ultralytics-config"))
    os.environ["YOLO_OFFLINE"] = "true"
    from ultralytics import settings

    off = {k: False for k, v in settings.items() if isinstance(v, bool)}
    settings.update({**off, "sync": False})


def pin_threads(threads: int) -> None:
    """Make ultralytics keep ``threads``: its ``select_device`` resets torch's CPU threads to
    its own ``NUM_THREADS`` (cores - 1, up to 8), which would break the equal pinning."""
    import torch
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = threads
    torch.set_num_threads(threads)


def _device(job: dict[str, Any]) -> str:
    return "0" if job["device"] == "cuda" else "cpu"


def train(job: dict[str, Any], out: Path) -> None:
    """Train YOLOv8n from scratch for the job's minutes (ultralytics' ``time=``, in hours)."""
    import torch
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    start = time.perf_counter()
    model.train(
        data=job["data_yaml"], epochs=job["max_epochs"], time=job["minutes"] / 60,
        imgsz=job["imgsz"], batch=job["batch_size"], device=_device(job), workers=0,
        project=str(out), name="train", exist_ok=True, plots=False, pretrained=False,
        amp=job["device"] == "cuda", seed=job["seed"], deterministic=False, verbose=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    trainer = model.trainer
    result = {
        "model": "ultralytics YOLOv8n (yolov8n.yaml, from scratch)",
        "train_seconds": round(seconds, 1),
        "epochs": int(trainer.epoch) + 1,
        "weights": str(trainer.best if Path(trainer.best).is_file() else trainer.last),
        "threads": torch.get_num_threads(),  # after training: the pinning held
        "versions": _versions(),
    }
    (out / "peer_train.json").write_text(json.dumps(result, indent=1) + "\n")


def _versions() -> dict[str, str]:
    import torch
    import ultralytics

    return {"ultralytics": ultralytics.__version__, "torch": torch.__version__}


def evaluate(job: dict[str, Any], out: Path) -> None:
    """Predict the test images with the trained weights, then time the model."""
    import torch
    from PIL import Image
    from ultralytics import YOLO

    trained = json.loads((out / "peer_train.json").read_text())
    model = YOLO(trained["weights"])
    predictions = []
    images = job["test_images"]
    for first in range(0, len(images), SPEED_BATCH):
        chunk = images[first : first + SPEED_BATCH]
        for r in model.predict(
            chunk, imgsz=job["imgsz"], device=_device(job), verbose=False, **ULTRALYTICS_EVAL
        ):
            boxes = r.boxes
            predictions.append(
                {
                    "boxes": boxes.xyxy.cpu().float().tolist(),
                    "scores": boxes.conf.cpu().float().tolist(),
                    "labels": boxes.cls.cpu().long().tolist(),
                }
            )
    (out / "predictions.json").write_text(json.dumps(predictions) + "\n")

    # Speed: the network's forward on a batch of test images at the training size, on the CPU
    # with the job's speed threads, fused as ultralytics' predictor runs it.
    pin_threads(job["speed_threads"])
    size = job["imgsz"]
    batch = []
    for path in (images * SPEED_BATCH)[:SPEED_BATCH]:
        rgb = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        batch.append(torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8))
    x = torch.stack(batch).view(SPEED_BATCH, size, size, 3).permute(0, 3, 1, 2).float() / 255
    net = YOLO(trained["weights"]).model.float().eval().fuse()
    speed: dict[str, Any] = {
        "params": sum(p.numel() for p in net.parameters()),
        "images_per_s": round(torch_images_per_second(net, x, job["speed_repeats"]), 1),
    }

    def export() -> str:
        return YOLO(trained["weights"]).export(
            format="onnx", imgsz=size, batch=SPEED_BATCH, simplify=False, dynamic=False,
            device="cpu", verbose=False,
        )  # fmt: skip

    speed.update(onnx_speed(export, x.numpy(), job["speed_threads"], job["speed_repeats"]))
    (out / "peer_speed.json").write_text(json.dumps(speed, indent=1) + "\n")


def main() -> None:
    phase, job_file = sys.argv[1], Path(sys.argv[2]).resolve()
    job = json.loads(job_file.read_text())
    out = job_file.parent
    quiet_ultralytics(out)
    pin_threads(job["threads"])
    {"train": train, "evaluate": evaluate}[phase](job, out)


if __name__ == "__main__":
    main()
