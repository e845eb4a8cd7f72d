# xaudit: two commands on a fresh machine
#   make demo   set up, build the sample cohort, audit it, print the report's path
#   make test   set up, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xaudit-installed
# the CPU build of PyTorch; an unpinned install pulls a multi-GB CUDA build
TORCH  ?= torch==2.13.0

.PHONY: install demo demo-control demo2d sample test test-fast bench bench-methods bench-quick bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	@# an editable install leaves xaudit uncompiled, and with PYTHONDONTWRITEBYTECODE set every
	@# process compiles it again (measured: 0.5 s of each `xaudit` start, A B A B)
	@$(BIN)/python -m compileall -q xaudit
	@touch $(STAMP)

install: $(STAMP)

sample_data/cohort3d/model_confounded.pth: | $(STAMP)
	$(BIN)/xaudit sample-data sample_data

sample: sample_data/cohort3d/model_confounded.pth

demo: sample
	$(BIN)/xaudit run configs/demo.yaml --resume
	@echo "Open the report: runs/demo/report.html"
	@echo "What each depth of the network retains: $(BIN)/xaudit interrogate runs/demo"

demo-control: sample
	$(BIN)/xaudit run configs/demo_control.yaml --resume

demo2d: sample
	$(BIN)/xaudit run configs/demo2d.yaml --resume

# one pytest worker per CPU this process may use (nproc: affinity, not the host's cores), at most
# 8 (each holds torch and MONAI, ~0.5 GB); 0 runs the suite in this process. Each test module
# runs whole on one worker (pytest-xdist --dist loadscope), so its fixtures are built once, in
# the order tests/conftest.py gives (the longest modules first), not xdist's most-tests-first.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 8 ] && n=8; echo $$n)
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

# the whole audit against the Captum script (A B A B), then the growth curve at 100/1k/10k subjects
bench: sample
	$(BIN)/python benchmarks/audit_speed.py --repeats 2
	$(BIN)/python benchmarks/scale.py --sizes 100,1000,10000

# per method against the limit, a Captum script and MONAI (MONAI ResNet-18 at 64^3; ~50 min)
bench-methods: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

# the growth curve of a whole audit at 100, 1,000 and 10,000 subjects of 16^3 (~11 min on 2 cores)
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --sizes 100,1000,10000

clean:
	rm -rf runs .pytest_cache
