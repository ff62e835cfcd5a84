"""int8 quantization (ONNX Runtime and PyTorch) and the one evaluation that scores any runner."""
import pickle

import pytest
import torch
from conftest import write_fake_cifar

from shufflenet import create_model
from shufflenet.data.preprocessing import Preprocessing
from shufflenet.data.sources import batches, open_folder
from shufflenet.deploy.export import export_onnx
from shufflenet.deploy.int8 import quantize_onnx, quantize_torch
from shufflenet.engine.evaluate import evaluate
from shufflenet.factory import model_runner
from shufflenet.io.onnx_file import onnx_runner, read_onnx_metadata


def confident_classifier(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():  # a confident classifier, so that top-1 is not decided by rounding noise
        model.classifier.weight.normal_(0, 0.5)
    return model


def test_onnx_int8_agrees_with_fp32_and_differs_from_it(tmp_path):
    model = confident_classifier("shufflenet_v1_x0_5_g3")
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, fp32, 64)
    quantize_onnx(fp32, int8, torch.randn(16, 3, 64, 64))
    import onnx

    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    assert read_onnx_metadata(int8)["num_classes"] == "10"  # predict can still read the preprocessing
    images = torch.randn(32, 3, 64, 64)
    logits = {"fp32": onnx_runner(fp32)(images), "int8": onnx_runner(int8)(images)}
    assert 0 < (logits["int8"] - logits["fp32"]).abs().max() < logits["fp32"].abs().max()  # quantized, not broken
    scores = evaluate({"fp32": onnx_runner(fp32), "int8": onnx_runner(int8)}, [(images, None)])
    same = 100.0 * (logits["int8"].argmax(1) == logits["fp32"].argmax(1)).float().mean().item()
    assert scores["int8"]["agreement"] == pytest.approx(same) and same >= 80.0


@pytest.mark.filterwarnings("ignore:All inputs of this cat operator")  # a known FX caveat, docs/deploy.md
def test_torch_fx_int8_agrees_with_fp32():
    model = confident_classifier("shufflenet_v1_x0_25_g8")
    quantized = quantize_torch(model, torch.randn(8, 3, 64, 64))
    assert any("quantized" in type(m).__module__ for m in quantized.modules())
    images = torch.randn(32, 3, 64, 64)
    scores = evaluate({"fp32": model_runner(model), "int8": model_runner(quantized)}, [(images, None)])
    assert scores["int8"]["agreement"] >= 80.0


def test_evaluate_scores_against_a_count_done_by_hand():
    torch.manual_seed(1)
    logits = torch.randn(40, 10)
    labels = torch.randint(0, 10, (40,))
    other = logits.clone()
    other[:10] = -other[:10]  # a second runner that disagrees on (most of) the first 10 images
    table = {id(logits): logits, id(other): other}
    batches_ = [(torch.arange(0, 25), labels[:25]), (torch.arange(25, 40), labels[25:])]

    def runner(source):
        return lambda index: table[id(source)][index]

    scores = evaluate({"a": runner(logits), "b": runner(other)}, batches_, per_class=True)
    a = scores["a"]
    top5 = logits.topk(5, 1).indices
    assert a["top1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    assert a["top5"] == pytest.approx(100 * (top5 == labels[:, None]).any(1).float().mean().item())
    assert a["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert a["agreement"] == 100.0
    assert scores["b"]["agreement"] == pytest.approx(100 * (other.argmax(1) == logits.argmax(1)).float().mean().item())
    hits = (logits.argmax(1) == labels).float()
    per_class = [100 * hits[labels == c].mean().item() if (labels == c).any() else 0.0 for c in range(10)]
    assert a["per_class"] == pytest.approx(per_class)


def test_scores_on_labelled_cifar_follow_the_labels(tmp_path):
    folder = write_fake_cifar(tmp_path)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    preprocessing = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, resize=32, crop=32)
    test_set, names = open_folder(tmp_path, "test", preprocessing.transform(), check_md5=False)
    got = list(batches(test_set, 4, limit=6))
    assert [len(x) for x, _ in got] == [4, 2] and names[3] == "c3"
    picked = [round(i) for i in torch.linspace(0, 9999, 6).tolist()]
    assert torch.cat([y for _, y in got]).tolist() == [batch["labels"][i] for i in picked]
    model = create_model("shufflenet_v1_x0_25_g8", num_classes=10, small_input=True).eval()
    scores = evaluate(model_runner(model), got)
    predicted = model(torch.cat([x for x, _ in got])).argmax(1)
    expected = 100.0 * (predicted == torch.tensor([batch["labels"][i] for i in picked])).float().mean().item()
    assert scores["top1"] == pytest.approx(expected) and scores["images"] == 6


def test_export_int8_cli_reports_the_accuracy_change(tmp_path, capsys):
    import re

    import onnxruntime

    from shufflenet import load, save_weights
    from shufflenet.cli import main

    write_fake_cifar(tmp_path / "cifar")
    torch.manual_seed(0)
    model = create_model("shufflenet_v1_x0_25_g8", num_classes=10)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # predictions that vary with
        bn.running_var.uniform_(0.5, 2)  # the image and that int8 changes (with BN at its initial values every
        bn.weight.data.uniform_(0.5, 1.5)  # image gets one class, in fp32 and int8 alike)
        bn.bias.data.uniform_(-0.5, 0.5)
    save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "int8.onnx"
    assert main(["export", "shufflenet_v1_x0_25_g8", "--weights", str(tmp_path / "w.safetensors"), "--resolution",
                 "32", "-o", str(out), "--int8", "--calib", str(tmp_path / "cifar"), "--calib-count", "8",
                 "--eval-count", "40", "--no-md5-check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (onnx, int8, 32x32, dynamic batch)") and out.is_file()
    reported = re.fullmatch(rf"int8 on 40 images of {re.escape(str(tmp_path / 'cifar'))}: top-1 agreement with fp32 "
                            r"([\d.]+)%, top-1 ([\d.]+)% \(fp32\) -> ([\d.]+)% \(int8\), change ([-+][\d.]+) points",
                            lines[1])
    assert reported, lines[1]
    # The same 40 test images scored here: the PyTorch model for fp32, ONNX Runtime on the written file for int8.
    loaded = load("shufflenet_v1_x0_25_g8", tmp_path / "w.safetensors")
    scored, _ = open_folder(tmp_path / "cifar", "test", loaded.preprocessing.for_resolution(32).transform(),
                            check_md5=False)
    images, labels = (torch.cat(parts) for parts in zip(*batches(scored, 16, limit=40)))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    int8 = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]).argmax(1)
    with torch.no_grad():
        fp32 = loaded.model(images).argmax(1)
    percent = lambda hits: 100.0 * hits.float().mean().item()  # noqa: E731
    expected = (percent(int8 == fp32), percent(fp32 == labels), percent(int8 == labels))
    assert [float(v) for v in reported.groups()[:3]] == pytest.approx(expected, abs=0.005)
    assert float(reported.group(4)) == pytest.approx(expected[2] - expected[1], abs=0.005)
    # int8 changes predictions, so agreement and the two top-1s are distinct figures (fp32 and int8 top-1 may still
    # coincide on 40 images: that depends on the CPU's int8 kernels; test_scores_on_labelled_cifar_follow_the_labels
    # checks the scoring itself)
    assert expected[0] < 100
