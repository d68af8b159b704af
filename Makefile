# Two entry points: `make demo` and `make test`. Both build their own virtual environment.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel where there is no GPU (set TORCH="torch>=2.4" or another spec to override).
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
EXTRAS ?= test

.PHONY: install demo test test-transformers-oldest clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

demo:  # only what the demo needs: training plots, E4/E5 judges and probes
	$(MAKE) install EXTRAS=train,eval
	$(VENV)/bin/futuretoken demo

test: install
	$(PY) -m pytest tests

# The transformers integration against the oldest supported transformers (`make test` gets the newest):
# a second, small environment with only what those tests import.
OLDEST_TRANSFORMERS ?= 5.23.0
OLD := .venv-transformers-$(OLDEST_TRANSFORMERS)
test-transformers-oldest:
	test -x $(OLD)/bin/python || python3 -m venv $(OLD)
	$(OLD)/bin/python -c "import torch" 2>/dev/null || $(OLD)/bin/python -m pip install -q "$(TORCH)"
	$(OLD)/bin/python -m pip install -q -e . "transformers==$(OLDEST_TRANSFORMERS)" "accelerate>=0.26" \
		"pytest>=7.4" "parameterized>=0.9" "hypothesis>=6.80"
	$(OLD)/bin/python -m pytest tests/test_hf_common.py tests/test_hf.py -k "not lm_eval and not sentence and not mteb"

clean:
	rm -rf $(VENV) .venv-transformers-* runs .pytest_cache
