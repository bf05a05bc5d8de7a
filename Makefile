# Two commands for a fresh machine:  `make demo` (the main job, `codedyn run`) and `make test` (the test suite, also
# what CI runs). `make smoke` is a three-minute first look.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo smoke test install lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/codedyn run

smoke: $(STAMP)
	$(BIN)/codedyn run --preset smoke

test: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
