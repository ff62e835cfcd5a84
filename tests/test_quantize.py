"""int8 quantization (ONNX Runtime and PyTorch), CIFAR-10 reading without unsafe unpickling, evaluation."""
import pickle

import numpy as np
import pytest
import torch

from shufflenet import create_model
from shufflenet.export import export_onnx, onnx_runner, read_onnx_metadata
from shufflenet.image_data import image_batches, read_cifar10_batch
from shufflenet.preprocessing import Preprocessing
from shufflenet.quantize import evaluate, quantize_onnx, quantize_torch, torch_runner


def cifar_like_batch(path, count=6):
    """A batch file in CIFAR-10's python format (a protocol-2 pickle of a dict holding a numpy array)."""
    rng = np.random.default_rng(0)
    batch = {"batch_label": "testing batch 1 of 1", "labels": [int(v) for v in rng.integers(0, 10, count)],
             "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             "filenames": [f"{i}.png" for i in range(count)]}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def test_cifar_batch_reader(tmp_path):
    batch = cifar_like_batch(tmp_path / "test_batch")
    images, labels = read_cifar10_batch(tmp_path / "test_batch")
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == batch["labels"]
    assert images[0, 0, 1, 0] == batch["data"][0, 1] and images[0, 0, 0, 2] == batch["data"][0, 2048]  # R, B planes


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_reader_refuses_code_in_the_pickle(tmp_path, capsys):
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        read_cifar10_batch(tmp_path / "test_batch")
    assert "never run" not in capsys.readouterr().out


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
    batch = cifar_like_batch(tmp_path / "test_batch")
    model = create_model("shufflenet_v1_x0_25_g8", num_classes=10, small_input=True).eval()
    batches = list(image_batches(tmp_path, Preprocessing.for_resolution(32), batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 2]
    scores = evaluate({"fp32": torch_runner(model)}, batches)
    predicted = model(torch.cat([x for x, _ in batches])).argmax(1)
    expected = 100.0 * (predicted == torch.tensor(batch["labels"])).float().mean().item()
    assert scores["fp32"]["top1"] == pytest.approx(expected) and scores["fp32"]["images"] == 6


def test_export_int8_cli_reports_the_accuracy_change(tmp_path, capsys):
    from shufflenet.cli import main

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        cifar_like_batch(tmp_path / name, count=4)
    out = tmp_path / "int8.onnx"
    assert main(["export", "shufflenet_v1_x0_25_g8", "--num-classes", "10", "--resolution", "32", "-o", str(out),
                 "--int8", "--calib", str(tmp_path), "--calib-count", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (onnx, int8, 32x32, dynamic batch)") and out.is_file()
    assert lines[1].startswith(f"int8 on 4 images of {tmp_path}: top-1 agreement with fp32 ")
    assert "(fp32) -> " in lines[1] and lines[1].endswith(" points")
