# make test / make demo each set themselves up on a fresh machine: a virtual
# environment in $(VENV) with the pinned torch (override for a GPU build:
# `make TORCH=torch demo`, or TORCH="torch==2.13.0 --index-url ...").
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# the model zoos, built for that torch; installed with --no-deps so that pip never
# replaces the pinned torch (PyPI's torchvision names a CUDA torch); timm's pyyaml and
# safetensors come with the project's dependencies (huggingface_hub, only for downloads
# of pretrained weights, is left out). pyproject's [zoo] extra holds the same pins.
TORCHVISION ?= torchvision==0.28.0
TIMM        ?= timm==1.0.31
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Demo ("the embedded default"): synthetic Broden + the committed demo CNN.
DEMO_DIR     ?= runs/demo
DEMO_IMAGES  ?= 2000
DEMO_LAYERS  ?= conv2,conv3,conv4,conv5

.PHONY: test test-fast demo setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q --no-deps "$(TORCHVISION)" "$(TIMM)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# the tests not marked slow (no subprocess pipelines, kills or clusters): a quick check
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) scripts/demo.py --out $(DEMO_DIR) --num-images $(DEMO_IMAGES) --layers $(DEMO_LAYERS)

clean:
	rm -rf $(VENV) runs *.egg-info
