# fracturescan — `make demo` runs the whole pipeline offline on synthetic phantoms;
# `make test` runs the test suite. Both create the virtual environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/fracturescan
# torch and torchvision must be installed first and pinned together (a lone torchvision pick can
# fail at import beside another torch). On aarch64 use TORCH_PINS="torch==2.9.1 torchvision==0.24.1".
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO ?= demo
DEMO_STUDIES ?= 320

.PHONY: setup demo test clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	rm -rf $(DEMO)
	@echo "== 1/5 synth: SYNTHETIC wrist phantoms in MURA v1.1 layout"
	time $(CLI) synth --out $(DEMO)/data --studies $(DEMO_STUDIES) --size 128 --seed 0
	@echo "== 2/5 train: DenseNet121 from scratch (offline: no ImageNet weights) at 64 px, configs/phantom.yaml"
	time $(CLI) train --config configs/phantom.yaml --data $(DEMO)/data --out $(DEMO)/run \
		--cache-dir $(DEMO)/cache
	@echo "== 3/5 evaluate on the valid split (MURA's test set)"
	time $(CLI) evaluate $(DEMO)/run --split valid
	@echo "== 4/5 predict one valid study folder"
	time $(CLI) predict $(DEMO)/run $$(ls -d $(DEMO)/data/valid/XR_WRIST/*/study1_* | head -n 2) --csv $(DEMO)/predictions.csv
	@echo "== 5/5 heatmap check: do the heatmaps point at the known fracture boxes? (pointing game)"
	time $(CLI) explain $(DEMO)/run --evaluate $(DEMO)/data --split valid
	@echo "Report: $(DEMO)/run/eval_valid/report.html (synthetic data: not clinical performance)"

test: setup
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO)
