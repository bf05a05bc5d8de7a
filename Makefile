# Two commands for a fresh machine:  `make demo` (the main job, `codedyn run`: the model organism study) and
# `make test` (the test suite, also what CI runs). `make null` studies the organism's null twin (its column in the
# validation table); `make smoke` is a three-minute first look.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo null smoke test install lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/codedyn run

null: $(STAMP)
	$(BIN)/codedyn run --preset null

smoke: $(STAMP)
	$(BIN)/codedyn run --preset smoke

test: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
