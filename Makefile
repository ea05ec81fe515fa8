# Two commands for a fresh machine: `make demo` (the main job on the embedded
# defaults) and `make test`. Both create the virtual environment they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-slow test-all venv serve clean-demo lint experiment-synthetic experiment-cmc experiment-rgcl experiment-quality experiment-ocr

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# one whole cycle (the retrain flow, as the nightly deployment runs it) on the demo inbox
demo: $(STAMP)
	$(BIN)/python -m flows.demo

# a local Prefect server (UI on http://127.0.0.1:4200), the moderators' app (http://127.0.0.1:8080) and the
# scheduled deployments; Ctrl-C stops them all
serve: $(STAMP)
	$(BIN)/python -m flows.deploy serve

# the fast tier (the default): everything but whole cycles, DVC projects, flows, servers, browsers and real data
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not realdata" --durations=15

# the other tiers: the slow tests and those on ../shared/datasets (.ci/run runs `make test` then this)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or realdata" --durations=15

# every tier in one run
test-all: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

# Zeng et al.'s open questions on the real datasets in ../shared/datasets:
# writes docs/experiments/synthetic-selection.{json,png} and its table
experiment-synthetic: $(STAMP)
	$(BIN)/python experiments/synthetic_selection.py

# Wei et al.'s CMC ablation on MediaEval (held-out events): docs/experiments/cmc-ablation*
experiment-cmc: $(STAMP)
	$(BIN)/python experiments/cmc_ablation.py

# RGCL on HarMeme (train -> val) against an MLP and a logistic regression: docs/experiments/rgcl-harmeme*
experiment-rgcl: $(STAMP)
	$(BIN)/python experiments/rgcl_harmeme.py

# each family's default against baselines on HarMeme (train -> val) and MediaEval (whole events held out),
# with intervals: docs/experiments/quality*
experiment-quality: $(STAMP)
	$(BIN)/python experiments/quality.py

# does the text OCR reads in a picture help? HarMeme and MediaEval: docs/experiments/ocr*
experiment-ocr: $(STAMP)
	$(BIN)/python experiments/ocr.py

clean-demo:
	rm -rf data reports inbox/demo
