"""Fuzzing the readers of binary files and run documents: IDX (Fashion-MNIST), images, label
masks, safetensors and .pth weights, and a run's model.json / config.yaml / metrics.json.

Each starts from a valid small file, mutates it (see fuzzing.py) and asks the one property
of :func:`fuzzing.check_reader`: the reader returns, or raises CnnzooError naming the file on
one line, within a time and memory bound. The bombs (an IDX header claiming 10^15 elements, a
gzip bomb, an image header claiming 100000x100000 pixels, a safetensors header claiming a huge
tensor, JSON/YAML nesting and alias bombs) must be refused before anything is allocated.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as save_safetensors

from cnnzoo.cli.common import parse_model_args
from cnnzoo.data.detection import image_size
from cnnzoo.data.fashion_mnist import load_fashion_mnist, read_idx
from cnnzoo.data.folder import load_image
from cnnzoo.data.segmentation import MaskFolderDataset, load_mask
from cnnzoo.data.translation import _load_label_map
from cnnzoo.errors import CnnzooError
from cnnzoo.models.weights import read_source_spec
from cnnzoo.rundir import RunDir
from cnnzoo.weights.storage import encode, read_state_dict
from cnnzoo.workflows.report import load_run
from fuzzing import (
    alias_bomb,
    check_reader,
    fuzz_settings,
    mutated_bytes,
    mutated_text,
    mutated_tree,
    nesting_bomb,
    python_peak_mb,
)

pytestmark = [
    pytest.mark.fuzz,
    # What the libraries say about the damage before cnnzoo refuses the file.
    pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    code = {np.uint8: 8, np.int8: 9, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
    big = array.astype(array.dtype.newbyteorder(">"))
    buf.write(bytes([0, 0, code[array.dtype.type], array.ndim]))
    buf.write(np.asarray(array.shape, dtype=">u4").tobytes())
    buf.write(big.tobytes())
    return buf.getvalue()


IDX_BASES = [
    _idx_bytes(np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)),
    _idx_bytes(np.arange(5, dtype=np.uint8)),
    _idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4)),
    _idx_bytes(np.linspace(0, 1, 6, dtype=np.float32)),
]


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """A mutated IDX file: raw, gzipped after mutation, or with its gzip stream mutated."""
    base = draw(st.sampled_from(IDX_BASES))
    how = draw(st.sampled_from(["raw", "gzip-after", "gzip-before"]))
    if how == "gzip-before":
        return draw(mutated_bytes(gzip.compress(base, mtime=0)))
    data = draw(mutated_bytes(base))
    return gzip.compress(data, mtime=0) if how == "gzip-after" else data


@fuzz_settings(50)
@given(data=idx_files(), gz_name=st.booleans())
def test_idx_mutated(tmp_path: Path, data: bytes, gz_name: bool) -> None:
    path = tmp_path / ("x-idx3-ubyte.gz" if gz_name else "x-idx3-ubyte")
    path.write_bytes(data)
    check_reader("idx", lambda: read_idx(path), [str(path)])


@fuzz_settings(40)
@given(
    code=st.sampled_from([8, 9, 0x0B, 0x0C, 0x0D, 0x0E]) | st.integers(0, 255),
    dims=st.lists(st.sampled_from([0, 1, 2, 3, 28, 2**16, 2**31 - 1, 2**32 - 1]), max_size=6),
    ndim_lie=st.sampled_from([0, 0, 0, 1, -1, 255]),
    body=st.integers(0, 300),
)
def test_idx_headers(tmp_path: Path, code: int, dims: list[int], ndim_lie: int, body: int) -> None:
    ndim = max(0, min(255, len(dims) + ndim_lie))
    path = tmp_path / "h-idx1-ubyte"
    header = bytes([0, 0, code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(header + bytes(body))
    check_reader("idx", lambda: read_idx(path), [str(path)])


@fuzz_settings(30)
@given(images=idx_files(), labels=st.sampled_from(IDX_BASES[:2]) | idx_files())
def test_fashion_mnist_mutated_pair(tmp_path: Path, images: bytes, labels: bytes) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # a new folder: files are cached by path
    (folder / "train-images-idx3-ubyte").write_bytes(images)
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    (folder / "t10k-images-idx3-ubyte").write_bytes(IDX_BASES[0])
    (folder / "t10k-labels-idx1-ubyte").write_bytes(IDX_BASES[1])
    names = [str(folder / "train-images-idx3-ubyte"), str(folder / "train-labels-idx1-ubyte")]
    check_reader("fashion-mnist", lambda: load_fashion_mnist("train", data_dir=folder), names)


def _refused_small(call, path: Path, limit_mb: float = 8) -> str:
    peak, error = python_peak_mb(call)
    assert isinstance(error, CnnzooError), repr(error)
    assert str(path) in str(error) and "\n" not in str(error)
    assert peak < limit_mb, f"{peak:.0f} MB allocated before refusing {path.name}"
    return str(error)


def test_idx_bombs_are_refused_before_allocating(tmp_path: Path) -> None:
    # 10^15+ elements claimed by a 20-byte file, raw and gzipped.
    huge = tmp_path / "huge-idx3-ubyte"
    huge.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31 - 1, 2**31 - 1, 2**20))
    _refused_small(lambda: read_idx(huge), huge)
    huge_gz = tmp_path / "huge-idx3-ubyte.gz"
    huge_gz.write_bytes(gzip.compress(huge.read_bytes()))
    _refused_small(lambda: read_idx(huge_gz), huge_gz)
    # Dimensions whose product wraps around 2^64 to 0 (no data): not an empty file.
    wrap = tmp_path / "wrap-idx3-ubyte"
    wrap.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">IIII", 2**16, 2**16, 2**16, 2**16))
    _refused_small(lambda: read_idx(wrap), wrap)
    # A gzip bomb: a 2x2 header, then 256 MB of zeros in ~250 KB.
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(bytes([0, 0, 8, 2]) + struct.pack(">II", 2, 2) + bytes(4))]
    parts += [packer.compress(bytes(2**20)) for _ in range(256)]
    bomb.write_bytes(b"".join(parts) + packer.flush())
    assert "too long" in _refused_small(lambda: read_idx(bomb), bomb)


# --------------------------------------------------------------------------------------------
# Images and masks
# --------------------------------------------------------------------------------------------


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


_RGB = Image.fromarray(np.arange(9 * 13 * 3, dtype=np.uint8).reshape(9, 13, 3))
_PAL = Image.fromarray(np.arange(9 * 13, dtype=np.uint8).reshape(9, 13) % 4).convert("P")
IMAGE_BASES = [
    (".png", _encoded(_RGB, "PNG")),
    (".png", _encoded(_RGB.convert("L"), "PNG")),
    (".png", _encoded(_RGB.convert("RGBA"), "PNG")),
    (".png", _encoded(_PAL, "PNG", transparency=0)),
    (".png", _encoded(Image.fromarray(np.arange(117, dtype=np.uint16).reshape(9, 13)), "PNG")),
    (".jpg", _encoded(_RGB, "JPEG", quality=80)),
    (".gif", _encoded(_PAL, "GIF")),
    (".bmp", _encoded(_RGB, "BMP")),
    (".tif", _encoded(_RGB, "TIFF")),
    (".webp", _encoded(_RGB, "WEBP")),
]
_LABELS = Image.fromarray(np.resize(np.array([0, 1, 2, 255], dtype=np.uint8), (9, 13)))
MASK_BASES = [_encoded(_LABELS, "PNG"), IMAGE_BASES[3][1]]  # mode L and palette, labels 0..3


@fuzz_settings(60)
@given(base=st.sampled_from(IMAGE_BASES), data=st.data(), channels=st.sampled_from([1, 3]))
def test_images_mutated(tmp_path: Path, base: tuple[str, bytes], data, channels: int) -> None:
    suffix, valid = base
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data.draw(mutated_bytes(valid)))
    check_reader("image", lambda: load_image(path, channels, image_size=8), [str(path)])
    check_reader("image header", lambda: image_size(path), [str(path)])


@fuzz_settings(40)
@given(
    mask=st.sampled_from(MASK_BASES).flatmap(mutated_bytes) | st.sampled_from(MASK_BASES),
    num_classes=st.integers(2, 5),
)
def test_masks_mutated(tmp_path: Path, mask: bytes, num_classes: int) -> None:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    (tmp_path / "images" / "a.png").write_bytes(IMAGE_BASES[0][1])
    path = tmp_path / "masks" / "a.png"
    path.write_bytes(mask)
    check_reader("mask", lambda: load_mask(path), [str(path)])
    check_reader("mask", lambda: _load_label_map(path, (4, 4)), [str(path)])  # pix2pix labels
    folder = MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=num_classes)
    check_reader("mask", lambda: folder[0], [str(path)])


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose (valid, CRC-checked) header claims ``width x height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_image_bombs_are_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(100_000, 100_000))
    for read in (load_image, image_size, load_mask):
        message = _refused_small(lambda read=read: read(path), path)
        assert "DecompressionBomb" in message


# --------------------------------------------------------------------------------------------
# Weights: safetensors and .pth
# --------------------------------------------------------------------------------------------

_STATE = {
    "conv.weight": torch.linspace(-1, 1, 32 * 32).reshape(32, 32),
    "conv.bias": torch.linspace(0, 1, 32),
    "bn.num_batches_tracked": torch.tensor(7),
}
SAFETENSORS_BASES = [save_safetensors(t, m) for t, m in (encode(_STATE, s) for s in
                                                         ("fp32", "fp16", "int8"))]  # fmt: skip


def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


@fuzz_settings(50)
@given(data=st.sampled_from(SAFETENSORS_BASES).flatmap(mutated_bytes))
def test_safetensors_mutated_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    check_reader("safetensors", lambda: read_state_dict(path), [str(path)])


_KEYS = ["dtype", "shape", "data_offsets", "__metadata__", "cnnzoo.storage"]


@fuzz_settings(50)
@given(base=st.sampled_from(SAFETENSORS_BASES), data=st.data())
def test_safetensors_wrong_header(tmp_path: Path, base: bytes, data) -> None:
    header, body = _split_safetensors(base)
    header = data.draw(mutated_tree(header, keys=_KEYS))
    text = json.dumps(header).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)
    check_reader("safetensors", lambda: read_state_dict(path), [str(path)])


def test_safetensors_bombs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.safetensors"
    claim = {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 4 * 10**18]}
    header = json.dumps({"w": claim})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(16))
    _refused_small(lambda: read_state_dict(path), path)
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    _refused_small(lambda: read_state_dict(path), path)


def _torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


PTH_BASES = [_torch_bytes(_STATE), _torch_bytes(_STATE, legacy=True),
             _torch_bytes({"state_dict": _STATE, "epoch": 3})]  # fmt: skip


@fuzz_settings(50)
@given(data=st.sampled_from(PTH_BASES).flatmap(mutated_bytes))
def test_pth_mutated_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(data)
    check_reader("pth", lambda: read_state_dict(path), [str(path)])


@fuzz_settings(30)
@given(obj=mutated_tree({"state_dict": {"a": 1, "b": [1, 2]}, "epoch": 3}), legacy=st.booleans())
def test_pth_wrong_objects(tmp_path: Path, obj, legacy: bool) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(_torch_bytes(obj, legacy))
    check_reader("pth", lambda: read_state_dict(path), [str(path)])


def test_pth_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(_torch_bytes({"w": Boom()}))
    with pytest.raises(CnnzooError, match="refused to unpickle"):
        read_state_dict(path)


# --------------------------------------------------------------------------------------------
# A run's documents: model.json, config.yaml, metrics.json
# --------------------------------------------------------------------------------------------

SPEC = {"model": "convnet", "kwargs": {"num_classes": 3, "in_channels": 1, "widths": [4, 8],
                                      "hidden": 8}}  # fmt: skip
CONFIG = {"model": "convnet", "data": "fashion-mnist-mini", "epochs": 1, "lr": 0.01,
          "model_kwargs": {"widths": [4, 8]}, "augment": ["flip", "crop"]}  # fmt: skip
METRICS = {"model": "convnet", "task": "classification", "metrics": {"test/acc": 0.5}}
_SPEC_KEYS = ["model", "kwargs", "shapes", "num_classes", "widths", "features_only", "weights"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> RunDir:
    import cnnzoo

    run = RunDir.create(tmp_path_factory.mktemp("fuzzrun") / "run")
    run.save_model(cnnzoo.create_model(SPEC["model"], **SPEC["kwargs"]), SPEC)
    return run


def _document(draw, doc, as_yaml: bool = False) -> bytes:
    """The document mutated in structure, then (half the time) in its bytes."""
    tree = draw(mutated_tree(doc, keys=_SPEC_KEYS))
    text = yaml.safe_dump(tree) if as_yaml else json.dumps(tree)
    return draw(mutated_text(text)) if draw(st.booleans()) else text.encode()


@fuzz_settings(50)
@given(data=st.data())
def test_model_json_mutated(run_dir: RunDir, data) -> None:
    run_dir.spec_file.write_bytes(_document(data.draw, SPEC))
    names = [str(run_dir.spec_file), str(run_dir.weights)]
    check_reader("model.json", lambda: RunDir.open(run_dir.path).load_model(), names)
    spec = check_reader("model.json", lambda: read_source_spec(run_dir.path), names)
    assert spec is None or isinstance(spec, dict)


@fuzz_settings(40)
@given(data=st.data())
def test_config_and_metrics_mutated(run_dir: RunDir, data) -> None:
    config, metrics = run_dir.path / "config.yaml", run_dir.path / "metrics.json"
    config.write_bytes(_document(data.draw, CONFIG, as_yaml=True))
    metrics.write_bytes(_document(data.draw, METRICS))
    value = check_reader("config.yaml", lambda: RunDir(run_dir.path).read_config(), [str(config)])
    assert value is None or isinstance(value, dict)
    value = check_reader("metrics.json", lambda: RunDir(run_dir.path).read_metrics(),
                         [str(metrics)])  # fmt: skip
    assert value is None or isinstance(value, dict)
    record = check_reader("run report", lambda: load_run(run_dir.path), [str(run_dir.path)])
    assert record is not None  # the report notes unreadable files, it never fails on them


@fuzz_settings(40)
@given(value=st.text(max_size=30) | mutated_text("[1, {a: 2}]").map(lambda b: b.decode("latin-1")))
def test_model_arg_values_mutated(value: str) -> None:
    check_reader("--model-arg", lambda: parse_model_args([f"k={value}"]), ["--model-arg k"])


def test_run_document_bombs_are_refused(run_dir: RunDir, tmp_path: Path) -> None:
    spec, config = run_dir.spec_file, run_dir.path / "config.yaml"
    saved = spec.read_bytes()
    try:
        spec.write_text(nesting_bomb())
        _refused_small(lambda: RunDir.open(run_dir.path).load_model(), spec)
        assert read_source_spec(run_dir.path) is None
        assert load_run(run_dir.path).problems
        spec.write_text(json.dumps({"model": "convnet", "kwargs": {"num_classes": 10**9}}))
        _refused_small(lambda: RunDir.open(run_dir.path).load_model(), spec)
        for text in (nesting_bomb(kind="yaml"), alias_bomb()):
            config.write_text(text)
            _refused_small(lambda: RunDir(run_dir.path).read_config(), config)
    finally:
        spec.write_bytes(saved)
        config.unlink(missing_ok=True)
