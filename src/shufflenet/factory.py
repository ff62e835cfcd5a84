"""A model for use, from a registered name, a weight file, an ONNX file or an ExecuTorch program: ``create_model``
and ``load``.

``create_model(name, weights=FILE)`` builds a registered network and loads a weight file into it (timm's and
torchvision's way). ``load(source)`` is the one entry point for inference: given a name, a weight file
(``.safetensors``, ``.pth``), an exported ``.onnx`` file or ``.pte`` program, it returns a runner (images ->
logits) with the preprocessing and the class names that go with it, and the PyTorch model when there is one.
Every weight file's recorded shapes are checked against its tensors on the meta device before anything is
allocated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.preprocessing import Preprocessing
from .io.onnx_file import Runner, onnx_class_names, onnx_preprocessing, onnx_runner, read_onnx_metadata
from .io.weight_file import WeightsFile, load_into, read_weights
from .models.registry import build_model, model_spec

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tar")


def create_model(
    name: str,
    num_classes: int | None = None,
    weights: WeightsFile | str | os.PathLike | None = None,
    allow_classifier_reset: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``. Extra keyword arguments go to the model (``shuffle=False``,
    ``small_input=True``, ``features_only=True``, ``out_indices=(2, 3)``, ``frozen_stages=1``, ...).

    ``weights``: a file from ``save_weights`` or ``shufflenet convert`` (or a plain state dict in our layout).
    Its recorded arguments and class count are the defaults that ``kwargs`` and ``num_classes`` override; a
    different class count needs ``allow_classifier_reset=True`` (the classifier then starts fresh). Without
    weights, ``num_classes`` defaults to 1000. The model's record (``model.record``) holds its name, arguments and
    what the weights expect.
    """
    if weights is None:
        return build_model(name, 1000 if num_classes is None else num_classes, **kwargs)
    weights = weights if isinstance(weights, WeightsFile) else read_weights(weights)
    if weights.architecture == name:
        kwargs = {**weights.model_kwargs, **kwargs}
    if num_classes is None:
        num_classes = weights.num_classes if weights.num_classes is not None else 1000
    with torch.device("meta"):  # check every shape before allocating anything
        load_into(build_model(name, num_classes, **kwargs), weights, allow_classifier_reset, dry_run=True)
    model = build_model(name, num_classes, **kwargs)
    load_into(model, weights, allow_classifier_reset)
    return model


def load_weights(path: str | os.PathLike, num_classes: int | None = None, allow_classifier_reset: bool = False,
                 **kwargs: Any) -> nn.Module:
    """The model a ``save_weights`` file was made for, rebuilt from the file alone and loaded. ``num_classes``
    and ``kwargs`` override what the file records."""
    weights = read_weights(path)
    if weights.architecture is None:
        raise ValueError(
            f"{path} records no architecture (it is a plain state dict); use create_model(NAME, weights={str(path)!r})"
            f" or convert an official checkpoint with `shufflenet convert`")
    return create_model(weights.architecture, num_classes, weights, allow_classifier_reset, **kwargs)


def class_names(num_classes: int, recorded: list[str] | None = None) -> list[str]:
    """The names recorded with the weights; else ImageNet's for 1000 classes (as shipped in torchvision, no
    download); else ``class i``."""
    if recorded:
        return list(recorded)
    if num_classes == 1000:
        from torchvision.models import AlexNet_Weights

        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return [f"class {i}" for i in range(num_classes)]


@dataclass
class LoadedModel:
    """What inference needs: ``run`` (images -> logits), the ``preprocessing`` its inputs need, the class names,
    and the PyTorch ``model`` (None for an exported file). ``random_weights``: built without any weights."""

    name: str
    run: Runner
    preprocessing: Preprocessing
    class_names: list[str]
    model: nn.Module | None = None
    random_weights: bool = False
    dataset: str | None = None


def model_runner(model: nn.Module, device: torch.device | str = "cpu", *, channels_last: bool = False,
                 tta: bool = False, amp: bool = False) -> Runner:
    """``model`` in eval mode as a runner on ``device``; logits come back as float32 on the CPU. ``tta``: the
    mean of the logits of each image and its mirror image. ``amp``: float16 autocast (CUDA)."""
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def run(images: torch.Tensor) -> torch.Tensor:
        model.eval()
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images).float()
            if tta:
                logits = (logits + model(images.flip(3)).float()) / 2
        return logits.cpu()

    return run


def load(source: str | os.PathLike, weights: str | os.PathLike | None = None, num_classes: int | None = None,
         threads: int = 1, device: torch.device | str = "cpu", **kwargs: Any) -> LoadedModel:
    """``source``: a registered name (with ``weights``, or randomly initialised), a weight file, an ``.onnx``
    file (run by ONNX Runtime on ``threads`` threads) or a ``.pte`` program (ExecuTorch's runtime, ``threads``
    threads). A PyTorch model is put in eval mode on ``device``."""
    text = str(source)
    if text.endswith((".onnx", ".pte")):
        if weights is not None:
            raise ValueError(f"an exported {Path(text).suffix} file carries its own weights; drop --weights")
        if text.endswith(".pte"):
            from .io.pte_file import load_pte

            run, metadata = load_pte(source, threads)
        else:
            metadata = read_onnx_metadata(source)
            run = onnx_runner(source, threads)
        outputs = int(metadata.get("num_classes", 0)) or None
        names = onnx_class_names(metadata)
        return LoadedModel(metadata.get("model", Path(text).stem), run, onnx_preprocessing(metadata),
                           class_names(outputs or len(names or []), names))
    random_weights = False
    if Path(text).suffix in WEIGHT_SUFFIXES:
        if weights is not None:
            raise ValueError(f"{source} is a weight file; give it alone, or a model name with --weights")
        model = load_weights(source, num_classes, **kwargs)
    else:
        model_spec(text)  # an unknown name: one line with close matches
        model = create_model(text, num_classes, weights, **kwargs)
        random_weights = weights is None
    model.eval().to(device)
    record = model.record
    return LoadedModel(record.architecture, model_runner(model, device), record.preprocessing,
                       class_names(record.num_classes, record.class_names), model, random_weights, record.dataset)
