import os
import socket

import pytest

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


def test_tpu_without_a_tpu_fails_with_advice():
  with pytest.raises(UserError, match='--strategy=tpu found no TPU.*TPU VM or pass --tpu'):
    distribute.create_strategy('tpu')


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
