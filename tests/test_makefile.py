"""`make install` picks the CUDA-enabled TensorFlow where an NVIDIA GPU is, and reinstalls on a
switch; checked with `make -n` (nothing is installed) in a copy of the files it reads."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

_FILES = ('Makefile', 'requirements.txt', 'requirements-dev.txt', 'requirements-test.txt',
          'requirements-gpu.txt')
_ABSENT = '/nonexistent/nvidia/version'


@pytest.fixture
def checkout(tmp_path):
  if shutil.which('make') is None:
    pytest.skip('make is not installed')
  for name in _FILES:
    shutil.copy(REPO / name, tmp_path / name)
  return tmp_path


def _dry_run(folder, *variables, path='/usr/bin:/bin'):
  result = subprocess.run(['make', '-n', 'install', *variables], cwd=folder, text=True,
                          capture_output=True, env={'PATH': path}, timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


def _pip_installs(commands):
  return [line.split('--quiet ', 1)[1] for line in commands.splitlines()
          if 'pip install' in line and '--upgrade pip' not in line]


def test_a_machine_without_nvidia_gets_plain_tensorflow(checkout):
  commands = _dry_run(checkout, f'NVIDIA_PROBES={_ABSENT}', 'NVIDIA_SMI=no-such-nvidia-smi')
  assert _pip_installs(commands) == ['-r requirements-dev.txt']
  assert 'touch .venv/.installed-cpu' in commands


@pytest.mark.parametrize('how', ['driver', 'nvidia-smi'])
def test_a_machine_with_an_nvidia_gpu_gets_the_cuda_wheel_by_itself(checkout, how):
  if how == 'driver':
    driver = checkout / 'version'
    driver.write_text('NVRM version: 570.86.15\n')
    commands = _dry_run(checkout, f'NVIDIA_PROBES={driver}')
  else:
    bin_dir = checkout / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'nvidia-smi').write_text('#!/bin/sh\n')
    (bin_dir / 'nvidia-smi').chmod(0o755)
    commands = _dry_run(checkout, f'NVIDIA_PROBES={_ABSENT}', path=f'{bin_dir}:/usr/bin:/bin')
  assert _pip_installs(commands) == ['-r requirements-dev.txt -r requirements-gpu.txt']
  assert 'touch .venv/.installed-gpu' in commands


def test_gpu_0_and_1_override_the_machine(checkout):
  driver = checkout / 'version'
  driver.write_text('NVRM\n')
  assert _pip_installs(_dry_run(checkout, f'NVIDIA_PROBES={driver}', 'GPU=0')) == [
      '-r requirements-dev.txt']
  assert _pip_installs(_dry_run(checkout, f'NVIDIA_PROBES={_ABSENT}', 'GPU=1')) == [
      '-r requirements-dev.txt -r requirements-gpu.txt']


def test_switching_flavour_reinstalls_into_a_fresh_venv(checkout):
  venv = checkout / '.venv'
  venv.mkdir()
  (venv / '.installed-cpu').touch()
  assert 'Nothing to be done' in _dry_run(checkout, 'GPU=0')  # Installed and up to date.
  switched = _dry_run(checkout, 'GPU=1')
  assert switched.splitlines()[0] == 'if [ -e .venv/.installed-cpu ]; then rm -rf .venv; fi'
  assert _pip_installs(switched) == ['-r requirements-dev.txt -r requirements-gpu.txt']


def test_the_gpu_requirements_are_the_pins_with_the_cuda_extra():
  pin = re.search(r'^tensorflow==(\S+)$', (REPO / 'requirements.txt').read_text(),
                  re.MULTILINE).group(1)
  lines = [l for l in (REPO / 'requirements-gpu.txt').read_text().splitlines()
           if l and not l.startswith('#')]
  assert lines == ['-r requirements.txt', f'tensorflow[and-cuda]=={pin}']
