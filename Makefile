# Two entry points: `make reproduce` (the main job) and `make test`. Both build .venv when missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
FMNIST  := /usr/share/datasets/fashion-mnist
# Shipped results (docs/results/paper/README.md): the paper profiles' claims and report.
PAPER_RESULTS ?= results-paper
SHIPPED       ?= docs/results/paper
REFERENCE     := $(wildcard $(SHIPPED)/claims.jsonl)
# The finished paper-profile runs travel with the repository: restored before a profile runs (so a
# fresh clone computes only what is missing), rewritten from the store when results are published.
ARCHIVE       := $(SHIPPED)/runs.jsonl.gz
RESTORE        = $(if $(wildcard $(ARCHIVE)),$(BIN)/ssmlab restore $(ARCHIVE) --results $(PAPER_RESULTS))

.PHONY: test reproduce paper-results paper-publish lint bench data clean

$(BIN)/ssmlab: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.venv: $(BIN)/ssmlab

# Fashion-MNIST ships as a Debian package; the scan-order experiment skips it cleanly if absent.
data:
	@test -d $(FMNIST) || (command -v apt-get >/dev/null && (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || echo "note: Fashion-MNIST not installed; its experiment will be skipped")

test: .venv
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

# With the shipped paper-profile claims committed, the report shows them beside the quick verdicts.
reproduce: .venv data
	$(BIN)/ssmlab reproduce --profile quick $(if $(REFERENCE),--reference $(REFERENCE))

# Every paper profile into $(PAPER_RESULTS)/ (long; resumable: rerunning continues from the stored
# runs, and first from the shipped archive), then the shipped results in $(SHIPPED)/: runs.jsonl.gz,
# claims.jsonl, report.md, figures/ (PNGs <= 200 KB).
# PAPERS="selectivity" runs (and ships) some papers only; the others stay as shipped.
paper-results: .venv data
	$(RESTORE)
	$(BIN)/ssmlab reproduce $(PAPERS) --profile paper --results $(PAPER_RESULTS)
	$(MAKE) --no-print-directory paper-publish

# Papers run at different times ship together: the report is written with the shipped claims as
# its reference (experiments this store lacks appear from it, figures included) and --merge keeps them.
paper-publish: .venv
	mkdir -p $(SHIPPED)
	$(RESTORE)
	$(BIN)/ssmlab archive $(ARCHIVE) --results $(PAPER_RESULTS)
	$(BIN)/ssmlab report --results $(PAPER_RESULTS) $(if $(REFERENCE),--reference $(REFERENCE))
	$(BIN)/ssmlab claims --profile paper --variants --export $(SHIPPED)/claims.jsonl --merge --results $(PAPER_RESULTS)
	$(BIN)/python -m ssmlab.report.reference publish $(PAPER_RESULTS) $(SHIPPED)

lint: .venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

bench: .venv
	$(BIN)/python benchmarks/scan.py
	$(BIN)/python benchmarks/ensemble.py

clean:
	rm -rf $(VENV) results $(PAPER_RESULTS) .pytest_cache
