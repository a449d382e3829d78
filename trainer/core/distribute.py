"""Builds the tf.distribute strategy named by --strategy, and the batch arithmetic around it."""

import importlib.util
import json
import os
import re
import socket
import urllib.parse

from absl import logging
import tensorflow as tf

from trainer.core import startup
from trainer.core.config import DEFAULT_STARTUP_TIMEOUT
from trainer.core.errors import UserError, first_line

# What a collective raises once another worker is gone: its connection was reset, or
# TensorFlow's coordination service (which MultiWorkerMirroredStrategy starts) stopped
# hearing its heartbeats, 10 s by default, and aborted every collective. Either way each
# survivor fails within seconds instead of waiting for the dead peer forever.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                 tf.errors.AbortedError, tf.errors.CancelledError)
_PEER_FAILURE_MAX_CHARS = 300

# How long to wait for a TPU worker's port before saying it is unreachable: connecting
# to an absent gRPC address otherwise blocks forever.
_TPU_CONNECT_TIMEOUT_S = 10
# What tensorflow/python/tpu/client/client.py imports to reach the Cloud TPU API.
_CLOUD_TPU_CLIENT_MODULES = ('googleapiclient', 'oauth2client')


def configure_cpu_devices(count: int) -> None:
  """Splits the host CPU into `count` logical devices so MirroredStrategy runs anywhere.

  Must happen before TensorFlow initialises its runtime; if that already happened with
  enough logical CPUs (a test process, say), those are used as they are.
  """
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
  except RuntimeError:
    have = len(tf.config.list_logical_devices('CPU'))
    if have < count:
      raise UserError(f'--num_cpu_devices={count} came too late: TensorFlow already started '
                      f'with {have} CPU device(s); set it before any TensorFlow op runs') from None


def _drop_blank_tf_config() -> None:
  """A set but empty TF_CONFIG (a leftover `export TF_CONFIG=`, an empty templated value in
  a job spec) means "no cluster"; TensorFlow's resolver would fail to parse it as JSON."""
  raw = os.environ.get('TF_CONFIG')
  if raw is not None and not raw.strip():
    del os.environ['TF_CONFIG']
    return
  if raw is not None:
    try:
      json.loads(raw)
    except json.JSONDecodeError as e:
      raise UserError(f'TF_CONFIG is not valid JSON ({e.msg} at position {e.pos}); only '
                      '--strategy=multi_worker uses it: unset it or fix it') from None


def validate_tf_config() -> dict:
  raw = os.environ.get('TF_CONFIG')
  if not raw or not raw.strip():
    state = 'not set' if raw is None else 'empty'
    raise UserError(f'--strategy=multi_worker needs the TF_CONFIG environment variable '
                    f'(cluster and task of this worker), but it is {state}; see launch/README.md')
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise UserError(f'TF_CONFIG is not valid JSON ({e.msg} at position {e.pos})') from None
  cluster = tf_config.get('cluster') if isinstance(tf_config, dict) else None
  task = tf_config.get('task') if isinstance(tf_config, dict) else None
  if not isinstance(cluster, dict) or not cluster:
    raise UserError('TF_CONFIG has no "cluster" mapping of job names to host:port lists')
  if not isinstance(task, dict) or 'type' not in task or 'index' not in task:
    raise UserError('TF_CONFIG needs "task": {"type": ..., "index": ...} for this worker')
  members = cluster.get(task['type'])
  if not isinstance(members, list) or not members:
    raise UserError(f'TF_CONFIG task type {task["type"]!r} is not a job in its cluster '
                    f'({", ".join(sorted(cluster))})')
  index = task['index']
  if not isinstance(index, int) or not 0 <= index < len(members):
    raise UserError(f'TF_CONFIG task index {index!r} is out of range for job '
                    f'{task["type"]!r} with {len(members)} member(s)')
  return tf_config


def _require_cloud_tpu_client(tpu: str) -> None:
  """TPUClusterResolver finds a TPU by name (a pod slice's hosts) through the Cloud TPU
  API, whose client TensorFlow does not install; without it the lookup fails late, in
  experimental_connect_to_cluster, after a call to the metadata server."""
  if all(importlib.util.find_spec(name) for name in _CLOUD_TPU_CLIENT_MODULES):
    return
  raise UserError(f'--tpu={tpu} names a TPU, which TensorFlow looks up through the Cloud TPU '
                  'API with google-api-python-client and oauth2client, not installed here: '
                  'pip install -r launch/tpu/requirements-pod.txt (or cloud-tpu-client), or '
                  'pass --tpu=local on a single-host TPU VM')


def _tpu_resolver(tpu: str):
  if not tpu or tpu == 'local':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu='local')
  else:
    if tpu.startswith('grpc://'):
      address = urllib.parse.urlparse(tpu)
      try:
        socket.create_connection((address.hostname, address.port),
                                 timeout=_TPU_CONNECT_TIMEOUT_S).close()
      except (OSError, TypeError, ValueError) as e:
        raise UserError(f'cannot reach the TPU at {tpu} ({e}); check --tpu and that the '
                        'TPU is running') from None
    else:
      _require_cloud_tpu_client(tpu)
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    except (ValueError, RuntimeError, OSError) as e:
      # OSError: urllib's URLError, when the metadata server or the Cloud TPU API that a
      # TPU name is looked up with cannot be reached (not on Google Cloud).
      raise UserError(f'cannot resolve --tpu={tpu!r} ({first_line(e, 160)}); a TPU name is '
                      'looked up through the Cloud TPU API from a VM of its project: run '
                      'on the TPU VM (worker 0 of a pod slice), or pass --tpu=grpc://HOST:PORT') \
          from None
  try:
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (tf.errors.OpError, ValueError, RuntimeError) as e:
    raise UserError('--strategy=tpu found no TPU '
                    f'({first_line(e, 160)}); run on a TPU VM or pass --tpu=NAME_OR_GRPC_ADDRESS') from None
  return resolver


def create_strategy(name: str, num_cpu_devices: int = 0, tpu: str = '',
                    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> tf.distribute.Strategy:
  """Returns the strategy for --strategy=name; raises UserError when it cannot exist here.

  multi_worker first waits up to `startup_timeout` s (0: no limit) for the other workers.
  """
  if name != 'multi_worker':
    _drop_blank_tf_config()
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'one_device':
    device = '/gpu:0' if tf.config.list_physical_devices('GPU') else '/cpu:0'
    return tf.distribute.OneDeviceStrategy(device)
  if name == 'mirrored':
    if num_cpu_devices:
      configure_cpu_devices(num_cpu_devices)
      devices = [d.name for d in tf.config.list_logical_devices('CPU')[:num_cpu_devices]]
      return tf.distribute.MirroredStrategy(devices)
    if not tf.config.list_physical_devices('GPU'):
      logging.warning('--strategy=mirrored found no GPU and mirrors over one CPU device; '
                      'pass --num_cpu_devices=N to split the CPU into N replicas')
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    startup.wait_for_workers(validate_tf_config(), startup_timeout)
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    return tf.distribute.TPUStrategy(_tpu_resolver(tpu))
  raise UserError(f'unknown strategy {name!r}')


def peer_failure_message(error: Exception) -> str:
  """One line for TensorFlow's many-line report that a collective lost a peer."""
  text = re.sub(r'\{\{function_node [^}]*\}\}', '', str(error))
  text = text.split('The error could be from a previous operation')[0]
  text = ' '.join(text.replace('Collective ops is aborted by:', '').split())
  if len(text) > _PEER_FAILURE_MAX_CHARS:
    text = text[:_PEER_FAILURE_MAX_CHARS] + '...'
  return (f'lost contact with another worker ({text or type(error).__name__}); rerun the '
          'whole job: it resumes from the last checkpoint in --model_dir')


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one worker that owns the run folder's shared files."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type in (None, 'chief'):
    return True
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return task_type == 'worker' and task_id == 0 and not has_chief


def task_label(strategy: tf.distribute.Strategy):
  """'worker 1' or 'chief' in a multi-worker run, for every log line; None otherwise."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
      or resolver.task_type is None:
    return None
  return 'chief' if resolver.task_type == 'chief' else f'{resolver.task_type} {resolver.task_id}'


def per_replica_batch_size(global_batch: int, strategy: tf.distribute.Strategy) -> int:
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise UserError(f'--batch_size={global_batch} (the global batch) does not divide among '
                    f'{replicas} replicas; use a multiple of {replicas}')
  return global_batch // replicas


def num_workers(strategy: tf.distribute.Strategy) -> int:
  resolver = getattr(strategy, 'cluster_resolver', None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
    return 1
  jobs = resolver.cluster_spec().as_dict()
  return len(jobs.get('chief', [])) + len(jobs.get('worker', []))


def replica_devices(strategy: tf.distribute.Strategy) -> list:
  """This worker's replicas' devices, in replica order."""
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy places ops wherever TensorFlow does.
    return [d.name for d in tf.config.list_logical_devices()
            if d.device_type != 'CPU'][:1] or ['/cpu:0']


def worker_index(strategy: tf.distribute.Strategy) -> int:
  """This worker's place among num_workers(): the chief first, then the workers by index,
  as MultiWorkerMirroredStrategy numbers replicas (worker w's come after w's predecessors')."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None \
      or resolver.task_type in (None, 'chief'):
    return 0
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return resolver.task_id + (1 if has_chief else 0)


def describe(strategy: tf.distribute.Strategy) -> str:
  """One line on where the replicas run, for the start-of-run log."""
  devices = replica_devices(strategy)
  name = 'DefaultStrategy' if strategy is tf.distribute.get_strategy() and not \
      tf.distribute.has_strategy() else type(strategy).__name__
  return (f'strategy {name} | {num_workers(strategy)} worker(s), devices '
          f'{", ".join(devices)} | {strategy.num_replicas_in_sync} replica(s)')
