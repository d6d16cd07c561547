"""Data: IDX reading, Fashion-MNIST lookup/download/loading, the mini set and image folders
(batched transforms: test_data_transforms.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import fashion_mnist as fm
from cnnzoo.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
    load_fashion_mnist_mini,
    read_idx,
    write_idx,
)
from cnnzoo.data.folder import (
    ImageFolderDataset,
    image_folder_splits,
    load_image,
    scan_image_folder,
)
from cnnzoo.errors import CnnzooError

# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file written by hand, independent of write_idx."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_reads_handwritten_uint8_file(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(array, 0x08))
    out = read_idx(path)
    assert out.dtype == torch.uint8
    assert out.shape == (2, 3, 4)
    assert torch.equal(out, torch.from_numpy(array))


def test_read_idx_converts_big_endian_int32_and_float32(tmp_path: Path) -> None:
    ints = np.array([1, -2, 70000], dtype=np.int32)
    floats = np.array([[0.5, -1.25]], dtype=np.float32)
    (tmp_path / "i").write_bytes(idx_bytes(ints, 0x0C))
    (tmp_path / "f").write_bytes(idx_bytes(floats, 0x0D))
    assert read_idx(tmp_path / "i").tolist() == [1, -2, 70000]
    assert read_idx(tmp_path / "f").tolist() == [[0.5, -1.25]]


def test_read_idx_reads_gzip_by_content_not_name(tmp_path: Path) -> None:
    array = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "labels.gz").write_bytes(gzip.compress(idx_bytes(array, 0x08)))
    (tmp_path / "labels").write_bytes(gzip.compress(idx_bytes(array, 0x08)))
    assert read_idx(tmp_path / "labels.gz").tolist() == [3, 1, 4, 1, 5]
    assert read_idx(tmp_path / "labels").tolist() == [3, 1, 4, 1, 5]


def test_write_idx_round_trips_and_is_reproducible(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert torch.equal(read_idx(tmp_path / "a.gz"), torch.from_numpy(array))
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_read_idx_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-magic-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(CnnzooError, match=r"bad-magic-idx1-ubyte.*magic"):
        read_idx(path)


def test_read_idx_truncated_data_names_the_file(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8), 0x08)
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(data[:-100])
    with pytest.raises(CnnzooError, match=r"short-idx3-ubyte.*truncated"):
        read_idx(path)


def test_read_idx_truncated_header_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "header-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big"))
    with pytest.raises(CnnzooError, match=r"header-idx3-ubyte.*truncated"):
        read_idx(path)


def test_read_idx_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    data = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32), 0x0C))
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnzooError, match=r"cut-idx1-ubyte.gz.*corrupt or truncated"):
        read_idx(path)


def test_read_idx_extra_bytes_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "long-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8), 0x08) + b"\x00")
    with pytest.raises(CnnzooError, match=r"long-idx1-ubyte.*too long"):
        read_idx(path)


def test_read_idx_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match=r"nothing-here.*does not exist"):
        read_idx(tmp_path / "nothing-here")


# --------------------------------------------------------------------------------------------
# Fashion-MNIST: lookup, download, loading
# --------------------------------------------------------------------------------------------


def make_fake_fashion(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    """Four tiny valid Fashion-MNIST files in ``folder``; pixel value = the folder's marker."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = len(folder.name) % 256
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images_stem, labels_stem = fm.SPLIT_FILES[split]
        write_idx(folder / (images_stem + suffix), np.full((n, 28, 28), marker, np.uint8))
        write_idx(folder / (labels_stem + suffix), (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point the system and cache locations at empty temp folders and unset $CNNZOO_DATA."""
    paths = {
        "system": tmp_path / "system" / "fashion-mnist",
        "cache": tmp_path / "cache" / "fashion-mnist",
        "env": tmp_path / "env",
        "arg": tmp_path / "arg",
    }
    monkeypatch.setattr(fm, "SYSTEM_DIR", paths["system"])
    monkeypatch.setattr(fm, "CACHE_DIR", paths["cache"])
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    return paths


def test_find_returns_none_when_nothing_is_installed(isolated: dict[str, Path]) -> None:
    assert find_fashion_mnist() is None


def test_data_dir_beats_env_and_system(
    isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("arg", "env", "system", "cache"):
        make_fake_fashion(isolated[key])
    monkeypatch.setenv(fm.ENV_VAR, str(isolated["env"]))
    assert find_fashion_mnist(isolated["arg"]) == isolated["arg"]


def test_env_beats_system(isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_fashion(isolated["env"])
    make_fake_fashion(isolated["system"])
    monkeypatch.setenv(fm.ENV_VAR, str(isolated["env"]))
    assert find_fashion_mnist() == isolated["env"]


def test_env_may_name_a_data_root_with_a_fashion_mnist_folder(
    isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fake_fashion(isolated["env"] / "fashion-mnist", gz=False)
    make_fake_fashion(isolated["system"])
    monkeypatch.setenv(fm.ENV_VAR, str(isolated["env"]))
    assert find_fashion_mnist() == isolated["env"] / "fashion-mnist"


def test_env_without_files_falls_through_to_system(
    isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated["env"].mkdir()
    make_fake_fashion(isolated["system"])
    monkeypatch.setenv(fm.ENV_VAR, str(isolated["env"]))
    assert find_fashion_mnist() == isolated["system"]


def test_system_beats_cache_and_cache_comes_last(isolated: dict[str, Path]) -> None:
    make_fake_fashion(isolated["cache"])
    assert find_fashion_mnist() == isolated["cache"]
    make_fake_fashion(isolated["system"])
    assert find_fashion_mnist() == isolated["system"]


def test_folder_missing_one_file_is_not_found(isolated: dict[str, Path]) -> None:
    make_fake_fashion(isolated["system"])
    (isolated["system"] / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_fashion_mnist() is None


def test_explicit_data_dir_without_files_raises_naming_it(isolated: dict[str, Path]) -> None:
    isolated["arg"].mkdir()
    make_fake_fashion(isolated["system"])
    expected = re.escape(f"{isolated['arg']} does not hold Fashion-MNIST")
    with pytest.raises(CnnzooError, match=expected):
        find_fashion_mnist(isolated["arg"])


def test_load_from_data_dir_gives_uint8_images_and_int64_labels(
    isolated: dict[str, Path],
) -> None:
    make_fake_fashion(isolated["arg"], n_train=20, n_test=10)
    images, labels = load_fashion_mnist("train", isolated["arg"])
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (20,) and labels.dtype == torch.int64
    assert load_fashion_mnist("test", isolated["arg"])[0].shape == (10, 1, 28, 28)


def test_load_rejects_unknown_split() -> None:
    with pytest.raises(CnnzooError, match=r"'validation'.*'train' or 'test'"):
        load_fashion_mnist("validation")


def test_load_rejects_images_of_the_wrong_shape(isolated: dict[str, Path]) -> None:
    make_fake_fashion(isolated["arg"])
    write_idx(isolated["arg"] / "train-images-idx3-ubyte.gz", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(CnnzooError, match=r"train-images-idx3-ubyte.gz.*28, 28"):
        load_fashion_mnist("train", isolated["arg"])


def test_load_without_download_says_how_to_install(isolated: dict[str, Path]) -> None:
    with pytest.raises(CnnzooError, match=r"apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", download=False)


def offline(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_offline_download_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CnnzooError) as info:
        download_fashion_mnist(tmp_path / "cache")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "CNNZOO_DATA" in message
    assert "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []  # no half-written files


def test_load_downloads_into_the_cache_when_nothing_is_found(
    isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CnnzooError, match=r"could not download.*apt-get"):
        load_fashion_mnist("test")
    assert isolated["cache"].is_dir()


def test_download_checks_md5_and_writes_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_fake_fashion(tmp_path / "source")
    payloads = {name: (source / name).read_bytes() for name in fm.RESOURCES}
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in payloads.items()}
    monkeypatch.setattr(fm, "RESOURCES", md5s)
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float = 0) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO(payloads[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    cache = download_fashion_mnist(tmp_path / "cache")
    assert sorted(p.name for p in cache.iterdir()) == sorted(md5s)
    assert find_fashion_mnist(cache) == cache
    assert all(url.startswith(fm.MIRRORS[0]) for url in requested)
    requested.clear()
    download_fashion_mnist(tmp_path / "cache")  # already complete: nothing fetched
    assert requested == []


def test_download_rejects_a_corrupt_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=0: io.BytesIO(b"junk"))
    with pytest.raises(CnnzooError, match=r"md5"):
        download_fashion_mnist(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# --------------------------------------------------------------------------------------------
# The real dataset (installed in CI: must not be skipped) and the bundled mini set
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {split: load_fashion_mnist(split, download=False) for split in ("train", "test")}


@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist_has_official_shapes_and_balanced_classes(
    real: dict[str, tuple[torch.Tensor, torch.Tensor]], split: str, n: int
) -> None:
    images, labels = real[split]
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [n // 10] * 10


def test_class_names_are_the_official_ten() -> None:
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.parametrize(("split", "per_class"), [("train", 500), ("test", 100)])
def test_mini_set_is_balanced(split: str, per_class: int) -> None:
    images, labels = load_fashion_mnist_mini(split)
    assert images.shape == (10 * per_class, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10


@pytest.mark.parametrize("split", ["train", "test"])
def test_mini_set_is_a_real_subset_of_the_same_split(
    real: dict[str, tuple[torch.Tensor, torch.Tensor]], split: str
) -> None:
    mini_images, mini_labels = load_fashion_mnist_mini(split)
    full_images, full_labels = real[split]
    flat = full_images.flatten(1)
    for i in (0, 1, len(mini_images) // 2, len(mini_images) - 1):
        matches = (flat == mini_images[i].flatten()).all(dim=1).nonzero().flatten()
        assert len(matches) >= 1, f"mini {split} image {i} is not in the full {split} set"
        assert mini_labels[i] in full_labels[matches]


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """bird: RGB PNG + JPEG + nested upper-case PNG; cat: RGBA, L, P; dog: 16-bit, CMYK, webp."""
    root = tmp_path / "images"
    rgb = Image.new("RGB", (40, 30), (200, 10, 10))
    save(root / "bird" / "a.png", rgb)
    save(root / "bird" / "b.jpg", Image.new("RGB", (20, 50), (0, 128, 255)))
    save(root / "bird" / "nested" / "c.PNG", rgb)
    save(root / "cat" / "d.png", Image.new("RGBA", (16, 16), (255, 0, 0, 0)))
    save(root / "cat" / "e.png", Image.new("L", (28, 28), 77))
    save(root / "cat" / "f.gif", Image.new("RGB", (33, 17), (0, 255, 0)).convert("P"))
    (root / "cat" / "notes.txt").write_text("not an image")
    save(root / "cat" / ".hidden.png", rgb)
    sixteen = Image.fromarray(np.full((10, 12), 65535, dtype=np.uint16))
    save(root / "dog" / "g.tif", sixteen)
    save(root / "dog" / "h.jpeg", Image.new("CMYK", (24, 24), (0, 0, 0, 0)))
    save(root / "dog" / "i.WEBP", rgb)
    return root


def test_scan_finds_sorted_classes_and_labels(folder: Path) -> None:
    samples, classes = scan_image_folder(folder)
    assert classes == ["bird", "cat", "dog"]
    names = {p.name: label for p, label in samples}
    assert names == {
        "a.png": 0,
        "b.jpg": 0,
        "c.PNG": 0,
        "d.png": 1,
        "e.png": 1,
        "f.gif": 1,
        "g.tif": 2,
        "h.jpeg": 2,
        "i.WEBP": 2,
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_dataset_gives_fixed_size_uint8_images_and_labels(folder: Path, channels: int) -> None:
    dataset = ImageFolderDataset(folder, image_size=(24, 32), channels=channels)
    assert len(dataset) == 9 and dataset.classes == ["bird", "cat", "dog"]
    assert dataset.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (channels, 24, 32) and image.dtype == torch.uint8
        assert label == dataset.targets[i]


def test_dataset_accepts_a_sample_list_and_an_int_size(folder: Path) -> None:
    samples, classes = scan_image_folder(folder)
    dataset = ImageFolderDataset(samples[:2], image_size=8, channels=3, classes=classes)
    assert dataset[1][0].shape == (3, 8, 8) and dataset.classes == classes


def test_transparent_pixels_become_white(folder: Path) -> None:
    image = load_image(folder / "cat" / "d.png", channels=3)
    assert image.shape == (3, 16, 16)
    assert torch.all(image == 255)


def test_sixteen_bit_grayscale_keeps_its_range(folder: Path) -> None:
    image = load_image(folder / "dog" / "g.tif", channels=1)
    assert image.shape == (1, 10, 12) and torch.all(image == 255)


def test_gray_to_rgb_repeats_and_rgb_to_gray_uses_luma(folder: Path) -> None:
    gray = load_image(folder / "cat" / "e.png", channels=3)
    assert torch.all(gray == 77)
    red = load_image(folder / "bird" / "a.png", channels=1)
    assert red.shape == (1, 30, 40)
    assert int(red[0, 0, 0]) == round(200 * 0.299 + 10 * 0.587 + 10 * 0.114)


def test_palette_gif_decodes_to_its_colour(folder: Path) -> None:
    image = load_image(folder / "cat" / "f.gif", channels=3)
    assert image[:, 0, 0].tolist() == [0, 255, 0]


def test_text_file_named_png_raises_naming_it(folder: Path) -> None:
    fake = folder / "cat" / "fake.png"
    fake.write_text("hello, I am text")
    dataset = ImageFolderDataset(folder, image_size=16)
    index = [p for p, _ in dataset.samples].index(fake)
    with pytest.raises(CnnzooError, match=r"fake.png.*cannot be decoded"):
        dataset[index]


def test_truncated_jpeg_raises_naming_it(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "broken.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CnnzooError, match=r"broken.jpg.*cannot be decoded"):
        load_image(path, channels=3)


def test_load_image_rejects_bad_channels_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match=r"channels=2"):
        load_image(tmp_path / "x.png", channels=2)
    with pytest.raises(CnnzooError, match=r"x.png does not exist"):
        load_image(tmp_path / "x.png", channels=3)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match=r"nowhere does not exist"):
        scan_image_folder(tmp_path / "nowhere")


def test_folder_without_class_folders_is_an_error(tmp_path: Path) -> None:
    save(tmp_path / "flat" / "a.png", Image.new("RGB", (4, 4)))
    with pytest.raises(CnnzooError, match=r"flat has no class sub-folders"):
        scan_image_folder(tmp_path / "flat")


def test_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(CnnzooError, match=r"empty has no images"):
        scan_image_folder(tmp_path / "empty")


def test_empty_class_folder_is_an_error(folder: Path) -> None:
    (folder / "eel").mkdir()
    with pytest.raises(CnnzooError, match=r"without images: \['eel'\]"):
        scan_image_folder(folder)


def make_classes(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        for i in range(count):
            save(root / name / f"{i:03d}.png", Image.new("L", (4, 4), i))


def test_train_and_val_folders_are_used_as_given(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"a": 3, "b": 2})
    make_classes(tmp_path / "val", {"b": 1})
    splits, classes = image_folder_splits(tmp_path)
    assert classes == ["a", "b"]
    assert set(splits) == {"train", "val"}
    assert len(splits["train"]) == 5
    assert [label for _, label in splits["val"]] == [1]


def test_a_test_folder_serves_as_validation(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"a": 2, "b": 2})
    make_classes(tmp_path / "test", {"a": 1, "b": 1})
    splits, _ = image_folder_splits(tmp_path)
    assert set(splits) == {"train", "val", "test"}
    assert splits["val"] == splits["test"] and len(splits["test"]) == 2


def test_val_class_unknown_to_train_is_an_error(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"a": 2})
    make_classes(tmp_path / "val", {"zebra": 1})
    with pytest.raises(CnnzooError, match=r"zebra"):
        image_folder_splits(tmp_path)


def test_seeded_split_is_deterministic_disjoint_and_stratified(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 30, "b": 20, "c": 1})
    first, classes = image_folder_splits(tmp_path, val_fraction=0.1, seed=3)
    again, _ = image_folder_splits(tmp_path, val_fraction=0.1, seed=3)
    other, _ = image_folder_splits(tmp_path, val_fraction=0.1, seed=4)
    assert classes == ["a", "b", "c"]
    assert first == again and first["val"] != other["val"]
    train, val = set(first["train"]), set(first["val"])
    assert not train & val and len(train | val) == 51
    assert sorted(label for _, label in val) == [0, 0, 0, 1, 1]


def test_split_rejects_bad_fraction(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 3})
    with pytest.raises(CnnzooError, match=r"val_fraction 1.5"):
        image_folder_splits(tmp_path, val_fraction=1.5)
