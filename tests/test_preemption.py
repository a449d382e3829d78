"""Killed and preempted runs, as a scheduler does it: real processes, real signals."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, start_endless_workers
from tests.process_output import Lines
from trainer.errors import EXIT_PREEMPTED

pytestmark = pytest.mark.slow


def _command(cifar_dir, model_dir, *extra):
  # 3200 real examples: 50 steps per epoch at batch 64, so a run takes seconds.
  return [sys.executable, '-m', 'trainer.main', f'--data_dir={cifar_dir}',
          '--train_split=train[:3200]', '--eval_split=test[:500]', f'--model_dir={model_dir}',
          '--steps_per_loop=5', *extra]


def _run(command):
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def _run_until(command, pattern):
  """Starts `command`, returns (process, output so far) once a line contains `pattern`."""
  process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True)
  lines = []
  for line in process.stderr:
    lines.append(line)
    if pattern in line:
      return process, lines
  process.wait()
  raise AssertionError(f'{pattern!r} never appeared:\n' + ''.join(lines[-30:]))


def _finish(process, lines):
  lines.extend(process.stderr)
  process.wait(timeout=120)
  return ''.join(lines)


def _variables(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(checkpoint)}


# Moments to kill at: mid-training, around an evaluation, during and right after a
# checkpoint write, and during the final evaluation and the export.
_KILL_AFTER = [r'step [1-9]\d*/100  loss', r'eval  loss', r'saved checkpoint', r'new best eval',
               r'final test loss']


@pytest.mark.parametrize('input_mode', ['host', 'device'])
def test_sigkill_at_random_moments_then_rerun_ends_with_the_uninterrupted_weights(
    tmp_path, cifar_dir, input_mode):
  flags = ['--epochs=2', '--checkpoint_every_steps=10', '--deterministic',
           f'--input={input_mode}', '--augment=flip_shift']
  _run(_command(cifar_dir, tmp_path / 'straight', *flags))

  # CHAOS_KILLS=5 for the full figure; CI kills twice to stay short.
  kills = int(os.environ.get('CHAOS_KILLS', '2'))
  rng = random.Random()
  seed = rng.randrange(1 << 30)
  rng.seed(seed)
  killed = tmp_path / 'killed'
  moments = []
  # Distinct moments where there are enough; the final evaluation and export come last,
  # since nothing is left to interrupt once the run got past them.
  patterns = rng.sample(_KILL_AFTER, min(kills, len(_KILL_AFTER)))
  patterns += [rng.choice(_KILL_AFTER) for _ in range(kills - len(patterns))]
  patterns.sort(key=lambda p: p == _KILL_AFTER[-1])
  for pattern in patterns:
    delay = rng.uniform(0, 1.0)  # Lands the kill anywhere in what follows that line.
    process = subprocess.Popen(_command(cifar_dir, killed, *flags), cwd=REPO,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    output = Lines(process.stderr)
    try:
      output.wait_for(pattern, timeout=240)
      time.sleep(delay)
    except AssertionError:  # The run ended first (it had nothing left to do).
      pass
    process.kill()
    process.wait()
    moments.append(f'{delay:.2f} s after {pattern!r} (exit {process.returncode})')
  print(f'seed {seed}: killed ' + '; '.join(moments))
  output = _run(_command(cifar_dir, killed, *flags))
  straight = _variables(str(tmp_path / 'straight' / 'checkpoints' / 'ckpt-100'))
  resumed = _variables(str(killed / 'checkpoints' / 'ckpt-100'))
  assert straight.keys() == resumed.keys()
  for name, value in straight.items():
    np.testing.assert_array_equal(value, resumed[name], err_msg=f'{name}; seed {seed}')
  assert (killed / 'export' / 'saved_model.pb').exists()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_at_the_current_step_and_the_rerun_repeats_none(tmp_path, cifar_dir,
                                                                     signum):
  # Checkpoints only at epoch ends (50, 100): the signal's save is the only one in between.
  flags = ['--epochs=2', '--checkpoint_every_steps=0']
  process, lines = _run_until(_command(cifar_dir, tmp_path, *flags), 'step 15/100')
  process.send_signal(signum)
  output = _finish(process, lines)
  assert process.returncode == EXIT_PREEMPTED, output[-3000:]
  last = output.strip().splitlines()[-1]
  assert last.startswith('stopped: preempted: checkpoint saved at step ')
  step = int(last.split('step ')[1].split(';')[0])
  assert 15 <= step < 50 and step % 5 == 0
  assert tf.train.latest_checkpoint(str(tmp_path / 'checkpoints')).endswith(f'ckpt-{step}')

  rerun = _run(_command(cifar_dir, tmp_path, *flags))
  assert f'resumed from step {step}' in rerun
  progress = [line for line in rerun.splitlines() if '/100  loss' in line]
  assert f'step {step + 5}/100' in progress[0]


def test_sigterm_to_one_worker_stops_all_workers_at_one_saved_step(tmp_path):
  processes = start_endless_workers(tmp_path)
  try:
    outputs = [Lines(p.stderr) for p in processes]
    outputs[1].wait_for('step 50/100000', timeout=240)
    processes[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in processes]
    outputs = [output.rest() for output in outputs]
  finally:
    for p in processes:
      p.kill()
      p.wait()
  assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], outputs[0][-2000:] + outputs[1][-2000:]
  steps = {output.strip().splitlines()[-1] for output in outputs}
  assert len(steps) == 1  # Both say "checkpoint saved at step N" with the same N.
  step = int(steps.pop().split('step ')[1].split(';')[0])
  assert tf.train.latest_checkpoint(str(tmp_path / 'preemption')).endswith(f'ckpt-{step}')
