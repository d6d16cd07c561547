"""Fashion-MNIST: find it on disk, download it if asked, read its IDX files, and a bundled mini set.

Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", arXiv:1708.07747, 2017. 70,000 grayscale 28x28 images of 10 clothing classes
(60,000 train, 10,000 test), stored in LeCun's IDX format, MIT licensed by Zalando SE.

The full set is looked up, in order, in: the ``data_dir`` argument, ``$CNNZOO_DATA``, the
system copy installed by ``apt-get install dataset-fashion-mnist`` (:data:`SYSTEM_DIR`), and
the download cache (:data:`CACHE_DIR`). The mini set (500 train + 100 test images per class,
a real subset) ships inside the package for tests and quick demos.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import io
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cnnzoo.errors import CnnzooError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Module-level so that tests (and unusual installations) can point them elsewhere.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path("~/.cache/cnnzoo/fashion-mnist")
ENV_VAR = "CNNZOO_DATA"

# The official files and the md5 of each ``.gz`` as published (the same table torchvision
# checks). Mirrors are tried in order: Zalando's S3 bucket, then the GitHub repository.
MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
RESOURCES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MINI_PREFIX = "fashion-mnist-mini-"
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data-dir DIR / "
    f"set {ENV_VAR}=DIR to a folder holding the four Fashion-MNIST IDX files"
)

# IDX type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


# --------------------------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------------------------


_GZIP_MAX_RATIO = 1032
"""Deflate expands data at most about 1032-fold: a gzip of N bytes never holds more."""


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, as stored (gzipped or not)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CnnzooError(f"IDX file {path} does not exist") from None
    except IsADirectoryError:
        raise CnnzooError(f"IDX file {path} is a directory, expected a file") from None
    except OSError as exc:
        raise CnnzooError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read one IDX file (LeCun's MNIST format), gzipped or not (the gzip magic decides).

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    int32; the big-endian data follows and must have exactly the announced size. The size the
    header announces is checked against what the file can hold before anything is read or
    allocated, and a gzipped file is never decompressed past it (no gzip bombs).

    Returns:
        A tensor of the file's shape and dtype (native byte order, writable).

    Raises:
        CnnzooError: naming the file, if it is missing, not IDX, corrupt or truncated.
    """
    path = Path(path)
    raw = _read_bytes(path)
    gzipped = raw[:2] == b"\x1f\x8b"
    stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if gzipped else io.BytesIO(raw)
    try:
        head = stream.read(4)
        if len(head) < 4:
            raise CnnzooError(f"IDX file {path} is truncated: {len(head)} bytes, no header")
        zero1, zero2, code, ndim = head
        if zero1 != 0 or zero2 != 0 or code not in _IDX_DTYPES:
            raise CnnzooError(
                f"IDX file {path} has bad magic number 0x{head.hex()}: "
                "expected 0x0000 followed by a type code (08, 09, 0b, 0c, 0d, 0e) and a rank"
            )
        if ndim == 0:
            raise CnnzooError(f"IDX file {path} declares 0 dimensions, expected at least 1")
        header = 4 + 4 * ndim
        dims = stream.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise CnnzooError(
                f"IDX file {path} is truncated: header of {ndim} dimensions needs {header} bytes, "
                f"file has {4 + len(dims)}"
            )
        shape = struct.unpack(f">{ndim}I", dims)
        dtype = np.dtype(_IDX_DTYPES[code])
        expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        room = len(raw) * _GZIP_MAX_RATIO if gzipped else len(raw) - header
        if expected > room:
            held = f"its {len(raw)} gzipped bytes cannot hold that" if gzipped else (
                f"file has {room}")  # fmt: skip
            raise CnnzooError(
                f"IDX file {path} is truncated: shape {shape} needs {expected} bytes of data, "
                f"{held}"
            )
        data = stream.read(expected + 1)  # one more: a longer file is refused, not read
    except (EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
        raise CnnzooError(
            f"IDX file {path} is corrupt or truncated (gzip: {exc}); delete it and fetch it again"
        ) from None
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "too long"
        has = len(data) if len(data) < expected else f"more than {expected}"
        raise CnnzooError(
            f"IDX file {path} is {kind}: shape {shape} needs {expected} bytes of data, "
            f"file has {has}"
        )
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError:  # an empty shape whose other dimensions overflow numpy's index type
        raise CnnzooError(
            f"IDX file {path} declares shape {shape}: expected dimensions whose product, "
            "leaving out zeros, fits a 64-bit index"
        ) from None
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike[str], array: np.ndarray | torch.Tensor) -> Path:
    """Write ``array`` as an IDX file; gzipped (level 9, reproducible) when ``path`` ends in .gz.

    Returns:
        The path written.

    Raises:
        CnnzooError: if the dtype has no IDX type code.
    """
    path = Path(path)
    arr = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None or arr.ndim == 0:
        raise CnnzooError(
            f"cannot write {path}: IDX holds 1+ dimensional uint8/int8/int16/int32/float32/"
            f"float64 arrays, got {arr.dtype} with {arr.ndim} dimensions"
        )
    payload = (
        bytes([0, 0, code, arr.ndim])
        + np.asarray(arr.shape, dtype=">u4").tobytes()
        + arr.astype(_IDX_DTYPES[code]).tobytes()
    )
    if path.suffix == ".gz":
        with (
            open(path, "wb") as f,
            gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g,
        ):
            g.write(payload)
    else:
        path.write_bytes(payload)
    return path


# --------------------------------------------------------------------------------------------
# Finding and downloading the full set
# --------------------------------------------------------------------------------------------


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` (raw) or ``folder/stem.gz``, whichever exists; raw is preferred."""
    for name in (stem, stem + ".gz"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _holds_all(folder: Path) -> bool:
    return folder.is_dir() and all(
        _idx_file(folder, stem) is not None for pair in SPLIT_FILES.values() for stem in pair
    )


def _user_candidates(root: Path) -> list[Path]:
    """A user-given folder may be the data itself or a data root with a fashion-mnist/ in it
    (also accepted: torchvision's FashionMNIST/raw layout)."""
    return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]


def find_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first folder holding all four Fashion-MNIST IDX files (``.gz`` or raw).

    Looked up in order: ``data_dir`` (or ``data_dir/fashion-mnist``), ``$CNNZOO_DATA``
    (the folder itself or ``$CNNZOO_DATA/fashion-mnist``), :data:`SYSTEM_DIR`, :data:`CACHE_DIR`.

    Returns:
        The folder, or None when no location has the files.

    Raises:
        CnnzooError: if ``data_dir`` is given but does not hold the files.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        for folder in _user_candidates(root):
            if _holds_all(folder):
                return folder
        wanted = ", ".join(f"{stem}[.gz]" for pair in SPLIT_FILES.values() for stem in pair)
        raise CnnzooError(
            f"data dir {root} does not hold Fashion-MNIST: expected {wanted} in it "
            "or in its fashion-mnist/ sub-folder"
        )
    candidates: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        candidates += _user_candidates(Path(env).expanduser())
    candidates += [Path(SYSTEM_DIR), Path(CACHE_DIR).expanduser()]
    for folder in candidates:
        if _holds_all(folder):
            return folder
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_one(url: str, target: Path, md5: str) -> None:
    """Stream ``url`` into a temporary file beside ``target``, check its md5, rename it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise CnnzooError(
                f"download of {url} is corrupt: md5 {digest.hexdigest()}, expected {md5}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def download_fashion_mnist(cache_dir: str | os.PathLike[str]) -> Path:
    """Download the four official ``.gz`` files into ``cache_dir`` (md5-checked, atomic).

    Files already present with the right md5 are kept. Each file is written to a temporary
    file in ``cache_dir`` and renamed into place only after its checksum matched, so an
    interrupted download never leaves a half file under the real name.

    Returns:
        ``cache_dir`` as a Path, now holding the four files.

    Raises:
        CnnzooError: when offline or every mirror fails, saying how to install the data
            instead; or when the downloaded bytes do not match the published md5.
    """
    cache_dir = Path(cache_dir).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnzooError(
            f"cannot create download folder {cache_dir} ({exc}); {INSTALL_HINT}"
        ) from None
    for name, md5 in RESOURCES.items():
        target = cache_dir / name
        if target.is_file() and _md5(target) == md5:
            continue
        failures: list[str] = []
        for mirror in MIRRORS:
            try:
                _download_one(mirror + name, target, md5)
                break
            except CnnzooError as exc:
                failures.append(str(exc))
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                failures.append(f"{mirror + name}: {reason}")
        else:
            raise CnnzooError(
                f"could not download Fashion-MNIST file {name} ({'; '.join(failures)}); "
                f"{INSTALL_HINT}"
            )
    return cache_dir


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLIT_FILES:
        raise CnnzooError(f"unknown Fashion-MNIST split {split!r}: expected 'train' or 'test'")


def _load_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise CnnzooError(
            f"{images_path} holds {images.dtype} {tuple(images.shape)}, "
            "expected uint8 images of shape (N, 28, 28)"
        )
    if labels.dtype != torch.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise CnnzooError(
            f"{labels_path} holds {labels.dtype} {tuple(labels.shape)}, "
            f"expected {len(images)} uint8 labels to match {images_path.name}"
        )
    num_classes = len(FASHION_MNIST_CLASSES)
    if len(labels) and int(labels.max()) >= num_classes:
        raise CnnzooError(
            f"{labels_path} has label {int(labels.max())}, expected 0..{num_classes - 1}"
        )
    return images.unsqueeze(1).contiguous(), labels.long()


def load_fashion_mnist(
    split: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of the full Fashion-MNIST.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        data_dir: folder holding the IDX files; None looks them up (see
            :func:`find_fashion_mnist`).
        download: when nothing is found, download into :data:`CACHE_DIR`.

    Returns:
        ``(images, labels)``: uint8 ``(N, 1, 28, 28)`` and int64 ``(N,)`` in 0..9
        (names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
        CnnzooError: for a bad split, a ``data_dir`` without the files, data that is not
            found (and not downloadable), or corrupt files.
    """
    _check_split(split)
    folder = find_fashion_mnist(data_dir)
    if folder is None:
        if not download:
            raise CnnzooError(f"Fashion-MNIST not found; {INSTALL_HINT}")
        folder = download_fashion_mnist(CACHE_DIR)
    images_stem, labels_stem = SPLIT_FILES[split]
    images_path = _idx_file(folder, images_stem)
    labels_path = _idx_file(folder, labels_stem)
    if images_path is None or labels_path is None:  # removed since the lookup
        raise CnnzooError(f"Fashion-MNIST {split} files vanished from {folder}; {INSTALL_HINT}")
    stamp = (images_path.stat().st_mtime_ns, labels_path.stat().st_mtime_ns)
    images, labels = _load_pair_cached(str(images_path), str(labels_path), stamp)
    return images.clone(), labels.clone()


@functools.lru_cache(maxsize=4)
def _load_pair_cached(
    images_path: str, labels_path: str, stamp: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    # Experiments build many small trainings in one process: decode each file once.
    return _load_pair(Path(images_path), Path(labels_path))


def load_fashion_mnist_mini(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the bundled mini Fashion-MNIST (a balanced real subset, shipped in the package).

    ``"train"`` has 5,000 images (500 per class) from the official train set, ``"test"`` has
    1,000 (100 per class) from the official test set; see ``data/bundled/README.md``.

    Returns:
        ``(images, labels)``: uint8 ``(N, 1, 28, 28)`` and int64 ``(N,)``.

    Raises:
        CnnzooError: for a bad split or a damaged installation.
    """
    _check_split(split)
    images_stem, labels_stem = SPLIT_FILES[split]
    bundled = resources.files("cnnzoo.data").joinpath("bundled")
    with (
        resources.as_file(bundled.joinpath(f"{MINI_PREFIX}{images_stem}.gz")) as images_path,
        resources.as_file(bundled.joinpath(f"{MINI_PREFIX}{labels_stem}.gz")) as labels_path,
    ):
        return _load_pair(Path(images_path), Path(labels_path))
