"""launch/local.py: a real 2-worker job on localhost, a worker killed mid-run, and the rerun."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_workers
from tests.process_output import Lines

pytestmark = pytest.mark.slow


class Launch:
  """The launcher as a user runs it, its output read as it comes."""

  def __init__(self, *args):
    # Own session: cleanup can end the launcher and anything it left behind in one call.
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'launch.local', *args], cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    self.output = Lines(self.process.stdout)
    self.wait_for = self.output.wait_for

  def finish(self, timeout):
    """Waits for the launcher to exit; returns (exit code, all output)."""
    code = self.process.wait(timeout=timeout)
    return code, self.output.rest()

  def worker_pids(self):
    return {int(m.group(1)): int(m.group(2)) for m in
            re.finditer(r'\[launch\] worker (\d+): pid (\d+)', ''.join(self.output.lines))}

  def kill(self):
    try:
      os.killpg(self.process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    self.process.wait()


@pytest.fixture
def launches():
  started = []
  yield lambda *args: started.append(Launch(*args)) or started[-1]
  for launch in started:
    launch.kill()


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def _job(model_dir, *flags):
  return ['--num_workers=2', '--grace_seconds=5', '--', '--dataset=synthetic',
          f'--model_dir={model_dir}', '--steps_per_loop=10', *flags]


def test_a_flag_error_in_the_workers_is_the_launchers_exit_code(tmp_path, launches):
  launch = launches(*_job(tmp_path, '--batch_size=0'))
  code, output = launch.finish(timeout=120)
  assert code == 2, output[-3000:]
  assert '[worker 0] error: --batch_size must be positive, got 0' in output
  assert '[worker 1] error: --batch_size must be positive, got 0' in output


def test_sigterm_to_the_launcher_stops_the_workers_at_one_saved_step(tmp_path, launches):
  launch = launches(*_job(tmp_path, '--train_steps=100000', '--checkpoint_every_steps=0'))
  launch.wait_for(r'^\[worker 1\] .*step 30/100000', timeout=240)
  launch.process.send_signal(signal.SIGTERM)
  code, output = launch.finish(timeout=120)
  assert code == 75, output[-3000:]  # trainer.errors.EXIT_PREEMPTED from both workers.
  saved = set(re.findall(r'\[worker \d\] stopped: preempted: checkpoint saved at step (\d+)',
                         output))
  assert len(saved) == 1, output[-3000:]


def test_bad_launcher_arguments_are_one_line_errors():
  for args, message in [(['--num_workers=0'], '--num_workers must be at least 1'),
                        (['--model_dir=/tmp/x'], 'unrecognized arguments: --model_dir=/tmp/x')]:
    result = subprocess.run([sys.executable, '-m', 'launch.local', *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith('error: ') and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_only_deaths_lost_peers_and_preemptions_are_restarted():
  from launch.local import restartable  # pylint: disable=g-import-not-at-top
  assert restartable([(1, -9), (0, 69)])  # Killed; its peer noticed.
  assert restartable([(0, 69), (1, 69)]) and restartable([(0, 75), (1, 75)])
  assert not restartable([(0, 0), (1, 0)])
  assert not restartable([(1, 69), (0, 2)])  # Bad input anywhere: a rerun fails the same.
  assert not restartable([(0, 1), (1, 69)])  # A crash: look at it first.


def _variables(checkpoint):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(str(checkpoint))
  return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(str(checkpoint))}


def _step_at_least(launch, target, timeout=240):
  """Waits for a progress line at or beyond `target`; returns its step."""
  deadline = time.monotonic() + timeout
  while True:
    line = launch.wait_for(r'^\[worker \d\] .*step \d+/', max(1, deadline - time.monotonic()))
    step = int(re.search(r'step (\d+)/', line).group(1))
    if step >= target:
      return step


def test_a_killed_worker_stops_the_job_and_max_restarts_heals_the_rerun_exactly(tmp_path,
                                                                             launches):
  """A job whose worker is SIGKILLed ends at once with the worker's status; its rerun with
  --max_restarts resumes, survives two more kills, and ends with the weights of a job that
  nothing interrupted."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 200
  flags = [f'--train_steps={total}', '--checkpoint_every_steps=20', '--deterministic']
  run_workers(lambda index: ['trainer.main', *_job(tmp_path / 'straight', *flags)[3:],
                             '--strategy=multi_worker'])

  job = _job(tmp_path / 'healed', *flags)
  first = launches(*job)
  first.wait_for(r'^\[worker 0\] .*saved checkpoint .*ckpt-20', timeout=240)
  pids = first.worker_pids()
  assert sorted(pids) == [0, 1]
  os.kill(pids[1], signal.SIGKILL)
  code, output = first.finish(timeout=300)  # A hang guard: the grace period bounds the wait.
  assert code == 128 + signal.SIGKILL, output[-3000:]
  assert ('[launch] worker 1 was killed by SIGKILL; the others get 5 s to stop on their own, '
          'then are killed') in output
  # Worker 0 stopped by itself (it noticed the lost peer) or was killed after the grace.
  assert re.search(r'^\[launch\] worker 0 (exited with code 69|was killed by SIGKILL)', output,
                   re.MULTILINE), output[-3000:]
  assert not _alive(pids[0])
  assert not (tmp_path / 'healed' / 'results.json').exists()

  rng = random.Random()
  seed = rng.randrange(1 << 30)
  rng.seed(seed)
  print(f'kill moments drawn with seed {seed}')
  healed = launches('--max_restarts=2', *job)
  resumed = int(re.search(r'resumed from step (\d+)',
                          healed.wait_for(r'resumed from step', timeout=240)).group(1))
  assert 20 <= resumed < total
  for kill in (1, 2):
    step = _step_at_least(healed, rng.randrange(resumed + 10, min(resumed + 60, total - 10)))
    victim = rng.randrange(2)
    print(f'kill {kill}: worker {victim} at step {step}')
    os.kill(healed.worker_pids()[victim], signal.SIGKILL)
    healed.wait_for(rf'^\[launch\] restart {kill} of 2: a fresh set of workers on new ports',
                    timeout=120)
    resumed = int(re.search(r'resumed from step (\d+)',
                            healed.wait_for(r'resumed from step', timeout=240)).group(1))
    assert resumed >= 20
  code, output = healed.finish(timeout=600)
  assert code == 0, output[-3000:]
  assert 'restart 3' not in output
  assert re.search(rf'^\[worker 1\] .*step {total}/{total}', output, re.MULTILINE)
  assert not re.search(r'\[worker \d\].*\[worker \d\]', output)  # The relay's label, once.
  results = [json.loads((tmp_path / run / 'results.json').read_text())
             for run in ('straight', 'healed')]
  assert results[0]['global_step'] == results[1]['global_step'] == total
  assert results[0]['eval_loss'] == results[1]['eval_loss']
  assert results[0]['eval_accuracy'] == results[1]['eval_accuracy']
  ours, theirs = (_variables(tmp_path / run / 'checkpoints' / f'ckpt-{total}')
                  for run in ('straight', 'healed'))
  assert ours.keys() == theirs.keys()
  for name, value in ours.items():
    np.testing.assert_array_equal(value, theirs[name], err_msg=name)


def test_bad_input_is_never_restarted(tmp_path, launches):
  launch = launches('--max_restarts=2', *_job(tmp_path, '--batch_size=0'))
  code, output = launch.finish(timeout=120)
  assert code == 2, output[-3000:]
  assert 'restart' not in output
