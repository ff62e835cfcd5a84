"""Detection: VOC / COCO loading and its errors, pycocotools mAP, the detector on our backbones, training through
the shared trainer, prediction drawn into PNG files, export, and the real raccoon photographs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shufflenet.cli import main
from shufflenet.detection.data import DetectionSet, read_annotations
from shufflenet.detection.evaluate import coco_map
from shufflenet.detection.model import build_detector, load_detector
from shufflenet.detection.predict import BOX_COLOUR, Detection, draw

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon"


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int]]],
            path: str = "/elsewhere/never/used.jpg") -> str:
    parts = "".join(f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                    f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    return (f"<annotation><filename>{filename}</filename><path>{path}</path><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{parts}</annotation>")


def write_toy_set(root: Path, count: int = 6) -> Path:
    """``count`` 96x80 images, each with a bright square (the object) on a dark background, VOC annotations whose
    file names differ from the images' (found by <filename>), and a split CSV."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(count):
        pixels = rng.integers(0, 40, (80, 96, 3), dtype=np.uint8)
        x, y = 10 + 5 * i, 12 + 3 * i
        pixels[y:y + 30, x:x + 30] = 230
        Image.fromarray(pixels).save(root / "images" / f"img{i}.jpg")
        xml = voc_xml(f"img{i}.jpg", 96, 80, [("box", (x, y, x + 30, y + 30))])
        (root / "annotations" / f"label-{i}.xml").write_text(xml)
        lines.append(f"img{i}.jpg,96,80,box,{x},{y},{x + 30},{y + 30}")
    (root / "split.csv").write_text("\n".join(lines) + "\n")
    return root


def test_voc_images_are_found_by_filename_and_coco_reads_the_same(tmp_path):
    root = write_toy_set(tmp_path)
    data = DetectionSet(root / "images", root / "annotations", root / "split.csv")
    assert len(data) == 6 and data.classes == ["box"]
    image, target = data[2]
    assert image.shape == (3, 80, 96) and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].tolist() == [[20.0, 18.0, 50.0, 48.0]] and target["labels"].tolist() == [1]
    voc = read_annotations(root / "annotations")
    coco = {"images": [{"id": i, "file_name": a.filename, "width": a.width, "height": a.height}
                       for i, a in enumerate(voc.values())],
            "annotations": [{"id": i, "image_id": i, "category_id": 7, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                            for i, a in enumerate(voc.values()) for b in a.boxes],
            "categories": [{"id": 7, "name": "box"}]}
    (root / "coco.json").write_text(json.dumps(coco))
    assert {k: (v.boxes, v.names) for k, v in read_annotations(root / "coco.json").items()} == {
        k: (v.boxes, v.names) for k, v in voc.items()}


@pytest.mark.parametrize("fault,message", [
    ("outside", "lies outside the 96x80 image"),
    ("empty-file", "not a readable VOC XML"),
    ("garbage", "not a readable VOC XML"),
    ("unknown-class", "unknown class 'cat'"),
    ("unreadable-image", "cannot read image"),
    ("missing-size", "no <size>"),
])
def test_bad_annotations_are_one_line_errors(tmp_path, fault, message):
    root = write_toy_set(tmp_path)
    xml = root / "annotations" / "label-0.xml"
    if fault == "outside":
        xml.write_text(voc_xml("img0.jpg", 96, 80, [("box", (50, 10, 120, 40))]))
    elif fault == "empty-file":
        xml.write_text("")
    elif fault == "garbage":
        xml.write_text("<annotation><filename>img0.jpg</filename>")
    elif fault == "unknown-class":
        xml.write_text(voc_xml("img0.jpg", 96, 80, [("cat", (1, 1, 20, 20))]))
    elif fault == "unreadable-image":
        (root / "images" / "img0.jpg").write_bytes(b"not a jpeg")
    elif fault == "missing-size":
        xml.write_text("<annotation><filename>img0.jpg</filename></annotation>")
    with pytest.raises(ValueError, match=message):
        data = DetectionSet(root / "images", root / "annotations", root / "split.csv", ["box"])
        data[0]


def test_an_image_without_objects_is_allowed(tmp_path):
    root = write_toy_set(tmp_path)
    (root / "annotations" / "label-0.xml").write_text(voc_xml("img0.jpg", 96, 80, []))
    _, target = DetectionSet(root / "images", root / "annotations", root / "split.csv", ["box"])[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_map_comes_from_pycocotools_and_responds_to_the_boxes(tmp_path):
    root = write_toy_set(tmp_path)
    data = DetectionSet(root / "images", root / "annotations", root / "split.csv")
    truth = [(i, a.boxes[0]) for i, a in enumerate(data.annotations)]

    def results(shift):
        return [{"image_id": i, "category_id": 1, "bbox": [b[0] + shift, b[1], b[2] - b[0], b[3] - b[1]],
                 "score": 0.9} for i, b in truth]

    assert coco_map(data, results(0))["map"] == pytest.approx(100.0)
    shifted = coco_map(data, results(6))  # IoU 24x30 / 36x30 = 0.67: found at 0.5, missed from 0.7 on
    assert shifted["map50"] == pytest.approx(100.0) and 20 < shifted["map"] < 60
    assert coco_map(data, [])["map"] == 0.0


def test_detector_on_our_backbone_trains_saves_and_reloads(tmp_path):
    root = write_toy_set(tmp_path)
    data = DetectionSet(root / "images", root / "annotations", root / "split.csv")
    torch.manual_seed(0)
    detector = build_detector("shufflenet_v1_x0_25_g3", 1, min_size=64, max_size=96, frozen_stages=0)
    assert all(not p.requires_grad for p in detector.backbone.body.features.stem.parameters())
    images, targets = zip(*(data[i] for i in range(2)))
    trainable = {n: p.detach().clone() for n, p in detector.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in detector.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    totals = []
    detector.train()
    for _ in range(6):  # real steps on a fixed pair of images: the detector fits them
        losses = detector(list(images), list(targets))
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        totals.append(sum(losses.values()).item())
    assert totals[-1] < 0.8 * totals[0], totals
    params = dict(detector.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())  # the frozen stem stays as it was
    moved = [n for n, p in trainable.items() if not torch.equal(params[n], p)]
    assert any(n.startswith("backbone.body.") for n in moved) and any(n.startswith("roi_heads.") for n in moved)
    from shufflenet import save_weights

    save_weights(detector, tmp_path / "d.safetensors", class_names=["box"])
    again = load_detector(tmp_path / "d.safetensors")
    detector.eval()
    with torch.no_grad():
        a, b = detector([images[0]])[0], again([images[0]])[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])
    assert again.class_names == ["box"] and again.record.kwargs["min_size"] == 64


def test_single_feature_setting_uses_one_map(tmp_path):
    detector = build_detector("mobilenet_v2_x0_35", 3, fpn=False, feature_stride=32, min_size=64, max_size=64)
    assert detector.backbone.fpn is None and [i.reduction for i in detector.backbone.body.feature_info] == [32]
    with pytest.raises(ValueError, match="stride 16 .* or 32"):
        build_detector("mobilenet_v2_x0_35", 3, fpn=False, feature_stride=8)


def test_drawn_boxes_are_where_the_detections_are():
    image = Image.new("RGB", (100, 80), (0, 0, 0))
    drawn = np.asarray(draw(image, [Detection((20.0, 30.0, 70.0, 60.0), "box", 0.9)]))
    red = np.all(drawn == BOX_COLOUR, axis=2)
    assert red[30, 40] and red[60, 40] and red[45, 20] and red[45, 70]  # the four edges
    assert not red[45, 45] and not red[5, 90]  # not inside, not elsewhere


def test_cli_train_eval_predict_export_on_toy_data(tmp_path, capsys):
    root = write_toy_set(tmp_path / "data")
    common = ["--data-dir", str(root / "images"), "--annotations", str(root / "annotations"),
              "--train-split", str(root / "split.csv")]
    assert main(["detect", "train", "shufflenet_v1_x0_25_g3", *common, "--epochs", "2", "--batch-size", "2",
                 "--min-size", "64", "--max-size", "96", "--threads", "1", "--output", str(tmp_path / "runs"),
                 "--name", "toy", "--record", str(tmp_path / "toy.json")]) == 0
    out = capsys.readouterr().out
    assert "mAP@[.5:.95]" in out
    run = tmp_path / "runs" / "toy"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "eval_map" in rows[-1]
    assert json.loads((tmp_path / "toy.json").read_text())["backbone"] == "shufflenet_v1_x0_25_g3"
    assert main(["detect", "train", "shufflenet_v1_x0_25_g3", *common, "--output", str(tmp_path / "runs"),
                 "--name", "toy", "--resume", "auto"]) == 0  # finished: says so
    assert "is finished" in capsys.readouterr().out
    weights = str(run / "last.safetensors")
    assert main(["detect", "eval", weights, "--images", str(root / "images"), "--annotations",
                 str(root / "annotations"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6
    assert main(["detect", "predict", weights, str(root / "images" / "img0.jpg"), "-o", str(tmp_path / "out"),
                 "--score-threshold", "0"]) == 0
    assert (tmp_path / "out" / "img0.png").is_file() and "detection(s)" in capsys.readouterr().out
    assert main(["detect", "export", weights, "-o", str(tmp_path / "backbone.onnx"), "--backbone-only"]) == 0
    assert "parity with PyTorch" in capsys.readouterr().out


def test_bad_annotations_end_a_run_in_one_line_without_losing_it(tmp_path, capsys):
    root = write_toy_set(tmp_path / "data")
    (root / "annotations" / "label-3.xml").write_text(voc_xml("img3.jpg", 96, 80, [("box", (90, 1, 99, 9))]))
    earlier = tmp_path / "runs" / "earlier"  # an earlier run under the same name, which --overwrite would replace
    earlier.mkdir(parents=True)
    for name, content in (("config.json", b'{"model": "earlier"}'), ("last.safetensors", b"earlier weights"),
                          ("metrics.jsonl", b'{"epoch": 1}\n')):
        (earlier / name).write_bytes(content)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    assert main(["detect", "train", "shufflenet_v1_x0_25_g3", "--data-dir", str(root / "images"), "--annotations",
                 str(root / "annotations"), "--train-split", str(root / "split.csv"),
                 "--output", str(tmp_path / "runs"), "--name", "earlier", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label-3.xml" in err and "outside" in err
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    assert after == before  # the bad data is found before the earlier run is touched


@pytest.mark.skipif(not RACCOON.is_dir(), reason="the raccoon photographs are not at ../shared/data/raccoon")
def test_the_raccoon_set_loads_with_its_split():
    train = DetectionSet(RACCOON / "images", RACCOON / "annotations", RACCOON / "data" / "train_labels.csv")
    test = DetectionSet(RACCOON / "images", RACCOON / "annotations", RACCOON / "data" / "test_labels.csv")
    assert (len(train), len(test)) == (160, 40) and train.classes == ["raccoon"]
    boxes = sum(len(a.boxes) for a in train.annotations + test.annotations)
    assert boxes == 217
    grayscale = [a.filename for a in train.annotations + test.annotations
                 if Image.open(RACCOON / "images" / a.filename).mode != "RGB"]
    assert len(grayscale) == 3
    both = train.annotations + test.annotations
    for name in grayscale:  # read as 3-channel images like the others
        data = train if any(a.filename == name for a in train.annotations) else test
        index = [a.filename for a in data.annotations].index(name)
        assert data[index][0].shape[0] == 3
    assert len(both) == 200


def test_a_data_folder_in_either_usual_layout_is_found_alone(tmp_path):
    from shufflenet.detection.data import find_layout

    flat = write_toy_set(tmp_path / "flat")  # images/ + annotations/ + data/train*.csv, data/test*.csv
    (flat / "data").mkdir()
    (flat / "split.csv").rename(flat / "data" / "train_labels.csv")
    (flat / "data" / "test_labels.csv").write_text("filename\nimg4.jpg\nimg5.jpg\n")
    layout = find_layout(flat)
    assert (layout.images, layout.annotations) == (flat / "images", flat / "annotations")
    assert (layout.train_split, layout.test_split) == (flat / "data" / "train_labels.csv",
                                                       flat / "data" / "test_labels.csv")
    assert len(DetectionSet(layout.images, layout.annotations, layout.test_split)) == 2
    voc = write_toy_set(tmp_path / "voc")  # PASCAL VOC: JPEGImages/, Annotations/, ImageSets/Main/
    (voc / "images").rename(voc / "JPEGImages")
    (voc / "annotations").rename(voc / "Annotations")
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("img0\nimg1\nimg2\nimg3\n")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("img5\n")
    layout = find_layout(voc)
    assert layout.images == voc / "JPEGImages" and layout.annotations == voc / "Annotations"
    assert layout.train_split.name == "trainval.txt" and layout.test_split.name == "test.txt"
    assert [a.filename for a in DetectionSet(layout.images, layout.annotations, layout.train_split).annotations] \
        == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]
    (voc / "ImageSets" / "Main" / "trainval.txt").unlink()
    with pytest.raises(ValueError, match="no training split list .* give --train-split"):
        find_layout(voc)


def test_the_detector_configuration_holds_only_what_detection_reads(tmp_path):
    from dataclasses import fields

    from shufflenet.detection.config import DetectConfig
    from shufflenet.engine.config import TrainConfig

    names = {f.name for f in fields(DetectConfig)}
    assert not names & {"model_args", "download", "check_md5", "small_input", "drop_rate", "tta", "label_smoothing",
                        "data"}
    assert {"epochs", "lr", "batch_size", "seed", "output"} <= names & {f.name for f in fields(TrainConfig)}
    config = DetectConfig(model="shufflenet_v1_x0_25_g3", data_dir=str(tmp_path / "raccoon"))
    assert config.run_name() == "shufflenet_v1_x0_25_g3-detect-raccoon"
    with pytest.raises(ValueError, match="recipe must be one of detection"):
        DetectConfig(model="m", data_dir="d", recipe="small")


def test_a_run_folder_and_its_config_agree_on_the_default_name(tmp_path):
    root = write_toy_set(tmp_path / "data")
    (root / "data").mkdir()
    (root / "split.csv").rename(root / "data" / "train.csv")
    assert main(["detect", "train", "shufflenet_v1_x0_25_g3", "--data-dir", str(root), "--epochs", "1",
                 "--batch-size", "3", "--max-steps-per-epoch", "1", "--min-size", "64", "--max-size", "96",
                 "--threads", "1", "--output", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "shufflenet_v1_x0_25_g3-detect-data"
    assert json.loads((run / "config.json").read_text())["name"] == run.name
