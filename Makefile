# Two entry points: `make demo` and `make test`. Both build their own virtual environment.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel where there is no GPU (set TORCH="torch>=2.4" or another spec to override).
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
EXTRAS ?= test

.PHONY: install demo test clean

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

clean:
	rm -rf $(VENV) runs .pytest_cache
