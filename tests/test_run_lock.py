"""One writer per run folder: the local flock, the renewed lease (injected clock), real runs."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests import forked
from tests.process_output import Lines
from trainer.core.errors import UserError
from trainer.run_folder import run_lock


class Clock:
  def __init__(self, now=1_000_000.0):
    self.now = now

  def __call__(self):
    return self.now


def test_a_held_local_folder_names_its_holder_and_frees_on_release(tmp_path):
  first = run_lock.acquire(str(tmp_path))
  with pytest.raises(UserError, match=re.escape(f'the run folder {tmp_path} is in use by '
                                                f'another run (host {socket.gethostname()}, '
                                                f'pid {os.getpid()}, since ')):
    run_lock.acquire(str(tmp_path))
  first.release()
  run_lock.acquire(str(tmp_path)).release()
  assert (tmp_path / run_lock.LOCK_FILE).exists()  # Kept: see FileLock.


def test_only_the_chief_takes_the_lock(tmp_path):
  chief = run_lock.acquire(str(tmp_path), chief=True)
  worker = run_lock.acquire(str(tmp_path), chief=False)  # Same job: must not block.
  worker.check()
  worker.release()
  chief.release()


def test_buckets_get_a_lease_and_local_folders_a_lock():
  assert run_lock.is_local('/runs/a') and run_lock.is_local('runs/a')
  assert not run_lock.is_local('gs://bucket/runs/a')


def _lease(folder, clock, job=''):
  return run_lock.Lease(str(folder), clock=clock, job=job)


def test_a_fresh_lease_blocks_a_second_run(tmp_path):
  clock = Clock()
  held = _lease(tmp_path, clock).acquire()
  clock.now += 100
  assert held.renew()
  clock.now += 250  # 350 s since it was taken, 250 s since it was renewed: still live.
  with pytest.raises(UserError, match=r'in use by another run \(host .*, pid \d+, since .*, '
                     r'lease renewed 250 s ago; a lease not renewed for 300 s is taken over\)'):
    _lease(tmp_path, clock).acquire()
  held.check()


def test_a_stale_lease_is_taken_over_and_its_old_holder_stops_writing(tmp_path):
  clock = Clock()
  old = _lease(tmp_path, clock).acquire()
  clock.now += run_lock.LEASE_STALE_SECONDS
  new = _lease(tmp_path, clock).acquire()
  new.check()
  assert not old.renew()  # The old holder comes back (a frozen VM, say) and finds it gone.
  with pytest.raises(UserError, match=f'no longer holds the run folder {tmp_path} '
                     r'\(it was taken over by host .*\); stopped before writing more'):
    old.check()
  old.release()  # Must not delete the new holder's lease.
  assert (tmp_path / run_lock.LEASE_FILE).exists()
  assert new.renew()
  new.release()
  assert not (tmp_path / run_lock.LEASE_FILE).exists()


def test_a_restart_of_the_same_job_takes_its_lease_at_once(tmp_path):
  clock = Clock()
  _lease(tmp_path, clock, job='job-1').acquire()  # The attempt that lost a worker.
  with pytest.raises(UserError, match='in use'):
    _lease(tmp_path, clock, job='job-2').acquire()
  _lease(tmp_path, clock, job='job-1').acquire().check()


def test_renewal_errors_are_tolerated_until_the_lease_could_be_stale(tmp_path, monkeypatch):
  clock = Clock()
  lease = _lease(tmp_path, clock).acquire()

  def unreachable(*args, **kwargs):
    raise tf.errors.UnavailableError(None, None, 'bucket unreachable')

  monkeypatch.setattr(tf.io.gfile, 'GFile', unreachable)
  clock.now += run_lock.LEASE_STALE_SECONDS - 1
  assert lease.renew()
  lease.check()
  clock.now += 1
  assert not lease.renew()
  with pytest.raises(UserError, match=r'it could not be renewed for 300 s'):
    lease.check()


def test_a_half_written_lease_counts_as_no_holder(tmp_path):
  (tmp_path / run_lock.LEASE_FILE).write_text('{"host": "a", "pi')
  _lease(tmp_path, Clock()).acquire().check()


_REPORT_TENSORFLOW = (
    "import atexit, runpy, sys; atexit.register(lambda: print('tensorflow imported:', "
    "'tensorflow' in sys.modules, file=sys.stderr)); sys.argv[0] = 'trainer.main'; "
    "runpy.run_module('trainer.main', run_name='__main__')")


def _run_command(model_dir, steps):
  return [sys.executable, '-m', 'trainer.main', '--dataset=synthetic', f'--model_dir={model_dir}',
          f'--train_steps={steps}', '--steps_per_loop=10', '--checkpoint_every_steps=50']


@pytest.mark.slow
def test_a_second_run_on_a_held_folder_fails_at_once_and_the_first_finishes(tmp_path):
  first = forked.Popen(_run_command(tmp_path, 400), cwd=REPO, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)
  try:
    output = Lines(first.stderr)
    output.wait_for(r'step 10/400', timeout=240)
    # The second run says, as it exits, whether it got as far as importing TensorFlow: a
    # held local folder is refused before that slow start-up.
    command = _run_command(tmp_path, 400)
    second = subprocess.run(command[:1] + ['-c', _REPORT_TENSORFLOW, *command[3:]], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert first.poll() is None, 'the first run ended before the second one was refused'
    assert second.returncode == 2, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith('error: ')]
    assert errors == [f'error: the run folder {tmp_path} is in use by another run (host '
                      f'{socket.gethostname()}, pid {first.pid}, since '
                      + errors[0].split(', since ')[1]]
    assert 'Traceback' not in second.stderr
    assert second.stderr.splitlines()[-1] == 'tensorflow imported: False'
    assert first.wait(timeout=240) == 0, output.rest()[-3000:]
  finally:
    first.kill()
    first.wait()
  assert json.loads((tmp_path / 'results.json').read_text())['global_step'] == 400
  assert 'resumed' not in output.rest()


@pytest.mark.slow
def test_a_sigkilled_holder_does_not_block_the_rerun(tmp_path):
  holder = forked.Popen(_run_command(tmp_path, 100000), cwd=REPO, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
  try:
    Lines(holder.stderr).wait_for(r'saved checkpoint .*ckpt-50', timeout=240)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  rerun = forked.run(_run_command(tmp_path, 60), cwd=REPO, capture_output=True, text=True,
                         timeout=240)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert re.search(r'resumed from step \d+', rerun.stderr)
