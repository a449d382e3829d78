"""Kubernetes: the TF_CONFIG each pod derives, and the manifest the entry point relies on."""

import copy
import json
import subprocess
import sys

from absl import flags
import kubernetes_validate
import pytest
import yaml

from launch import k8s_entrypoint
from launch import tf_config
from tests.conftest import REPO
from trainer.core import distribute
from trainer.core.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, EXIT_USER_ERROR
from trainer import flags as trainer_flags

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
    assert distribute.validate_tf_config() == config


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
  assert sorted(by_kind) == ['JobSet', 'ServiceAccount']
  return by_kind


def _job(manifest):
  (replicated,) = manifest['JobSet']['spec']['replicatedJobs']
  assert replicated['replicas'] == 1
  return replicated['template']


def _values(container):
  return {e['name']: e.get('value') for e in container['env']}


def test_the_job_is_indexed_and_its_sizes_and_names_agree(manifest):
  jobset, job = manifest['JobSet'], _job(manifest)['spec']
  (replicated,) = jobset['spec']['replicatedJobs']
  env = _values(job['template']['spec']['containers'][0])
  assert job['completionMode'] == 'Indexed'
  assert job['completions'] == job['parallelism'] == int(env['TRAINER_NUM_WORKERS'])
  # JobSet names its child Job <jobset>-<replicated job>-<job index>, and the pods' DNS
  # subdomain after network.subdomain: the names the entry point builds the cluster from.
  assert env['TRAINER_JOB_NAME'] == f'{jobset["metadata"]["name"]}-{replicated["name"]}-0'
  assert env['TRAINER_SERVICE'] == jobset['spec']['network']['subdomain']
  assert jobset['spec']['network']['enableDNSHostnames'] is True
  assert [p['containerPort'] for p in job['template']['spec']['containers'][0]['ports']] == [
      int(env['TRAINER_PORT'])]


def test_the_pods_run_the_entry_point_on_shared_storage(manifest, monkeypatch):
  pod = _job(manifest)['spec']['template']['spec']
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
  replicas = gpus * _job(manifest)['spec']['completions']
  assert config.batch_size % replicas == 0


def test_dev_shm_is_memory_with_room_for_nccl(manifest):
  pod = _job(manifest)['spec']['template']['spec']
  (mount,) = [m for m in pod['containers'][0]['volumeMounts'] if m['mountPath'] == '/dev/shm']
  (volume,) = [v for v in pod['volumes'] if v['name'] == mount['name']]
  assert volume['emptyDir']['medium'] == 'Memory'  # tmpfs, not the node's disk.
  size = volume['emptyDir']['sizeLimit']
  assert size.endswith('Gi') and int(size[:-2]) >= 1  # Far above a container's 64 MiB.


def test_bad_input_ends_the_jobset_and_anything_else_restarts_all_pods(manifest):
  job = _job(manifest)['spec']
  (rule,) = job['podFailurePolicy']['rules']
  assert rule['action'] == 'FailJob'
  assert rule['onExitCodes']['values'] == [EXIT_USER_ERROR]
  assert job['backoffLimit'] == 0  # Any other failed pod fails the Job at once...
  policy = manifest['JobSet']['spec']['failurePolicy']
  # ... and the JobSet recreates every child Job for it (its default action), a bounded
  # number of times; only the exit-2 rule's failure reason ends it.
  assert 1 <= policy['maxRestarts'] <= 10
  (final,) = policy['rules']
  assert final['action'] == 'FailJobSet' and final['onJobFailureReasons'] == ['PodFailurePolicy']
  assert EXIT_PEER_LOST not in rule['onExitCodes']['values']
  assert EXIT_PREEMPTED not in rule['onExitCodes']['values']


def test_a_restarted_chief_may_take_over_its_own_lease(manifest):
  from trainer.run_folder import run_lock  # pylint: disable=g-import-not-at-top
  container = _job(manifest)['spec']['template']['spec']['containers'][0]
  (job_id,) = [e for e in container['env'] if e['name'] == run_lock.JOB_ID_VARIABLE]
  # The JobSet's uid survives its restarts; a new JobSet gets a new one.
  assert job_id['valueFrom']['fieldRef']['fieldPath'] == (
      "metadata.labels['jobset.sigs.k8s.io/jobset-uid']")


# Pinned, so a new release of the package does not move the check; the schemas of each
# Kubernetes version ship inside the package (no network).
_KUBERNETES_VERSION = '1.33.0'


def test_the_manifest_passes_kubernetes_own_schemas(manifest):
  kubernetes_validate.validate(manifest['ServiceAccount'], _KUBERNETES_VERSION, strict=True)
  # The JobSet itself is a custom resource, outside Kubernetes' schemas; what it creates
  # from its template is a batch/v1 Job, checked as one (strict: a misspelt field fails).
  child = {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': 'child'},
           **_job(manifest)}
  kubernetes_validate.validate(child, _KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field(manifest):
  child = {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': 'child'},
           **copy.deepcopy(_job(manifest))}
  child['spec']['backofLimit'] = child['spec'].pop('backoffLimit')
  with pytest.raises(kubernetes_validate.ValidationError, match='backofLimit'):
    kubernetes_validate.validate(child, _KUBERNETES_VERSION, strict=True)
