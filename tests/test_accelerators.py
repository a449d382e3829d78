"""An NVIDIA device TensorFlow does not see is named with its fix; XLA cannot be deterministic."""

import logging

import pytest
import tensorflow as tf

from tests.conftest import make_source
from trainer.core import accelerators
from trainer.core import distribute
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.jobs import train

_ABSENT = '/nonexistent/nvidia'


def _no_smi(_):
  return None


@pytest.fixture
def fake_driver(tmp_path):
  driver = tmp_path / 'version'
  driver.write_text('NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15\n')
  return str(driver)


def test_each_probe_finds_an_nvidia_device(fake_driver, tmp_path):
  assert accelerators.nvidia_evidence(fake_driver, _ABSENT, _no_smi) == fake_driver
  device = tmp_path / 'nvidia0'
  device.touch()
  assert accelerators.nvidia_evidence(_ABSENT, str(device), _no_smi) == str(device)
  assert accelerators.nvidia_evidence(_ABSENT, _ABSENT, lambda name: f'/usr/bin/{name}') == \
      '/usr/bin/nvidia-smi'
  assert accelerators.nvidia_evidence(_ABSENT, _ABSENT, _no_smi) == ''


def test_what_is_seen_includes_the_build(fake_driver):
  machine = accelerators.seen(fake_driver, _ABSENT, _no_smi)
  build = tf.sysconfig.get_build_info()
  assert machine.nvidia == fake_driver
  assert machine.tensorflow_version == tf.__version__
  assert machine.cuda_build == bool(build.get('is_cuda_build'))
  assert machine.tensorflow_gpus == tuple(
      d.name for d in tf.config.list_physical_devices('GPU'))


def _machine(nvidia, gpus=(), cuda_build=True):
  return accelerators.Seen(nvidia=nvidia, tensorflow_version='2.21.0', tensorflow_gpus=gpus,
                           cuda_build=cuda_build, cuda_version='12.5.1' if cuda_build else '',
                           cudnn_version='9' if cuda_build else '')


def test_an_unseen_nvidia_gpu_is_one_line_with_the_install_command():
  message = accelerators.unseen_gpu_message(_machine('/proc/driver/nvidia/version'))
  assert message == (
      'an NVIDIA GPU is on this machine (/proc/driver/nvidia/version) but TensorFlow sees '
      'none (built for CUDA 12.5.1, cuDNN 9; usually its CUDA libraries are missing) and '
      'trains on the CPU; install the CUDA-enabled wheel: make install GPU=1, or pip '
      'install "tensorflow[and-cuda]==2.21.0"')
  assert 'built without CUDA' in accelerators.unseen_gpu_message(
      _machine('/dev/nvidia0', cuda_build=False))


@pytest.mark.parametrize('machine', [_machine(''), _machine('/dev/nvidia0', gpus=('GPU:0',))])
def test_nothing_to_say_without_nvidia_or_when_tensorflow_sees_the_gpu(machine):
  assert accelerators.unseen_gpu_message(machine) is None


def _unseen_gpu_here(monkeypatch, fake_driver):
  """This machine as a GPU machine whose TensorFlow finds no CUDA: the driver file is there,
  TensorFlow lists no GPU (also where a real GPU is lent to the run)."""
  monkeypatch.setattr(accelerators, 'NVIDIA_DRIVER', fake_driver)
  real = tf.config.list_physical_devices
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: [] if kind == 'GPU' else real(kind))


def test_the_run_says_so_before_training(monkeypatch, fake_driver, tmp_path, caplog):
  _unseen_gpu_here(monkeypatch, fake_driver)
  # Stop the run right after the strategy: what matters is what was said by then.
  monkeypatch.setattr(distribute, 'task_label', lambda _: (_ for _ in ()).throw(
      RuntimeError('stopped before training')))
  with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match='before training'):
    train.train_and_evaluate(Config(model_dir=str(tmp_path / 'run'), train_steps=1),
                             source=make_source(64, 16))
  lines = [r.getMessage() for r in caplog.records if 'NVIDIA' in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith(f'an NVIDIA GPU is on this machine '
                                                 f'({fake_driver})')
  assert lines[0].endswith('make install GPU=1, or pip install '
                           f'"tensorflow[and-cuda]=={tf.__version__}"')


def test_deterministic_xla_is_refused_in_one_line():
  with pytest.raises(UserError) as caught:
    Config(deterministic=True, jit_compile=True).validate()
  message = str(caught.value)
  assert '\n' not in message and 'SelectAndScatter' in message
  assert message.startswith('--deterministic cannot go with --jit_compile')
  Config(deterministic=True).validate()
  Config(jit_compile=True).validate()
