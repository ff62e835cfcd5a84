# Set-up and the two entry points: `make run` (main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Main job: train ShuffleNet 0.5x (g=3, small-input stem) on the built-in digits, then evaluate the best weights.
# --overwrite: each `make run` replaces the previous demo run (any other run name is never replaced).
run: $(STAMP)
	$(BIN)/shufflenet train shufflenet_v1_x0_5_g3 --data digits --epochs 15 --output runs --name demo-digits --overwrite
	$(BIN)/shufflenet eval shufflenet_v1_x0_5_g3 --weights runs/demo-digits/last.safetensors

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks hubconf.py
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf $(VENV) build src/*.egg-info
