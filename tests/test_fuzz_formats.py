"""Fuzzing the dataset formats: COCO JSON, VOC XML (detection and segmentation), YOLO txt +
data.yaml, the Cityscapes layout.

Each test builds a small valid dataset, breaks one of its files (bytes or structure: wrong
types, missing keys, negative/huge numbers, NaN, boxes outside the image, unknown class names)
and asks :func:`fuzzing.check_reader`'s property of the dataset's construction and of reading
every item: it works, or raises CnnzooError naming a file of the dataset on one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cnnzoo.data.formats.cityscapes import CityscapesSegmentation
from cnnzoo.data.formats.coco import COCODetection
from cnnzoo.data.formats.voc import VOCDetection, VOCSegmentation
from cnnzoo.data.formats.yolo import YOLODetection
from cnnzoo.errors import CnnzooError
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
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]


def _png(path: Path, width: int, height: int, mode: str = "RGB", value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    array = (np.arange(np.prod(shape)) % 200 + value).astype(np.uint8).reshape(shape)
    Image.fromarray(array).save(path)
    return path


def _read_all(dataset) -> int:
    """Every item of ``dataset`` (the per-item checks run when an item is read)."""
    for i in range(len(dataset)):
        if hasattr(dataset, "target"):
            dataset.target(i)
        dataset[i]
    return len(dataset)


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------

COCO = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 20, "height": 15},
        {"id": 2, "file_name": "b.png", "width": 12, "height": 10},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 8], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0.5, 1.5, 4, 4], "area": 16},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}
_COCO_KEYS = ["id", "image_id", "category_id", "bbox", "iscrowd", "file_name", "width",
              "height", "name", "images", "annotations", "categories"]  # fmt: skip


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    _png(root / "images" / "train" / "a.png", 20, 15)
    _png(root / "images" / "train" / "b.png", 12, 10)
    (root / "annotations").mkdir()
    return root


@fuzz_settings(60)
@given(data=st.data())
def test_coco_mutated(coco_root: Path, data) -> None:
    path = coco_root / "annotations" / "instances_train.json"
    doc = data.draw(mutated_tree(COCO, keys=_COCO_KEYS))
    text = json.dumps(doc)
    path.write_bytes(data.draw(mutated_text(text)) if data.draw(st.booleans()) else text.encode())
    check_reader("coco", lambda: _read_all(COCODetection(path)), [str(coco_root)])


def test_coco_bombs_are_refused(coco_root: Path) -> None:
    path = coco_root / "annotations" / "instances_bomb.json"
    for text in (nesting_bomb(), '{"images": [], "annotations": [], "categories": [' +
                 "9" * 5000 + "]}"):  # fmt: skip
        path.write_text(text)
        peak, error = python_peak_mb(lambda: COCODetection(path))
        assert isinstance(error, CnnzooError) and str(path) in str(error), repr(error)
        assert peak < 16


# --------------------------------------------------------------------------------------------
# VOC
# --------------------------------------------------------------------------------------------

_VALID = st.integers(1, 40).map(str)
_NUMBERS = (
    _VALID
    | _VALID
    | st.sampled_from(["0", "-3", "", "nan", "inf", "1e999", "abc", "9" * 400, "2.5", " 7 "])
    | st.integers(-50, 100).map(str)
)
_NAMES = st.sampled_from(["dog", "cat", "person", "Dog", "", "unknown", "<x>", "dog cat"])


@st.composite
def voc_xml(draw: st.DrawFn) -> str:
    """A VOC annotation with drawn values, elements sometimes left out."""

    def tag(name: str, body: str) -> str:
        return "" if draw(st.integers(0, 9)) == 0 else f"<{name}>{body}</{name}>"

    objects = []
    for _ in range(draw(st.integers(0, 3))):
        box = "".join(tag(t, draw(_NUMBERS)) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(
            tag(
                "object",
                tag("name", draw(_NAMES))
                + tag("difficult", draw(st.sampled_from(["0", "1", "true", "x"])))
                + tag("bndbox", box),
            )
        )
    size = tag("width", draw(_NUMBERS)) + tag("height", draw(_NUMBERS))
    filename = tag("filename", draw(st.sampled_from(["a.jpg", "b.jpg", "", "../a.jpg", "x"])))
    return f"<annotation>{filename}{tag('size', size)}{''.join(objects)}</annotation>"


_VOC_XML = (
    "<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height>"
    "</size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin>"
    "<ymin>1</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>"
)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    _png(root / "JPEGImages" / "a.jpg", 40, 30)
    (root / "SegmentationClass").mkdir()
    return root


@fuzz_settings(60)
@given(
    xml=voc_xml() | mutated_text(_VOC_XML) | st.just(_VOC_XML),
    split=mutated_text("a\n") | st.just(b"a\n"),
)
def test_voc_detection_mutated(voc_root: Path, xml, split: bytes) -> None:
    xml_path = voc_root / "Annotations" / "a.xml"
    xml_path.write_bytes(xml.encode() if isinstance(xml, str) else xml)
    (voc_root / "ImageSets" / "Main" / "trainval.txt").write_bytes(split)
    check_reader("voc", lambda: _read_all(VOCDetection(voc_root)), [str(voc_root)])


def _label_png(width: int, height: int, labels: list[int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.resize(np.array(labels, dtype=np.uint8), (height, width))).save(buf, "PNG")
    return buf.getvalue()


_VOC_MASK = _label_png(40, 30, [0, 1, 15, 255])


@fuzz_settings(30)
@given(
    split=mutated_text("a\n") | st.just(b"a\n"),
    mask=mutated_bytes(_VOC_MASK) | st.just(_VOC_MASK),
)
def test_voc_segmentation_mutated(voc_root: Path, split: bytes, mask: bytes) -> None:
    (voc_root / "ImageSets" / "Segmentation" / "train.txt").write_bytes(split)
    (voc_root / "SegmentationClass" / "a.png").write_bytes(mask)
    check_reader("voc", lambda: _read_all(VOCSegmentation(voc_root)), [str(voc_root)])


def test_voc_entity_expansion_is_refused(voc_root: Path) -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l "lol">'
        '<!ENTITY l2 "&l;&l;&l;&l;&l;&l;&l;&l;&l;&l;">]><annotation>&l2;</annotation>'
    )
    (voc_root / "Annotations" / "a.xml").write_text(laughs)
    (voc_root / "ImageSets" / "Main" / "trainval.txt").write_text("a\n")
    with pytest.raises(CnnzooError, match="a.xml:1: DOCTYPE/ENTITY"):
        VOCDetection(voc_root)


# --------------------------------------------------------------------------------------------
# YOLO
# --------------------------------------------------------------------------------------------

DATA_YAML = {"path": ".", "train": "images/train", "val": ["images/train"],
             "names": ["cat", "dog"], "nc": 2}  # fmt: skip
_YOLO_KEYS = ["path", "train", "val", "names", "nc", "download"]
_LABELS = "0 0.5 0.5 0.2 0.3\n1 0.3 0.3 0.1 0.1\n"
_LABEL_VALUES = st.sampled_from(["0", "1", "2", "-1", "0.5", "1e999", "nan", "-0.2", "1.5",
                                 "x", "", "0x1", "1_0"])  # fmt: skip


@st.composite
def label_lines(draw: st.DrawFn) -> bytes:
    """Label lines of drawn values, some with the wrong number of them."""
    lines = [" ".join(draw(st.lists(_LABEL_VALUES, min_size=0, max_size=7)))
             for _ in range(draw(st.integers(0, 4)))]  # fmt: skip
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def yolo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yolo")
    _png(root / "images" / "train" / "a.png", 20, 16)
    _png(root / "images" / "train" / "b.png", 10, 8)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "b.txt").write_text("1 0.5 0.5 1.0 1.0\n")
    return root


@fuzz_settings(60)
@given(data=st.data(), split=st.sampled_from(["train", "val", "nc", "test"]))
def test_yolo_mutated(yolo_root: Path, data, split: str) -> None:
    doc = data.draw(mutated_tree(DATA_YAML, keys=_YOLO_KEYS) | st.just(DATA_YAML))
    text = yaml.safe_dump(doc)
    data_yaml = yolo_root / "data.yaml"
    data_yaml.write_bytes(data.draw(mutated_text(text)) if data.draw(st.booleans()) else
                          text.encode())  # fmt: skip
    labels = data.draw(mutated_text(_LABELS) | label_lines() | st.just(_LABELS.encode()))
    (yolo_root / "labels" / "train" / "a.txt").write_bytes(labels)
    check_reader("yolo", lambda: _read_all(YOLODetection(data_yaml, split)), [str(yolo_root)])


def test_yolo_bombs_are_refused(yolo_root: Path) -> None:
    data_yaml = yolo_root / "bomb.yaml"
    for text in (alias_bomb(), nesting_bomb(kind="yaml"), "names: &a [*a]\ntrain: x\n"):
        data_yaml.write_text(text)
        peak, error = python_peak_mb(lambda: YOLODetection(data_yaml))
        assert isinstance(error, CnnzooError) and str(data_yaml) in str(error), repr(error)
        assert peak < 64


# --------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------

_CS_OPS = ["none", "none", "mask-bytes", "drop-mask", "drop-image", "file-for-folder", "extra-city",
           "rename-mask", "empty-split", "image-bytes"]  # fmt: skip


def _layout_op(op: str, root: Path, image: Path, mask: Path, draw: st.DrawFn) -> None:
    """Break the Cityscapes layout at ``root`` one way (an op the layout no longer allows, such
    as a file in a folder that is now a file, does nothing)."""
    with contextlib.suppress(OSError):
        if op in ("mask-bytes", "image-bytes"):
            target = mask if op == "mask-bytes" else image
            target.write_bytes(draw(mutated_bytes(target.read_bytes())))
        elif op in ("drop-mask", "drop-image"):
            (mask if op == "drop-mask" else image).unlink()
        elif op == "file-for-folder":
            folder = draw(st.sampled_from(["gtFine", "leftImg8bit/train", "gtFine/train"]))
            shutil.rmtree(root / folder, ignore_errors=True)
            (root / folder).write_bytes(b"x")
        elif op == "extra-city":
            _png(root / "leftImg8bit" / "train" / "bonn" / "b_leftImg8bit.png", 4, 4)
        elif op == "rename-mask":
            mask.rename(mask.with_name("a_000_gtFine_color.png"))
        elif op == "empty-split":
            shutil.rmtree(root / "leftImg8bit" / "train", ignore_errors=True)
            (root / "leftImg8bit" / "val").mkdir(parents=True, exist_ok=True)


@fuzz_settings(40)
@given(ops=st.lists(st.sampled_from(_CS_OPS), min_size=1, max_size=3), data=st.data())
def test_cityscapes_mutated(ops: list[str], data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = _png(root / "leftImg8bit" / "train" / "aachen" / "a_000_leftImg8bit.png", 16, 8)
        mask = _png(root / "gtFine" / "train" / "aachen" / "a_000_gtFine_labelIds.png", 16, 8,
                    mode="L", value=7)  # fmt: skip
        for op in ops:
            _layout_op(op, root, image, mask, data.draw)
        check_reader("cityscapes", lambda: _read_all(CityscapesSegmentation(root)), [tmp])
