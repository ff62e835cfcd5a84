"""Official checkpoints -> our models, with identical outputs.

Every source state dict is built here with the original key names and shapes and random values (random BN
statistics too); the reference forward pass is computed from that original layout with functional ops
(torchvision: its own mobilenet_v2). Nothing is downloaded.
"""
import math

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision
from conftest import OFFICIAL_WIDTHS

from shufflenet import create_model, load_weights
from shufflenet.cli import main
from shufflenet.convert import convert_checkpoint, convert_state_dict
from shufflenet.convert.megvii import rename_key as megvii_key

RESOLUTION = 64  # every model pools adaptively; the official ShuffleNet's AvgPool2d(7) is a global mean at 224
TOLERANCE = 1e-4


def conv_weight(out_channels, in_per_group, k):
    return torch.randn(out_channels, in_per_group, k, k) * math.sqrt(2.0 / (in_per_group * k * k))


def add_bn(state, prefix, channels, counter=True):
    """Random scale and shift; the running statistics are set by calibration (see ``bn``)."""
    state[f"{prefix}.weight"] = torch.empty(channels).uniform_(0.5, 1.5)
    state[f"{prefix}.bias"] = torch.empty(channels).uniform_(-0.3, 0.3)
    state[f"{prefix}.running_mean"] = torch.zeros(channels)
    state[f"{prefix}.running_var"] = torch.ones(channels)
    if counter:
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def bn(state, prefix, x, calibrate=False):
    """Inference BN. ``calibrate``: first set the running statistics to this batch's, as training leaves them,
    so that random weights give activations of a realistic size through the whole network."""
    if calibrate:
        state[f"{prefix}.running_mean"] = x.mean((0, 2, 3))
        state[f"{prefix}.running_var"] = x.var((0, 2, 3))
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], False, 0.0, 1e-5)


def calibration_batch():
    return torch.randn(8, 3, RESOLUTION, RESOLUTION)


def assert_same_logits(ours, reference):
    assert ours.shape == reference.shape
    assert 0.1 < reference.std() < 100  # logits of a realistic size, neither vanishing nor exploding
    assert (ours - reference).abs().max().item() < TOLERANCE


# --- megvii ShuffleNet V1: notes section 2.2-2.3 ---

def megvii_state_dict(groups, scale, classes=1000):
    """The official state dict: first_conv, features.0-15 (branch_main_1 = pw, BN, ReLU, dw, BN; branch_main_2
    = pw, BN), classifier.0 without bias; BN statistics calibrated on a random batch."""
    stem, *stage_widths = OFFICIAL_WIDTHS[groups, scale]
    state = {"first_conv.0.weight": conv_weight(stem, 3, 3)}
    add_bn(state, "first_conv.1", stem)
    inp, index = stem, 0
    for width, repeats in zip(stage_widths, (4, 8, 4)):
        for i in range(repeats):
            outputs = width - inp if i == 0 else width
            mid = width // 4
            first_groups = 1 if index == 0 else groups
            p = f"features.{index}."
            state[p + "branch_main_1.0.weight"] = conv_weight(mid, inp // first_groups, 1)
            add_bn(state, p + "branch_main_1.1", mid)
            state[p + "branch_main_1.3.weight"] = conv_weight(mid, 1, 3)
            add_bn(state, p + "branch_main_1.4", mid)
            state[p + "branch_main_2.0.weight"] = conv_weight(outputs, mid // groups, 1)
            add_bn(state, p + "branch_main_2.1", outputs)
            inp, index = width, index + 1
    state["classifier.0.weight"] = torch.randn(classes, inp) * 0.05
    megvii_forward(state, calibration_batch(), groups, calibrate=True)
    return state


def megvii_checkpoint(state):
    """As megvii's train.py saves it: {'state_dict': ...} from nn.DataParallel, so keys start with 'module.'."""
    return {"state_dict": {"module." + key: value for key, value in state.items()}}


def megvii_forward(state, x, groups, calibrate=False):
    """The official network from the notes: the shuffle comes after the depthwise conv + BN and is
    reshape(C/g, g) -> transpose -> flatten; the stride-2 unit returns cat(avgpool(x), relu(main))."""
    def norm(prefix, t):
        return bn(state, prefix, t, calibrate)

    x = F.relu(norm("first_conv.1", F.conv2d(x, state["first_conv.0.weight"], stride=2, padding=1)))
    x = F.max_pool2d(x, 3, 2, 1)
    for index in range(16):
        p = f"features.{index}."
        stride = 2 if index in (0, 4, 12) else 1
        h = F.conv2d(x, state[p + "branch_main_1.0.weight"], groups=1 if index == 0 else groups)
        h = F.relu(norm(p + "branch_main_1.1", h))
        h = F.conv2d(h, state[p + "branch_main_1.3.weight"], stride=stride, padding=1, groups=h.shape[1])
        h = norm(p + "branch_main_1.4", h)
        b, c, height, width = h.shape
        h = h.reshape(b, c // groups, groups, height, width).permute(0, 2, 1, 3, 4).reshape(b, c, height, width)
        h = norm(p + "branch_main_2.1", F.conv2d(h, state[p + "branch_main_2.0.weight"], groups=groups))
        x = F.relu(h + x) if stride == 1 else torch.cat([F.avg_pool2d(x, 3, 2, 1), F.relu(h)], 1)
    return x.mean((2, 3)) @ state["classifier.0.weight"].t()


# Bottleneck widths m at g = 8 whose n = m / 8 is not a multiple of 8 admit no permutation into the paper's
# order (docs/weights.md); those configs keep megvii's order through shuffle_order="official".
OFFICIAL_ORDER_CONFIGS = {(8, 0.5), (8, 1.0), (8, 1.5)}


@pytest.mark.parametrize("groups,scale", sorted(OFFICIAL_WIDTHS))
def test_megvii_checkpoint_gives_the_official_logits(groups, scale):
    state = megvii_state_dict(groups, scale)
    conversion = convert_state_dict(megvii_checkpoint(state), "megvii")
    name = f"shufflenet_v1_x{str(scale).replace('.', '_')}_g{groups}"
    assert conversion.model_name == name  # inferred from the shapes
    official_order = (groups, scale) in OFFICIAL_ORDER_CONFIGS
    assert conversion.model_kwargs == ({"shuffle_order": "official"} if official_order else {})
    assert len(conversion.state_dict) == 295  # notes 2.3: 295 state_dict entries, 49 BNs
    model = create_model(name, **conversion.model_kwargs).eval()
    model.load_state_dict(conversion.state_dict)
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        assert_same_logits(model(x), megvii_forward(state, x, groups))


def test_megvii_weights_loaded_by_name_alone_give_other_logits():
    """The remapping matters: the official tensors copied to the same-named places are another network."""
    state = megvii_state_dict(3, 0.5)
    model = create_model("shufflenet_v1_x0_5_g3").eval()
    model.load_state_dict(convert_state_dict(megvii_checkpoint(state), "megvii").state_dict)
    naive = create_model("shufflenet_v1_x0_5_g3").eval()
    naive.load_state_dict({megvii_key(key): value for key, value in state.items()})
    x = torch.randn(1, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        reference = megvii_forward(state, x, 3)
        assert (model(x) - reference).abs().max() < TOLERANCE
        assert (naive(x) - reference).abs().max() > 0.1


# --- torchvision mobilenet_v2: the installed model is the reference ---

def randomize_bn(model):
    """Random BN scale and shift; running statistics of a random batch (momentum 1 keeps only the last batch)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(calibration_batch())
    return model.eval()


@pytest.mark.parametrize("width,name", [(1.0, "mobilenet_v2_x1_0"), (0.35, "mobilenet_v2_x0_35"),
                                        (1.4, "mobilenet_v2_x1_4")])
def test_torchvision_mobilenet_v2_gives_the_same_logits(tmp_path, width, name):
    reference = torchvision.models.mobilenet_v2(width_mult=width)
    torch.nn.init.normal_(reference.classifier[1].weight, 0, 0.05)
    reference = randomize_bn(reference)
    source = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), source)
    conversion = convert_checkpoint(source, tmp_path / "ours.safetensors", "torchvision", resize=232)
    assert conversion.model_name == name and len(conversion.state_dict) == len(reference.state_dict())
    model = load_weights(tmp_path / "ours.safetensors").eval()
    assert model.preprocessing.resize == 232 and model.preprocessing.mean == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        assert_same_logits(model(x), reference(x))


# --- timm mobilenetv1_* / mobilenetv2_*: timm's own models, randomly initialised, as the reference ---

def timm_reference(name):
    """timm's ``name`` with random weights and non-trivial BN statistics, in eval mode."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    randomize_bn(model)
    return model.eval()


@pytest.mark.parametrize("timm_name,name", [
    ("mobilenetv1_100", "mobilenet_v1_x1_0"),
    ("mobilenetv2_100", "mobilenet_v2_x1_0"),
    ("mobilenetv2_050", "mobilenet_v2_x0_5"),
    ("mobilenetv2_140", "mobilenet_v2_x1_4"),
])
def test_timm_mobilenets_give_the_same_logits(tmp_path, timm_name, name):
    reference = timm_reference(timm_name)
    source = tmp_path / "model.safetensors"  # as published on the Hugging Face hub
    safetensors.torch.save_file(reference.state_dict(), source)
    conversion = convert_checkpoint(source, tmp_path / "ours.safetensors", "timm")
    assert conversion.model_name == name
    model = load_weights(tmp_path / "ours.safetensors").eval()
    if name.startswith("mobilenet_v1"):
        assert model.record.kwargs == {"activation": "relu6"}
        assert model.preprocessing.mean == (0.5, 0.5, 0.5)  # mobilenetv1_100.ra4: Inception mean/std
    assert model.preprocessing.interpolation == "bicubic"
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        assert_same_logits(model(x), reference(x))


def test_timm_head_conv_variant_is_refused_with_the_reason():
    state = timm_reference("mobilenetv1_100h").state_dict()
    with pytest.raises(ValueError, match="conv_head.*no such layer"):
        convert_state_dict(state, "timm")


def test_timm_model_of_another_family_is_refused():
    state = timm_reference("mobilenetv1_100").state_dict()
    with pytest.raises(ValueError, match="mobilenet_v2_x1_0 cannot hold these tensors: they are for mobilenet_v1_"):
        convert_state_dict(state, "timm", "mobilenet_v2_x1_0")


def test_timm_deeper_variants_have_no_counterpart():
    state = timm_reference("mobilenetv2_110d").state_dict()  # more blocks per stage than Table 2
    with pytest.raises(ValueError, match="no registered model fits.*mobilenetv2_110d"):
        convert_state_dict(state, "timm")


# --- the command line ---

def save_megvii(path, groups=3, scale=0.5, **extra):
    torch.save({**megvii_checkpoint(megvii_state_dict(groups, scale)), **extra}, path)


def test_cli_convert_prints_what_it_mapped(tmp_path, capsys):
    save_megvii(tmp_path / "ShuffleNetV1.pth.tar", epoch=240)
    dst = tmp_path / "shufflenet_v1_x0_5_g3.safetensors"
    assert main(["convert", str(tmp_path / "ShuffleNetV1.pth.tar"), str(dst), "--from", "megvii"]) == 0
    out = capsys.readouterr().out
    assert "model: shufflenet_v1_x0_5_g3 (1000 classes)" in out
    assert "mapped 295 tensors; skipped: epoch" in out
    assert "BGR, pixels 0-255, no mean/std, resize 256" in out
    model = load_weights(dst)
    assert (model.record.architecture, model.record.kwargs) == ("shufflenet_v1_x0_5_g3", {})
    assert model.preprocessing.channel_order == "BGR" and model.preprocessing.max_pixel_value == 255


def test_cli_convert_infers_the_official_order_option(tmp_path, capsys):
    save_megvii(tmp_path / "g8.pth", groups=8, scale=0.5)
    assert main(["convert", str(tmp_path / "g8.pth"), str(tmp_path / "g8.safetensors"), "--from", "megvii"]) == 0
    assert "shuffle_order='official'" in capsys.readouterr().out
    assert load_weights(tmp_path / "g8.safetensors").shuffle_order == "official"


def test_cli_wrong_source_format_names_the_right_one(tmp_path, capsys):
    save_megvii(tmp_path / "megvii.pth")
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "megvii.pth"), str(dst), "--from", "torchvision"]) == 2
    err = capsys.readouterr().err
    assert "not a torchvision checkpoint" in err and "use --from megvii" in err and "Traceback" not in err
    assert not dst.exists()
    # not a known source at all: the parser lists the choices, in one line
    assert main(["convert", str(tmp_path / "megvii.pth"), str(dst), "--from", "caffe"]) == 2
    assert "invalid choice: 'caffe'" in capsys.readouterr().err and not dst.exists()


def test_cli_truncated_checkpoint_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    source = tmp_path / "megvii.pth"
    save_megvii(source)
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(source), str(dst), "--from", "megvii"]) == 2
    err = capsys.readouterr().err
    assert "truncated or not a PyTorch or safetensors file" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [source]


def test_cli_model_that_does_not_fit_lists_the_tensors(tmp_path, capsys):
    save_megvii(tmp_path / "megvii.pth")
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "megvii.pth"), str(dst), "--from", "megvii",
                 "--model", "shufflenet_v1_x1_0_g3"]) == 2
    err = capsys.readouterr().err
    assert "do not fit shufflenet_v1_x1_0_g3: features.stem.conv.weight: file (12, 3, 3, 3), model (24, 3, 3, 3)" \
        in err
    assert not dst.exists()
