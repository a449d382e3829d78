"""The console a person reads and the JSON lines Cloud Logging parses (trainer/report/logs.py,
trainer/report/progress.py), on real runs of `python -m trainer.main`."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests import forked
from trainer.report import logs
from trainer.report import progress

TIME = r'\d\d:\d\d:\d\d  '
ABSL_PREFIX = re.compile(r'^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]')

# A run of trainer.main that also has a library warn in each way there is, once the
# format is set up: Python's warnings, TensorFlow's Python logger, C++ code writing to
# file descriptor 2, and a stray print on stdout.
_NOISY_MAIN = '''
import logging, os, runpy, sys, warnings
from trainer.report import logs
_setup = logs.setup
def setup(*args):
  _setup(*args)
  warnings.warn('a library warning', UserWarning)
  logging.getLogger('tensorflow').warning('a TensorFlow warning')
  os.write(2, b'W0000 00:00:1764400000.000000    1234 native.cc:7] a C++ warning\\n')
  os.write(2, b'E0000 00:00:1764400000.000000    1234 cuda_executor.cc:1309] failed call to '
              b'cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')
  print('a stray print')
logs.setup = setup
logs.NVIDIA_DRIVER = '/nonexistent/nvidia/version'  # As on a machine without a GPU.
sys.argv[0] = 'trainer.main'
runpy.run_module('trainer.main', run_name='__main__')
'''


def _run(tmp_path, *args):
  script = tmp_path / 'noisy_main.py'
  script.write_text(_NOISY_MAIN)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=180)


def _short_run_flags(tmp_path):
  return ['--dataset=synthetic', '--train_steps=6', '--steps_per_loop=2',
          f'--model_dir={tmp_path / "run"}']


@pytest.mark.slow
def test_default_console_is_plain_and_ends_with_a_summary_of_real_paths(tmp_path):
  result = _run(tmp_path, *_short_run_flags(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert not [line for line in lines if ABSL_PREFIX.match(line)]
  assert all(re.match(TIME, line) for line in lines), result.stderr
  text = result.stderr
  assert re.search(TIME + r'WARNING: .*UserWarning: a library warning$', text, re.M)
  assert re.search(TIME + r'WARNING: a TensorFlow warning$', text, re.M)
  assert re.search(TIME + r'WARNING: a C\+\+ warning$', text, re.M)
  # TensorFlow's CUDA probe finding no GPU is no error of the run: without -v it is not shown.
  assert 'cuInit' not in text and 'ERROR' not in text
  assert result.stdout == 'a stray print\n'
  assert re.search(TIME + r'tracing and compiling the training loop', text)
  first, *later = [line for line in lines if ' step ' in line and ' loss ' in line]
  assert 'step 2/6' in first and 'with tracing and compiling' in first and 'ETA 0' not in first
  assert all(re.search(r'\d+ examples/s  ETA 0m0\ds$', line) for line in later)

  summary = lines[-5:]
  assert summary[0].split('  ', 1)[1].startswith('final test loss ')
  run_dir = summary[1].split('run folder')[1].strip()
  export_dir = summary[2].split('model')[1].strip()
  assert run_dir == str(tmp_path / 'run') and os.path.isdir(run_dir)
  assert os.path.isfile(os.path.join(export_dir, 'saved_model.pb'))
  assert summary[3].endswith(f'next         tensorboard --logdir {run_dir}')
  assert summary[4].endswith(f'python -m trainer.predict --model={export_dir} IMAGE...')
  # And the command it suggests works on that export.
  image = tmp_path / 'cat.png'
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.new('RGB', (32, 32), (200, 120, 40)).save(image)
  predicted = forked.run([sys.executable, '-m', 'trainer.predict', f'--model={export_dir}',
                          str(image)], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert predicted.returncode == 0, predicted.stderr[-2000:]


def _json_lines(output):
  entries = [json.loads(line) for line in output.splitlines()]  # Fails on any non-JSON line.
  for entry in entries:
    assert isinstance(entry['severity'], str) and isinstance(entry['message'], str), entry
    assert re.match(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$', entry['time'])
  return entries


@pytest.mark.slow
def test_json_format_makes_every_line_a_structured_entry(tmp_path):
  result = _run(tmp_path, *_short_run_flags(tmp_path), '--log_format=json')
  assert result.returncode == 0, result.stderr[-3000:]
  entries = _json_lines(result.stderr) + _json_lines(result.stdout)
  warnings = {e['message'] for e in entries if e['severity'] == 'WARNING'}
  assert {'a TensorFlow warning', 'a C++ warning'} <= warnings
  assert any('UserWarning: a library warning' in message for message in warnings)
  assert any(e['message'] == 'a stray print' for e in entries)

  train_lines = [e for e in entries if e.get('event') == 'train']
  assert [e['step'] for e in train_lines] == [2, 4, 6]
  for entry in train_lines:
    assert entry['epoch'] == 1 and entry['total_steps'] == 6
    assert isinstance(entry['loss'], float) and 0 <= entry['accuracy'] <= 1
  assert 'eta_seconds' not in train_lines[0]  # The tracing loop says nothing of the rate.
  for entry in train_lines[1:]:
    assert entry['examples_per_second'] > 0 and entry['eta_seconds'] >= 0
  (summary,) = [e for e in entries if e.get('event') == 'summary']
  assert summary['global_step'] == 6 and summary['eval_examples'] == 10_000
  assert os.path.isdir(summary['export_dir'])


@pytest.mark.slow
@pytest.mark.parametrize('bad_flag', ['--batch_size=0', '--batch_size=abc', 'stray_argument'])
def test_a_bad_flag_under_json_is_one_json_error_line(bad_flag):
  result = subprocess.run([sys.executable, '-m', 'trainer.main', '--log_format=json',
                           bad_flag], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  entries = _json_lines(result.stderr) + _json_lines(result.stdout)
  assert entries[-1]['severity'] == 'ERROR' and entries[-1]['message'].startswith('error: ')


class _Plan:
  total_steps, epochs = 1000, 1

  @staticmethod
  def epoch_of(step):
    return 1


def _logged(caplog):
  return [(record.getMessage(), record.fields) for record in caplog.records]


def test_the_eta_comes_from_the_steady_loops_not_the_tracing_one(caplog):
  caplog.set_level(logging.INFO)
  report = progress.Progress(_Plan, batch_size=10)
  report.before_loop(100)
  report.after_loop(100, 100, 30.0, 2.3, 0.1)  # 30 s: tracing and compiling, then 100 steps.
  assert report.eta_seconds(100) is None
  report.after_loop(200, 100, 1.0, 2.0, 0.2)
  report.after_loop(300, 100, 3.0, 1.9, 0.3)
  (compiling, _), (first, first_fields), _, (third, third_fields) = _logged(caplog)
  assert 'compiling' in compiling
  assert 'first loop 30.0s with tracing and compiling' in first and 'ETA' in first
  assert 'eta_seconds' not in first_fields and 'examples_per_second' not in first_fields
  # 700 steps left at the steady 2 s per 100 steps, whatever the first loop took.
  assert report.eta_seconds(300) == pytest.approx(14.0)
  assert third.endswith('333 examples/s  ETA 0m14s')
  assert third_fields['eta_seconds'] == pytest.approx(14.0)


def test_only_the_chief_lists_paths_and_next_commands(caplog):
  caplog.set_level(logging.INFO)
  results = {'eval_loss': 1.05, 'eval_accuracy': 0.64, 'eval_examples': 10000,
             'global_step': 3905, 'train_seconds': 31.2, 'examples_per_second': 9367.4}
  progress.summary(results)
  progress.summary(results, 'runs/a b', 'runs/a b/export', 'logs')
  (worker, _), (chief, fields) = _logged(caplog)
  assert worker == ('final test loss 1.0500, test accuracy 0.6400 (10000 examples), 3905 steps, '
                    'train time 0m31s, 9367 examples/s')
  assert chief.startswith(worker + '\n  run folder   runs/a b\n')
  assert "tensorboard --logdir logs" in chief
  assert "python -m trainer.predict --model='runs/a b/export' IMAGE..." in chief
  assert fields['export_dir'] == 'runs/a b/export' and fields['eval_accuracy'] == 0.64


def _record(level, message, fields=None):
  record = logging.LogRecord('trainer', level, __file__, 1, message, None, None)
  record.fields = fields or {}
  return record


def test_formats_mark_severity_and_worker(monkeypatch):
  monkeypatch.setattr(logs._state, 'worker', None)  # pylint: disable=protected-access
  text = logs.TextFormatter()
  assert re.fullmatch(TIME + 'epoch 1/5', text.format(_record(logging.INFO, 'epoch 1/5')))
  assert re.fullmatch(TIME + 'WARNING: careful', text.format(_record(logging.WARNING,
                                                                     'careful')))
  assert re.fullmatch(f'{TIME}a\n{TIME}b', text.format(_record(logging.INFO, 'a\nb')))
  logs.set_worker('worker 1')
  assert re.fullmatch(TIME + r'\[worker 1\] ERROR: bad', text.format(_record(logging.ERROR,
                                                                             'bad')))
  entry = json.loads(logs.JsonFormatter().format(
      _record(logging.INFO, 'step', {'loss': float('nan'), 'step': 3})))
  assert entry['severity'] == 'INFO' and entry['message'] == 'step' and entry['step'] == 3
  assert entry['loss'] is None  # NaN is no JSON number; a parser would drop the line.
  assert entry['worker'] == 'worker 1'
  assert entry['logging.googleapis.com/labels'] == {'worker': 'worker 1'}
  assert entry['logging.googleapis.com/sourceLocation']['file'] == __file__


def test_tensorflow_cpp_lines_are_recognised():
  for line in ('W0000 00:00:1764400000.974381    3291 port.cc:153] oneDNN is on',
               '2024-11-29 11:52:14.610798: W tensorflow/core/x.cc:12] oneDNN is on'):
    record = logs._native_record(line)  # pylint: disable=protected-access
    assert record.levelno == logging.WARNING and record.getMessage() == 'oneDNN is on'
  assert logs._native_record('Traceback (most recent call last):') is None  # pylint: disable=protected-access


def test_a_failed_op_s_forerunners_are_not_warnings():
  # Each comes before an error that reaches Python, which reports it (trainer.predict names
  # the file); shown with -v 1.
  for message in ('Local rendezvous is aborting with status: INVALID_ARGUMENT: assertion '
                  'failed', 'Premature end of JPEG data. Stopped at line 14/50'):
    record = logs._native_record(  # pylint: disable=protected-access
        f'W0000 00:00:1764400000.000000    1234 local_rendezvous.cc:412] {message}')
    assert record.levelno == logging.INFO and record.getMessage() == message


@pytest.mark.parametrize('line,dropped', [
    ('Improper call to JPEG library in state 201', True),
    ('Corrupt JPEG data: 3 extraneous bytes before marker 0xd9', True),
    ('Premature end of JPEG file', True),
    ('Not a JPEG file: starts with 0x00 0x01', True),
    ('Invalid JPEG file structure: two SOI markers', True),
    ('Corrupt data in my own code', False),
    ('Traceback (most recent call last):', False),
])
def test_libjpeg_s_bare_lines_are_dropped_unless_verbose(line, dropped):
  assert bool(logs._LIBJPEG.match(line)) == dropped  # pylint: disable=protected-access


@pytest.mark.parametrize('driver', [False, True])
def test_the_cuda_probe_is_an_error_only_where_there_is_an_nvidia_driver(
    tmp_path, monkeypatch, driver):
  version = tmp_path / 'version'
  if driver:
    version.write_text('NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n')
  monkeypatch.setattr(logs, 'NVIDIA_DRIVER', str(version))
  record = logs._native_record(  # pylint: disable=protected-access
      'E0000 00:00:1764400000.000000    1234 cuda_executor.cc:1309] failed call to cuInit: '
      'INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)')
  if driver:
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith('failed call to cuInit')
  else:
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith('no NVIDIA driver on this machine: TensorFlow uses '
                                          'the CPU (failed call to cuInit: ')


def test_worker_label_of_a_single_process_run_is_none():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.core import distribute  # pylint: disable=g-import-not-at-top
  assert distribute.task_label(tf.distribute.get_strategy()) is None
