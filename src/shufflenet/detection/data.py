"""Detection data: PASCAL VOC (one XML per image) or COCO JSON annotations, an images folder and a split list.

Each image is found by the file name its annotation gives (VOC ``<filename>``, COCO ``file_name``), never by
the ``<path>`` recorded in the XML (which points at the annotator's machine). A split list is a CSV with a
``filename`` column (one row per image or per box) or a VOC ImageSets text file (one image stem per line).
Bad annotations are one-line errors naming the file: unparsable or empty annotation files, a box outside its
image or with no area, an unknown class; an image without objects is allowed (only background).
"""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.images import read_image


@dataclass
class Annotation:
    """One image's boxes (x1, y1, x2, y2 in pixels) and class names, and the size the annotation states."""

    filename: str
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    source: str = ""


def text_of(node: ElementTree.Element, tag: str, source: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None or not found.text.strip():
        raise ValueError(f"{source}: <{tag}> is missing or empty; fix the annotation file")
    return found.text.strip()


def read_voc(path: Path) -> Annotation:
    """One PASCAL VOC XML file."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise ValueError(f"{path} is not a readable VOC XML annotation ({error}); fix or remove it") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: no <size>; a VOC annotation gives the image's width and height")
    try:
        annotation = Annotation(text_of(root, "filename", path), int(text_of(size, "width", path)),
                                int(text_of(size, "height", path)), source=str(path))
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            if box is None:
                raise ValueError(f"{path}: an <object> without <bndbox>")
            annotation.boxes.append(tuple(float(text_of(box, tag, path)) for tag in ("xmin", "ymin", "xmax", "ymax")))
            annotation.names.append(text_of(obj, "name", path))
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    return annotation


def read_coco(path: Path) -> list[Annotation]:
    """A COCO detection JSON file (``images``, ``annotations`` with ``bbox`` [x, y, w, h], ``categories``)."""
    try:
        data = json.loads(path.read_text())
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = {i["id"]: Annotation(i["file_name"], int(i["width"]), int(i["height"]), source=str(path))
                  for i in data["images"]}
        for item in data["annotations"]:
            x, y, w, h = (float(v) for v in item["bbox"])
            image = images[item["image_id"]]
            image.boxes.append((x, y, x + w, y + h))
            image.names.append(categories[item["category_id"]])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a readable COCO detection file ({type(error).__name__}: {error})") from None
    return list(images.values())


def read_annotations(location: str | Path) -> dict[str, Annotation]:
    """Annotations by image file name: a folder of VOC XML files, or a COCO JSON file."""
    location = Path(location)
    if location.is_file() and location.suffix == ".json":
        annotations = read_coco(location)
    elif location.is_dir():
        files = sorted(location.glob("*.xml"))
        if not files:
            raise ValueError(f"no VOC XML files in {location}; give the annotations folder or a COCO JSON file")
        annotations = [read_voc(path) for path in files]
    else:
        raise ValueError(f"annotations {location} are neither a folder of VOC XML files nor a COCO JSON file")
    return {a.filename: a for a in annotations}


def read_split(path: str | Path) -> list[str]:
    """Image file names (or stems) of a split: a CSV with a ``filename`` column, or one name per line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split list {path} does not exist")
    text = path.read_text()
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "filename" not in rows[0]:
            raise ValueError(f"{path} has no 'filename' column; a split CSV lists one image per row")
        names = [row["filename"].strip() for row in rows]
    else:
        names = [line.strip().split()[0] for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"split list {path} is empty")
    return list(dict.fromkeys(names))


def check(annotation: Annotation, classes: Sequence[str]) -> None:
    """Boxes inside the image with a positive area, and known classes."""
    for box, name in zip(annotation.boxes, annotation.names):
        x1, y1, x2, y2 = box
        if name not in classes:
            raise ValueError(f"{annotation.source}: unknown class {name!r} (classes: {', '.join(classes)}); give it "
                             f"with --classes or fix the annotation")
        if not (0 <= x1 < x2 <= annotation.width and 0 <= y1 < y2 <= annotation.height):
            raise ValueError(f"{annotation.source}: box {box} of {name!r} lies outside the "
                             f"{annotation.width}x{annotation.height} image or has no area; fix the annotation")


class DetectionSet(Dataset):
    """(image as a float tensor in [0, 1], target dict with ``boxes``, ``labels`` 1..K, ``image_id``) for the
    images of a split; labels count from 1 (0 is the background in torchvision's detectors)."""

    def __init__(self, images: str | Path, annotations: str | Path, split: str | Path | None,
                 classes: Sequence[str] | None = None, flip: bool = False) -> None:
        self.images = Path(images)
        if not self.images.is_dir():
            raise ValueError(f"images folder {self.images} does not exist")
        by_name = read_annotations(annotations)
        if split is None:
            wanted = sorted(by_name)
        else:
            stems = {Path(name).stem: name for name in by_name}
            wanted = [name if name in by_name else stems.get(name, name) for name in read_split(split)]
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise ValueError(f"no annotation for {len(missing)} image(s) of the split, e.g. {missing[0]}; check the "
                             f"split list against the annotations")
        self.annotations = [by_name[name] for name in wanted]
        self.classes = list(classes) if classes else sorted({n for a in self.annotations for n in a.names})
        if not self.classes:
            raise ValueError("the annotations name no class at all; give --classes")
        for annotation in self.annotations:
            check(annotation, self.classes)
            if not (self.images / annotation.filename).is_file():
                raise ValueError(f"image {annotation.filename} (from {annotation.source}) is not in {self.images}")
        self.flip = flip

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        annotation = self.annotations[index]
        image = read_image(self.images / annotation.filename)  # a ValueError names an unreadable file
        if image.size != (annotation.width, annotation.height):
            raise ValueError(f"{annotation.filename} is {image.size[0]}x{image.size[1]} but {annotation.source} "
                             f"says {annotation.width}x{annotation.height}; fix the annotation")
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        boxes = torch.tensor(annotation.boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.classes.index(n) + 1 for n in annotation.names], dtype=torch.int64)
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(2)
            boxes = torch.stack([annotation.width - boxes[:, 2], boxes[:, 1], annotation.width - boxes[:, 0],
                                 boxes[:, 3]], 1)
        return pixels, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(index)}


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = zip(*batch)
    return list(images), list(targets)


@dataclass(frozen=True)
class DetectionLayout:
    """Where a detection data folder keeps its images, annotations and split lists."""

    images: Path
    annotations: Path
    train_split: Path | None
    test_split: Path | None


SPLIT_FOLDERS = (".", "data", "splits", "ImageSets/Main", "ImageSets")
SPLIT_NAMES = {"train": ("trainval", "train"), "test": ("test", "val")}


def find_split(root: Path, split: str) -> Path | None:
    """The first split list named for ``split`` (e.g. ``train.txt``, ``train_labels.csv``) in the usual places."""
    for folder in SPLIT_FOLDERS:
        for stem in SPLIT_NAMES[split]:
            found = sorted(p for p in (root / folder).glob(f"{stem}*") if p.suffix in (".txt", ".csv") and p.is_file())
            if found:
                return found[0]
    return None


def find_layout(data_dir: str | Path, annotations: str | Path | None = None, train_split: str | Path | None = None,
                test_split: str | Path | None = None) -> DetectionLayout:
    """The layout of ``data_dir``, from the folder alone: a PASCAL VOC folder (``JPEGImages/``, ``Annotations/``,
    ``ImageSets/Main/trainval.txt`` or ``train.txt``, ``test.txt`` or ``val.txt``), or ``images/`` beside
    ``annotations/`` (VOC XML files, or a COCO JSON file) and split lists (``train*.csv|txt``, ``test*.csv|txt``
    in the folder, ``data/`` or ``splits/``). Anything given explicitly wins."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"detection data folder {root} does not exist")
    images = next((root / name for name in ("JPEGImages", "images") if (root / name).is_dir()), root)
    if annotations is None:
        folder = next((root / name for name in ("Annotations", "annotations") if (root / name).is_dir()), None)
        coco = sorted((folder or root).glob("*.json"))
        annotations = coco[0] if coco and not any((folder or root).glob("*.xml")) else folder
        if annotations is None:
            raise ValueError(f"no annotations in {root}: expected Annotations/ or annotations/ (VOC XML files, or a "
                             f"COCO JSON file); give --annotations")
    train = Path(train_split) if train_split else find_split(root, "train")
    if train is None:
        raise ValueError(f"no training split list in {root} (looked for trainval*/train* .txt or .csv in "
                         f"{', '.join(SPLIT_FOLDERS)}); give --train-split")
    test = Path(test_split) if test_split else find_split(root, "test")
    return DetectionLayout(images, Path(annotations), train, test)
