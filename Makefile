# Two commands for a fresh machine:  `make demo` (the main job: the model organism study, `codedyn run`, and its
# null twin, `codedyn run --preset null`, at once) and `make test` (the test suite, also what CI runs). `make null`
# studies the null twin alone; `make smoke` is a three-minute first look.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo null smoke test install lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	@# Byte-compile what a study imports (not all ~20,000 installed modules, half of pip's time) and umap-learn's
	@# numba code into the cache home, once, instead of in every study's processes (codedyn/warmup.py).
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -W ignore -m codedyn.warmup
	touch $(STAMP)

install: $(STAMP)

# The organism (runs/organism, progress here) and its null twin (runs/null, progress in runs/null.log) run as two
# processes, one per core (every unit uses one torch thread; BLAS is held to one thread so the two do not fight over
# the cores); both suites train at once. The dataset they share is built first, so the two never write the same
# cache entry. The organism's report is written again once the twin has finished, so its validation table has the
# null-twin column. Either run failing fails `make demo` with a sentence naming it; rerunning resumes both (every
# finished unit is reused).
DEMO_ENV := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

demo: $(STAMP)
	@mkdir -p runs
	@$(DEMO_ENV) $(BIN)/codedyn data build --preset organism >/dev/null || \
	  { echo "make demo: building the planted dataset failed (see the message above)" >&2; exit 1; }
	@echo "make demo: the null twin runs beside the organism; its progress: runs/null.log" >&2
	@$(DEMO_ENV) $(BIN)/codedyn run --preset null >runs/null.log 2>&1 & twin=$$!; \
	trap 'kill $$twin 2>/dev/null' INT TERM; \
	$(DEMO_ENV) $(BIN)/codedyn run; organism=$$?; \
	if [ $$organism -ne 0 ]; then \
	  kill $$twin 2>/dev/null; wait $$twin; \
	  echo "make demo: the organism run failed (exit $$organism, message above); the null twin was stopped" \
	    "(run make demo again: both resume)" >&2; \
	  exit 1; \
	fi; \
	echo "make demo: waiting for the null twin (runs/null.log)" >&2; \
	wait $$twin; status=$$?; \
	if [ $$status -ne 0 ]; then \
	  tail -n 15 runs/null.log >&2; \
	  echo "make demo: the null twin's run failed (exit $$status; log: runs/null.log); runs/organism/report.html" \
	    "has no null-twin column (run make demo again: finished units are reused)" >&2; \
	  exit 1; \
	fi
	@$(DEMO_ENV) $(BIN)/codedyn report runs/organism >/dev/null
	@echo "make demo: runs/organism/report.html (validation table with the null twin's column; runs/null)" >&2

null: $(STAMP)
	$(BIN)/codedyn run --preset null

smoke: $(STAMP)
	$(BIN)/codedyn run --preset smoke

# Two pytest workers, one per core of the 2-core machines CI runs on; a test module's tests stay in one worker, so
# its module fixtures are built once (session fixtures once per worker: the tiny suite, seconds).
test: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

lint: $(STAMP)
	$(BIN)/ruff check codedyn tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
