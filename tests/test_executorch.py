"""ExecuTorch export (XNNPACK): fp32 and int8 .pte files checked against PyTorch, the whole network delegated, the
average-pool rewrite exact, predict through a .pte, one-line errors for bad files, nothing written on failure.

Lowering costs seconds per model, so each model is exported once per precision at 32x32 with small widths and,
for ShuffleNet, only the stride-2 unit of each stage (g = 3 keeps a stride-1 unit in stage 2: every unit kind is
there); the int8 export of g = 8 is the one of the command-line test.
"""
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("executorch")

from conftest import write_fake_cifar  # noqa: E402

from shufflenet import create_model, load, save_weights  # noqa: E402
from shufflenet.cli import main  # noqa: E402
from shufflenet.deploy import blocked_layout  # noqa: E402
from shufflenet.deploy import executorch as et  # noqa: E402
from shufflenet.deploy.blocked_layout import average_pool_as_conv  # noqa: E402
from shufflenet.deploy.export import ParityError  # noqa: E402
from shufflenet.deploy.folding import fold_batchnorm  # noqa: E402
from shufflenet.io.pte_file import pte_runner, set_threads  # noqa: E402

RESOLUTION = 32
SHUFFLENETS = [f"shufflenet_v1_x0_25_g{g}" for g in (1, 2, 3, 4, 8)]
MOBILENETS = ["mobilenet_v1_x0_25", "mobilenet_v2_x0_35"]
RACCOON = Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon" / "images" / "raccoon-1.jpg"


def lively(name: str) -> torch.nn.Module:
    """A small random model whose logits vary with the input (BN away from its initial values, as trained
    weights are), so that parity is tested on outputs of size 1, not on near-zero ones."""
    torch.manual_seed(0)
    kwargs = {}
    if name.startswith("shufflenet"):
        kwargs = {"repeats": (2 if name.endswith("g3") else 1, 1, 1), "zero_init_last": False}
    model = create_model(name, num_classes=10, **kwargs).eval()
    model.record = model.record.replace(class_names=[f"kind {i}" for i in range(10)])
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_var.uniform_(0.5, 2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.5)
        logits = model(torch.randn(8, 3, RESOLUTION, RESOLUTION))
        model.classifier.weight.mul_(3 / logits.abs().max())
    return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> (model, fp32 .pte, fp32 result), exported once."""
    folder = tmp_path_factory.mktemp("pte")
    made = {}

    def export(name: str):
        if name not in made:
            model = lively(name)
            path = folder / f"{name}.pte"
            made[name] = model, path, et.export_executorch(model, path, RESOLUTION)
        return made[name]

    return export


def shuffle_count(model: torch.nn.Module) -> int:
    from shufflenet.models.layers import ChannelShuffle

    return sum(isinstance(m, ChannelShuffle) for m in model.modules())


@pytest.mark.parametrize("size", [9, 8, 15, 16])  # stage 2 sees size x size: odd and even
def test_average_pool_rewrite_is_exact_on_odd_and_even_sizes(size):
    pool = torch.nn.AvgPool2d(3, 2, 1)  # the stride-2 shortcut: padding counted, every window divides by 9
    x = torch.randn(2, 6, size, size)
    conv = average_pool_as_conv(pool, 6)
    assert isinstance(conv, torch.nn.Conv2d) and conv.groups == 6
    torch.testing.assert_close(conv(x), pool(x), rtol=0, atol=1e-6)
    # The whole-model rewrite finds the pools and their channel counts, and changes nothing else.
    model = lively("shufflenet_v1_x0_25_g3")
    image = torch.randn(1, 3, size * 4, size * 4)
    rewritten = et.rewrite_average_pools(fold_batchnorm(model), image)
    assert not any(isinstance(m, torch.nn.AvgPool2d) for m in rewritten.modules())
    with torch.no_grad():
        torch.testing.assert_close(rewritten(image), model(image), rtol=0, atol=1e-5)


@pytest.mark.parametrize("output, side", [(6, 6), (6, 12), (1, 7), (3, 7)])
def test_adaptive_pools_become_the_fixed_pool_they_are_at_the_program_size(output, side):
    pool = torch.nn.AdaptiveAvgPool2d(output)  # AlexNet's: (6, 6), the identity at 224x224
    x = torch.randn(1, 4, side, side)
    fixed = et.fixed_average_pool(pool, x.shape)
    assert (fixed is pool) == (side % output != 0 or output == 1)  # a global pool lowers as a mean
    assert isinstance(fixed, torch.nn.Identity) == (output == side)
    torch.testing.assert_close(fixed(x), pool(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SHUFFLENETS + MOBILENETS)
def test_fp32_pte_matches_pytorch_and_is_one_xnnpack_delegate(exports, name):
    model, path, result = exports(name)
    assert result.parity <= et.PARITY_TOLERANCE
    assert result.delegation.delegates == 1 and not result.delegation.portable, result.delegation.describe()
    delegated = result.delegation.delegated
    assert "aten.avg_pool2d" not in delegated
    if name.startswith("shufflenet"):
        shuffles = shuffle_count(model)
        assert shuffles == (0 if name.endswith("g1") else 4 if name.endswith("g3") else 3)
        # Each shuffle is one permute; nothing else of the graph permutes or clones.
        assert delegated["aten.permute_copy"] == shuffles and not any("clone" in op for op in delegated)
    images = torch.randn(3, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        expected = model(images)
    got = pte_runner(path)(images)
    assert expected.abs().max() > 0.5  # outputs worth comparing
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", SHUFFLENETS[:-1] + MOBILENETS)  # g = 8: test_int8_cli_...
def test_int8_pte_matches_its_quantized_module(exports, name, tmp_path):
    model, fp32_path, _ = exports(name)
    path = tmp_path / "int8.pte"
    result = et.export_executorch(model, path, RESOLUTION, calibration=torch.randn(4, 3, RESOLUTION, RESOLUTION))
    assert result.parity <= et.INT8_PARITY_TOLERANCE * 3  # of the largest logit (about 3)
    assert result.delegation.delegates == 1 and not result.delegation.portable, result.delegation.describe()
    assert result.delegation.delegated["quantized_decomposed.quantize_per_tensor"] > 0
    images = torch.randn(4, 3, RESOLUTION, RESOLUTION)
    fp32, int8 = pte_runner(fp32_path)(images), pte_runner(path)(images)
    assert 0 < (int8 - fp32).abs().max() < fp32.abs().max()  # quantized, not broken
    assert path.stat().st_size < fp32_path.stat().st_size


def test_the_profile_times_every_operator_the_delegate_took(exports):
    from shufflenet.bench.pte_profile import profile_pte

    model, path, result = exports("shufflenet_v1_x0_25_g3")
    rows = profile_pte(path, (1, 3, RESOLUTION, RESOLUTION), runs=3)
    nodes = {row["kind"]: row["nodes"] for row in rows}
    delegated = result.delegation.delegated
    # Every convolution and the classifier, each once per run (XNNPACK may run a 1x1 convolution as a GEMM).
    assert sum(n for kind, n in nodes.items() if kind.startswith(("Convolution", "Fully Connected"))) == (
        delegated["aten.convolution"] + delegated["aten.linear"])
    assert nodes["Max Pooling (NHWC, F32)"] == delegated["aten.max_pool2d"] == 1
    assert all("(" in kind for kind in nodes), nodes  # XNNPACK's "Name (layout, type)", not the runtime's spans
    assert sum(row["share"] for row in rows) == pytest.approx(1) and all(row["us"] >= 0 for row in rows)


def test_predict_reads_the_record_inside_the_pte(exports, tmp_path, capsys):
    model, path, _ = exports("shufflenet_v1_x0_25_g3")
    if RACCOON.is_file():
        image = RACCOON
    else:
        image = tmp_path / "image.png"
        Image.fromarray(torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8).numpy()).save(image)
    loaded = load(path)
    assert loaded.class_names[0] == "kind 0" and loaded.preprocessing.crop == RESOLUTION and loaded.model is None
    from shufflenet.data.images import read_image

    x = loaded.preprocessing.transform()(read_image(image))[None]
    with torch.no_grad():
        expected = model(x).softmax(1)[0]
    assert main(["predict", str(path), str(image), "--top", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    best = int(expected.argmax())
    assert printed[1] == f"  1. kind {best} ({100 * float(expected[best]):.2f}%)", printed


@pytest.fixture
def bad_ptes(tmp_path, exports):
    _, good, _ = exports("shufflenet_v1_x0_25_g3")
    data = good.read_bytes()
    files = {"empty.pte": b"", "truncated.pte": data[: len(data) // 2], "text.pte": b"not a program\n" * 20,
             "header-only.pte": data[:64]}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    return tmp_path


@pytest.mark.parametrize("bad", ["empty.pte", "truncated.pte", "text.pte", "header-only.pte"])
def test_unreadable_pte_files_are_one_line(bad_ptes, capsys, bad):
    from test_robustness import one_line_error

    assert main(["predict", str(bad_ptes / bad), str(bad_ptes / "image.png")]) == 2
    message = one_line_error(capsys)
    assert str(bad_ptes / bad) in message and "export it again" in message
    with pytest.raises(ValueError, match="export it again"):
        load(bad_ptes / bad)


def test_nothing_is_written_when_parity_fails(exports, tmp_path, monkeypatch):
    model, _, _ = exports("shufflenet_v1_x0_25_g3")
    out = tmp_path / "m.pte"
    out.write_bytes(b"earlier file")
    real = et.pte_runner
    monkeypatch.setattr(et, "pte_runner", lambda path: (lambda x: real(path)(x) + 1e-2))
    with pytest.raises(ParityError, match="the file was not written"):
        et.export_executorch(model, out, RESOLUTION)
    assert out.read_bytes() == b"earlier file" and [p.name for p in tmp_path.iterdir()] == ["m.pte"]


def test_an_operator_left_outside_xnnpack_fails_unless_allowed(tmp_path, monkeypatch, capsys):
    from test_robustness import one_line_error

    save_weights(lively("shufflenet_v1_x0_25_g8"), tmp_path / "w.safetensors")
    for module in (blocked_layout, et):  # the pools stay pools
        monkeypatch.setattr(module, "average_pool_as_conv", lambda pool, channels: pool)
    out = tmp_path / "m.pte"
    argv = ["export", "shufflenet_v1_x0_25_g8", "--weights", str(tmp_path / "w.safetensors"), "-o", str(out),
            "--format", "executorch", "--resolution", "32"]
    assert main(argv) == 2
    message = one_line_error(capsys)
    assert "XNNPACK does not take aten.avg_pool2d x3" in message and "--allow-portable" in message
    assert not out.exists()
    assert main([*argv, "--allow-portable"]) == 0
    assert "left to portable kernels: aten.avg_pool2d x3" in capsys.readouterr().out and out.is_file()


def test_int8_cli_reports_the_accuracy_change_as_the_onnx_export_does(tmp_path, capsys):
    import re

    write_fake_cifar(tmp_path / "cifar")
    save_weights(lively("shufflenet_v1_x0_25_g8"), tmp_path / "w.safetensors")
    out = tmp_path / "int8.pte"
    assert main(["export", "shufflenet_v1_x0_25_g8", "--weights", str(tmp_path / "w.safetensors"), "--resolution",
                 "32", "-o", str(out), "--format", "executorch", "--int8", "--calib", str(tmp_path / "cifar"),
                 "--calib-count", "4", "--eval-count", "20", "--no-md5-check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "quantized_decomposed.quantize_per_tensor" in lines[0] and "in 1 delegate(s)" in lines[0]
    assert "left to portable" not in lines[0]
    assert lines[1].startswith(f"wrote {out} (executorch, XNNPACK, int8, 32x32, batch 1)")
    parity = float(re.search(r"max abs diff (\S+) ", lines[1]).group(1))
    assert parity <= et.INT8_PARITY_TOLERANCE * 3  # of the largest logit (about 3)
    assert re.fullmatch(rf"int8 on 20 images of {re.escape(str(tmp_path / 'cifar'))}: top-1 agreement with fp32 "
                        r"[\d.]+%, top-1 [\d.]+% \(fp32\) -> [\d.]+% \(int8\), change [-+][\d.]+ points", lines[2])


def test_the_threadpool_takes_the_thread_count_set():
    assert set_threads(2) == 2
    assert set_threads(1) == 1
    with pytest.raises(ValueError, match="at least 1"):
        set_threads(0)
