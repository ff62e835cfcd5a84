"""BN folding, the blocked-layout rewrite, ONNX / TorchScript export with parity checks, metadata, atomic writes."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import shufflenet.deploy.export as export_module
from shufflenet import create_model
from shufflenet.data.preprocessing import Preprocessing
from shufflenet.deploy.blocked_layout import BlockedShuffleUnit, rewrite_for_blocked_layout
from shufflenet.deploy.export import ParityError, export_onnx, export_torchscript
from shufflenet.deploy.folding import fold_batchnorm
from shufflenet.io.onnx_file import onnx_runner, read_onnx_metadata


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def with_random_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that folding has something to get wrong."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["shufflenet_v1_x0_25_g8", "mobilenet_v2_x0_35"])
def test_folding_removes_every_batchnorm_and_keeps_outputs(name):
    model = with_random_statistics(create_model(name))
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert count_batchnorms(folded) == 0 and count_batchnorms(model) > 0
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, kwargs", [
    ("shufflenet_v1_x0_5_g3", {}),                    # 10 and 20 channels per group: padded to 16 and 24
    ("shufflenet_v1_x0_25_g8", {}),                   # g = 8, stride-2 shortcuts become depthwise convs
    ("shufflenet_v1_x0_5_g3", {"shuffle": False}),    # padding without a shuffle
])
def test_blocked_layout_rewrite_keeps_outputs(name, kwargs):
    model = with_random_statistics(create_model(name, **kwargs))
    rewritten = rewrite_for_blocked_layout(model, block=8)
    units = [m for m in rewritten.modules() if isinstance(m, BlockedShuffleUnit)]
    assert units and all(u.pw1.out_channels % 8 == 0 and u.dw.out_channels % 8 == 0 for u in units)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x), atol=1e-5, rtol=1e-5)


def test_onnx_export_parity_dynamic_batch_and_metadata(tmp_path):
    model = with_random_statistics(create_model("shufflenet_v1_x0_25_g8"))
    path = tmp_path / "model.onnx"
    model.record = model.record.replace(preprocessing=Preprocessing("BGR", 255.0, None, None, resize=64, crop=64))
    diff = export_onnx(model, path, 64)  # the name and the preprocessing come from the record
    assert diff < 1e-4
    run = onnx_runner(path)
    for batch in (1, 3):  # the batch axis is dynamic
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            assert np.abs(run(x).numpy() - model(x).numpy()).max() < 1e-4
    metadata = read_onnx_metadata(path)
    assert metadata["model"] == "shufflenet_v1_x0_25_g8" and metadata["num_classes"] == "1000"
    assert Preprocessing.from_dict(json.loads(metadata["preprocessing"])).channel_order == "BGR"
    import onnx

    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert "BatchNormalization" not in ops and "Transpose" not in ops and "Gather" in ops  # shuffle = one Gather
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def test_plain_onnx_export_keeps_the_native_shuffle_correct(tmp_path):
    """torch.channel_shuffle goes through the exporter's own decomposition: ONNX Runtime, run here on the file,
    gives PyTorch's logits, and not those of the same weights without the shuffle."""
    import onnxruntime

    model = with_random_statistics(create_model("shufflenet_v1_x0_5_g3"))
    unshuffled = create_model("shufflenet_v1_x0_5_g3", shuffle=False).eval()
    unshuffled.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected, without_shuffle = model(x).numpy(), unshuffled(x).numpy()
    export_onnx(model, tmp_path / "plain.onnx", 64, rewrite=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
    assert np.abs(without_shuffle - expected).max() > 1e-2 * scale  # the shuffle matters to these logits


def test_parity_failure_is_clear_and_writes_nothing(tmp_path, monkeypatch):
    model = create_model("shufflenet_v1_x0_25_g8").eval()
    path = tmp_path / "model.onnx"
    real = export_module.onnx_runner
    monkeypatch.setattr(export_module, "onnx_runner", lambda *args: lambda x: real(*args)(x) + 1.0)  # a bad graph
    with pytest.raises(ParityError, match="differs from the PyTorch model by up to 1"):
        export_onnx(model, path, 64)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_parity_failure_keeps_an_existing_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ParityError):
        export_onnx(create_model("shufflenet_v1_x0_25_g8"), path, 64, tolerance=-1.0)
    assert path.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


def test_one_parity_rule_scales_with_the_outputs_and_checks_shapes():
    from shufflenet.deploy.export import PARITY_TOLERANCE, check_parity

    small, large = torch.zeros(3), torch.full((3,), 1000.0)
    assert check_parity([small], [small + 0.5 * PARITY_TOLERANCE], "x") == pytest.approx(0.5 * PARITY_TOLERANCE)
    with pytest.raises(ParityError, match="x differs from the PyTorch model by up to 0.0002 .tolerance 0.0001."):
        check_parity([small], [small + 2 * PARITY_TOLERANCE], "x")
    assert check_parity([large], [large + 0.05], "boxes") == pytest.approx(0.05, rel=1e-3)  # within 1e-4 of 1000
    with pytest.raises(ParityError, match="outputs of shapes"):
        check_parity([small], [torch.zeros(4)], "x")
    assert issubclass(ParityError, ValueError)  # the command line's one-line error


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export(tmp_path):
    model = with_random_statistics(create_model("shufflenet_v1_x0_25_g8"))
    path = tmp_path / "model.pt"
    assert export_torchscript(model, path, 64) < 1e-4
    files = {"preprocessing.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    assert json.loads(files["preprocessing.json"])["crop"] == 64
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)


def test_export_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    from shufflenet.cli import main

    assert main(["export", "shufflenet_v1_x0_25_g8", "-o", str(tmp_path / "m.onnx"), "--int8"]) == 2
    assert "--int8 needs --format onnx or executorch and --calib" in capsys.readouterr().err
    assert main(["export", "shufflenet_v1_x0_25_g8", "-o", str(tmp_path / "missing" / "m.onnx"),
                 "--resolution", "64"]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err


def test_int8_equalization_keeps_outputs_and_evens_out_channel_ranges():
    from shufflenet.deploy.equalization import equalize_for_int8

    model = with_random_statistics(create_model("shufflenet_v1_x0_5_g3"))
    calibration = torch.randn(8, 3, 64, 64)
    rewritten = rewrite_for_blocked_layout(model, block=8)
    equalized = equalize_for_int8(rewrite_for_blocked_layout(model, block=8), calibration)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(equalized(x), model(x), atol=1e-4, rtol=1e-4)

    def relu_ranges(network):
        unit = next(m for m in network.modules() if isinstance(m, BlockedShuffleUnit))
        seen = {}

        def record(module, inputs, output):
            seen["r"] = output.clamp(min=0).amax((0, 2, 3))

        hook = unit.pw1.register_forward_hook(record)
        with torch.no_grad():
            network(calibration)
        hook.remove()
        live = seen["r"][seen["r"] > 0]
        return live.max() / live.min()

    assert relu_ranges(rewritten) > 2 and relu_ranges(equalized) == pytest.approx(1.0, rel=1e-3)
