# facegen: `make run` serves the shipped checkpoints, `make test` runs the test suite.
# Both set up .venv from requirements*.txt first (only when the requirements changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-all bench lint setup clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) app.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q
	$(PY) -m pytest -m "slow" -q

bench: $(STAMP)
	$(PY) bench/bench_train.py
	$(PY) bench/bench_sampling.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
