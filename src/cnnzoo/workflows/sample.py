"""``cnnzoo sample`` (new images from a VAE or GAN run, or a latent interpolation) and
``cnnzoo translate`` (an image-translation run applied to image files)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.errors import CnnzooError
from cnnzoo.families.outputs import refuse_existing
from cnnzoo.rundir import RunDir
from cnnzoo.viz.figure import save_image
from cnnzoo.viz.tile import tile


def _grid_png(images: torch.Tensor, path: Path, nrow: int) -> Path:
    grid = tile(images.float().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return save_image(Image.fromarray(array), path)


@torch.no_grad()
def sample(
    run_or_weights: str | Path,
    out: str | Path,
    n: int = 64,
    seed: int = 0,
    interpolate: bool = False,
    steps: int = 10,
    label: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PNG grid of ``n`` new images from a VAE or GAN run.

    With ``interpolate``: rows of ``steps`` images walking the latent space in a straight
    line between two random codes (``n // steps`` rows, at least 1). ``label``: a conditional
    GAN's class for every image.

    Returns:
        The PNG written.

    Raises:
        CnnzooError: for a run whose model cannot sample, bad ``n``/``steps``/``label``, or
            an existing ``out`` (without ``overwrite``).
    """
    if n < 1 or steps < 2:
        raise CnnzooError(f"need n >= 1 and steps >= 2, got n={n}, steps={steps}")
    path = Path(out)
    refuse_existing(path, overwrite)
    model, spec = RunDir.open(run_or_weights).load_model()
    if not hasattr(model, "sample"):
        raise CnnzooError(f"{spec['model']} cannot sample new images (a VAE or GAN run can)")
    gen = torch.Generator().manual_seed(seed)
    signed = hasattr(model, "generator_step")  # GANs make images in [-1, 1]
    conditional = getattr(model, "num_classes", 0)
    if label is not None and not (conditional and 0 <= label < conditional):
        raise CnnzooError(
            f"--label {label}: {spec['model']} is "
            + (f"conditional on {conditional} classes" if conditional else "not conditional")
        )
    if interpolate:
        rows = max(1, n // steps)
        t = torch.linspace(0, 1, steps).view(1, steps, 1)
        z0, z1 = (torch.randn(rows, 1, model.latent, generator=gen) for _ in range(2))
        z = ((1 - t) * z0 + t * z1).reshape(rows * steps, model.latent)
        if signed:
            labels = _labels(conditional, label, rows * steps, gen)
            images = model(z, labels) if conditional else model(z)
        else:
            images = model.decode(z)
        nrow = steps
    else:
        if signed and conditional:
            images = model.sample(n, labels=_labels(conditional, label, n, gen), generator=gen)
        else:
            images = model.sample(n, generator=gen)
        nrow = int(n**0.5) or 1
    if signed:
        images = (images + 1) / 2
    return _grid_png(images, path, nrow)


def _labels(classes: int, label: int | None, n: int, gen: torch.Generator) -> torch.Tensor | None:
    if not classes:
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long)
    return torch.randint(classes, (n,), generator=gen)


@torch.no_grad()
def translate(
    run_or_weights: str | Path,
    files: list[str | Path],
    out: str | Path,
    direction: str = "AB",
    overwrite: bool = False,
) -> list[Path]:
    """Translate image files with an image-translation run (CycleGAN, UNIT, pix2pix...).

    Each image is converted to the model's channels and, when the run was trained at a fixed
    size, resized to it; the output is resized back to the image's size. One file: ``out`` is
    the output PNG (or a folder when it is one); several: ``out`` is a folder and each output
    is ``NAME_DIRECTION.png``.

    Returns:
        The PNGs written.

    Raises:
        CnnzooError: for a run that is not a translation run, a missing image, a bad
            direction, or an existing output (without ``overwrite``).
    """
    from cnnzoo.data.folder import load_image

    model, spec = RunDir.open(run_or_weights).load_model()
    if not hasattr(model, "translate"):
        raise CnnzooError(f"{spec['model']} is not an image-translation model")
    data = spec["data"]
    channels = int(spec["kwargs"].get("in_channels", data["in_channels"]))
    size = tuple(data["image_size"])
    target = Path(out)
    many = len(files) > 1 or target.is_dir() or target.suffix == ""
    outputs = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise CnnzooError(f"image not found: {p}")
        dest = target / f"{p.stem}_{direction}.png" if many else target
        refuse_existing(dest, overwrite)
        outputs.append((p, dest))
    written = []
    for src, dest in outputs:
        image = load_image(src, channels)
        h, w = image.shape[-2:]
        x = image[None].float() / 127.5 - 1
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
        y = model.translate(x, direction)
        if tuple(y.shape[-2:]) != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear")
        written.append(_grid_png((y + 1) / 2, dest, 1))
    return written
