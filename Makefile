# `make train` and `make test` set everything up on a fresh machine (Python 3.9+ with venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
# GPU=1 installs TensorFlow with its CUDA libraries (requirements-gpu.txt), GPU=0 without.
# Unset, it follows the machine: an NVIDIA driver, device or nvidia-smi means GPU=1, so the
# one documented `make train` trains on the GPU where there is one.
NVIDIA_PROBES ?= /proc/driver/nvidia/version /dev/nvidia0
NVIDIA_SMI ?= nvidia-smi
GPU ?= $(if $(or $(wildcard $(NVIDIA_PROBES)),$(shell command -v $(NVIDIA_SMI) 2>/dev/null)),1,0)
ifeq ($(GPU),1)
  FLAVOUR := gpu
  REQUIREMENTS := -r requirements-dev.txt -r requirements-gpu.txt
else
  FLAVOUR := cpu
  REQUIREMENTS := -r requirements-dev.txt
endif
# One stamp per flavour, so switching reinstalls; the stamp depends on the requirement
# files, so changing a pin reinstalls too. A switch starts from a fresh venv: installing
# over the other flavour would leave the CUDA wheels in (GPU=0) or mix the two.
STAMP := $(VENV)/.installed-$(FLAVOUR)
OTHER_STAMP := $(VENV)/.installed-$(if $(filter gpu,$(FLAVOUR)),cpu,gpu)

.PHONY: train test install clean

$(STAMP): requirements.txt requirements-dev.txt requirements-gpu.txt
	if [ -e $(OTHER_STAMP) ]; then rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(REQUIREMENTS)
	touch $@

install: $(STAMP)

train: $(STAMP)
	$(PY) -m trainer.main $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
