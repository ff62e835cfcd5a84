"""Detection accuracy by pycocotools (the paper's metric: mAP averaged over IoU 0.50:0.95, and mAP at IoU 0.50),
never by a hand-written mAP."""
from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import DetectionSet, collate


def coco_ground_truth(dataset: DetectionSet) -> dict[str, Any]:
    """The data set's boxes as a COCO detection dictionary (image ids = indices, category ids = labels 1..K)."""
    images, annotations = [], []
    for index, annotation in enumerate(dataset.annotations):
        images.append({"id": index, "file_name": annotation.filename, "width": annotation.width,
                       "height": annotation.height})
        for (x1, y1, x2, y2), name in zip(annotation.boxes, annotation.names):
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id":
                                dataset.classes.index(name) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


@torch.no_grad()
def detections(model: torch.nn.Module, dataset: DetectionSet, device: torch.device | str = "cpu",
               workers: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """The model's detections on every image, in COCO result form (``bbox`` as x, y, width, height)."""
    model.eval()
    results = []
    loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate)
    for images, targets in tqdm(loader, desc="detect", leave=False, disable=not progress):
        outputs = model([image.to(device) for image in images])
        for target, output in zip(targets, outputs):
            for box, score, label in zip(output["boxes"].tolist(), output["scores"].tolist(),
                                         output["labels"].tolist()):
                x1, y1, x2, y2 = box
                results.append({"image_id": int(target["image_id"]), "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def coco_map(dataset: DetectionSet, results: list[dict[str, Any]]) -> dict[str, float]:
    """``map`` (IoU 0.50:0.95) and ``map50`` of ``results`` against the data set's boxes, by pycocotools, in %."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        truth = COCO()
        truth.dataset = coco_ground_truth(dataset)
        truth.createIndex()
        if not results:
            return {"map": 0.0, "map50": 0.0, "detections": 0}
        found = truth.loadRes(results)
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats: AP at IoU 0.50:0.95 and at 0.50 (fractions; -1 when nothing can be scored), reported in %
    return {"map": 100 * max(0.0, float(evaluation.stats[0])), "map50": 100 * max(0.0, float(evaluation.stats[1])),
            "detections": len(results)}


def evaluate_detector(model: torch.nn.Module, dataset: DetectionSet, device: torch.device | str = "cpu",
                      workers: int = 0, progress: bool = False) -> dict[str, float]:
    return {**coco_map(dataset, detections(model, dataset, device, workers, progress)), "images": len(dataset)}
