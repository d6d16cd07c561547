"""Detection data: COCO / VOC / YOLO loaders, conversion, box-aware transforms, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.convert import convert, write_coco, write_voc, write_yolo
from cnnzoo.data.det_sources import parse_det_data
from cnnzoo.data.detection import (
    DropReport,
    check_boxes,
    detection_collate,
    detection_transform,
)
from cnnzoo.data.formats.coco import COCODetection
from cnnzoo.data.formats.voc import VOC_DET_CLASSES, VOCDetection
from cnnzoo.data.formats.yolo import YOLODetection, yolo_label_path
from cnnzoo.errors import CnnzooError


def _image(path: Path, width: int, height: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(width * 7 + height)
    array = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    array[..., 0] = value
    Image.fromarray(array).save(path)
    return path


def _voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin>"
        f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
        for n, d, a, b, c, e in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{objs}</annotation>"
    )


def _voc(root: Path, objects_a: list[tuple] | None = None) -> Path:
    """Two images: a.jpg (40x30; a dog on the whole image, a difficult cat), b.jpg (empty)."""
    if objects_a is None:
        objects_a = [("dog", 0, 1, 1, 40, 30), ("cat", 1, 5, 6, 15, 20)]
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    _image(root / "JPEGImages" / "a.jpg", 40, 30)
    _image(root / "JPEGImages" / "b.jpg", 24, 16)
    (root / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", 40, 30, objects_a))
    (root / "Annotations" / "b.xml").write_text(_voc_xml("b.jpg", 24, 16, []))
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\n")
    return root


def _coco(root: Path, annotations: list[dict], width: int = 40, height: int = 30) -> Path:
    """``root/annotations/instances_train.json`` with images in ``root/images/train``."""
    _image(root / "images" / "train" / "x.png", width, height)
    _image(root / "images" / "train" / "y.png", 20, 10)
    doc = {
        "images": [
            {"id": 10, "file_name": "x.png", "width": width, "height": height},
            {"id": 11, "file_name": "y.png", "width": 20, "height": 10},
        ],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    path = root / "annotations" / "instances_train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


def _ann(aid: int, cid: int, bbox: list[float], image_id: int = 10, crowd: int = 0) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": cid, "bbox": bbox, "iscrowd": crowd}


def _yolo(root: Path, lines_a: str = "1 0.5 0.5 0.2 0.5\n0 0.1 0.1 0.2 0.2\n") -> Path:
    _image(root / "images" / "train" / "a.png", 50, 40)
    _image(root / "images" / "train" / "b.png", 30, 20)  # no label file: no objects
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(lines_a)
    (root / "data.yaml").write_text("train: images/train\nnames:\n  0: cat\n  1: dog\n")
    return root / "data.yaml"


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def test_voc_detection_boxes_difficult_and_empty_image(tmp_path: Path) -> None:
    ds = VOCDetection(_voc(tmp_path / "voc"))
    assert len(ds) == 2 and ds.class_names == list(VOC_DET_CLASSES)
    image, target = ds[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 30, 40)
    # 1-based inclusive -> 0-based continuous; the dog touches every border of the image.
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[0.0, 0.0, 40.0, 30.0], [4.0, 5.0, 15.0, 20.0]]
    assert target["labels"].tolist() == [VOC_DET_CLASSES.index(n) for n in ("dog", "cat")]
    assert target["labels"].dtype == torch.int64
    assert target["difficult"].tolist() == [False, True]
    assert ds.report.clipped == 0 and ds.report.outside == 0
    _, empty = ds[1]
    assert tuple(empty["boxes"].shape) == (0, 4) and tuple(empty["labels"].shape) == (0,)

    easy = VOCDetection(tmp_path / "voc", keep_difficult=False)
    assert easy.target(0)["labels"].tolist() == [VOC_DET_CLASSES.index("dog")]
    assert easy.report.difficult == 1


def test_coco_detection_category_mapping_crowd_and_empty(tmp_path: Path) -> None:
    path = _coco(
        tmp_path,
        [_ann(1, 7, [2, 3, 10, 5]), _ann(2, 3, [0, 0, 4, 4]), _ann(3, 3, [1, 1, 2, 2], crowd=1)],
    )
    ds = COCODetection(path)
    assert ds.images_dir == tmp_path / "images" / "train"
    assert ds.class_names == ["cat", "dog"]  # sorted category id order: 3, 7
    image, target = ds[0]
    assert tuple(image.shape) == (3, 30, 40)
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0], [0.0, 0.0, 4.0, 4.0]]
    assert target["labels"].tolist() == [1, 0]
    assert ds.report.crowd == 1
    _, empty = ds[1]
    assert tuple(empty["boxes"].shape) == (0, 4) and empty["labels"].dtype == torch.int64


def test_yolo_detection_normalised_boxes_and_missing_txt(tmp_path: Path) -> None:
    ds = YOLODetection(_yolo(tmp_path / "y"))
    assert ds.class_names == ["cat", "dog"] and len(ds) == 2
    _, target = ds[0]
    expected = torch.tensor([[20.0, 10.0, 30.0, 30.0], [0.0, 0.0, 10.0, 8.0]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [1, 0]
    image, empty = ds[1]
    assert tuple(image.shape) == (3, 20, 30) and len(empty["boxes"]) == 0
    assert yolo_label_path(Path("/d/images/x/images/t/a.jpg")) == Path("/d/images/x/labels/t/a.txt")


def test_scenes_coco_boxes_match_mask_extents(tmp_path: Path) -> None:
    from cnnzoo.data.scenes import generate_scenes

    root = generate_scenes(tmp_path / "scenes", n_train=4, n_test=2, size=32)
    ds = COCODetection(root / "annotations" / "instances_train.json")
    assert ds.images_dir == root / "images" / "train" and len(ds) == 4
    assert len(ds.class_names) == 10
    image, target = ds[0]
    assert tuple(image.shape) == (3, 32, 32)
    mask = np.array(Image.open(root / "masks" / "train" / "00000.png"))
    present = sorted(int(v) for v in np.unique(mask) if v)
    assert sorted({int(v) + 1 for v in target["labels"]}) == present
    for cls in present:  # the union of one class's boxes = the extent of its mask pixels
        ys, xs = np.nonzero(mask == cls)
        boxes = target["boxes"][target["labels"] == cls - 1]
        union = [
            boxes[:, 0].min().item(),
            boxes[:, 1].min().item(),
            boxes[:, 2].max().item(),
            boxes[:, 3].max().item(),
        ]
        assert union == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def test_round_trip_voc_coco_yolo_coco_voc(tmp_path: Path) -> None:
    voc = VOCDetection(_voc(tmp_path / "voc"))
    coco = COCODetection(write_coco(voc, tmp_path / "c1" / "annotations" / "instances_t.json"))
    yolo = YOLODetection(write_yolo(coco, tmp_path / "y", "train"))
    coco2 = COCODetection(write_coco(yolo, tmp_path / "c2" / "ann.json"))
    voc2 = VOCDetection(write_voc(coco2, tmp_path / "voc2", "trainval"))
    for ds in (coco, yolo, coco2, voc2):
        assert ds.class_names == voc.class_names and len(ds) == len(voc)
        for i in range(len(voc)):
            want, got = voc.target(i), ds.target(i)
            torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
            assert got["labels"].tolist() == want["labels"].tolist()
        image, _ = ds[0]  # the images travelled with the annotations
        assert torch.equal(image, voc[0][0])
    # COCO and YOLO have no "difficult"; VOC -> VOC keeps it.
    assert voc2.target(0)["difficult"].tolist() == [False, False]
    voc3 = VOCDetection(write_voc(voc, tmp_path / "voc3", "trainval"))
    assert voc3.target(0)["difficult"].tolist() == [False, True]
    assert not (tmp_path / "voc2" / "classes.txt").exists()  # VOC's own 20 classes


def test_convert_specs_keeps_other_class_names(tmp_path: Path) -> None:
    yaml_path = _yolo(tmp_path / "y")
    out = convert(f"yolo:{yaml_path}", f"voc:{tmp_path / 'v'}", split="train")
    voc = VOCDetection(out, split="train")
    assert voc.class_names == ["cat", "dog"]
    # VOC rounds to whole pixels: 0.1 * 50 -> 5, 0.2 * 40 = 8.
    assert voc.target(0)["boxes"].tolist() == [[20.0, 10.0, 30.0, 30.0], [0.0, 0.0, 10.0, 8.0]]
    json_path = convert(f"voc:{out}", f"coco:{tmp_path / 'c' / 'a.json'}", split="train")
    assert COCODetection(json_path).target(0)["labels"].tolist() == [1, 0]


def test_parse_det_data() -> None:
    assert parse_det_data("COCO:/a/b.json") == ("coco", "/a/b.json")
    assert parse_det_data("scenes") == ("scenes", "")
    assert parse_det_data("yolo: x/data.yaml") == ("yolo", "x/data.yaml")
    with pytest.raises(CnnzooError, match="coco:ANN.json"):
        parse_det_data("kitti:/x")
    with pytest.raises(CnnzooError, match="no path"):
        parse_det_data("voc:")


# --------------------------------------------------------------------------------------------
# Transforms and batching
# --------------------------------------------------------------------------------------------


def _seed_where_flip(flip: bool) -> int:
    for seed in range(100):
        if bool(torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5) == flip:
            return seed
    raise AssertionError("no seed found")


def _painted_extent(image: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(image[0] > 127, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("flip", [False, True])
def test_detection_transform_keeps_boxes_on_their_pixels(flip: bool) -> None:
    image = torch.zeros((3, 20, 30), dtype=torch.uint8)
    image[:, 4:10, 5:12] = 255  # the object: x 5..11, y 4..9 -> box [5, 4, 12, 10]
    target = {"boxes": torch.tensor([[5.0, 4.0, 12.0, 10.0]]), "labels": torch.tensor([3])}
    gen = torch.Generator().manual_seed(_seed_where_flip(flip))
    out, t = detection_transform(image, target, size=(40, 60), hflip=True, generator=gen)
    assert tuple(out.shape) == (3, 40, 60) and out.dtype == torch.uint8
    box = [round(v, 4) for v in t["boxes"][0].tolist()]
    assert box == _painted_extent(out)
    assert box == ([36, 8, 50, 20] if flip else [10, 8, 24, 20])
    assert t["labels"].tolist() == [3]


def test_detection_transform_drops_degenerate_boxes_like_sanitize() -> None:
    image = torch.zeros((3, 40, 40), dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 12.0, 11.0]]),
        "labels": torch.tensor([1, 2]),
        "difficult": torch.tensor([False, True]),
    }
    _, kept = detection_transform(image, target)  # no resize: both are >= 1 px
    assert len(kept["boxes"]) == 2
    _, t = detection_transform(image, target, size=10)  # the 2x1 box becomes 0.5x0.25
    assert t["boxes"].tolist() == [[0.0, 0.0, 5.0, 5.0]]
    assert t["labels"].tolist() == [1] and t["difficult"].tolist() == [False]


def test_detection_collate_pads_bottom_right() -> None:
    a = torch.full((3, 10, 20), 7, dtype=torch.uint8)
    b = torch.full((3, 15, 12), 9, dtype=torch.uint8)
    ta = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    tb = {"boxes": torch.tensor([[1.0, 1.0, 2.0, 2.0]]), "labels": torch.tensor([0])}
    images, targets = detection_collate([(a, ta), (b, tb)])
    assert tuple(images.shape) == (2, 3, 15, 20) and images.dtype == torch.uint8
    assert torch.equal(images[0, :, :10, :20], a) and int(images[0, :, 10:].max()) == 0
    assert torch.equal(images[1, :, :15, :12], b) and int(images[1, :, :, 12:].max()) == 0
    assert targets[0] is ta and targets[1] is tb
    with pytest.raises(CnnzooError, match="channel"):
        detection_collate([(a, ta), (b[:1], tb)])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_zero_size_boxes_are_errors_naming_the_file(tmp_path: Path) -> None:
    _voc(tmp_path / "voc", [("dog", 0, 10, 5, 8, 9)])  # xmax < xmin
    with pytest.raises(CnnzooError, match=r"a\.xml.*zero or negative"):
        VOCDetection(tmp_path / "voc")
    path = _coco(tmp_path / "c", [_ann(4, 7, [1, 1, 0, 5])])
    with pytest.raises(CnnzooError, match=r"instances_train\.json.*annotation id 4.*zero"):
        COCODetection(path)
    yaml_path = _yolo(tmp_path / "y", "0 0.5 0.5 0.0 0.1\n")
    with pytest.raises(CnnzooError, match=r"a\.txt:1.*zero or negative"):
        YOLODetection(yaml_path)
    with pytest.raises(CnnzooError, match="here.txt:3"):
        check_boxes([[5.0, 5.0, 5.0, 9.0]], 10, 10, "here.txt:3")


def test_boxes_outside_the_image_are_clipped_or_dropped_and_counted(tmp_path: Path) -> None:
    path = _coco(
        tmp_path,
        [_ann(1, 7, [100, 5, 5, 5]), _ann(2, 3, [30, 20, 20, 20]), _ann(3, 3, [1, 1, 2, 2])],
    )
    ds = COCODetection(path)
    assert ds.report.outside == 1 and ds.report.clipped == 1 and ds.report.dropped == 1
    assert ds.target(0)["boxes"].tolist() == [[30.0, 20.0, 40.0, 30.0], [1.0, 1.0, 3.0, 3.0]]
    assert "annotation id 1" in str(ds.report)
    report = DropReport()
    boxes, keep = check_boxes([[-5.0, 2.0, 4.0, 6.0]], 10, 10, "f", report)
    assert boxes.tolist() == [[0.0, 2.0, 4.0, 6.0]] and keep.tolist() == [True]
    assert report.clipped == 1


def test_unknown_coco_category_names_annotation_id(tmp_path: Path) -> None:
    path = _coco(tmp_path, [_ann(1, 7, [1, 1, 2, 2]), _ann(42, 99, [1, 1, 2, 2])])
    with pytest.raises(CnnzooError, match=r"instances_train\.json.*annotation id 42.*99"):
        COCODetection(path)


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n "images": [],\n "annotations": [,]\n}')
    with pytest.raises(CnnzooError, match=r"bad\.json:3: malformed JSON"):
        COCODetection(path)


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", r"a\.txt:2: 4 values"),
        ("0 0.5 0.5 0.2 0.2\n\n7 0.5 0.5 0.2 0.2\n", r"a\.txt:3: class 7"),
        ("x 0.5 0.5 0.2 0.2\n", r"a\.txt:1: class 'x'"),
        ("0 0.5 abc 0.2 0.2\n", r"a\.txt:1: .*not numbers"),
    ],
)
def test_malformed_yolo_line_names_file_and_line(tmp_path: Path, lines: str, match: str) -> None:
    with pytest.raises(CnnzooError, match=match):
        YOLODetection(_yolo(tmp_path / "y", lines))


def test_xml_with_doctype_is_rejected(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    bomb = '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "xx">]>\n' + _voc_xml(
        "a.jpg", 40, 30, []
    )
    (root / "Annotations" / "a.xml").write_text(bomb)
    with pytest.raises(CnnzooError, match=r"a\.xml:2: DOCTYPE"):
        VOCDetection(root)
    (root / "Annotations" / "a.xml").write_text("<annotation><size>\n</annotation>")
    with pytest.raises(CnnzooError, match=r"a\.xml:2: malformed XML"):
        VOCDetection(root)


def test_coco_boxes_given_as_xyxy_are_detected(tmp_path: Path) -> None:
    # [x1, y1, x2, y2] boxes: as [x, y, w, h] the first runs past the 40x30 image.
    path = _coco(tmp_path / "a", [_ann(1, 7, [20, 10, 38, 28]), _ann(2, 3, [2, 3, 10, 12])])
    with pytest.raises(CnnzooError, match=r"instances_train\.json.*annotation id 1.*x, y, width"):
        COCODetection(path)
    # The same out-of-image box among boxes that cannot be xyxy is clipped, not refused.
    path = _coco(tmp_path / "b", [_ann(1, 7, [20, 10, 38, 28]), _ann(2, 3, [12, 3, 5, 5])])
    assert COCODetection(path).report.clipped == 1
