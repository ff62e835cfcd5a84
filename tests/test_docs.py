"""The README's measured figures are what the committed result files say."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_measured_table_is_generated_from_the_result_files():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "README.md").read_text()
    assert module.updated_readme(text) == text, "run `python benchmarks/readme_tables.py` after adding results"
    assert (ROOT / "results").is_dir() and module.measured_table() != "(no result files yet)"
