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

.PHONY: train test install clean test-tpu-versions

$(STAMP): requirements.txt requirements-dev.txt requirements-test.txt requirements-gpu.txt
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

# The TPU routes run other TensorFlow versions than requirements.txt's (launch/README.md,
# "Which TensorFlow runs where"): each gets a venv from its own requirement file, and the
# tests marked tpu_path run there. The pod route's TensorFlow comes with Google's image;
# here its CPU wheel of the same version stands in (tests/test_tpu_routes.py).
POD_TENSORFLOW := 2.18.0
TPU_VM_VENV := .venv-tpu-vm
TPU_POD_VENV := .venv-tpu-pod

$(TPU_VM_VENV)/.installed: launch/tpu/requirements-vm.txt requirements-test.txt
	rm -rf $(TPU_VM_VENV)
	$(PYTHON) -m venv $(TPU_VM_VENV)
	$(TPU_VM_VENV)/bin/python -m pip install --quiet -r launch/tpu/requirements-vm.txt \
	    -r requirements-test.txt
	touch $@

# TensorFlow's TPU build has no XLA for the CPU: the XLA lowering of the steps runs under
# the CPU build of the same version, with the single-host route's other pins.
TPU_XLA_VENV := .venv-tpu-xla
VM_TENSORFLOW = $(shell sed -n 's/^tensorflow-tpu==//p' launch/tpu/requirements-vm.txt)

$(TPU_XLA_VENV)/.installed: launch/tpu/requirements-vm.txt requirements-test.txt
	rm -rf $(TPU_XLA_VENV)
	$(PYTHON) -m venv $(TPU_XLA_VENV)
	grep -v -e '^tensorflow-tpu==' -e '^libtpu==' launch/tpu/requirements-vm.txt \
	    > $(TPU_XLA_VENV)/requirements.txt
	$(TPU_XLA_VENV)/bin/python -m pip install --quiet tensorflow-cpu==$(VM_TENSORFLOW) \
	    -r $(TPU_XLA_VENV)/requirements.txt -r requirements-test.txt
	touch $@

$(TPU_POD_VENV)/.installed: launch/tpu/requirements-pod.txt requirements-test.txt
	rm -rf $(TPU_POD_VENV)
	$(PYTHON) -m venv $(TPU_POD_VENV)
	$(TPU_POD_VENV)/bin/python -m pip install --quiet tensorflow-cpu==$(POD_TENSORFLOW) \
	    -r launch/tpu/requirements-pod.txt -r requirements-test.txt
	touch $@

# The files that hold tests marked tpu_path (tests/test_tpu_routes.py keeps this list
# whole); the others need requirements-dev.txt's test tools to be collected.
TPU_PATH_TESTS := tests/test_tpu_path.py tests/test_tpu_routes.py tests/test_strategy.py \
    tests/test_doctor.py tests/test_xla_compile.py tests/test_device_input.py \
    tests/test_performance_paths.py tests/test_preemption.py

# TPU_LOAD_LIBRARY=0: without a TPU, TensorFlow's TPU build would load libtpu at import,
# which then waits for Google Cloud's metadata server; the trainer runs on the CPU here.
# CHAOS_KILLS=1: one SIGKILL per resumed run (make test kills twice), to keep CI short.
test-tpu-versions: $(TPU_VM_VENV)/.installed $(TPU_XLA_VENV)/.installed \
    $(TPU_POD_VENV)/.installed
	TPU_LOAD_LIBRARY=0 CHAOS_KILLS=1 $(TPU_VM_VENV)/bin/python -m pytest -m tpu_path \
	    $(PYTEST_ARGS) $(TPU_PATH_TESTS)
	$(TPU_XLA_VENV)/bin/python -m pytest -m tpu_path $(PYTEST_ARGS) tests/test_xla_compile.py
	CHAOS_KILLS=1 $(TPU_POD_VENV)/bin/python -m pytest -m tpu_path $(PYTEST_ARGS) \
	    $(TPU_PATH_TESTS)

clean:
	rm -rf $(VENV) $(TPU_VM_VENV) $(TPU_XLA_VENV) $(TPU_POD_VENV)
