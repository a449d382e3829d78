"""Tuning trials, piece by piece: the trial id, the metric lines, the trial's own folders and
lease, and the `--name value` arguments the tuning service passes. tests/test_tuning_trial.py
plays whole trials."""

import json

from absl import flags
import pytest

from tests.test_run_lock import Clock
from trainer import flags as trainer_flags
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.core import trial
from trainer.report import hypertune
from trainer.run_folder import run_dirs
from trainer.run_folder import run_lock


@pytest.mark.parametrize('env,expected', [
    ({}, None),
    ({'CLOUD_ML_TRIAL_ID': '7'}, '7'),
    ({'CLOUD_ML_TRIAL_ID': ' '}, None),
    ({'TF_CONFIG': json.dumps({'task': {'type': 'chief', 'index': 0, 'trial': '12'}})}, '12'),
    ({'TF_CONFIG': json.dumps({'task': {'type': 'worker', 'index': 1}})}, None),
    ({'TF_CONFIG': '{oops'}, None),  # Reported where the strategy reads it, not here.
    ({'CLOUD_ML_TRIAL_ID': '3', 'TF_CONFIG': json.dumps({'task': {'trial': '4'}})}, '3'),
])
def test_the_trial_id_comes_from_the_environment(env, expected):
  assert trial.trial_id(env) == expected


@pytest.mark.parametrize('bad', ['../x', 'a/b', '.hidden', 'x' * 65])
def test_a_trial_id_that_is_no_plain_name_is_refused(bad):
  with pytest.raises(UserError, match='is not a plain name'):
    trial.trial_id({'CLOUD_ML_TRIAL_ID': bad})


def _lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_metric_lines_are_cloudml_hypertunes(tmp_path):
  path = tmp_path / 'hypertune' / 'output.metrics'  # Its folder is made as the package does.
  reporter = hypertune.Reporter('eval_accuracy', '5', str(path))
  reporter.report(100, loss=1.25, accuracy=0.5)
  reporter.report(200, loss=1.0, accuracy=0.625)
  text = path.read_text()
  first, second = _lines(path)
  # The package's format: sorted keys, every value but the timestamp a string.
  assert text.splitlines()[0] == json.dumps(first, sort_keys=True)
  assert sorted(first) == ['checkpoint_path', 'eval_accuracy', 'global_step', 'timestamp',
                           'trial']
  assert (first['eval_accuracy'], first['global_step'], first['trial']) == ('0.5', '100', '5')
  assert (second['eval_accuracy'], second['global_step']) == ('0.625', '200')
  assert first['checkpoint_path'] == '' and isinstance(first['timestamp'], float)
  assert first['timestamp'] <= second['timestamp']


def test_the_loss_can_be_the_metric_and_the_file_keeps_the_newest_100_lines(tmp_path):
  path = tmp_path / 'metrics'
  reporter = hypertune.Reporter('eval_loss', None, str(path))
  for step in range(1, hypertune.MAX_LINES + 2):
    reporter.report(step, loss=1.0 / step, accuracy=0.0)
  lines = _lines(path)
  assert len(lines) == hypertune.MAX_LINES
  assert [line['global_step'] for line in lines[:2]] == ['2', '3']  # Step 1 went.
  assert lines[-1]['eval_loss'] == str(1.0 / 101) and lines[-1]['trial'] == '0'
  assert 'eval_accuracy' not in lines[-1]


def test_an_unwritable_metric_file_is_one_line(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(UserError, match='cannot create the folder of the tuning metric file .*'
                     'set CLOUD_ML_HP_METRIC_FILE to a writable file'):
    hypertune.Reporter('eval_loss', '1', str(tmp_path / 'file' / 'metrics'))


@pytest.mark.parametrize('tune_report,env,chief,reports', [
    (None, {}, True, False),                            # Not a trial: nothing.
    (None, {'CLOUD_ML_TRIAL_ID': '2'}, True, True),     # A trial: its chief reports,
    (None, {'CLOUD_ML_TRIAL_ID': '2'}, False, False),   # its other workers do not.
    (True, {}, True, True),                             # Asked for outside a trial.
    (False, {'CLOUD_ML_TRIAL_ID': '2'}, True, False),   # Turned off in a trial.
])
def test_who_reports(tmp_path, tune_report, env, chief, reports):
  path = tmp_path / 'metrics'
  env = dict(env, CLOUD_ML_HP_METRIC_FILE=str(path))
  reporter = hypertune.reporter(Config(tune_report=tune_report), chief, env)
  reporter.report(10, loss=2.0, accuracy=0.25)
  assert path.exists() == reports
  if reports:
    (line,) = _lines(path)
    assert line['eval_accuracy'] == '0.25' and line['trial'] == env.get('CLOUD_ML_TRIAL_ID', '0')


def test_the_metric_is_one_of_the_two_evaluation_results():
  with pytest.raises(UserError, match="unknown --tune_metric='accuracy'; choose one of: "
                     'eval_accuracy, eval_loss'):
    Config(tune_metric='accuracy').validate()


def test_a_trials_folders_are_its_own():
  flagged = run_dirs.resolve(model_dir='gs://b/base', checkpoint_dir='/ckpt',
                             tensorboard_dir='/tb', export_dir='/exports/model', trial='3')
  assert flagged == run_dirs.RunDirs('gs://b/base/trial-3', '/tb/trial-3', '/ckpt/trial-3',
                                     '/exports/model/trial-3')
  # Vertex AI's variables already name the trial's own folders (<output>/<trial id>/model).
  env = {'AIP_MODEL_DIR': 'gs://b/out/3/model/', 'AIP_CHECKPOINT_DIR': 'gs://b/out/3/checkpoints/'}
  vertex = run_dirs.resolve(trial='3', env=env)
  assert (vertex.model_dir, vertex.checkpoint_dir, vertex.export) == (
      'gs://b/out/3', env['AIP_CHECKPOINT_DIR'], 'gs://b/out/3/model')
  default = run_dirs.resolve(trial='3', env={}, now=0)
  assert default.model_dir.startswith('runs/') and default.model_dir.endswith('/trial-3')
  assert run_dirs.resolve(model_dir='base', env={}) == run_dirs.RunDirs('base', 'base', 'base')


def test_trials_of_one_job_never_take_each_others_lease(tmp_path, monkeypatch):
  # All trials of a tuning job carry the launcher's TRAINER_JOB_ID: the trial tells them apart.
  monkeypatch.setenv(run_lock.JOB_ID_VARIABLE, 'tuning-job')
  clock = Clock()
  monkeypatch.setenv(trial.TRIAL_ID_VARIABLE, '1')
  run_lock.Lease(str(tmp_path), clock=clock).acquire()
  monkeypatch.setenv(trial.TRIAL_ID_VARIABLE, '2')
  with pytest.raises(UserError, match='in use by another run'):
    run_lock.Lease(str(tmp_path), clock=clock).acquire()
  monkeypatch.setenv(trial.TRIAL_ID_VARIABLE, '1')  # Trial 1 restarted: its own, at once.
  run_lock.Lease(str(tmp_path), clock=clock).acquire().check()


def _config(argv):
  values = flags.FlagValues()
  trainer_flags.define_flags(values)
  values(['trainer', *trainer_flags.tuning_arguments(argv, values)])
  return trainer_flags.config_from_flags(values)


def test_flags_with_a_space_are_the_flags_with_an_equals_sign():
  spaced = ['--learning_rate', '0.003', '--optimizer', 'sgd', '--eval_flip', 'true',
            '--nocache', '--batch_size', '128.0', '--epochs', '2', '--nesterov', 'False']
  joined = ['--learning_rate=0.003', '--optimizer=sgd', '--eval_flip=true', '--nocache',
            '--batch_size=128', '--epochs=2', '--nesterov=False']
  config = _config(spaced)
  assert config == _config(joined)
  assert (config.learning_rate, config.optimizer, config.eval_flip, config.cache,
          config.batch_size, config.epochs, config.nesterov) == (0.003, 'sgd', True, False,
                                                                 128, 2, False)
  # A boolean flag alone stays a switch; a fractional value for an integer flag still fails.
  assert _config(['--eval_flip', '--seed', '3']).eval_flip
  assert (_config([]).tune_report, _config(['--tune_report']).tune_report,
          _config(['--notune_report']).tune_report) == (None, True, False)
  with pytest.raises(flags.IllegalFlagValueError):
    _config(['--batch_size', '12.5'])
