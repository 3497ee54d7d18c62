# Fresh machine, only python3 present: `make test` or `make train`, each on its own.
# Both create the virtual environment the README's way when it is missing (or pyproject.toml
# changed since it was filled), then run. `make test VENV=/tmp/v` uses another environment.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Filled-in marker: a second call does not reinstall; a newer pyproject.toml does.
STAMP := $(VENV)/.vlmtl-installed
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: test train venv

test: export HF_HUB_OFFLINE := 1
test: export TRANSFORMERS_OFFLINE := 1
test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

# The main job: MTL-LoRA on the embedded CLIP with the generated multi-task data set.
train: $(STAMP)
	$(BIN)/python scripts/train_vl.py --tasks vqa,retrieval

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e ".[test]"
	touch $@
