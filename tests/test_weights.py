"""Our weight files: safetensors with the architecture, arguments, class count and preprocessing as metadata."""
import os

import pytest
import torch

from shufflenet import create_model, load_weights, save_weights
from shufflenet.data.preprocessing import IMAGENET, Preprocessing
from shufflenet.io.weight_file import read_weights
from shufflenet.models import ShuffleNetV1

BGR_RAW = Preprocessing("BGR", 255.0, None, None, resize=256, crop=224)


def trained_like(model):
    """Non-trivial BN statistics, so that every buffer matters for the output."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    """A 10-class ShuffleNet with non-default arguments, saved with BGR 0-255 preprocessing."""
    model = trained_like(create_model("shufflenet_v1_x0_5_g3", num_classes=10, small_input=True, drop_rate=0.1))
    path = tmp_path / "model.safetensors"
    save_weights(model, path, preprocessing=BGR_RAW)
    return model, path


def test_round_trip_rebuilds_the_model_from_the_file_alone(saved):
    model, path = saved
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temporary file left behind
    info = read_weights(path)
    assert (info.architecture, info.num_classes) == ("shufflenet_v1_x0_5_g3", 10)
    assert info.model_kwargs == {"small_input": True, "drop_rate": 0.1} and info.preprocessing == BGR_RAW
    loaded = load_weights(path).eval()
    assert loaded.small_input and loaded.dropout.p == 0.1 and loaded.num_classes == 10
    assert loaded.preprocessing == BGR_RAW
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(create_model("shufflenet_v1_x0_5_g3", weights=path).eval()(x), model(x))


def test_another_architecture_names_both_and_the_tensors(saved):
    _, path = saved
    with pytest.raises(ValueError, match=r"holds weights for 'shufflenet_v1_x0_5_g3', not 'mobilenet_v2_x0_35'; "
                                         r"mismatching tensors: classifier\.weight: file \(10, 480\), model "
                                         r"\(10, 1280\); missing from the file: features\.0\.conv\.weight"):
        create_model("mobilenet_v2_x0_35", weights=path)
    with pytest.raises(ValueError, match=r"holds weights for 'shufflenet_v1_x0_5_g3', not 'shufflenet_v1_x1_0_g3'.*"
                                         r"features\.stem\.conv\.weight: file \(12, 3, 3, 3\), model \(24, 3, 3, 3\)"):
        create_model("shufflenet_v1_x1_0_g3", weights=path)


def test_other_class_count_needs_the_flag_and_keeps_the_backbone(saved):
    model, path = saved
    with pytest.raises(ValueError, match="10-class classifier, the model has 5 classes.*allow_classifier_reset=True"):
        create_model("shufflenet_v1_x0_5_g3", weights=path, num_classes=5)
    with pytest.warns(UserWarning, match="left out classifier.weight .*5-class classifier is freshly initialised"):
        reset = create_model("shufflenet_v1_x0_5_g3", weights=path, num_classes=5, allow_classifier_reset=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reset.eval().forward_features(x), model.forward_features(x))
        assert reset(x).shape == (2, 5)


def test_backbone_only_model_loads_without_the_flag(saved):
    model, path = saved
    backbone = create_model("shufflenet_v1_x0_5_g3", weights=path, features_only=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(x)[-1], model.forward_features(x))


def test_plain_state_dict_loads_through_weights_only(tmp_path):
    model = trained_like(create_model("mobilenet_v2_x0_35", num_classes=7))
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    loaded = create_model("mobilenet_v2_x0_35", weights=path).eval()  # num_classes read from the classifier
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="records no architecture"):
        load_weights(path)


UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return record_unpickling, ()


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"classifier.weight": torch.zeros(2, 2)}, "payload": RunsCodeWhenUnpickled()}, path)
    with pytest.raises(ValueError, match="refusing to load .*other than tensors"):
        create_model("mobilenet_v2_x0_35", weights=path)
    assert not UNPICKLED


def test_truncated_file_is_a_clear_error(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt safetensors file"):
        load_weights(path)


def test_failed_save_leaves_the_old_file_intact(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        save_weights(model, path, preprocessing=IMAGENET)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]


def test_unregistered_model_and_missing_directory_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="build it with shufflenet.create_model"):
        save_weights(ShuffleNetV1(), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="directory .*missing does not exist"):
        save_weights(create_model("mobilenet_v1_x0_25"), tmp_path / "missing" / "x.safetensors")


def test_preprocessing_metadata_is_validated():
    assert Preprocessing.from_dict(BGR_RAW.to_dict()) == BGR_RAW
    with pytest.raises(ValueError, match="exactly the fields"):
        Preprocessing.from_dict({"channel_order": "RGB"})
    with pytest.raises(ValueError, match="channel_order must be one of"):
        Preprocessing(channel_order="GBR")
    with pytest.raises(ValueError, match="give both mean and std"):
        Preprocessing(std=None)


def test_torch_hub_loads_a_registered_model_with_a_weight_file(saved):
    model, path = saved
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hub_model = torch.hub.load(repo, "shufflenet_v1_x0_5_g3", source="local", weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(hub_model(x), model(x))


def test_save_weights_writes_the_record_and_loading_restores_it(tmp_path):
    model = create_model("mobilenet_v1_x0_25", num_classes=3)
    model.record = model.record.replace(preprocessing=BGR_RAW, class_names=["a", "b", "c"], dataset="toy")
    path = tmp_path / "r.safetensors"
    save_weights(model, path, source="test")
    info = read_weights(path)
    assert (info.preprocessing, info.class_names, info.dataset) == (BGR_RAW, ["a", "b", "c"], "toy")
    loaded = load_weights(path)
    assert loaded.record == model.record  # the whole record comes back
    save_weights(loaded, path, dataset="other")  # a keyword updates the record, then it is written
    assert loaded.record.dataset == "other" and read_weights(path).dataset == "other"
    with pytest.warns(UserWarning, match="freshly initialised"):
        tuned = create_model("mobilenet_v1_x0_25", weights=path, num_classes=5, allow_classifier_reset=True)
    assert tuned.record.class_names is None and tuned.record.preprocessing == BGR_RAW
