"""The timm-style interface that every model family shares."""
import pytest
import torch

from shufflenet import create_model, list_models

FAMILIES = ["shufflenet_v1_x0_5_g3", "shufflenet_v1_x0_25_g8", "mobilenet_v1_x0_25", "mobilenet_v2_x0_35"]


@pytest.mark.parametrize("name", FAMILIES)
def test_classifier_interface(name):
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 10)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, 2, 2)
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.classifier(pooled), model(x))
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), pooled)


@pytest.mark.parametrize("name", FAMILIES)
def test_features_only_strides(name):
    backbone = create_model(name, features_only=True).eval()
    maps = backbone(torch.randn(1, 3, 128, 96))
    assert [info.reduction for info in backbone.feature_info] == [4, 8, 16, 32]
    assert [m.shape[-2:] for m in maps] == [(128 // r, 96 // r) for r in (4, 8, 16, 32)]
    assert [m.shape[1] for m in maps] == [info.channels for info in backbone.feature_info]
    assert not any(isinstance(m, torch.nn.Linear) for m in backbone.modules())
    # The deepest map is what the classifier pools: same weights, same map.
    classifier = create_model(name).eval()
    missing, unexpected = classifier.load_state_dict(backbone.state_dict(), strict=False)
    assert set(missing) <= {"classifier.weight", "classifier.bias"} and not unexpected
    x = torch.randn(1, 3, 128, 96)
    torch.testing.assert_close(backbone(x)[-1], classifier.forward_features(x))


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


def test_every_registered_model_builds_and_runs_on_meta():
    names = list_models()
    assert len(names) == 37
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
            assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
