# Two entry points: `make demo` (the main job) and `make test` (the test suite, used by CI).
PY ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.medseg-installed
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test install bench clean

$(VPY):
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	$(PY) -m venv $(VENV)

$(STAMP): $(VPY) pyproject.toml constraints.txt
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install -q -c constraints.txt -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medseg demo --output runs/demo

test: $(STAMP)
	$(VPY) -m pytest tests

bench: $(STAMP)
	for b in benchmarks/*.py; do $(VPY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
