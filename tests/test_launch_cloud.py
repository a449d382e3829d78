"""Vertex AI job spec: what it would submit, and what gcloud receives.

A stand-in `gcloud` on PATH records its arguments (tests/fake_gcloud.py), so the real
submission path runs too. The TPU VM launcher: tests/test_tpu_routes.py.
"""

import json

from absl import flags
import pytest

from launch import vertex
from tests.conftest import REPO
from tests.fake_gcloud import gcloud, parse_trainer_flags  # pylint: disable=unused-import
from trainer import flags as trainer_flags


def _dry_run_spec(capsys, *argv):
  assert vertex.main(['--image=IMAGE', '--bucket=gs://bkt/', '--dry_run', *argv]) == 0
  out = capsys.readouterr().out
  spec_text, command = out.split('# submit with: ')
  return json.loads(spec_text), command.strip()


def test_vertex_dry_run_has_a_chief_pool_and_a_worker_pool(capsys, monkeypatch):
  spec, command = _dry_run_spec(capsys, '--', '--epochs=3')
  chief, workers = spec['workerPoolSpecs']
  assert chief['replicaCount'] == 1 and workers['replicaCount'] == 1
  for pool in (chief, workers):
    assert pool['machineSpec'] == {'machineType': 'n1-standard-16',
                                   'acceleratorType': 'NVIDIA_TESLA_T4', 'acceleratorCount': 4}
    assert pool['containerSpec']['imageUri'] == 'IMAGE'
  assert chief['containerSpec']['args'] == workers['containerSpec']['args'] == [
      '--flagfile=configs/multi_worker.cfg', '--data_dir=gs://bkt/tensorflow_datasets',
      '--log_format=json', '--epochs=3']
  assert spec['baseOutputDirectory'] == {'outputUriPrefix': 'gs://bkt/runs/cifar10-multi-worker'}
  assert spec['scheduling'] == {'restartJobOnWorkerRestart': True}
  assert command == ('gcloud ai custom-jobs create --region=us-central1 '
                     '--display-name=cifar10-multi-worker --config=SPEC.json')
  # Every replica of one job shares the id that lets a restarted chief retake the lease.
  assert chief['containerSpec']['env'] == workers['containerSpec']['env']
  assert [e['name'] for e in chief['containerSpec']['env']] == ['TRAINER_JOB_ID']
  config = parse_trainer_flags(chief['containerSpec']['args'], monkeypatch)
  assert config.strategy == 'multi_worker' and config.epochs == 3
  assert config.batch_size % (2 * 4) == 0  # The default 2 machines x 4 GPUs.

  spec, _ = _dry_run_spec(capsys, '--workers=5')
  assert [p['replicaCount'] for p in spec['workerPoolSpecs']] == [1, 4]


@pytest.mark.parametrize('options', [(), ('--workers=1', '--accelerator_count=0')])
def test_vertex_spec_is_a_custom_job_spec_to_vertex_ai_itself(capsys, options):
  # Vertex AI's own API types (google-cloud-aiplatform), strict: a misspelt or misplaced
  # field fails here instead of in the user's console.
  from google.cloud.aiplatform_v1.types import CustomJobSpec  # pylint: disable=g-import-not-at-top
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  spec, _ = _dry_run_spec(capsys, *options)
  parsed = CustomJobSpec.from_json(json.dumps(spec), ignore_unknown_fields=False)
  assert len(parsed.worker_pool_specs) == len(spec['workerPoolSpecs'])
  assert parsed.base_output_directory.output_uri_prefix == \
      spec['baseOutputDirectory']['outputUriPrefix']
  misspelt = dict(spec, baseOutputDir=spec['baseOutputDirectory'])
  with pytest.raises(json_format.ParseError, match='baseOutputDir'):
    CustomJobSpec.from_json(json.dumps(misspelt), ignore_unknown_fields=False)


def test_vertex_single_machine_cpu_job_has_one_pool(capsys):
  spec, _ = _dry_run_spec(capsys, '--workers=1', '--accelerator_count=0',
                          '--preset=configs/multi_gpu.cfg')
  (pool,) = spec['workerPoolSpecs']
  assert pool['machineSpec'] == {'machineType': 'n1-standard-16'}
  assert 'scheduling' not in spec


def test_vertex_submits_the_dry_run_spec_through_gcloud(capsys, gcloud, tmp_path):
  expected, _ = _dry_run_spec(capsys, '--project=proj')
  assert vertex.main(['--image=IMAGE', '--bucket=bkt', '--project=proj']) == 0
  (call,) = gcloud()
  assert call[:6] == ['ai', 'custom-jobs', 'create', '--project=proj', '--region=us-central1',
                      '--display-name=cifar10-multi-worker']
  submitted = json.loads((tmp_path / 'bin' / 'config-0').read_text())
  ids = [[e['value'] for pool in spec['workerPoolSpecs']
          for e in pool['containerSpec'].pop('env')] for spec in (submitted, expected)]
  assert submitted == expected
  assert ids[0] != ids[1]  # Each submission is a job of its own for the run folder's lease.


def test_vertex_without_gcloud_says_so(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv('PATH', str(tmp_path))
  assert vertex.main(['--image=IMAGE', '--bucket=bkt']) == 2
  assert capsys.readouterr().err.startswith('error: gcloud is not on PATH')


_TUNE = ['--tune', '--workers=1', '--accelerator_count=1', '--preset=configs/fast.cfg',
         '--param', 'learning_rate=double:1e-4:1e-2:log', '--param=batch_size=integer:64:512:log',
         '--param=warmup_epochs=discrete:2,0.5,1', '--param=eval_flip=categorical:true,false',
         '--max_trials=12', '--parallel_trials=3']


def test_vertex_tuning_job_is_a_hyperparameter_tuning_job_to_vertex_ai_itself(capsys,
                                                                             monkeypatch):
  # pylint: disable=g-import-not-at-top
  from google.cloud.aiplatform_v1.types import HyperparameterTuningJob, StudySpec
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  job, command = _dry_run_spec(capsys, *_TUNE, '--', '--epochs=3')
  parsed = HyperparameterTuningJob.from_json(json.dumps(job), ignore_unknown_fields=False)
  assert (parsed.display_name, parsed.max_trial_count, parsed.parallel_trial_count) == (
      'cifar10-tuning', 12, 3)
  study = parsed.study_spec
  assert [(m.metric_id, m.goal) for m in study.metrics] == [
      ('eval_accuracy', StudySpec.MetricSpec.GoalType.MAXIMIZE)]
  assert study.algorithm == StudySpec.Algorithm.ALGORITHM_UNSPECIFIED  # Vertex AI's Bayesian.
  assert study.measurement_selection_type == StudySpec.MeasurementSelectionType.BEST_MEASUREMENT
  rate, batch, warmup, flip = study.parameters
  log = StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE
  assert (rate.parameter_id, rate.double_value_spec.min_value, rate.double_value_spec.max_value,
          rate.scale_type) == ('learning_rate', 1e-4, 1e-2, log)
  assert (batch.integer_value_spec.min_value, batch.integer_value_spec.max_value,
          batch.scale_type) == (64, 512, log)
  assert list(warmup.discrete_value_spec.values) == [0.5, 1.0, 2.0]
  assert list(flip.categorical_value_spec.values) == ['true', 'false']
  (pool,) = parsed.trial_job_spec.worker_pool_specs
  assert parsed.trial_job_spec.base_output_directory.output_uri_prefix == \
      'gs://bkt/runs/cifar10-tuning'
  assert command == ('gcloud ai hp-tuning-jobs create --region=us-central1 '
                     '--display-name=cifar10-tuning --config=SPEC.json --max-trial-count=12 '
                     '--parallel-trial-count=3 --algorithm=algorithm-unspecified')
  # A trial: the job's arguments, then Vertex AI's values for it as `--name value`.
  trial_args = [*pool.container_spec.args, '--learning_rate', '0.0031', '--batch_size', '128.0',
                '--warmup_epochs', '0.5', '--eval_flip', 'false']
  values = flags.FlagValues()
  trainer_flags.define_flags(values)
  monkeypatch.chdir(REPO)
  values(['trainer', *trainer_flags.tuning_arguments(trial_args, values)])
  config = trainer_flags.config_from_flags(values)
  assert (config.learning_rate, config.batch_size, config.warmup_epochs, config.eval_flip,
          config.epochs, config.optimizer) == (0.0031, 128, 0.5, False, 3, 'muon')
  assert (config.tune_metric, config.tune_report) == ('eval_accuracy', True)
  misspelt = dict(job, studySpec=dict(job['studySpec'], algorithms='RANDOM_SEARCH'))
  with pytest.raises(json_format.ParseError, match='algorithms'):
    HyperparameterTuningJob.from_json(json.dumps(misspelt), ignore_unknown_fields=False)


def test_vertex_tuning_defaults_and_choices(capsys):
  job, _ = _dry_run_spec(capsys, '--tune')
  rate, smoothing = job['studySpec']['parameters']
  assert (rate['parameterId'], rate['scaleType']) == ('learning_rate', 'UNIT_LOG_SCALE')
  assert (smoothing['parameterId'], smoothing['scaleType']) == ('label_smoothing',
                                                                'UNIT_LINEAR_SCALE')
  assert (job['maxTrialCount'], job['parallelTrialCount']) == (8, 2)
  job, command = _dry_run_spec(capsys, '--tune', '--metric=eval_loss', '--algorithm=random',
                               '--name=lr-search')
  assert job['studySpec']['metrics'] == [{'metricId': 'eval_loss', 'goal': 'MINIMIZE'}]
  assert job['studySpec']['algorithm'] == 'RANDOM_SEARCH'
  pools = job['trialJobSpec']['workerPoolSpecs']
  assert len(pools) == 2  # The chief's pool and the other workers' (--workers=2).
  for pool in pools:
    assert pool['containerSpec']['args'][-2:] == ['--tune_metric=eval_loss', '--tune_report']
    # Once per pool: the two pools' container specs are not one shared dict.
    assert pool['containerSpec']['args'].count('--tune_report') == 1
    assert sum(a.startswith('--tune_metric') for a in pool['containerSpec']['args']) == 1
  assert '--algorithm=random-search' in command and '--display-name=lr-search' in command
  job, _ = _dry_run_spec(capsys, '--tune', '--algorithm=grid', '--param=seed=integer:1:3')
  assert job['studySpec']['algorithm'] == 'GRID_SEARCH'


@pytest.mark.parametrize('argv,message', [
    (['--param=no_such_flag=double:0:1'], "'no_such_flag' is not a trainer flag that can be "
                                          'tuned'),
    (['--param=model_dir=categorical:a,b'], "'model_dir' is not a trainer flag"),
    (['--param=learning_rate=double:0:1:log'], 'MIN > 0 for :log'),
    (['--param=learning_rate=double:1:0.1'], 'want MIN:MAX with MIN < MAX'),
    (['--param=learning_rate=float:0:1'], 'KIND is one of double, integer, discrete'),
    (['--param=batch_size=discrete:64,big'], "could not convert string to float: 'big'"),
    (['--param=optimizer=categorical:adam'], 'want two or more values'),
    (['--param=seed=integer:1:5', '--param=seed=integer:1:9'], 'a flag is tuned twice'),
    (['--algorithm=grid'], '--algorithm=grid needs integer, discrete or categorical'),
    (['--max_trials=0'], '--max_trials must be at least 1, got 0'),
])
def test_vertex_tuning_refuses_a_study_no_job_could_run(capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    vertex.main(['--image=IMAGE', '--bucket=bkt', '--tune', '--dry_run', *argv])
  assert exit_info.value.code == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith('error: ') and message in line, line


def test_vertex_submits_the_tuning_job_through_gcloud(capsys, gcloud, tmp_path):
  expected, _ = _dry_run_spec(capsys, *_TUNE)
  assert vertex.main(['--image=IMAGE', '--bucket=bkt', *_TUNE]) == 0
  (call,) = gcloud()
  assert call[:3] == ['ai', 'hp-tuning-jobs', 'create']
  assert '--max-trial-count=12' in call and '--parallel-trial-count=3' in call
  submitted = json.loads((tmp_path / 'bin' / 'config-0').read_text())
  for job in (submitted, expected):
    for pool in job['trialJobSpec']['workerPoolSpecs']:
      pool['containerSpec'].pop('env')  # One id per submission.
  assert submitted == expected
