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
    assert isinstance(v2, MobileNetV2) and v2.rows[-1].channels == 1792 and v2.dropout.p == 0.0  # 1280 x 1.4


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="unknown model 'shufflenet_v1_x1_g3'; close matches: .*shufflenet_v1_x1_0_g3"):
        create_model("shufflenet_v1_x1_g3")


def test_overriding_what_the_name_fixes_is_an_error():
    with pytest.raises(ValueError, match="fixes groups"):
        create_model("shufflenet_v1_x1_0_g3", groups=8)


def test_architecture_tables_come_without_building_and_match_the_model(monkeypatch):
    from shufflenet.models import model_rows
    from shufflenet.models.builder import architecture_table
    from shufflenet.models.shufflenet_v1 import ShuffleUnit

    monkeypatch.setattr(ShuffleUnit, "__init__", None)  # building a unit would fail: the table needs none
    rows = model_rows("shufflenet_v1_x1_0_g3")
    assert [(r.name, r.channels, r.repeats, r.stride) for r in rows] == [  # Table 1, g = 3
        ("stem", 24, 1, 2), ("pool", 24, 1, 2), ("stage2", 240, 4, 2), ("stage3", 480, 8, 2), ("stage4", 960, 4, 2)]
    assert rows[2].first == {"first_groups": 1} and not rows[3].first  # Table 1 note: stage 2's first conv
    monkeypatch.undo()
    model = create_model("mobilenet_v2_x1_0")
    table = architecture_table(model_rows("mobilenet_v2_x1_0"))
    assert [line[0] for line in table][:3] == ["0", "1", "2-3"] and table[-1][0] == str(len(model.features) - 1)
    with pytest.raises(ValueError, match="torchvision reference model"):
        model_rows("tv_alexnet")


@pytest.mark.parametrize("name", ["shufflenet_v1_x0_5_g3", "mobilenet_v1_x0_25", "mobilenet_v2_x0_35",
                                  "table4_vgg_13m"])
def test_the_small_input_rule_slows_the_first_two_stride_2_rows(name):
    from shufflenet.models import model_rows
    from shufflenet.models.builder import architecture_table

    standard, small = (architecture_table(model_rows(name), small_input) for small_input in (False, True))
    changed = [i for i, (a, b) in enumerate(zip(standard, small)) if a != b]
    assert len(changed) == 2 and all(standard[i][4] == 2 and small[i][4] == 1 for i in changed)
    assert changed == [i for i, line in enumerate(standard) if line[4] == 2][:2]
    assert create_model(name, small_input=True).min_input_size == 8


def test_models_command_prints_the_architecture(capsys):
    from shufflenet.cli import main

    assert main(["models", "shufflenet_v1_x0_5_g3_shallow", "--arch"]) == 0
    out = capsys.readouterr().out
    assert "| stage2 | ShuffleUnit |      180 |       2 |" in out and "first_groups=1" in out
    assert main(["models", "tv_*", "--arch"]) == 2
    assert "only torchvision reference models" in capsys.readouterr().err
