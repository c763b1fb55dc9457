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

# The install needs about 7 GB (torch's CUDA build and its NVIDIA libraries, which also run on the CPU);
# check before pip starts so that a full disk is named, not a half-installed venv left behind.
NEED_GB ?= 7
PIP := $(VPY) -m pip install -q --no-cache-dir

$(STAMP): $(VPY) pyproject.toml constraints.txt
	@free_gb=$$(df -Pk $(VENV) | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free_gb" -lt $(NEED_GB) ]; then \
	  echo "error: $$free_gb GB free on the disk of $(VENV); the install needs about $(NEED_GB) GB."; \
	  echo "       Free space there, or put the venv elsewhere: make VENV=/path/with/space test"; exit 1; fi
	$(PIP) --upgrade pip
	$(PIP) -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) -c constraints.txt -e ".[test]"
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
