"""Shared fixtures. Two logical CPU devices are set up before TensorFlow starts, so that
MirroredStrategy has two replicas on any machine."""

import os
import pathlib
import shutil
import socket
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest
import tensorflow as tf

from tests import forked
from trainer.data import sources
from trainer.report import logs

NUM_CPU_DEVICES = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_CPU_DEVICES)])

REPO = pathlib.Path(__file__).resolve().parent.parent
# The real CIFAR-10, prepared in the TFDS layout, where this workplace keeps it.
SHARED_TFDS = REPO.parent / 'shared' / 'datasets' / 'tfds'


def make_source(num_train=512, num_eval=100, shape=(32, 32, 3), num_classes=10, seed=0):
  """Random but learnable in-memory data: the label is visible in the image's mean."""
  return sources.random_source(num_train, num_eval, shape, num_classes, seed)


def id_source(num_train, num_eval, shape=(8, 8, 3)):
  """Each image carries its example id in two pixels, so coverage can be counted."""
  def split(n, offset):
    ids = np.arange(n) + offset
    images = np.zeros((n,) + shape, np.uint8)
    images[:, 0, 0, 0] = ids % 256
    images[:, 0, 0, 1] = ids // 256
    return images, (ids % 10).astype(np.int64)
  return sources.InMemorySource('ids', split(num_train, 0), split(num_eval, EVAL_ID_0),
                                [str(i) for i in range(10)])


EVAL_ID_0 = 100_000 % 65536  # The first evaluation example's id.


def example_ids(images):
  """The ids of id_source's images, from scaled (float) batches."""
  pixels = np.rint(np.asarray(images)[:, 0, 0, :2] * 255).astype(np.int64)
  return pixels[:, 0] + 256 * pixels[:, 1]


def free_ports(count):
  """Localhost ports that were free a moment ago (for servers and workers the tests start)."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def run_workers(arguments_of, count=2, timeout=300):
  """Runs the `count` workers of one multi-worker job to their end, each as
  `python -m *arguments_of(index)` with its TF_CONFIG; fails the test with the output of a
  worker that failed. Returns the finished processes."""
  from launch.local import worker_env  # pylint: disable=g-import-not-at-top
  hosts = [f'localhost:{port}' for port in free_ports(count)]
  processes = [forked.Popen([sys.executable, '-m', *arguments_of(index)], cwd=REPO,
                                env=worker_env(hosts, index), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for index in range(count)]
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, output in zip(processes, outputs):
    assert p.returncode == 0, output[-3000:]
  return processes


def start_endless_workers(model_dir, count=2, env=None):
  """Real workers of a multi-worker run on synthetic data that trains until stopped, with
  `env` added to their environment.

  Each process's stderr is a pipe, stdout is discarded; the caller must kill them.
  """
  from launch.local import worker_env  # pylint: disable=g-import-not-at-top
  hosts = [f'localhost:{port}' for port in free_ports(count)]
  command = [sys.executable, '-m', 'trainer.main', '--strategy=multi_worker',
             '--dataset=synthetic', f'--model_dir={model_dir}', '--train_steps=100000',
             '--steps_per_loop=10', '--checkpoint_every_steps=0']
  # No launcher relays these workers' lines: they say which worker wrote them themselves.
  envs = [{name: value for name, value in dict(worker_env(hosts, index), **(env or {})).items()
           if name != logs.PREFIXED_ENV} for index in range(count)]
  return [forked.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True) for env in envs]


@pytest.fixture
def small_source():
  return make_source()


@pytest.fixture
def mirrored():
  devices = [d.name for d in tf.config.list_logical_devices('CPU')[:NUM_CPU_DEVICES]]
  return tf.distribute.MirroredStrategy(devices)


# The run many checkpoint tests start from: 10 steps of make_source(), saved at 5 and 10.
TEN_STEPS = dict(batch_size=32, epochs=0, train_steps=10, steps_per_loop=5,
                 checkpoint_every_steps=5, learning_rate=3e-3)


@pytest.fixture(scope='session')
def _ten_step_run(tmp_path_factory):
  from trainer.core.config import Config  # pylint: disable=g-import-not-at-top
  from trainer.jobs import train  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path_factory.mktemp('ten_steps') / 'run'
  outcome = train.train_and_evaluate(Config(model_dir=str(model_dir), **TEN_STEPS), None,
                                     make_source())
  return model_dir, outcome.metrics


@pytest.fixture
def ten_step_run(_ten_step_run, tmp_path):
  """tmp_path holding a copy of the finished 10-step run's folder; returns its results."""
  model_dir, metrics = _ten_step_run
  shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
  return metrics


@pytest.fixture
def gcs(tmp_path_factory, monkeypatch):
  """A Cloud Storage stand-in of this test's own (tests/gcs_stand_in.py)."""
  from tests import gcs_stand_in  # pylint: disable=g-import-not-at-top
  gcs_stand_in.skip_unless_root()
  stand_in = gcs_stand_in.StandIn(str(tmp_path_factory.mktemp('gcs')))
  monkeypatch.setenv('REQUESTS_CA_BUNDLE', stand_in.ca_file)  # For stand_in.client().
  yield stand_in
  stand_in.close()


@pytest.fixture(scope='session')
def cifar_dir():
  if not (SHARED_TFDS / 'cifar10').is_dir():
    pytest.skip(f'real CIFAR-10 not present at {SHARED_TFDS}')
  return str(SHARED_TFDS)


def pytest_collection_modifyitems(items):
  # Tests that start processes or read the real data first: with several pytest processes
  # (pytest-xdist) the long ones start early and the short ones fill the gaps at the end.
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  forked.close()  # The warm process the tests' children were forked from.
