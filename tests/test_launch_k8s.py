"""Kubernetes: the TF_CONFIG each pod derives, and the manifest the entry point relies on."""

import json
import subprocess
import sys

from absl import flags
import pytest
import yaml

from launch import k8s_entrypoint
from launch import tf_config
from tests.conftest import REPO
from trainer import flags as trainer_flags
from trainer import strategy as strategy_lib
from trainer.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, EXIT_USER_ERROR

MANIFEST = REPO / 'launch' / 'k8s' / 'multi_worker.yaml'


def _env(index, **extra):
  return {'JOB_COMPLETION_INDEX': str(index), 'TRAINER_JOB_NAME': 'job',
          'TRAINER_SERVICE': 'svc', 'TRAINER_NUM_WORKERS': '3', **extra}


@pytest.mark.parametrize('index,task', [(0, {'type': 'worker', 'index': 0}),
                                        (2, {'type': 'worker', 'index': 2})])
def test_workers_only_pod_index_is_the_worker_index(index, task):
  config = k8s_entrypoint.tf_config_from_env(_env(index))
  assert config == {'cluster': {'worker': ['job-0.svc:2222', 'job-1.svc:2222',
                                           'job-2.svc:2222']}, 'task': task}


@pytest.mark.parametrize('index,task', [(0, {'type': 'chief', 'index': 0}),
                                        (1, {'type': 'worker', 'index': 0}),
                                        (2, {'type': 'worker', 'index': 1})])
def test_with_a_chief_pod_0_is_the_chief_and_the_rest_count_from_0(index, task):
  config = k8s_entrypoint.tf_config_from_env(
      _env(index, TRAINER_WITH_CHIEF='true', TRAINER_PORT='5000'))
  assert config == {'cluster': {'chief': ['job-0.svc:5000'],
                                'worker': ['job-1.svc:5000', 'job-2.svc:5000']}, 'task': task}


@pytest.mark.parametrize('with_chief', [False, True])
def test_every_derived_tf_config_is_one_the_trainer_accepts(monkeypatch, with_chief):
  for index in range(3):
    config = tf_config.tf_config(['a:1', 'b:1', 'c:1'], index, with_chief)
    monkeypatch.setenv('TF_CONFIG', json.dumps(config))
    assert strategy_lib._validate_tf_config() == config  # pylint: disable=protected-access


@pytest.mark.parametrize('env,message', [
    ({'JOB_COMPLETION_INDEX': '0'}, 'TRAINER_JOB_NAME is not set'),
    (_env(3), 'JOB_COMPLETION_INDEX=3 is outside 0..2'),
    (_env(0, TRAINER_NUM_WORKERS='two'), "TRAINER_NUM_WORKERS must be a whole number, got 'two'"),
    (_env(0, TRAINER_NUM_WORKERS='0'), 'TRAINER_NUM_WORKERS must be at least 1'),
])
def test_a_wrong_pod_environment_is_named(env, message):
  with pytest.raises(k8s_entrypoint.SetupError, match=message):
    k8s_entrypoint.tf_config_from_env(env)


@pytest.mark.slow
def test_the_entry_point_hands_its_flags_to_the_trainer():
  env = dict(_env(1), PATH='/usr/bin:/bin')
  result = subprocess.run([sys.executable, '-m', 'launch.k8s_entrypoint', '--batch_size=0'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == 'error: --batch_size must be positive, got 0'
  assert 'TF_CONFIG task worker:1 of 3' in result.stderr

  result = subprocess.run([sys.executable, '-m', 'launch.k8s_entrypoint'], cwd=REPO,
                          env={'PATH': '/usr/bin:/bin'}, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 2
  assert result.stderr.startswith('error: TRAINER_JOB_NAME is not set')


@pytest.mark.slow
def test_the_entry_point_speaks_json_when_the_trainer_does():
  env = dict(_env(1), PATH='/usr/bin:/bin')
  result = subprocess.run([sys.executable, '-m', 'launch.k8s_entrypoint', '--log_format=json',
                           '--batch_size=0'], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 2
  entries = [json.loads(line) for line in result.stderr.splitlines()]
  assert entries[0]['severity'] == 'INFO' and entries[0]['message'].startswith('TF_CONFIG task')
  assert entries[-1] == dict(entries[-1], severity='ERROR',
                             message='error: --batch_size must be positive, got 0')


@pytest.fixture(scope='module')
def manifest():
  documents = list(yaml.safe_load_all(MANIFEST.read_text()))
  by_kind = {d['kind']: d for d in documents}
  assert sorted(by_kind) == ['Job', 'Service', 'ServiceAccount']
  return by_kind


def test_the_job_is_indexed_and_its_sizes_agree(manifest):
  job = manifest['Job']['spec']
  env = {e['name']: e['value'] for e in job['template']['spec']['containers'][0]['env']}
  assert job['completionMode'] == 'Indexed'
  assert job['completions'] == job['parallelism'] == int(env['TRAINER_NUM_WORKERS'])
  assert env['TRAINER_JOB_NAME'] == manifest['Job']['metadata']['name']


def test_the_headless_service_names_the_pods(manifest):
  service, pod = manifest['Service'], manifest['Job']['spec']['template']
  container = pod['spec']['containers'][0]
  env = {e['name']: e['value'] for e in container['env']}
  assert service['spec']['clusterIP'] == 'None'
  assert service['spec']['publishNotReadyAddresses'] is True
  assert pod['spec']['subdomain'] == service['metadata']['name'] == env['TRAINER_SERVICE']
  assert service['spec']['selector'].items() <= pod['metadata']['labels'].items()
  port = int(env['TRAINER_PORT'])
  assert [p['port'] for p in service['spec']['ports']] == [port]
  assert [p['containerPort'] for p in container['ports']] == [port]


def test_the_pods_run_the_entry_point_on_shared_storage(manifest, monkeypatch):
  pod = manifest['Job']['spec']['template']['spec']
  container = pod['containers'][0]
  assert container['command'] == ['python3', '-m', 'launch.k8s_entrypoint']
  assert pod['serviceAccountName'] == manifest['ServiceAccount']['metadata']['name']
  assert pod['restartPolicy'] == 'Never'
  assert container['resources']['limits']['nvidia.com/gpu'] >= 1
  # The args are real trainer flags: parse them as the trainer does, preset included
  # (from /app in the image, the checkout here).
  monkeypatch.chdir(REPO)
  values = flags.FlagValues()
  trainer_flags.define_flags(values)
  values(['trainer', *container['args']], known_only=False)
  config = trainer_flags.config_from_flags(values)
  assert config.strategy == 'multi_worker'
  assert config.model_dir.startswith('gs://') and config.data_dir.startswith('gs://')
  gpus = container['resources']['limits']['nvidia.com/gpu']
  replicas = gpus * manifest['Job']['spec']['completions']
  assert config.batch_size % replicas == 0


def test_failures_that_a_retry_cannot_fix_end_the_job(manifest):
  rules = manifest['Job']['spec']['podFailurePolicy']['rules']
  actions = {r['action']: r for r in rules if 'onExitCodes' in r}
  assert actions['FailJob']['onExitCodes']['values'] == [EXIT_USER_ERROR]
  assert sorted(actions['Ignore']['onExitCodes']['values']) == sorted(
      [EXIT_PEER_LOST, EXIT_PREEMPTED])
