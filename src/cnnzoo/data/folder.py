"""Users' own images: one sub-folder per class, as in torchvision's ``ImageFolder``.

::

    root/cat/001.jpg          root/train/cat/001.jpg
    root/cat/002.png    or    root/train/dog/...
    root/dog/xyz.webp         root/val/cat/...        (or root/test/)

Classes are the sub-folder names, sorted; label ``i`` is ``classes[i]``. Files are found
recursively inside each class folder; hidden files (``.name``) are skipped. Images are decoded
lazily, one per ``__getitem__``, with PIL, turned into 1 or 3 channels and resized to a fixed
size, so a batch of them stacks into one uint8 ``(N, C, H, W)`` tensor.

Mode conversion (any PIL mode in, ``L`` or ``RGB`` out):

- transparent images (RGBA, LA, PA, or P/L/RGB with a transparency key) are composited on a
  white background, so a transparent-background icon looks like it does in a browser;
- 16-bit grayscale (``I;16*``, ``I``) is scaled by 255/65535; float (``F``) is taken as 0..1
  when its maximum is at most 1, else as 0..255;
- everything else (``1``, ``P``, ``CMYK``, ``YCbCr``, ...) goes through PIL's ``convert``;
  3 -> 1 channel uses PIL's ITU-R 601-2 luma, 1 -> 3 channels repeats the gray value;
- the EXIF orientation tag is applied (photos from phones come out upright);
- animated images (GIF, WebP) give their first frame.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from cnnzoo.documents import is_file
from cnnzoo.errors import CnnzooError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)

Sample = tuple[Path, int]
"""One image file and its class index."""

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


# --------------------------------------------------------------------------------------------
# Scanning folders
# --------------------------------------------------------------------------------------------


def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, following links), in a stable order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image_file(f))
    return found


def _check_folder(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise CnnzooError(f"image folder {path} does not exist")
    if not path.is_dir():
        raise CnnzooError(f"image folder {path} is a file, expected a folder of class folders")
    return path


def scan_image_folder(
    root: str | os.PathLike[str], classes: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """List the images of a class-per-sub-folder tree.

    Args:
        root: folder with one sub-folder per class.
        classes: fix the class list (e.g. a validation folder scanned with the training
            folder's classes); its sub-folders must be among them, but may miss some.
            None: the sorted sub-folder names.

    Returns:
        ``(samples, classes)``: ``[(path, label), ...]`` ordered by class then path, and the
        class names (``label`` indexes them).

    Raises:
        CnnzooError: for a missing folder, one without class sub-folders, an empty class
            folder (when ``classes`` is None), a sub-folder not in ``classes``, or no images.
    """
    path = _check_folder(root)
    present = _class_dirs(path)
    if not present:
        raise CnnzooError(
            f"image folder {path} has no class sub-folders: expected one sub-folder per class, "
            f"e.g. {path / 'cat' / '001.jpg'}"
        )
    if classes is None:
        class_list = present
    else:
        class_list = list(classes)
        unknown = [c for c in present if c not in class_list]
        if unknown:
            raise CnnzooError(
                f"image folder {path} has class folders {unknown} that are not among the "
                f"classes {class_list}"
            )
    index = {name: i for i, name in enumerate(class_list)}
    samples: list[Sample] = []
    empty: list[str] = []
    for name in present:
        files = _images_in(path / name)
        if not files:
            empty.append(name)
        samples.extend((f, index[name]) for f in files)
    if not samples:
        raise CnnzooError(
            f"image folder {path} has no images: expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} inside its class sub-folders"
        )
    if empty and classes is None:
        raise CnnzooError(
            f"image folder {path} has class folders without images: {empty}; "
            "add images or remove them"
        )
    samples.sort(key=lambda s: (s[1], str(s[0])))
    return samples, class_list


def image_folder_splits(
    root: str | os.PathLike[str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, list[Sample]], list[str]]:
    """Split an image folder into training and validation samples.

    If ``root`` has a ``train/`` folder and a ``val/`` and/or ``test/`` folder, those are used
    (classes come from ``train/``): the result has ``"train"`` and ``"val"`` (``val/``, or
    ``test/`` when there is no ``val/``), plus ``"test"`` when ``test/`` exists. Otherwise
    (``root`` itself, or a lone ``root/train/``, holds the class folders) a seeded stratified
    split puts ``round(val_fraction * n)`` images of each class in ``"val"`` (at least one of
    every class with two or more images, never all of them).

    Returns:
        ``({"train": samples, "val": samples[, "test": samples]}, classes)``; each sample
        list is ordered by class then path. The same ``seed`` gives the same split.

    Raises:
        CnnzooError: for a bad ``val_fraction``, any :func:`scan_image_folder` error, or too
            few images to hold any out.
    """
    path = _check_folder(root)
    subdirs = set(_class_dirs(path))
    if "train" in subdirs and subdirs & {"val", "test"}:
        train, classes = scan_image_folder(path / "train")
        splits = {"train": train}
        for name in ("val", "test"):
            if name in subdirs:
                splits[name] = scan_image_folder(path / name, classes)[0]
        splits.setdefault("val", splits.get("test", []))
        return splits, classes
    if subdirs == {"train"}:
        path = path / "train"
    if not 0.0 <= val_fraction < 1.0:
        raise CnnzooError(f"val_fraction {val_fraction} is out of range: expected 0 <= f < 1")
    samples, classes = scan_image_folder(path)
    if val_fraction == 0.0:
        return {"train": samples}, classes
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in range(len(classes)):
        members = [s for s in samples if s[1] == label]
        n = len(members)
        n_val = min(max(round(n * val_fraction), 1 if n >= 2 else 0), n - 1)
        order = list(range(n))
        rng.shuffle(order)
        held_out = set(order[:n_val])
        for i, sample in enumerate(members):
            (val if i in held_out else train).append(sample)
    if not val:
        raise CnnzooError(
            f"image folder {path} has too few images to split off validation data "
            f"({len(samples)} images in {len(classes)} classes); add images or make a val/ folder"
        )
    return {"train": train, "val": val}, classes


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """16-bit or float grayscale -> ``L``, keeping the full range (PIL's convert would clip)."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)
    elif arr.size and np.nanmax(arr) <= 1.0:  # mode "F" in 0..1
        arr = arr * 255.0
    arr = np.nan_to_num(np.clip(np.rint(arr), 0, 255))
    return Image.fromarray(arr.astype(np.uint8))  # 2-D uint8 -> mode "L"


def _convert(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> ``L`` (channels=1) or ``RGB`` (channels=3); see the module docstring."""
    img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        img = _to_8bit_gray(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise CnnzooError(
            f"image size {image_size!r} is invalid: expected a positive int or (height, width)"
        )
    return size  # type: ignore[return-value]


def resize_uint8(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a uint8 image ``(C, H, W)`` to ``size`` = ``(H', W')``: bilinear with
    antialiasing, torchvision's ``resize`` exactly (PyTorch's uint8 kernel, which torchvision
    calls), without importing torchvision.

    Returns:
        uint8 tensor ``(C, H', W')``.
    """
    out = F.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True,
                        align_corners=False)  # fmt: skip
    return out[0]


def load_image(
    path: str | os.PathLike[str],
    channels: int = 3,
    image_size: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Decode one image file into a uint8 tensor.

    Args:
        path: the image file (any format PIL reads).
        channels: 1 (grayscale) or 3 (RGB); see the module docstring for mode conversion.
        image_size: ``(height, width)``, or an int for a square; None keeps the file's size.
            Resizing is bilinear with antialiasing (aspect ratio is not kept).

    Returns:
        uint8 tensor ``(channels, H, W)``.

    Raises:
        CnnzooError: naming the file if it is missing, not an image, or truncated/corrupt;
            or for bad ``channels`` / ``image_size``.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise CnnzooError(f"channels={channels!r} is not supported: expected 1 or 3")
    size = None if image_size is None else _size_pair(image_size)
    if not is_file(path):  # (a name too long for the system is missing too)
        raise CnnzooError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, inside the try: PIL is lazy and truncation shows here
            array = np.array(_convert(img, channels), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...) for bad files
        raise CnnzooError(
            f"image file {path} cannot be decoded ({type(exc).__name__}: {exc}); "
            "replace or remove it"
        ) from None
    tensor = torch.from_numpy(array)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    if size is not None and tuple(tensor.shape[-2:]) != size:
        tensor = resize_uint8(tensor, size)
    return tensor


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images of a class-per-sub-folder tree (or a given sample list), decoded lazily.

    Args:
        source: the folder (scanned with :func:`scan_image_folder`) or a list of
            ``(path, label)`` samples, e.g. one split from :func:`image_folder_splits`.
        image_size: every image is resized to this ``(height, width)`` (int: square).
        channels: 1 or 3.
        classes: class names; with a folder, fixes the label order (see
            :func:`scan_image_folder`); with samples, defaults to ``"0", "1", ...``.

    Items are ``(image, label)``: uint8 ``(channels, H, W)`` and an int.

    Raises:
        CnnzooError: at construction for bad arguments or folders; per item, naming the file,
            when it cannot be decoded.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[Sample],
        image_size: int | Sequence[int],
        channels: int = 3,
        classes: Sequence[str] | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise CnnzooError(f"channels={channels!r} is not supported: expected 1 or 3")
        self.image_size = _size_pair(image_size)
        self.channels = channels
        if isinstance(source, (str, os.PathLike)):
            self.samples, self.classes = scan_image_folder(source, classes)
        else:
            self.samples = [(Path(p), int(label)) for p, label in source]
            if classes is None:
                top = max((label for _, label in self.samples), default=-1)
                classes = [str(i) for i in range(top + 1)]
            self.classes = list(classes)
            bad = [s for s in self.samples if not 0 <= s[1] < len(self.classes)]
            if bad:
                raise CnnzooError(
                    f"sample {bad[0][0]} has label {bad[0][1]}, expected 0..{len(self.classes) - 1}"
                )

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.channels, self.image_size), label
