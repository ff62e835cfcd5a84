"""Our models inside timm: ``import shufflenet.timm`` registers every model of ours (not the torchvision
references) with timm's registry, under our names, built by timm's own builder.

    import shufflenet.timm
    model = timm.create_model("shufflenet_v1_x1_0_g3", num_classes=10)

Every timm keyword is taken: ``pretrained``, ``pretrained_cfg``, ``pretrained_cfg_overlay``, ``cache_dir``,
``device``, ``dtype``, ``features_only``, ``out_indices`` (and ``feature_cls`` / ``feature_cfg``, for timm's own
feature wrappers), ``num_classes``, ``in_chans``, ``drop_rate``, ``global_pool``; the rest go to the model as for
``shufflenet.create_model``. ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=PATH)`` loads one of our
weight files (nothing is downloaded: we publish no weights), with its recorded arguments and its preprocessing in
the model's ``pretrained_cfg``; a file that does not fit is a one-line ``ValueError`` naming file and model.

timm's transforms give RGB pixels in [0, 1] normalised by mean / std. A 0-255 scale is expressed in mean and std
(divided by 255); a BGR channel order cannot be, so a BGR file (the megvii weights) loaded through timm gets its
stem convolution's input channels reversed: the model then takes RGB, and ``timm.data.resolve_data_config`` with
``create_transform`` feed it what our BGR preprocessing fed the file's model (docs/models.md, "timm").

Registering is a separate import, not part of ``import shufflenet``: importing timm would add about a second to
every CLI command's start-up (docs/models.md).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from timm.models import (
    FeatureInfo,
    build_model_with_cfg,
    generate_default_cfgs,
    is_model,
    register_model,
    resolve_pretrained_cfg,
)
from timm.models._builder import pretrained_cfg_for_features
from torch import nn

from .data.preprocessing import IMAGENET, Preprocessing
from .io.weight_file import WeightsFile, load_into, read_weights
from .models.builder import FEATURE_STRIDES, ImageClassifier, first_conv_name
from .models.mobilenet_v1 import MobileNetV1
from .models.mobilenet_v2 import MobileNetV2
from .models.registry import build_model, list_models, model_rows, model_spec

PAPERS = {  # arXiv ids of the papers each family implements (timm's ``paper_ids``)
    MobileNetV1: "arXiv:1704.04861", MobileNetV2: "arXiv:1801.04381",
}
SHUFFLENET_PAPER = "arXiv:1707.01083"  # ShuffleNet V1, and its Table 4 comparison structures
TIMM_FEATURE_KEYS = ("feature_cls", "feature_cfg")  # given: timm's own feature wrapper instead of our backbone


def crop_pct(crop: int, resize: int) -> float:
    """timm's crop fraction for a ``resize`` shorter side and a ``crop`` centre crop: timm resizes to
    ``floor(crop / crop_pct)``, so the fraction is ``crop / resize``, one float step lower where that quotient
    rounds below ``resize``."""
    fraction = crop / resize
    return fraction if math.floor(crop / fraction) == resize else math.nextafter(fraction, 0.0)


def data_cfg(preprocessing: Preprocessing, in_chans: int = 3) -> dict[str, Any]:
    """timm's data-config fields for ``preprocessing`` (RGB): pixels in [0, 1] normalised by ``mean`` / ``std``,
    so a 0-255 scale divides both by 255 and no normalisation is mean 0, std 1."""
    if preprocessing.channel_order != "RGB":
        raise ValueError("timm's transforms give RGB images; convert a BGR model with rgb_weights first")
    scale = preprocessing.max_pixel_value
    mean, std = preprocessing.mean or (0.0, 0.0, 0.0), preprocessing.std or (1.0, 1.0, 1.0)
    return dict(input_size=(in_chans, preprocessing.crop, preprocessing.crop),
                interpolation=preprocessing.interpolation,
                crop_pct=crop_pct(preprocessing.crop, preprocessing.resize), crop_mode="center",
                mean=tuple(m / scale for m in mean), std=tuple(s / scale for s in std))


def rgb_weights(weights: WeightsFile, first_conv: str) -> WeightsFile:
    """``weights`` for RGB input: a BGR file's stem convolution gets its three input channels reversed (and its
    recorded mean / std with them); an RGB file comes back as it is."""
    preprocessing = weights.preprocessing
    stem = weights.tensors.get(f"{first_conv}.weight")
    if preprocessing is None or preprocessing.channel_order == "RGB" or stem is None or stem.shape[1] != 3:
        return weights
    mean, std = (None if values is None else values[::-1] for values in (preprocessing.mean, preprocessing.std))
    return replace(weights, tensors={**weights.tensors, f"{first_conv}.weight": stem.flip(1)},
                   preprocessing=replace(preprocessing, channel_order="RGB", mean=mean, std=std))


def default_cfg(name: str) -> dict[str, Any]:
    """The pretrained cfg of ``name`` without weights: our default preprocessing (torchvision's ImageNet
    evaluation), 1000 classes, the module names of its first convolution and classifier, its paper."""
    return dict(**data_cfg(IMAGENET), num_classes=1000, first_conv=first_conv_name(model_rows(name)),
                classifier="classifier", paper_ids=PAPERS.get(model_spec(name).factory, SHUFFLENET_PAPER))


def build(name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
          **kwargs: Any) -> ImageClassifier:
    """``build_model(name, **kwargs)`` on ``device`` in ``dtype``, its ``feature_info`` in timm's form (timm's
    ``FeatureInfo`` over every level, ``out_indices`` selecting the model's), which timm's feature wrappers read."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model(name, **kwargs)
    if dtype is not None:
        model.to(dtype)
    levels = [dict(num_chs=level.channels, reduction=level.reduction, module=level.name)
              for level in model.record.feature_info]
    model.feature_info = FeatureInfo(levels, model.out_indices)
    return model


def load_checked(weights: WeightsFile | None, num_classes_given: bool, source: str,
                 state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's checkpoint filter: load ``weights`` (our file; else the ``state_dict`` timm read from ``source``)
    into ``model`` with ``load_into``, whose checks give one-line errors, and hand timm the loaded state. Without
    ``num_classes`` the file's classifier must fit the model's; with it, another count starts a fresh one."""
    weights = weights or WeightsFile(Path(source), dict(state_dict))
    weights = rgb_weights(weights, model.record.first_conv)
    if not num_classes_given and model.num_classes and weights.num_classes not in (None, model.num_classes):
        raise ValueError(
            f"{weights.path} holds a {weights.num_classes}-class classifier ({weights.architecture or 'unrecorded'}),"
            f" {model.record.architecture} is built with {model.num_classes} classes: pass num_classes="
            f"{weights.num_classes}, or another count for a freshly initialised classifier")
    load_into(model, weights, allow_classifier_reset=num_classes_given)
    return model.state_dict()


def create_through_timm(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's entry point for our model ``name`` (registered under it; call ``timm.create_model``)."""
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    requested = resolve_pretrained_cfg(name, pretrained_cfg, overlay)
    num_classes_given = "num_classes" in kwargs
    kwargs.setdefault("num_classes", requested.num_classes)  # the cfg's count, not the file's: a misfit is an error
    weights = None
    if pretrained and requested.file and requested.state_dict is None and requested.source in (None, "", "timm"):
        weights = read_weights(requested.file)
        if weights.architecture == name:
            kwargs = {**weights.model_kwargs, **kwargs}
        described = rgb_weights(weights, first_conv_name(model_rows(name))).preprocessing or IMAGENET
        overlay = {**data_cfg(described, weights.model_kwargs.get("in_chans", 3)),
                   "label_names": None if weights.class_names is None else tuple(weights.class_names),
                   **({} if weights.num_classes is None else {"num_classes": weights.num_classes}), **overlay}
    features_only = kwargs.pop("features_only", False)
    timm_wrapper = features_only and any(key in kwargs for key in TIMM_FEATURE_KEYS)
    model_cls: Callable[..., ImageClassifier] = partial(build, name)
    feature_cfg = kwargs.pop("feature_cfg", None) or {}
    if timm_wrapper:  # timm wraps our classifier; its rewrite must go one Sequential (``features``) deep
        feature_cfg = {"flatten_sequential": True, "out_indices": tuple(range(len(FEATURE_STRIDES))), **feature_cfg}
    elif features_only:
        model_cls = partial(build, name, features_only=True, out_indices=kwargs.pop("out_indices", None))
    model = build_model_with_cfg(
        model_cls, name, pretrained, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
        feature_cfg=feature_cfg, features_only=timm_wrapper,
        pretrained_filter_fn=partial(load_checked, weights, num_classes_given, str(requested.file or name)),
        **kwargs)
    if features_only and not timm_wrapper:
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return model


def entry_point(name: str) -> Callable[..., nn.Module]:
    """A function named ``name`` that builds it (timm registers entry points by their ``__name__``)."""
    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_through_timm(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = f"{name} (shufflenet): see shufflenet.timm.create_through_timm."
    return create


__all__ = ["OURS", "create_through_timm", "crop_pct", "data_cfg", "default_cfg", "rgb_weights"]  # + every model name
OURS = [name for name in list_models(reference=False) if not is_model(name)]  # timm's own names stay timm's
default_cfgs = generate_default_cfgs({name: default_cfg(name) for name in OURS})  # read by register_model
for _name in OURS:
    register_model(entry_point(_name))
