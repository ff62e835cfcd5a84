"""Faster R-CNN (torchvision's, no detector code of ours) on any of our backbones.

Two settings: ``fpn=True`` puts torchvision's feature pyramid on the backbone's stride 8, 16 and 32 maps (plus
its max-pooled level); ``fpn=False`` is the paper's single-feature setting (Table 7: one feature map feeds the
RPN and the RoI head; the paper does not say which, ``feature_stride`` picks stride 16, the end of Stage 3, or
32, Stage 4). The box head is torchvision's two-layer MLP, ``box_head_dim`` wide. Detector weight files are our
safetensors files (architecture ``fasterrcnn``, its arguments, class names, preprocessing); backbone weights come
from any classification weight file of ours.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..data.preprocessing import IMAGENET, Preprocessing
from ..factory import create_model
from ..io.weight_file import WeightsFile, load_into, read_weights
from ..models.record import ModelRecord, Recorded

ARCHITECTURE = "fasterrcnn"
FEATURE_LEVELS = {8: 1, 16: 2, 32: 3}  # output stride -> feature level of our backbones (levels: 4, 8, 16, 32)


class Backbone(nn.Module):
    """Our ``features_only`` network, with torchvision's feature pyramid or a single map, as the detector wants
    it: an ``OrderedDict`` of maps and ``out_channels``."""

    def __init__(self, network: nn.Module, fpn: bool, fpn_channels: int) -> None:
        super().__init__()
        self.body = network
        channels = [info.channels for info in network.feature_info]
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, LastLevelMaxPool()) if fpn else None
        self.out_channels = fpn_channels if fpn else channels[-1]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = OrderedDict((str(i), m) for i, m in enumerate(self.body(x)))
        return self.fpn(maps) if self.fpn is not None else maps


@dataclass(frozen=True)
class DetectorOptions:
    """The detector's settings beside its backbone and class count (all recorded in its weight file).

    ``min_size`` / ``max_size``: the shorter side the images are resized to (the paper's "300x" and "600x") and
    the cap on the longer; ``frozen_stages`` / ``norm_eval``: the backbone's options; ``mean`` / ``std``: the
    normalisation the backbone's weights expect."""

    fpn: bool = True
    feature_stride: int = 16
    min_size: int = 600
    max_size: int = 1000
    frozen_stages: int = 1
    norm_eval: bool = True
    fpn_channels: int = 128
    box_head_dim: int = 256
    mean: Sequence[float] = IMAGENET.mean
    std: Sequence[float] = IMAGENET.std

    def __post_init__(self) -> None:
        if not self.fpn and self.feature_stride not in (16, 32):
            raise ValueError(f"the single-feature setting takes stride 16 (Stage 3) or 32 (Stage 4), got "
                             f"{self.feature_stride}")

    def preprocessing(self) -> Preprocessing:
        """What the detector's inputs need (it resizes and normalises by itself)."""
        return Preprocessing(mean=tuple(self.mean), std=tuple(self.std), resize=self.min_size, crop=self.min_size)


class Detector(Recorded, FasterRCNN):
    """torchvision's Faster R-CNN with a record (``record``: architecture ``fasterrcnn``, the backbone's name and
    the :class:`DetectorOptions` as arguments, the class count and names, the preprocessing)."""


def build_detector(backbone: str, num_classes: int, *, backbone_weights: WeightsFile | None = None,
                   **options: Any) -> Detector:
    """Faster R-CNN with ``num_classes`` object classes (plus the background) on the registered ``backbone``;
    ``options``: the fields of :class:`DetectorOptions`. ``backbone_weights``: a classification weight file of
    ours for the backbone (its classifier is left out; a small-input stem's weights load into the standard stem
    unchanged)."""
    try:
        settings = DetectorOptions(**options)
    except TypeError as error:
        raise ValueError(f"the detector takes no such option: {error}") from None
    levels = (1, 2, 3) if settings.fpn else (FEATURE_LEVELS[settings.feature_stride],)
    network = create_model(backbone, weights=backbone_weights, features_only=True, out_indices=levels,
                           frozen_stages=settings.frozen_stages, norm_eval=settings.norm_eval, small_input=False)
    body = Backbone(network, settings.fpn, settings.fpn_channels)
    names = [str(i) for i in range(len(levels))]
    if settings.fpn:  # one anchor size per pyramid level (strides 8, 16, 32 and the pooled 64)
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    else:
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),))
    pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    head = TwoMLPHead(body.out_channels * 7 * 7, settings.box_head_dim)
    detector = Detector(body, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=pool, box_head=head,
                        box_predictor=FastRCNNPredictor(settings.box_head_dim, num_classes + 1),
                        min_size=settings.min_size, max_size=settings.max_size, image_mean=list(settings.mean),
                        image_std=list(settings.std), rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300, box_batch_size_per_image=128)
    detector.record = ModelRecord(
        ARCHITECTURE, num_classes, {"backbone": backbone, **asdict(settings)},
        first_conv=f"backbone.body.{network.record.first_conv}", classifier="roi_heads.box_predictor",
        preprocessing=settings.preprocessing())
    return detector


def load_detector(path: str | os.PathLike, **overrides: Any) -> Detector:
    """The detector a weight file describes, rebuilt from the file alone and loaded, in eval mode."""
    weights = read_weights(path)
    if weights.architecture != ARCHITECTURE:
        raise ValueError(f"{path} holds a {weights.architecture or 'plain'} model, not a detector; give a weight "
                         f"file written by `shufflenet detect train`")
    detector = build_detector(num_classes=weights.num_classes, **{**weights.model_kwargs, **overrides})
    load_into(detector, weights)
    if detector.class_names is None:
        detector.record = detector.record.replace(class_names=[f"class {i + 1}" for i in range(weights.num_classes)])
    return detector.eval()


def backbone_weights_file(path: str | os.PathLike | None) -> WeightsFile | None:
    return None if path is None else read_weights(path)
