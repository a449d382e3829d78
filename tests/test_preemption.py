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
from tests import forked
from tests.process_output import Lines
from trainer.core.errors import EXIT_PREEMPTED

# One worker runs them all: they share the module's runs.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('preemption')]


def _command(cifar_dir, model_dir, *extra, examples=3200):
  # 3200 real examples: 50 steps per epoch at batch 64, so a run takes seconds.
  return [sys.executable, '-m', 'trainer.main', f'--data_dir={cifar_dir}',
          f'--train_split=train[:{examples}]', '--eval_split=test[:500]',
          f'--model_dir={model_dir}', '--steps_per_loop=5', *extra]


def _run(command):
  result = forked.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def _run_until(command, pattern):
  """Starts `command`, returns (process, output so far) once a line contains `pattern`."""
  process = forked.Popen(command, cwd=REPO, stderr=subprocess.PIPE,
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
_KILL_AFTER = [r'step [1-9]\d*/50  loss', r'eval  loss', r'saved checkpoint', r'new best eval',
               r'final test loss']
# Two replicas, flips and shifts, op determinism: 2 epochs of 25 steps whose weights are exact.
_EXACT = ['--strategy=mirrored', '--num_cpu_devices=2', '--epochs=2',
          '--checkpoint_every_steps=10', '--deterministic', '--augment=flip_shift']
_EXACT_EXAMPLES = 1600


@pytest.fixture(scope='session')  # Once, even where other tests come between its users.
def uninterrupted(tmp_path_factory, cifar_dir):
  """The weights of the run that nothing stops, on the host input."""
  model_dir = tmp_path_factory.mktemp('straight')
  _run(_command(cifar_dir, model_dir, *_EXACT, '--input=host', examples=_EXACT_EXAMPLES))
  return _variables(str(model_dir / 'checkpoints' / 'ckpt-50'))


# The device input (a TPU's) also under each TensorFlow a TPU route installs.
@pytest.mark.parametrize('input_mode',
                         ['host', pytest.param('device', marks=pytest.mark.tpu_path)])
def test_sigkill_at_random_moments_then_rerun_ends_with_the_uninterrupted_weights(
    tmp_path, cifar_dir, uninterrupted, input_mode):
  """Compared with the uninterrupted run on the host input: the device input must both
  draw the same batches and resume exactly."""
  flags = [*_EXACT, f'--input={input_mode}']
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
    process = forked.Popen(_command(cifar_dir, killed, *flags, examples=_EXACT_EXAMPLES), cwd=REPO,
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
  _run(_command(cifar_dir, killed, *flags, examples=_EXACT_EXAMPLES))
  resumed = _variables(str(killed / 'checkpoints' / 'ckpt-50'))
  assert uninterrupted.keys() == resumed.keys()
  for name, value in uninterrupted.items():
    np.testing.assert_array_equal(value, resumed[name], err_msg=f'{name}; seed {seed}')
  assert (killed / 'export' / 'saved_model.pb').exists()


def test_sigterm_then_sigint_each_save_at_their_step_and_the_reruns_repeat_none(
    tmp_path, cifar_dir):
  # Checkpoints only at epoch ends (50, 100): a signal's save is its own.
  command = _command(cifar_dir, tmp_path, '--epochs=2', '--checkpoint_every_steps=0')
  saved = 0
  for signum in (signal.SIGTERM, signal.SIGINT):
    process, lines = _run_until(command, f'step {saved + 15}/100')
    if saved:  # The rerun of the previous stop: it continues after the saved step.
      assert f'resumed from step {saved}' in ''.join(lines)
      progress = [line for line in lines if '/100  loss' in line]
      assert f'step {saved + 5}/100' in progress[0]
    process.send_signal(signum)
    output = _finish(process, lines)
    assert process.returncode == EXIT_PREEMPTED, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith('stopped: preempted: checkpoint saved at step ')
    step = int(last.split('step ')[1].split(';')[0])
    assert saved + 15 <= step < 100 and step % 5 == 0, (signum, step)
    assert tf.train.latest_checkpoint(str(tmp_path / 'checkpoints')).endswith(f'ckpt-{step}')
    saved = step
  rerun = _run(command)
  assert f'resumed from step {saved}' in rerun
  progress = [line for line in rerun.splitlines() if '/100  loss' in line]
  assert f'step {saved + 5}/100' in progress[0]


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
