# Two commands for a fresh machine:  `make demo` (the main job) and `make test` (the test suite, also what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/codedyn data build
	$(BIN)/codedyn suite train-toy
	$(BIN)/codedyn influence
	$(BIN)/codedyn susceptibility

test: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
