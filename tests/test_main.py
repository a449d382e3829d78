"""The command line as a user runs it: exit codes and one-line errors."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run_main(*args, env=None, timeout=120):
  start = time.time()
  result = subprocess.run([sys.executable, '-m', 'trainer.main', *args], cwd=REPO,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)
  return result, time.time() - start


@pytest.mark.parametrize('args,env,message', [
    (['--strategy=foo'], {}, "unknown --strategy='foo'; choose one of: default, one_device"),
    (['--dataset=no_such_dataset'], {}, "unknown --dataset='no_such_dataset'"),
    (['--batch_size=0'], {}, '--batch_size must be positive, got 0'),
    (['--epochs=-1'], {}, '--epochs must not be negative'),
    (['--profile_steps=5'], {}, "--profile_steps must be START,END with 1 <= START <= END"),
    (['--strategy=mirrored', '--num_cpu_devices=2', '--batch_size=63', '--dataset=synthetic'],
     {}, '--batch_size=63 (the global batch) does not divide among 2 replicas'),
    (['--strategy=tpu', '--dataset=synthetic'], {}, '--strategy=tpu found no TPU'),
    (['--input=gpu'], {}, "unknown --input='gpu'; choose one of: host, device"),
    (['--input=device', '--nocache'], {}, '--input=device holds the training data in device '
     'memory; it cannot stream it (--nocache): use --input=host with --nocache'),
    (['--input=device', '--device_data_max_mb=0'], {}, '--device_data_max_mb must be positive'),
    (['--strategy=multi_worker', '--model_dir=/tmp/x'], {'TF_CONFIG': ''},
     'needs the TF_CONFIG environment variable'),
    (['--strategy=multi_worker', '--model_dir=/tmp/x'], {'TF_CONFIG': ' \n'},
     'needs the TF_CONFIG environment variable (cluster and task of this worker), but it is '
     'empty'),
    (['--strategy=multi_worker', '--model_dir=/tmp/x'], {'TF_CONFIG': '{oops'},
     'TF_CONFIG is not valid JSON'),
])
def test_bad_input_exits_2_with_one_clear_line(args, env, message):
  result, _ = run_main(*args, env=env)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last
  assert 'Traceback' not in result.stderr


def test_a_leftover_empty_tf_config_does_not_stop_a_single_host_run(tmp_path):
  result, _ = run_main('--strategy=mirrored', '--num_cpu_devices=2', '--dataset=synthetic',
                       '--train_steps=1', f'--model_dir={tmp_path}', env={'TF_CONFIG': ' '})
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'final test loss' in result.stderr


@pytest.mark.parametrize('flag', ['model_dir', 'checkpoint_dir', 'tensorboard_dir'])
def test_an_unwritable_folder_fails_within_seconds_before_the_data(tmp_path, flag):
  (tmp_path / 'file').write_text('')
  bad = tmp_path / 'file' / 'sub'
  # The data set is absent: reading it first would fail with another message.
  result, seconds = run_main(f'--data_dir={tmp_path / "no_data"}',
                             f'--model_dir={tmp_path / "run"}', f'--{flag}={bad}')
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: cannot write to the ') and f'(--{flag}) {bad}: ' in last
  assert 'is not a directory' in last and 'Traceback' not in result.stderr
  assert seconds < 10


def test_missing_dataset_without_network_fails_within_seconds(tmp_path):
  # A proxy on a closed local port stands in for "no network", here and on a networked box.
  proxy = 'http://127.0.0.1:9'
  result, seconds = run_main('--dataset=mnist', f'--data_dir={tmp_path}', env={
      'HTTPS_PROXY': proxy, 'HTTP_PROXY': proxy, 'https_proxy': proxy, 'http_proxy': proxy,
      'NO_PROXY': '', 'no_proxy': ''})
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: mnist is not in --data_dir') and 'no network' in last
  assert seconds < 60
  assert 'Traceback' not in result.stderr


def test_a_short_run_writes_its_run_folder(tmp_path):
  model_dir = tmp_path / 'run'
  result, _ = run_main('--dataset=synthetic', '--train_steps=3', '--steps_per_loop=2',
                       f'--model_dir={model_dir}', f'--tensorboard_dir={tmp_path / "logs"}',
                       '--profile_steps=2,2')
  assert result.returncode == 0, result.stderr[-2000:]
  results = json.loads((model_dir / 'results.json').read_text())
  assert results['global_step'] == 3 and results['eval_examples'] == 10_000
  assert json.loads((model_dir / 'config.json').read_text())['train_steps'] == 3
  assert 'final test loss' in result.stderr
  assert list((tmp_path / 'logs' / 'eval').glob('events.out.tfevents.*'))
  assert list((tmp_path / 'logs').glob('train/plugins/profile/*/*.xplane.pb'))
