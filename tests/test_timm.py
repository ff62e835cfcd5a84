"""Every model of ours through timm's public API, as timm tests its own models.

Cheap checks (cfg, features_only levels; built on the meta device) run over every registered model; the forward /
backward / script / FX / feature-extractor checks run at 32x32 on one model per family and group count
(``SAMPLE``); the weight-file checks use small files written in ``tmp_path``.
"""
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

import shufflenet  # noqa: E402
import shufflenet.timm as shufflenet_timm  # noqa: E402
from shufflenet.data.preprocessing import IMAGENET, Preprocessing  # noqa: E402
from shufflenet.models import list_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OURS = list_models(reference=False)
# One model per family and per ShuffleNet group count, SE, and each Table 4 structure with a unit of its own
# (The shallow 0.5x and the Xception-like structure add no code path: they are ShuffleNet units of g = 3 / 1.)
SAMPLE = [*(f"shufflenet_v1_x0_25_g{g}" for g in (1, 2, 3, 4, 8)), "shufflenet_v1_x2_0_g3_se",
          "mobilenet_v1_x0_25", "mobilenet_v2_x0_35", *(f"table4_{structure}_13m" for structure in ("vgg", "resnet",
                                                                                                   "resnext"))]
SIZE = 32  # the smallest input of the standard stems (total stride 32)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_model_of_ours_is_registered_under_our_name_and_timms_stay_timms():
    assert shufflenet_timm.OURS == OURS and len(OURS) == 49
    assert set(OURS) <= set(timm.list_models())
    assert sorted(timm.list_models("shufflenet_v1_*")) == list_models("shufflenet_v1_*")
    assert set(timm.list_models(module="timm")) == set(OURS)  # the registry's module of shufflenet.timm
    # timm's own MobileNets are timm's, not ours
    for name in ("mobilenetv1_100", "mobilenetv2_100"):
        model = timm.create_model(name, device="meta")
        assert not isinstance(model, shufflenet.models.ImageClassifier)
        assert type(model).__module__.startswith("timm.")


def test_unknown_name_is_timms_own_error():
    with pytest.raises(RuntimeError, match=r"Unknown model \(shufflenet_v1_x3_0_g3\)"):
        timm.create_model("shufflenet_v1_x3_0_g3")


@pytest.mark.parametrize("name", OURS)
def test_cfg_and_feature_levels_describe_the_model(name):
    model = timm.create_model(name, device="meta")
    cfg = model.pretrained_cfg
    assert cfg is model.default_cfg and cfg["architecture"] == name
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    assert model.get_submodule(cfg["first_conv"]) is first_conv and cfg["input_size"][0] == first_conv.in_channels
    head = model.get_submodule(cfg["classifier"])
    assert head is model.get_classifier() and isinstance(head, nn.Linear)
    assert cfg["num_classes"] == model.num_classes == head.out_features == 1000
    assert model.num_features == head.in_features
    assert cfg == timm.models.get_pretrained_cfg(name).to_dict()
    # timm's own functions turn the cfg into our default preprocessing: resize 256 (bilinear), crop 224
    config = timm.data.resolve_data_config(model=model)
    assert config == dict(input_size=(3, 224, 224), interpolation="bilinear", mean=IMAGENET.mean,
                          std=IMAGENET.std, crop_pct=0.875, crop_mode="center")
    # features_only: timm's feature-info API gives the model's own levels, and the maps have their shapes
    own = model.record.feature_info
    backbone = timm.create_model(name, features_only=True, device="meta")
    assert backbone.feature_info.channels() == [level.channels for level in own]
    assert backbone.feature_info.reduction() == [level.reduction for level in own] == [4, 8, 16, 32]
    assert backbone.feature_info.module_name() == [level.name for level in own]
    maps = backbone(torch.empty(1, 3, 64, 96, device="meta"))
    assert [m.shape[1:] for m in maps] == [(level.channels, 64 // level.reduction, 96 // level.reduction)
                                           for level in own]
    assert "num_classes" not in backbone.pretrained_cfg and backbone.num_classes == 0


@pytest.mark.parametrize("name", SAMPLE)
def test_forward_backward_and_reset_classifier(name):
    model = timm.create_model(name, num_classes=3, drop_rate=0.0)
    x = torch.randn(2, 3, SIZE, SIZE)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    features = model.forward_features(x)
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pooled), model(x))
    final, maps = model.forward_intermediates(x)
    torch.testing.assert_close(final, features)
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    final, shallow = model.forward_intermediates(x, indices=[0, 1])  # the rest of the trunk still runs
    torch.testing.assert_close(final, features)
    torch.testing.assert_close(shallow, maps[:2])
    model.reset_classifier(0)
    assert model.get_classifier().__class__ is nn.Identity and model.num_classes == 0
    torch.testing.assert_close(model(x), pooled)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7 == model.get_classifier().out_features
    model.reset_classifier(0, "")  # no pooling: forward returns the last map
    torch.testing.assert_close(model(x), features)


@pytest.mark.parametrize("name", SAMPLE)
def test_script_fx_and_feature_extractor_give_the_eager_outputs(name):
    model = timm.create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        graph = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(graph(x), expected)
        nodes = dict(zip(model.feature_info.module_name(), "0123"))
        extracted = create_feature_extractor(model, {**nodes, "classifier": "logits"})(x)
        torch.testing.assert_close(extracted.pop("logits"), expected)
        torch.testing.assert_close(list(extracted.values()), model.forward_intermediates(x, intermediates_only=True))
    with pytest.raises(ValueError, match="expected 3 input channels"):  # the traced graph keeps the input check
        graph(torch.randn(1, 1, SIZE, SIZE))
    # backward through the FX graph: the eager gradients
    model.train()
    graph = torch.fx.symbolic_trace(model)
    gradients = []
    for run in (model, graph):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout mask (MobileNet V2)
        run(x).square().sum().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(gradients[1], gradients[0])


@pytest.mark.parametrize("name", ["shufflenet_v1_x0_25_g3", "mobilenet_v2_x0_35"])
def test_backbone_scripts_and_traces_to_its_eager_maps(name):
    backbone = timm.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    assert backbone.feature_info.reduction() == [8, 32]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = backbone(x)
        assert [m.shape[1] for m in expected] == backbone.feature_info.channels()
        for run in (torch.jit.script(backbone), torch.fx.symbolic_trace(backbone)):
            torch.testing.assert_close(run(x), expected)


def test_timms_feature_wrappers_take_our_models():
    x = torch.randn(1, 3, SIZE, SIZE)
    own = timm.create_model("shufflenet_v1_x0_25_g3", features_only=True).eval()
    expected, state = own(x), own.state_dict()
    for feature_cls in ("list", "dict", "hook", "fx", "getter"):
        wrapped = timm.create_model("shufflenet_v1_x0_25_g3", features_only=True, feature_cls=feature_cls)
        assert not isinstance(wrapped, shufflenet.models.ImageClassifier)  # timm's wrapper around our classifier
        # timm's names for our layers: features_stem.* (rewritten), graph_module.features.*, model.features.*
        ours = {key: re.sub(r"^features_", "features.", re.sub(r"^(graph_module|model)\.", "", key))
                for key in wrapped.state_dict()}
        wrapped.load_state_dict({key: state[name] for key, name in ours.items() if name in state}, strict=False)
        assert set(ours.values()) - set(state) <= {"classifier.weight"}, feature_cls
        maps = wrapped.eval()(x)
        maps = list(maps.values()) if isinstance(maps, dict) else maps
        assert wrapped.feature_info.channels() == own.feature_info.channels(), feature_cls
        torch.testing.assert_close(maps, expected, msg=feature_cls)


def test_grad_checkpointing_recomputes_each_layer_and_gives_the_same_gradients():
    model = timm.create_model("shufflenet_v1_x0_25_g3", num_classes=3)
    calls = []
    model.features.stage3.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, SIZE, SIZE)
    gradients = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad(set_to_none=True)
        calls.clear()
        model(x).square().sum().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
        assert len(calls) == (2 if enable else 1)  # run again in the backward pass
    torch.testing.assert_close(gradients[1], gradients[0])


def test_timms_construction_keywords_are_honoured(tmp_path):
    model = timm.create_model("mobilenet_v2_x0_35", num_classes=4, in_chans=1, drop_rate=0.5, global_pool="max",
                              dtype=torch.float64, cache_dir=tmp_path, pretrained_cfg_overlay=dict(crop_pct=1.0))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(2, 1, SIZE, SIZE, dtype=torch.float64)).shape == (2, 4)
    assert model.dropout.p == 0.5 and isinstance(model.global_pool, nn.AdaptiveMaxPool2d)
    assert model.pretrained_cfg["crop_pct"] == 1.0
    assert model.record.kwargs["in_chans"] == 1 and model.record.architecture == "mobilenet_v2_x0_35"
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):  # we publish none: give a file
        timm.create_model("mobilenet_v2_x0_35", pretrained=True)


def small_weights(path, name="shufflenet_v1_x0_25_g3", classes=10, **kwargs):
    model = shufflenet.create_model(name, num_classes=classes, **kwargs)
    with torch.no_grad():  # non-trivial BN statistics, so that a wrongly loaded tensor shows in the logits
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    shufflenet.save_weights(model, path, class_names=[f"c{i}" for i in range(classes)], dataset="test")
    return path


def test_our_weight_file_through_timm_gives_shufflenet_loads_logits(tmp_path):
    path = small_weights(tmp_path / "w.safetensors", small_input=True)
    model = timm.create_model("shufflenet_v1_x0_25_g3", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    loaded = shufflenet.load(path)
    assert model.record.kwargs == {"small_input": True, "in_chans": 3} and model.small_input  # recorded arguments
    assert model.pretrained_cfg["num_classes"] == 10 and model.pretrained_cfg["label_names"][3] == "c3"
    assert model.class_names == loaded.class_names and model.dataset == "test"
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.run(x))
    # another class count, asked for: the backbone loads, the classifier starts fresh
    with pytest.warns(UserWarning, match="freshly initialised"):
        tuned = timm.create_model("shufflenet_v1_x0_25_g3", pretrained=True, num_classes=4,
                                  pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        torch.testing.assert_close(tuned.forward_features(x), model.forward_features(x), rtol=0, atol=0)
    backbone = timm.create_model("shufflenet_v1_x0_25_g3", pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], model.forward_features(x), rtol=0, atol=0)


def one_line_error(**kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        timm.create_model(pretrained=True, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_weight_file_that_does_not_fit_is_a_one_line_error(tmp_path):
    path = str(small_weights(tmp_path / "w.safetensors"))
    message = one_line_error(model_name="shufflenet_v1_x0_25_g3", pretrained_cfg_overlay=dict(file=path))
    assert re.search(r"w\.safetensors holds a 10-class classifier .*shufflenet_v1_x0_25_g3 is built with 1000 "
                     r"classes: pass num_classes=10", message), message
    for other in ("shufflenet_v1_x0_25_g8", "mobilenet_v1_x0_25"):
        message = one_line_error(model_name=other, num_classes=10, pretrained_cfg_overlay=dict(file=path))
        assert f"holds weights for 'shufflenet_v1_x0_25_g3', not '{other}'" in message, message
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    message = one_line_error(model_name="shufflenet_v1_x0_25_g3", pretrained_cfg_overlay=dict(
        file=str(tmp_path / "broken.safetensors")))
    assert "truncated or corrupt" in message


def test_megvii_weights_through_timm_take_timms_rgb_transform(tmp_path):
    """A converted megvii file expects BGR 0-255: through timm its stem takes RGB and the cfg's mean / std
    rescale timm's [0, 1] pixels, so timm's preprocessing feeds it what ours feeds the file's model."""
    from test_convert import megvii_checkpoint, megvii_state_dict

    from shufflenet.convert import convert_checkpoint

    torch.save(megvii_checkpoint(megvii_state_dict(8, 0.5)), tmp_path / "megvii.pth")
    converted = tmp_path / "megvii.safetensors"
    convert_checkpoint(tmp_path / "megvii.pth", converted, "megvii")
    loaded = shufflenet.load(converted)
    assert loaded.preprocessing.channel_order == "BGR" and loaded.model.shuffle_order == "official"
    model = timm.create_model("shufflenet_v1_x0_5_g8", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(converted))).eval()
    assert model.shuffle_order == "official"  # the file's recorded arguments
    config = timm.data.resolve_data_config(model=model)
    assert config["mean"] == (0.0, 0.0, 0.0) and config["std"] == (1 / 255,) * 3
    assert model.preprocessing == Preprocessing("RGB", 255.0, None, None)
    pixels = torch.randint(0, 256, (2, 3, 64, 64)).float()  # RGB, 0-255
    mean, std = (torch.tensor(config[key]).view(3, 1, 1) for key in ("mean", "std"))
    torch.testing.assert_close((pixels / 255 - mean) / std, pixels)  # timm's normalisation gives back 0-255
    with torch.no_grad():  # the RGB stem on RGB pixels is the file's BGR model on BGR pixels (float64: no rounding)
        torch.testing.assert_close(model.double()(pixels.double()), loaded.model.double()(pixels.flip(1).double()))


def test_timms_transform_is_our_preprocessing_up_to_the_resize_kernel():
    """Same resize size, crop, interpolation and normalisation; timm resizes the PIL image (PIL's kernel), ours
    the uint8 tensor (torchvision's): on noise images (the worst case) pixels differ by at most two grey levels,
    on under 2% of them (docs/models.md)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    # 160 / 232: timm's floor(160 / (160 / 232)) is 231
    for preprocessing in (IMAGENET, Preprocessing(resize=232, crop=160), Preprocessing(resize=36, crop=32)):
        transform = timm.data.create_transform(**shufflenet_timm.data_cfg(preprocessing))
        assert transform.transforms[0].size == preprocessing.resize  # timm's resize is ours, despite the floor
        for size in ((300, 260, 3), (64, 80, 3)):
            image = Image.fromarray(torch.randint(0, 256, size, dtype=torch.uint8, generator=generator).numpy())
            ours, theirs = preprocessing.transform()(image), transform(image)
            assert ours.shape == theirs.shape == (3, preprocessing.crop, preprocessing.crop)
            levels = ((theirs - ours) * torch.tensor(IMAGENET.std).view(3, 1, 1) * 255).abs()
            assert levels.max() < 2.01 and (levels > 0.5).float().mean() < 0.02, (preprocessing, size)


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## With timm"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "w.safetensors").is_file()
