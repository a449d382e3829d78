"""The command line as a user runs it: exit codes and one-line errors."""

import json
import os
import sys

import pytest

from tests.conftest import REPO
from tests import forked

pytestmark = pytest.mark.slow


def run_main(*args, env=None, timeout=300, cwd=REPO):
  """`python -m trainer.main ARGS` from `cwd` (where a run without --model_dir makes runs/)."""
  return forked.run([sys.executable, '-m', 'trainer.main', *args], cwd=cwd,
                    env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
                    capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('args,env,message', [
    (['--strategy=foo'], {}, "unknown --strategy='foo'; choose one of: default, one_device"),
    (['--dataset=no_such_dataset'], {}, "unknown --dataset='no_such_dataset'"),
    (['--batch_size=0'], {}, '--batch_size must be positive, got 0'),
    (['--epochs=-1'], {}, '--epochs must not be negative'),
    (['--startup_timeout=-5'], {}, '--startup_timeout must not be negative, got -5'),
    (['--profile_steps=5'], {}, "--profile_steps must be START,END with 1 <= START <= END"),
    (['--strategy=mirrored', '--num_cpu_devices=2', '--batch_size=63', '--dataset=synthetic'],
     {}, '--batch_size=63 (the global batch) does not divide among 2 replicas'),
    (['--strategy=tpu', '--dataset=synthetic'], {}, '--strategy=tpu found no TPU'),
    (['--input=gpu'], {}, "unknown --input='gpu'; choose one of: host, device"),
    (['--input=device', '--nocache'], {}, '--input=device holds the training data in device '
     'memory; it cannot stream it (--nocache): use --input=host with --nocache'),
    (['--input=device', '--device_data_max_mb=0'], {}, '--device_data_max_mb must be positive'),
    (['--strategy=multi_worker', '--model_dir=RUN'], {'TF_CONFIG': ''},
     'needs the TF_CONFIG environment variable'),
    (['--strategy=multi_worker', '--model_dir=RUN'], {'TF_CONFIG': ' \n'},
     'needs the TF_CONFIG environment variable (cluster and task of this worker), but it is '
     'empty'),
    (['--strategy=multi_worker', '--model_dir=RUN'], {'TF_CONFIG': '{oops'},
     'TF_CONFIG is not valid JSON'),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, args, env, message):
  # From tmp_path: the cases that get as far as making a run folder make it there.
  result = run_main(*(a.replace('RUN', str(tmp_path / 'run')) for a in args), env=env,
                    cwd=tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last
  assert 'Traceback' not in result.stderr
  # A run that stops before its first checkpoint takes the run folder it made with it.
  assert not (tmp_path / 'runs').exists()


def test_a_leftover_empty_tf_config_does_not_stop_a_single_host_run(tmp_path):
  result = run_main('--strategy=mirrored', '--num_cpu_devices=2', '--dataset=synthetic',
                       '--train_steps=1', f'--model_dir={tmp_path}', env={'TF_CONFIG': ' '})
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'final test loss' in result.stderr


@pytest.mark.parametrize('flag', ['model_dir', 'checkpoint_dir', 'tensorboard_dir'])
def test_an_unwritable_folder_fails_before_the_data(tmp_path, flag):
  (tmp_path / 'file').write_text('')
  bad = tmp_path / 'file' / 'sub'
  # The data set is absent: reading it first would fail with another message.
  result = run_main(f'--data_dir={tmp_path / "no_data"}', f'--model_dir={tmp_path / "run"}',
                    f'--{flag}={bad}')
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: cannot write to the ') and f'(--{flag}) {bad}: ' in last
  assert 'is not a directory' in last and 'Traceback' not in result.stderr


def test_missing_dataset_without_network_fails_before_any_download(tmp_path):
  # A proxy on a closed local port stands in for "no network", here and on a networked box.
  # "no network" comes from the trainer's own probe, made before TFDS would start a download
  # that retries for minutes.
  proxy = 'http://127.0.0.1:9'
  result = run_main('--dataset=mnist', f'--data_dir={tmp_path}',
                    f'--model_dir={tmp_path / "run"}', env={
      'HTTPS_PROXY': proxy, 'HTTP_PROXY': proxy, 'https_proxy': proxy, 'http_proxy': proxy,
      'NO_PROXY': '', 'no_proxy': ''})
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: mnist is not in --data_dir') and 'no network' in last
  assert not (tmp_path / 'downloads').exists()  # TFDS's download folder: never started.
  assert 'Traceback' not in result.stderr


def test_a_short_run_writes_its_run_folder(tmp_path):
  model_dir = tmp_path / 'run'
  result = run_main('--dataset=synthetic', '--train_steps=3', '--steps_per_loop=2',
                       f'--model_dir={model_dir}', f'--tensorboard_dir={tmp_path / "logs"}',
                       '--profile_steps=2,2')
  assert result.returncode == 0, result.stderr[-2000:]
  results = json.loads((model_dir / 'results.json').read_text())
  assert results['global_step'] == 3 and results['eval_examples'] == 10_000
  assert json.loads((model_dir / 'config.json').read_text())['train_steps'] == 3
  assert 'final test loss' in result.stderr
  assert list((tmp_path / 'logs' / 'eval').glob('events.out.tfevents.*'))
  assert list((tmp_path / 'logs').glob('train/plugins/profile/*/*.xplane.pb'))
