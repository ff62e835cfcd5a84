import pytest

from shufflenet import create_model, list_models
from shufflenet.models import MobileNetV1, MobileNetV2, ShuffleNetV1


def test_names_follow_one_scheme():
    assert "shufflenet_v1_x1_0_g3" in list_models()
    assert len(list_models("shufflenet_v1_x*_g[0-9]")) == 25  # 5 scales x 5 group counts
    assert list_models("mobilenet_v1_*") == ["mobilenet_v1_x0_25", "mobilenet_v1_x0_5", "mobilenet_v1_x0_75",
                                             "mobilenet_v1_x1_0"]
    assert {"mobilenet_v2_x1_4", "mobilenet_v2_x0_35", "shufflenet_v1_x0_5_g3_shallow",
            "shufflenet_v1_x0_25_g8"} <= set(list_models())


def test_create_model_builds_what_the_name_says():
    model = create_model("shufflenet_v1_x0_25_g8", num_classes=10)
    assert isinstance(model, ShuffleNetV1) and model.groups == 8 and model.num_classes == 10
    assert model.widths == (16, 96, 192, 384)
    assert isinstance(create_model("mobilenet_v1_x0_75"), MobileNetV1)
    v2 = create_model("mobilenet_v2_x1_4", drop_rate=0.0)
    assert isinstance(v2, MobileNetV2) and v2.width_mult == 1.4 and v2.dropout.p == 0.0


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="unknown model 'shufflenet_v1_x1_g3'; close matches: .*shufflenet_v1_x1_0_g3"):
        create_model("shufflenet_v1_x1_g3")


def test_overriding_what_the_name_fixes_is_an_error():
    with pytest.raises(ValueError, match="fixes groups"):
        create_model("shufflenet_v1_x1_0_g3", groups=8)
