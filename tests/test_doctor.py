"""`python -m trainer.doctor`: a true report of this machine, one line per check, exit 1 on a
failure; and each check that can fail here fails with one line naming what and where."""

import json
import os
import re
import socket
import sys

import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests import forked
from trainer.core import accelerators
from trainer.core.config import Config
from trainer.jobs import machine_checks
from trainer.jobs.machine_checks import FAIL, OK
from trainer.model import compiled

_STATUSES = {'ok', 'warning', 'FAIL', 'skipped'}


def _doctor(*args, env=None, cwd=REPO):
  return forked.run([sys.executable, '-m', 'trainer.doctor', *args], cwd=cwd,
                    env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
                    capture_output=True, text=True, timeout=240)


def _text_lines(stdout):
  """{check: [(status, message)]} of the doctor's text lines."""
  checks = {}
  for line in stdout.splitlines():
    status, name, message = line.split(None, 2)
    assert status in _STATUSES, line
    checks.setdefault(name, []).append((status, message))
  return checks


def _free_port():
  with socket.socket() as s:  # Bound and closed: nobody listens there afterwards.
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _tf_config(own_port, peer_port):
  return json.dumps({'cluster': {'worker': [f'localhost:{own_port}', f'localhost:{peer_port}']},
                     'task': {'type': 'worker', 'index': 0}})


@pytest.mark.tpu_path
def test_this_machine_passes_and_the_report_is_true(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  (data / 'kept').write_text('x')
  run = tmp_path / 'runs' / 'new'
  result = _doctor(f'--model_dir={run}', f'--data_dir={data}', '--batch_size=32')
  assert result.returncode == 0, result.stdout + result.stderr
  checks = _text_lines(result.stdout)
  status = {name: [s for s, _ in lines] for name, lines in checks.items()}
  for name in ('tensorflow', 'run_folder', 'data', 'shm', 'strategy'):
    assert status[name] == ['ok'], (name, checks[name])
  # TensorFlow's TPU build without a TPU compiles nothing with XLA (trainer/model/compiled.py).
  cannot = compiled.no_xla_here()
  assert checks['xla'] == ([('skipped', f'{cannot}: nothing to compile here')] if cannot else
                           [('ok', 'the train and eval steps lower to XLA with static shapes, '
                             'and compile and run with XLA here')])
  # A TensorFlow built without CUDA (tensorflow-cpu, tensorflow-tpu) has no GPU kernels to
  # check: one line that says so, no warnings.
  if tf.test.is_built_with_cuda():
    assert status['kernels'] == ['ok'], checks['kernels']
  else:
    assert checks['kernels'] == [('skipped', f'{accelerators.tensorflow_wheel()} is built '
                                  'without CUDA, so no GPU kernels to check (a CUDA build of '
                                  'TensorFlow checks them)')]
  assert status['timed_run'] in (['ok'], ['warning'])  # A warning if input-bound here.
  assert status['doctor'] == ['ok'] and 'tf_config' not in checks and 'gpu' not in checks
  # What TensorFlow sees and what the system shows, as this process finds them.
  tensorflow_line = checks['tensorflow'][0][1]
  assert f'TensorFlow {tf.__version__}' in tensorflow_line
  for device in tf.config.list_physical_devices():
    assert device.name.replace('/physical_device:', '') in tensorflow_line
  evidence = accelerators.nvidia_evidence()
  assert (f'NVIDIA device: {evidence}' if evidence else 'no NVIDIA device here') \
      in tensorflow_line
  timed = checks['timed_run'][0][1]
  assert 'steps/s' in timed and 'examples/s per replica' in timed and 'no download' in timed
  assert 'input wait' in timed
  assert status['precision'] == ['ok']
  compared = checks['precision'][0][1]
  assert compared.startswith('fastest here: ')
  for name in ('float32', 'bfloat16', 'float16'):  # Each timed, fastest first.
    assert re.search(rf'(fastest here: |\(|, ){name} (at )?[0-9]+', compared), compared
  assert '--mixed_precision=auto picks' in compared
  # The probes left nothing: no run folder, the data folder as it was.
  assert not (tmp_path / 'runs').exists()
  assert sorted(p.name for p in data.iterdir()) == ['kept']


@pytest.mark.tpu_path
def test_the_kernel_check_does_not_apply_to_a_build_without_cuda(monkeypatch):
  from trainer.jobs import compute_checks  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tf.test, 'is_built_with_cuda', lambda: False)
  check = compute_checks.kernel_check(Config(batch_size=32), built=None)
  assert (check.status, check.name) == (machine_checks.SKIPPED, 'kernels')
  assert check.message.startswith(accelerators.tensorflow_wheel() + ' is built without CUDA')


@pytest.mark.tpu_path
def test_tensorflow_wheel_names_the_installed_distribution():
  name, version = accelerators.tensorflow_wheel().split(' ')
  assert name in ('tensorflow', 'tensorflow-cpu', 'tensorflow-tpu', 'tensorflow-macos',
                  'tensorflow-intel', 'tensorflow-aarch64')
  assert version == tf.__version__


def test_failures_are_one_json_line_each_and_exit_1(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  peer = _free_port()
  result = _doctor('--strategy=multi_worker', f'--model_dir={blocker}/run',
                   f'--data_dir={tmp_path}/no_such_folder', '--batch_size=32',
                   '--log_format=json', env={'TF_CONFIG': _tf_config(_free_port(), peer)})
  assert result.returncode == 1, result.stdout + result.stderr
  entries = [json.loads(line) for line in result.stdout.splitlines()]  # JSON, every line.
  failed = {e['check']: e['message'] for e in entries if e['status'] == FAIL}
  assert set(failed) == {'workers', 'run_folder', 'data', 'doctor'}, failed
  assert f'worker 1 at localhost:{peer} does not answer' in failed['workers']
  assert f'cannot write to the run folder (--model_dir) {blocker}/run' in failed['run_folder']
  assert f'{tmp_path}/no_such_folder (--data_dir) does not exist' in failed['data']
  assert all(e['severity'] == 'ERROR' for e in entries if e['status'] == FAIL)
  assert {e['check'] for e in entries if e['status'] == OK} >= {'tensorflow', 'tf_config',
                                                                  'kernels', 'xla'}


@pytest.mark.parametrize('args,message', [
    (['--strategy=foo'], "error: unknown --strategy='foo'; choose one of"),
    (['--no_such_flag=1'], 'error: Unknown command line flag'),
    (['stray'], 'error: unexpected arguments: stray (flags are --name=value or --name value)'),
])
def test_bad_flags_end_in_one_line_and_exit_2(args, message):
  result = _doctor(*args)
  assert result.returncode == 2 and result.stdout == '', result.stderr
  # The last line; before it, only what the test zygote's TensorFlow logs (tests/forked.py).
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
  assert 'Traceback' not in result.stderr


def test_a_run_folder_that_cannot_be_written_is_one_failure(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  checks = machine_checks.folder_checks(Config(model_dir=str(blocker / 'run'),
                                               dataset='synthetic'))
  assert [(c.name, c.status) for c in checks] == [('run_folder', FAIL), ('data', OK)]


def test_the_probes_make_and_leave_no_folder_and_keep_existing_ones(tmp_path):
  existing = tmp_path / 'existing'
  existing.mkdir()
  config = Config(model_dir=str(existing), checkpoint_dir=str(tmp_path / 'new' / 'ckpt'),
                  data_dir=str(existing))
  checks = machine_checks.folder_checks(config)
  assert [(c.name, c.status) for c in checks] == [('run_folder', OK)] * 2 + [('data', OK)]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['existing']
  assert list(existing.iterdir()) == []


def test_a_missing_data_folder_is_one_failure(tmp_path):
  checks = machine_checks.folder_checks(Config(model_dir=str(tmp_path / 'run'),
                                               data_dir=str(tmp_path / 'nowhere')))
  assert [(c.name, c.status) for c in checks] == [('run_folder', OK), ('data', FAIL)]


def test_a_worker_that_answers_passes_and_one_that_does_not_fails(monkeypatch):
  config = Config(strategy='multi_worker', model_dir='gs://b/run')
  with socket.socket() as peer:
    peer.bind(('127.0.0.1', 0))
    peer.listen(1)
    monkeypatch.setenv('TF_CONFIG', _tf_config(_free_port(), peer.getsockname()[1]))
    answered = machine_checks.cluster_checks(config, wait_seconds=0.5)
  assert [(c.name, c.status) for c in answered] == [('tf_config', OK), ('workers', OK)]
  dead = _free_port()
  monkeypatch.setenv('TF_CONFIG', _tf_config(_free_port(), dead))
  silent = machine_checks.cluster_checks(config, wait_seconds=0.5)
  assert [(c.name, c.status) for c in silent] == [('tf_config', OK), ('workers', FAIL)]
  assert f'worker 1 at localhost:{dead} does not answer' in silent[1].message


def test_a_taken_own_port_and_a_bad_tf_config_fail(monkeypatch):
  config = Config(strategy='multi_worker', model_dir='gs://b/run')
  with socket.socket() as taken, socket.socket() as peer:
    taken.bind(('', 0))
    taken.listen(1)
    peer.bind(('127.0.0.1', 0))
    peer.listen(1)
    monkeypatch.setenv('TF_CONFIG', _tf_config(taken.getsockname()[1], peer.getsockname()[1]))
    checks = machine_checks.cluster_checks(config, wait_seconds=0.5)
  assert [(c.name, c.status) for c in checks] == [('tf_config', OK), ('workers', FAIL),
                                                  ('workers', OK)]
  assert 'another program holds it' in checks[1].message
  monkeypatch.setenv('TF_CONFIG', '{"cluster": {}}')
  assert [(c.name, c.status) for c in machine_checks.cluster_checks(config)] == [
      ('tf_config', FAIL)]


@pytest.mark.parametrize('size_mb,strategy,status', [
    (64, 'mirrored', 'warning'), (64, 'multi_worker', 'warning'), (64, 'default', OK),
    (2048, 'mirrored', OK)])
def test_shm_below_a_gibibyte_warns_where_gpus_exchange_gradients(monkeypatch, size_mb,
                                                                  strategy, status):
  fake = os.statvfs_result((4096, 4096, size_mb * 256, 0, 0, 0, 0, 0, 0, 255))
  monkeypatch.setattr(machine_checks.os, 'statvfs', lambda path: fake)
  check = machine_checks.shm_check(Config(strategy=strategy))
  assert (check.status, check.fields['shm_bytes']) == (status, size_mb << 20)
  if status != OK:
    assert '--shm-size=1g' in check.message


def test_no_shm_warns_where_gpus_exchange_gradients():
  assert machine_checks.shm_check(Config(strategy='mirrored'), path='/no/such/shm').status \
      == 'warning'
  assert machine_checks.shm_check(Config(), path='/no/such/shm').status == OK
