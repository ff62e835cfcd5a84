import json
import subprocess
import sys

from shufflenet.cli import main


def test_models_table(capsys):
    assert main(["models", "shufflenet_v1_x1_0_g*"]) == 0
    out = capsys.readouterr().out
    assert "| shufflenet_v1_x1_0_g3 |      137.46 | 1,864,728 |" in out
    assert out.count("shufflenet_v1_x1_0_g") == 5


def test_profile_json(capsys):
    assert main(["profile", "mobilenet_v2_x1_0", "--json", "--resolution", "160"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "mobilenet_v2_x1_0" and data["resolution"] == 160
    assert data["params"] == 3_504_872 and abs(data["mflops"] - 154) < 1
    assert "layers" not in data and sum(s["macs"] for s in data["stages"]) == data["macs"]


def test_profile_per_layer(capsys):
    assert main(["profile", "shufflenet_v1_x0_5_g3", "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "features.stage2.0.pw1.conv" in out and "37.59 MFLOPs" in out


def test_paper_table_shows_the_reproduction(capsys):
    assert main(["profile", "--paper"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| megvii README")]
    assert len(rows) == 8
    # Every official config matches the README to its rounding, except 1x g=3 (README 138, Table 1 137).
    assert [row.split("|")[8].strip() for row in rows].count("yes") == 7


def test_unknown_model_is_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "shufflenet", "profile", "shufflenet_v1_x1_g3"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown model 'shufflenet_v1_x1_g3'; close matches" in result.stderr
    assert "Traceback" not in result.stderr
