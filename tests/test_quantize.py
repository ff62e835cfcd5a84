"""int8 quantization (ONNX Runtime and PyTorch) and the accuracy comparison."""
import pickle

import pytest
import torch

from shufflenet import create_model
from shufflenet.export import export_onnx, onnx_runner, read_onnx_metadata
from shufflenet.image_data import image_batches
from shufflenet.preprocessing import Preprocessing
from shufflenet.quantize import evaluate, quantize_onnx, quantize_torch, torch_runner
from test_data import write_fake_cifar


def test_onnx_int8_runs_and_agrees_with_fp32(tmp_path):
    torch.manual_seed(0)
    model = create_model("shufflenet_v1_x0_5_g3", num_classes=10).eval()
    with torch.no_grad():  # a confident classifier, so that top-1 is not decided by rounding noise
        model.classifier.weight.normal_(0, 0.5)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, fp32, 64)
    calibration = torch.randn(16, 3, 64, 64)
    quantize_onnx(fp32, int8, calibration)
    import onnx

    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    assert read_onnx_metadata(int8)["num_classes"] == "10"  # predict can still read the preprocessing
    images = torch.randn(32, 3, 64, 64)
    scores = evaluate({"fp32": onnx_runner(fp32), "int8": onnx_runner(int8)}, [(images, None)])
    assert scores["fp32"]["agreement"] == 100.0
    assert scores["int8"]["agreement"] >= 80.0


@pytest.mark.filterwarnings("ignore:All inputs of this cat operator")  # a known FX caveat, docs/deploy.md
def test_torch_fx_int8_agrees_with_fp32():
    torch.manual_seed(0)
    model = create_model("shufflenet_v1_x0_25_g8", num_classes=10).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
    quantized = quantize_torch(model, torch.randn(8, 3, 64, 64))
    images = torch.randn(32, 3, 64, 64)
    scores = evaluate({"fp32": torch_runner(model), "int8": torch_runner(quantized)}, [(images, None)])
    assert scores["int8"]["agreement"] >= 80.0


def test_evaluate_reports_top1_on_labelled_cifar(tmp_path):
    folder = write_fake_cifar(tmp_path)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    model = create_model("shufflenet_v1_x0_25_g8", num_classes=10, small_input=True).eval()
    preprocessing = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, resize=32, crop=32)
    batches = list(image_batches(tmp_path, preprocessing, limit=6, batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 2]
    picked = [round(i) for i in torch.linspace(0, 9999, 6).tolist()]
    assert batches[0][1].tolist()[:4] == [batch["labels"][i] for i in picked[:4]]
    scores = evaluate({"fp32": torch_runner(model)}, batches)
    predicted = model(torch.cat([x for x, _ in batches])).argmax(1)
    expected = 100.0 * (predicted == torch.tensor([batch["labels"][i] for i in picked])).float().mean().item()
    assert scores["fp32"]["top1"] == pytest.approx(expected) and scores["fp32"]["images"] == 6


def test_export_int8_cli_reports_the_accuracy_change(tmp_path, capsys):
    from shufflenet.cli import main

    write_fake_cifar(tmp_path)
    out = tmp_path / "int8.onnx"
    assert main(["export", "shufflenet_v1_x0_25_g8", "--num-classes", "10", "--resolution", "32", "-o", str(out),
                 "--int8", "--calib", str(tmp_path), "--calib-count", "8", "--eval-count", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (onnx, int8, 32x32, dynamic batch)") and out.is_file()
    assert lines[1].startswith(f"int8 on 4 images of {tmp_path}: top-1 agreement with fp32 ")
    assert "(fp32) -> " in lines[1] and lines[1].endswith(" points")
