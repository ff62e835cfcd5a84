"""Every registered model, one parametrized file (as timm tests its models): the shared classifier interface, the
backbone options (features_only, out_indices, frozen_stages, norm_eval), the small-input stem, and the
torchvision reference models."""
import pytest
import torch
from torch import nn

from shufflenet import create_model, list_models, profile
from shufflenet.models import model_spec

OURS = list_models(reference=False)
REFERENCES = [name for name in list_models() if model_spec(name).reference]


def test_the_registry_holds_every_family():
    assert {"tv_alexnet", "tv_shufflenet_v2_x1_0", "tv_mobilenet_v2"} == set(REFERENCES)
    assert len(list_models("shufflenet_v1_*")) == 27 and len(list_models("mobilenet_*")) == 10


@pytest.mark.parametrize("name", OURS)
def test_classifier_interface(name):
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 10)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, 2, 2)
    pooled = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(model.classifier(pooled), logits)
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), pooled)


@pytest.mark.parametrize("name", OURS)
def test_feature_levels_and_out_indices(name):
    backbone = create_model(name, features_only=True).eval()
    x = torch.randn(1, 3, 128, 96)
    maps = backbone(x)
    assert [info.reduction for info in backbone.feature_info] == [4, 8, 16, 32]
    assert [m.shape[-2:] for m in maps] == [(128 // r, 96 // r) for r in (4, 8, 16, 32)]
    assert [m.shape[1] for m in maps] == [info.channels for info in backbone.feature_info]
    assert not any(isinstance(m, torch.nn.Linear) for m in backbone.modules())
    # The deepest map is what the classifier pools: same weights, same map.
    classifier = create_model(name).eval()
    missing, unexpected = classifier.load_state_dict(backbone.state_dict(), strict=False)
    assert set(missing) <= {"classifier.weight", "classifier.bias"} and not unexpected
    torch.testing.assert_close(maps[-1], classifier.forward_features(x))
    picked = create_model(name, features_only=True, out_indices=(1, 3)).eval()
    picked.load_state_dict(backbone.state_dict())
    two = picked(x)
    assert [info.reduction for info in picked.feature_info] == [8, 32]
    torch.testing.assert_close(two[0], maps[1])
    torch.testing.assert_close(two[1], maps[3])


@pytest.mark.parametrize("name", OURS)
def test_frozen_stages_train_nothing_up_to_their_level(name):
    model = create_model(name, num_classes=3, frozen_stages=1).train()
    frozen_end = model.record.feature_info[1].index  # stem (level 0) and the next stage (level 1)
    frozen = list(model.features[: frozen_end + 1].parameters())
    assert frozen and all(not p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in model.features[frozen_end + 1:].parameters())
    statistics = [b.clone() for b in model.features[: frozen_end + 1].buffers()]
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in frozen)
    assert all(torch.equal(a, b) for a, b in zip(statistics, model.features[: frozen_end + 1].buffers()))
    batchnorms = [m for m in model.features[frozen_end + 1:].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and all(bn.training for bn in batchnorms)


@pytest.mark.parametrize("name", ["shufflenet_v1_x0_25_g3", "mobilenet_v1_x0_25", "mobilenet_v2_x0_35"])
def test_norm_eval_keeps_batchnorm_statistics(name):
    model = create_model(name, num_classes=3, norm_eval=True).train()
    before = [b.clone() for b in model.buffers()]
    model(torch.randn(4, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
    assert model.training and all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("name", ["shufflenet_v1_x0_5_g3", "mobilenet_v1_x0_25", "mobilenet_v2_x0_35"])
def test_small_input_stem_downsamples_eight_times(name):
    model = create_model(name, small_input=True, features_only=True).eval()
    maps = model(torch.randn(1, 3, 32, 32))
    assert maps[-1].shape[-1] == 4 and model.min_input_size == 8
    standard = create_model(name, features_only=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in standard.parameters())


@pytest.mark.parametrize("name", OURS)
def test_builds_on_meta_and_profiles(name):
    with torch.device("meta"):
        model = create_model(name)
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    assert profile(model).params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_models_build_and_profile(name):
    model = create_model(name, num_classes=7).eval()
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)
    record = model.record
    assert (record.architecture, record.kwargs, record.num_classes) == (name, {}, 7)
    assert isinstance(model.get_submodule(record.first_conv), nn.Conv2d)
    assert model.get_submodule(record.classifier).out_features == 7
    assert profile(model).mflops > 0


@pytest.mark.parametrize("name", ["shufflenet_v1_x0_5_g3", "mobilenet_v1_x0_25", "mobilenet_v2_x0_35",
                                  "table4_resnet_13m"])
def test_record_names_the_model_its_arguments_and_its_layout(name):
    model = create_model(name, num_classes=7, small_input=True)
    record = model.record
    assert (record.architecture, record.kwargs, record.num_classes) == (name, {"small_input": True}, 7)
    assert record.input_size == (3, 224, 224) and record.class_names is None and record.dataset is None
    assert model.get_submodule(record.first_conv) is next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.get_submodule(record.classifier) is model.classifier
    assert [info.name for info in record.feature_info] == [info.name for info in model.feature_info]
    assert all(model.get_submodule(info.name) is model.features[info.index] for info in record.feature_info)
    model.reset_classifier(3)
    assert model.num_classes == model.record.num_classes == 3
    with pytest.raises(ValueError, match="2 class names for a 3-class model"):
        model.record.replace(class_names=["a", "b"])


@pytest.mark.parametrize("name", ["mobilenet_v1_x0_25", "mobilenet_v2_x0_35"])
def test_mobilenet_gradients_reach_every_parameter(name):
    model = create_model(name, num_classes=3)
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_channels_last_gives_the_same_output():
    model = create_model("shufflenet_v1_x0_5_g3", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


def test_in_chans():
    model = create_model("mobilenet_v2_x0_35", in_chans=1, num_classes=2)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_bad_backbone_options_are_one_line_errors():
    with pytest.raises(ValueError, match="out_indices must pick among the 4 feature levels"):
        create_model("shufflenet_v1_x0_5_g3", features_only=True, out_indices=(4,))
    with pytest.raises(ValueError, match="frozen_stages must be -1"):
        create_model("shufflenet_v1_x0_5_g3", frozen_stages=7)
    with pytest.raises(ValueError, match="takes no such option"):
        create_model("mobilenet_v2_x0_35", groups=3)
