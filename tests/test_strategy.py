import importlib.util
import os
import socket
import sys

import pytest
import tensorflow as tf

from tests import forked
from tests.conftest import REPO

from trainer.core import distribute
from trainer.core.errors import UserError


@pytest.mark.parametrize('name,replicas', [('default', 1), ('one_device', 1)])
def test_single_device_strategies(name, replicas):
  strategy = distribute.create_strategy(name)
  assert strategy.num_replicas_in_sync == replicas
  assert distribute.is_chief(strategy)


def test_mirrored_on_logical_cpus():
  strategy = distribute.create_strategy('mirrored', num_cpu_devices=2)
  assert strategy.num_replicas_in_sync == 2
  assert '2 replica(s)' in distribute.describe(strategy)


def test_more_cpu_devices_than_tensorflow_started_with_is_a_clear_error():
  with pytest.raises(UserError, match='--num_cpu_devices=5 came too late'):
    distribute.create_strategy('mirrored', num_cpu_devices=5)


def test_per_replica_batch():
  strategy = distribute.create_strategy('mirrored', num_cpu_devices=2)
  assert distribute.per_replica_batch_size(64, strategy) == 32
  with pytest.raises(UserError, match='--batch_size=63 .* does not divide among 2 replicas'):
    distribute.per_replica_batch_size(63, strategy)


@pytest.mark.parametrize('tf_config,message', [
    (None, 'needs the TF_CONFIG environment variable .* but it is not set'),
    ('', 'needs the TF_CONFIG environment variable .* but it is empty'),
    (' \n', 'needs the TF_CONFIG environment variable .* but it is empty'),
    ('{"cluster": ', 'TF_CONFIG is not valid JSON'),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster" mapping'),
    ('{"cluster": {"worker": ["localhost:1"]}}', 'needs "task"'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}',
     "task type 'ps' is not a job"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
     'task index 1 is out of range'),
])
def test_multi_worker_rejects_a_bad_tf_config(monkeypatch, tf_config, message):
  if tf_config is None:
    monkeypatch.delenv('TF_CONFIG', raising=False)
  else:
    monkeypatch.setenv('TF_CONFIG', tf_config)
  with pytest.raises(UserError, match=message):
    distribute.create_strategy('multi_worker')


@pytest.mark.tpu_path
def test_tpu_without_a_tpu_fails_with_advice():
  with pytest.raises(UserError, match='--strategy=tpu found no TPU.*TPU VM or pass --tpu'):
    distribute.create_strategy('tpu')


@pytest.mark.tpu_path
def test_an_unreachable_tpu_address_is_probed_with_a_timeout(monkeypatch):
  # Connecting to an absent gRPC address blocks forever: the probe must bound its wait.
  timeouts = []
  connect = socket.create_connection
  monkeypatch.setattr(socket, 'create_connection',
                      lambda address, timeout=None: timeouts.append(timeout) or
                      connect(address, timeout=timeout))
  with pytest.raises(UserError, match='cannot reach the TPU at grpc://127.0.0.1:1'):
    distribute.create_strategy('tpu', tpu='grpc://127.0.0.1:1')
  assert timeouts and all(t and t <= 60 for t in timeouts)


def _closed_loopback_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# pylint: disable-next=protected-access
_HAS_CLOUD_TPU_CLIENT = all(map(importlib.util.find_spec, distribute._CLOUD_TPU_CLIENT_MODULES))


@pytest.mark.tpu_path
def test_a_tpu_name_reaches_the_resolver_or_names_the_missing_client(monkeypatch):
  # A TPU name is looked up from the metadata server first: here a closed port on this
  # machine, so nothing leaves it.
  monkeypatch.setenv('GCE_METADATA_HOST', f'127.0.0.1:{_closed_loopback_port()}')
  resolver, names = tf.distribute.cluster_resolver.TPUClusterResolver, []
  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver',
                      lambda tpu: names.append(tpu) or resolver(tpu=tpu))
  if _HAS_CLOUD_TPU_CLIENT:  # launch/tpu/requirements-pod.txt's venv
    with pytest.raises(UserError, match=r"cannot resolve --tpu='my-pod' \(.*Connection refused"
                       r'.*run on the TPU VM \(worker 0 of a pod slice\)'):
      distribute.create_strategy('tpu', tpu='my-pod')
    assert names == ['my-pod']
  else:
    with pytest.raises(UserError, match='--tpu=my-pod names a TPU, which TensorFlow looks up '
                       'through the Cloud TPU API with google-api-python-client and oauth2client'
                       '.*pip install -r launch/tpu/requirements-pod.txt'):
      distribute.create_strategy('tpu', tpu='my-pod')
    assert names == []


@pytest.mark.tpu_path
def test_the_trainer_with_a_tpu_name_and_no_tpu_ends_in_one_line(tmp_path):
  result = forked.run(
      [sys.executable, '-m', 'trainer.main', '--strategy=tpu', '--tpu=my-pod',
       '--dataset=synthetic', '--train_steps=1', f'--model_dir={tmp_path}/run'],
      cwd=REPO, capture_output=True, text=True, timeout=240,
      env=dict(os.environ, PYTHONPATH=str(REPO),
               GCE_METADATA_HOST=f'127.0.0.1:{_closed_loopback_port()}'))
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and '--tpu' in last and 'my-pod' in last, result.stderr


@pytest.mark.parametrize('name', ['default', 'one_device', 'mirrored'])
@pytest.mark.parametrize('blank', ['', '  \t\n'])
def test_blank_tf_config_counts_as_unset_for_single_host_strategies(monkeypatch, name, blank):
  monkeypatch.setenv('TF_CONFIG', blank)
  strategy = distribute.create_strategy(name, num_cpu_devices=2 if name == 'mirrored' else 0)
  assert distribute.is_chief(strategy)
  assert 'TF_CONFIG' not in os.environ  # TensorFlow's later lookups see no cluster either.


def test_malformed_tf_config_is_one_line_for_single_host_strategies(monkeypatch):
  monkeypatch.setenv('TF_CONFIG', '{"cluster": ')
  with pytest.raises(UserError, match='TF_CONFIG is not valid JSON .*unset it or fix it'):
    distribute.create_strategy('mirrored', num_cpu_devices=2)
