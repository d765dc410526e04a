# Set-up and the main job in two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint bench figures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package and its dependencies (torch pinned to the CPU build in pyproject.toml).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/stitchlab run $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

# Training speed against this machine's matrix-product peak (ARGS="--quick --out b.json").
bench: $(VENV)/.installed
	$(BIN)/stitchlab bench $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks

# The two README figures, from the default run (trained once, then its checkpoints are reused).
figures: $(VENV)/.installed
	$(BIN)/stitchlab run --out runs/default $(ARGS)
	mkdir -p docs/figures
	cp runs/default/figures/splice_heatmap.png runs/default/figures/latent_views.png docs/figures/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
