"""The latency benchmark's output, and the predict command."""
import json

import numpy as np
import pytest
from PIL import Image

from shufflenet.bench.latency import derive, parse_resolution, time_calls
from shufflenet.cli import main
from shufflenet.data.preprocessing import Preprocessing
from shufflenet.factory import load

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_parse_resolution():
    assert parse_resolution("224") == (224, 224) and parse_resolution("480x640") == (480, 640)
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_resolution("big")


def test_time_calls_measures_a_known_duration_and_stops_at_the_time_limit():
    import time

    timing = time_calls(lambda: time.sleep(0.004), repeats=10_000, warmup=1, max_seconds=0.0, min_runs=5)
    assert timing.runs == 5 and 4.0 <= timing.median_ms < 40.0


def test_derived_quantities():
    result = {"compute_bound": {"1": {"gmacs_median": 45.0, "gmacs_best": 50.0}}, "measurements": [
        {"model": "tv_alexnet", "backend": "ort", "resolution": [224, 224], "threads": 1, "batch": 1,
         "mflops": 700.0, "median_ms": 28.0},
        {"model": "small", "backend": "ort", "resolution": [224, 224], "threads": 1, "batch": 1,
         "mflops": 35.0, "median_ms": 2.0},
    ]}
    derive(result)
    small = result["measurements"][1]
    assert small["speedup_vs_alexnet"] == 14.0 and small["theoretical_speedup"] == 20.0
    assert small["bound_ms"] == pytest.approx(0.7) and small["latency_over_bound"] == pytest.approx(2 / 0.7)


def test_bench_cli_writes_json_and_plots(tmp_path, capsys):
    json_path, plots = tmp_path / "bench.json", tmp_path / "plots"
    assert main(["bench", "shufflenet_v1_x0_25_g8", "--backend", "eager,eager-opt,ort", "--resolution", "64",
                 "--repeats", "2", "--warmup", "1", "--json", str(json_path), "--plot", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "| shufflenet_v1_x0_25_g8 | ort " in out and "compute bound" in out
    result = json.loads(json_path.read_text())
    assert set(result) >= {"command", "machine", "settings", "compute_bound", "measurements"}
    assert result["machine"]["cpu"] and "cpu_flags" in result["machine"] and "--json" in result["command"]
    record = result["measurements"][0]
    rate = result["compute_bound"]["1"]["gmacs_best"]
    assert record["bound_ms"] == pytest.approx(record["mflops"] / rate)  # MMACs / (GMAC/s) = ms
    assert record["latency_over_bound"] == pytest.approx(record["median_ms"] / record["bound_ms"])
    assert set(record) >= {"model", "backend", "resolution", "threads", "batch", "mflops", "median_ms", "p10_ms",
                           "p90_ms", "runs", "bound_ms", "latency_over_bound", "speedup_vs_alexnet",
                           "theoretical_speedup"}
    assert [r["backend"] for r in result["measurements"]] == ["eager", "eager-opt", "ort"]
    assert record["runs"] == 2 and record["resolution"] == [64, 64] and record["mflops"] > 0
    assert sorted(p.name for p in plots.iterdir()) == ["latency_vs_mflops_64x64_1t.png", "speedup_64x64_1t.png"]


def test_bench_rejects_an_unknown_backend(capsys):
    assert main(["bench", "shufflenet_v1_x0_25_g8", "--backend", "tensorrt", "--resolution", "64"]) == 2
    assert "unknown backend(s) ['tensorrt']" in capsys.readouterr().err


@pytest.fixture
def image_files(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_predict_prints_five_classes(image_files, capsys):
    assert main(["predict", "shufflenet_v1_x0_25_g8", *image_files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{image_files[0]}:" and len(lines) == 12
    assert [line.split(".")[0].strip() for line in lines[1:6]] == ["1", "2", "3", "4", "5"]


def test_predict_from_onnx_uses_the_recorded_preprocessing(image_files, tmp_path, capsys):
    from shufflenet.deploy.export import export_onnx
    from shufflenet.deploy.predict import predict

    model = load("shufflenet_v1_x0_25_g8", num_classes=10).model
    path = tmp_path / "cifar.onnx"
    model.record = model.record.replace(preprocessing=Preprocessing(resize=64, crop=64), class_names=CIFAR10)
    export_onnx(model, path)  # the record's crop, preprocessing and class names
    loaded = load(path)
    assert loaded.preprocessing.crop == 64 and loaded.class_names == CIFAR10 and loaded.model is None
    top = predict(loaded, image_files[:1])[0]
    from shufflenet.data.images import read_image

    expected = model(loaded.preprocessing.transform()(read_image(image_files[0]))[None]).softmax(1)[0]
    assert [name for name, _ in top] == [CIFAR10[i] for i in expected.topk(5).indices.tolist()]
    assert [p for _, p in top] == pytest.approx(expected.topk(5).values.tolist(), abs=1e-5)


def test_predict_missing_image_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "shufflenet_v1_x0_25_g8", str(tmp_path / "nope.jpg")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_a_failing_cell_is_reported_and_the_run_goes_on(monkeypatch):
    import shufflenet.bench.latency as benchmark

    real = benchmark.make_runner

    def broken_ort(backend, *args):
        if backend == "ort":
            raise RuntimeError("no kernel")
        return real(backend, *args)

    monkeypatch.setattr(benchmark, "make_runner", broken_ort)
    monkeypatch.setattr(benchmark, "gemm_rate", lambda threads: {"gmacs_median": 40.0, "gmacs_best": 41.0,
                                                                 "size": 64, "runs": 1})
    models = {"shufflenet_v1_x0_25_g8": load("shufflenet_v1_x0_25_g8").model}
    result = benchmark.run_benchmark(models, ["ort", "eager"], [(64, 64)], repeats=2, warmup=0, progress=False)
    assert [r["backend"] for r in result["measurements"]] == ["eager"]
    assert result["failures"][0]["error"] == "RuntimeError: no kernel"
    assert "FAILED shufflenet_v1_x0_25_g8 ort 64x64 1 thread(s): RuntimeError: no kernel" in \
        benchmark.results_table(result)
