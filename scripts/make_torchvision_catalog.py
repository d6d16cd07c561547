"""Write the catalog of torchvision's ImageNet-1K weights for every cnnzoo classifier with a
torchvision twin: ``src/cnnzoo/weights/torchvision_in1k.json`` (URL, the hash prefix the file
name publishes, accuracy, preprocessing, file size) and ``imagenet_classes.txt`` (the 1000
class names). Data only: read from the installed torchvision's weight enums, which are the
published record; cnnzoo never imports torchvision's models at run time.

    .venv/bin/python scripts/make_torchvision_catalog.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "cnnzoo" / "weights"
TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}
"""torchvision's enum member -> cnnzoo's tag (timm's names for the same files)."""
GOOGLENET = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "kwargs": {"aux_logits": False}}
"""GoogLeNet's weights were ported from TensorFlow: torchvision builds the model with
``transform_input=True``, which maps an ImageNet-normalised input to ``(x - 0.5) / 0.5``.
cnnzoo's GoogLeNet has no such switch; normalising with mean = std = 0.5 gives the same
input (tested). Its auxiliary heads are in the file but not trained: the model is built
without them, as torchvision does."""


def file_params(get_model, twin: str) -> int:
    """Parameters stored in the published file (BatchNorm statistics not counted). GoogLeNet's
    file also holds the auxiliary heads (torchvision loads it into a model with them, then
    drops them; they are not trained), so it holds more than the model it is used as."""
    import torch

    aux = {"aux_logits": True, "init_weights": False} if twin == "googlenet" else {}
    with torch.device("meta"):
        model = get_model(twin, weights=None, **aux)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    from torchvision.models import get_model, get_model_weights

    import cnnzoo
    from cnnzoo.files import atomic_write_text

    entries = []
    categories = None
    for name in cnnzoo.list_models(task="classification"):
        twin = cnnzoo.model_info(name).torchvision
        if twin is None:
            continue
        for weights in get_model_weights(twin):
            tag = TAGS.get(weights.name)
            if tag is None:
                continue
            t = weights.transforms()
            match = re.search(r"-([a-f0-9]+)\.pth$", weights.url)
            assert match, weights.url
            metrics = weights.meta["_metrics"]["ImageNet-1K"]
            categories = categories or list(weights.meta["categories"])
            assert list(weights.meta["categories"]) == categories
            entries.append({
                "name": f"{name}.{tag}",
                "model": name,
                "url": weights.url,
                "sha256": match.group(1),
                "size_mb": weights.meta["_file_size"],
                "num_params": weights.meta["num_params"],
                "file_params": file_params(get_model, twin),
                "metrics": {"imagenet_val/acc1": round(metrics["acc@1"] / 100, 5),
                            "imagenet_val/acc5": round(metrics["acc@5"] / 100, 5)},
                "resize": t.resize_size[0],
                "crop": t.crop_size[0],
                "interpolation": t.interpolation.value,
                **(GOOGLENET if twin == "googlenet" else {}),
                "recipe": weights.meta["recipe"],
            })  # fmt: skip
    assert categories is not None
    atomic_write_text(OUT / "torchvision_in1k.json", json.dumps(entries, indent=1) + "\n")
    atomic_write_text(OUT / "imagenet_classes.txt", "\n".join(categories) + "\n")
    print(f"{len(entries)} weight sets -> {OUT / 'torchvision_in1k.json'}")


if __name__ == "__main__":
    main()
