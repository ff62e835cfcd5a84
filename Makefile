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
run: $(STAMP)
	$(BIN)/shufflenet train shufflenet_v1_x0_5_g3 --data digits --epochs 15 --output runs --name demo-digits
	$(BIN)/shufflenet eval shufflenet_v1_x0_5_g3 --weights runs/demo-digits/best.safetensors --data digits

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
