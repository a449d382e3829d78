"""Vertex AI tuning trials played here, as `python -m trainer.main` processes: the environment
Vertex AI gives a trial, the trial's values as arguments after the job's own, tiny synthetic
data. Two trials of one job run side by side on one --model_dir."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests import forked

pytestmark = pytest.mark.slow

# The job's own arguments, the same for every trial (launch/vertex.py puts them first).
_JOB_ARGS = ['--dataset=synthetic', '--train_steps=4', '--steps_per_loop=2',
             '--eval_every_steps=2', '--batch_size=256', '--checkpoint_every_steps=2']


def _start_trial(tmp_path, trial_id, trial_args):
  metrics = tmp_path / f'trial-{trial_id}-hypertune' / 'output.metrics'
  env = dict(os.environ, PYTHONPATH=str(REPO), CLOUD_ML_TRIAL_ID=trial_id,
             CLOUD_ML_HP_METRIC_FILE=str(metrics), TRAINER_JOB_ID='tuning-job-1')
  for name in ('TF_CONFIG', 'AIP_MODEL_DIR', 'AIP_CHECKPOINT_DIR', 'AIP_TENSORBOARD_LOG_DIR'):
    env.pop(name, None)
  args = [*_JOB_ARGS, f'--model_dir={tmp_path / "base"}', *trial_args]
  process = forked.Popen([sys.executable, '-m', 'trainer.main', *args], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return process, metrics


def _read_json(path):
  return json.loads(path.read_text())


def test_two_trials_side_by_side_report_their_metric_in_their_own_folders(tmp_path):
  # As Vertex AI passes them (`--name value`), and the same values written `--name=value`.
  spaced = ['--learning_rate', '0.003', '--eval_flip', 'true', '--seed', '7.0']
  joined = ['--learning_rate=0.0003', '--eval_flip=true', '--seed=7', '--tune_metric=eval_loss']
  trials = {'3': _start_trial(tmp_path, '3', spaced), '4': _start_trial(tmp_path, '4', joined)}
  outputs = {}
  for trial_id, (process, _) in trials.items():
    outputs[trial_id] = process.communicate(timeout=600)
    assert process.returncode == 0, outputs[trial_id][1][-3000:]

  base = tmp_path / 'base'
  assert sorted(p.name for p in base.iterdir()) == ['trial-3', 'trial-4']  # Nothing shared.
  configs = {}
  for trial_id, (_, metrics) in trials.items():
    folder = base / f'trial-{trial_id}'
    stderr = outputs[trial_id][1]
    assert f'run folder {folder}' in stderr and 'reporting' in stderr
    config, results = _read_json(folder / 'config.json'), _read_json(folder / 'results.json')
    configs[trial_id] = config
    # Each trial's checkpoints and export are in its own folder, and hold its own steps.
    assert sorted(p.name for p in (folder / 'checkpoints').glob('ckpt-*.index')) == [
        'ckpt-2.index', 'ckpt-4.index']
    assert (folder / 'export' / 'saved_model.pb').exists() and (folder / 'run.lock').exists()

    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    metric = config['tune_metric']
    evaluations = results['eval_history']
    assert [e['step'] for e in evaluations] == [2, 4]
    assert [line['global_step'] for line in lines] == ['2', '4']
    assert {line['trial'] for line in lines} == {trial_id}
    assert [float(line[metric]) for line in lines] == [e[metric] for e in evaluations]
    assert float(lines[-1][metric]) == results[metric]

  assert (configs['3']['learning_rate'], configs['4']['learning_rate']) == (0.003, 0.0003)
  assert (configs['3']['tune_metric'], configs['4']['tune_metric']) == ('eval_accuracy',
                                                                        'eval_loss')
  # Otherwise the spaced arguments gave exactly what the joined ones did.
  for config in configs.values():
    assert config['eval_flip'] is True and config['seed'] == 7
    for name in ('learning_rate', 'scaled_learning_rate', 'tune_metric'):
      config.pop(name)
  assert configs['3'] == configs['4']

