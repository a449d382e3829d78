"""One writer per run folder: a run holds its folder for as long as it runs.

Two runs writing one folder (a job retried while its first attempt still runs, two people
picking the same name) would interleave checkpoints and overwrite each other's results, so
the second one stops at once, naming the holder.

- Local folders (and NFS, which Linux maps flock onto its byte-range locks): `flock` on
  `<run folder>/run.lock`. The kernel drops the lock when the holder's process ends, however
  it ends (SIGKILL, OOM), so a dead holder never blocks the rerun.
- Other tf.io.gfile file systems (`gs://`, ...) have no locks: the holder writes a lease,
  `<run folder>/run.lease`, and renews it every LEASE_RENEW_SECONDS from a background thread.
  On gs:// every write of it names the generation it replaces (lease_objects.py), so of
  runs starting together exactly one takes it, and a holder whose lease was taken over
  cannot renew it back.
  A lease not renewed for LEASE_STALE_SECONDS is stale: its holder is gone, and a new run
  takes it over. A run of the same job (the same TRAINER_JOB_ID, which the launchers set,
  and the same tuning trial) takes it over at once: that is the job restarting after losing
  a worker, whose previous attempt is dead. Staleness compares the holder's clock with the
  reader's, so machines' clocks must agree to within a minute or so (NTP, as on every
  cloud VM).

Only the chief of a multi-worker job takes the lock; the other workers write only scratch
files, so they neither take it nor look at it.
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional, Tuple

from absl import logging

from trainer.core.errors import UserError, first_line
from trainer.core import trial as trial_lib
from trainer.run_folder import lease_objects

LOCK_FILE = 'run.lock'
LEASE_FILE = 'run.lease'
LEASE_RENEW_SECONDS = 30
LEASE_STALE_SECONDS = 300  # Ten missed renewals: far beyond a slow write to a bucket.
JOB_ID_VARIABLE = 'TRAINER_JOB_ID'


def _tensorflow():
  # Imported where leases need it, not with this module: trainer.main refuses a held local
  # folder before it pays for TensorFlow's import (seconds on a busy machine).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def refuse_if_held(folder: str) -> None:
  """Raises UserError at once if a live run holds the local `folder`; takes nothing.

  A quick look before the slow start-up; the run's own acquire() below decides.
  """
  if not is_local(folder):
    return
  path = os.path.join(folder.replace('file://', '', 1), LOCK_FILE)
  if os.path.exists(path):
    FileLock(folder).acquire().release()


def is_local(path: str) -> bool:
  return '://' not in path or path.startswith('file://')


def _job() -> str:
  """This run's job for the lease: the launcher's id, and the tuning trial within it (all
  trials of a tuning job share the launcher's id, and must not take over each other's)."""
  job = os.environ.get(JOB_ID_VARIABLE, '')
  trial = trial_lib.trial_id()
  return f'{job}/trial-{trial}' if job and trial else job


def _identity(job: Optional[str] = None, now: Optional[float] = None) -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'since': time.time() if now is None else now,
          'job': _job() if job is None else job}


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec='seconds')


def _describe(holder: Optional[dict]) -> str:
  if not holder:
    return 'holder unknown'
  try:
    return f'host {holder["host"]}, pid {holder["pid"]}, since {_when(holder["since"])}'
  except (KeyError, TypeError, ValueError, OverflowError, OSError):
    return 'holder unknown'


def _in_use(folder: str, holder: Optional[dict], extra: str = '') -> UserError:
  return UserError(f'the run folder {folder} is in use by another run ({_describe(holder)}'
                   f'{extra}); wait for it to end or stop it, or use another --model_dir')


class NoLock:
  """What a non-chief worker holds: nothing."""

  def check(self) -> None:
    pass

  def release(self) -> None:
    pass


class FileLock:
  """flock on a file in a local run folder; the kernel releases it with the process."""

  def __init__(self, folder: str):
    self.folder = folder
    self.path = os.path.join(folder.replace('file://', '', 1), LOCK_FILE)
    self._fd = None

  def acquire(self) -> 'FileLock':
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise UserError(f'cannot lock the run folder {self.folder}: {e.strerror}') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      busy = e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
      holder = None
      if busy:
        try:
          holder = json.loads(os.pread(fd, 4096, 0) or b'null')
        except ValueError:  # The holder is between truncating and writing its details.
          pass
      os.close(fd)
      if busy:
        raise _in_use(self.folder, holder) from None
      raise UserError(f'cannot lock the run folder {self.folder}: {e.strerror}') from None
    # The file is never deleted: unlinking a lock file lets a waiter lock a dead inode.
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_identity()).encode(), 0)
    self._fd = fd
    return self

  def check(self) -> None:
    pass

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)  # Closing the only descriptor drops the flock.
      self._fd = None


class Lease:
  """A renewed lease object for file systems without locks (gs://). `clock` is injectable
  so the staleness rules are tested without waiting; `gcs_client` so tests can point
  google-cloud-storage at a stand-in server."""

  def __init__(self, folder: str, clock: Callable[[], float] = time.time,
               renew_seconds: float = LEASE_RENEW_SECONDS,
               stale_seconds: float = LEASE_STALE_SECONDS, job: Optional[str] = None,
               gcs_client=None):
    self.folder = folder
    self.path = f'{folder.rstrip("/")}/{LEASE_FILE}'
    self._object = lease_objects.at(self.path, gcs_client)
    self._clock = clock
    self._renew_seconds = renew_seconds
    self._stale_seconds = stale_seconds
    self._holder = dict(_identity(job, now=clock()), token=uuid.uuid4().hex)
    self._generation = None  # Of the lease object as we last wrote it (gs://).
    self._last_renewed = None
    self._lost = None  # Why the lease is no longer ours, once it is not.
    self._stop = threading.Event()
    self._thread = None

  def _read(self) -> Tuple[Optional[dict], Optional[int]]:
    """(holder, generation); the holder is None when there is no lease, or one half written
    by a holder that died mid-write (possible only without preconditions)."""
    data, generation = self._object.read()
    try:
      holder = json.loads(data) if data is not None else None
    except ValueError:
      holder = None
    return (holder if isinstance(holder, dict) else None), generation

  def _ours(self, holder: Optional[dict]) -> bool:
    return holder is not None and holder.get('token') == self._holder['token']

  def _write(self, now: float, if_generation: Optional[int]) -> None:
    """Writes our lease over generation `if_generation` of the object (0: over none);
    lease_objects.Conflict if another writer came first (gs://)."""
    data = json.dumps(dict(self._holder, renewed=now)).encode()
    try:
      self._generation = self._object.write(data, if_generation)
    except lease_objects.Conflict:
      # Unless that writer was us: a write retried after its answer was lost.
      holder, generation = self._read()
      if not self._ours(holder):
        raise
      self._generation = generation
    self._last_renewed = now

  def acquire(self) -> 'Lease':
    """Takes the lease, or raises UserError naming its live holder."""
    try:
      return self._acquire()
    except lease_objects.Unreachable as e:
      raise UserError(f'cannot take the run folder lease {self.path}: {first_line(e)}; check '
                      'this machine\'s Google Cloud credentials and its access to the '
                      'bucket') from None

  def _acquire(self) -> 'Lease':
    now = self._clock()
    current, generation = self._read()
    if current is not None and not self._ours(current):
      age = now - float(current.get('renewed', 0))
      same_job = bool(self._holder['job']) and current.get('job') == self._holder['job']
      if age < self._stale_seconds and not same_job:
        raise _in_use(self.folder, current, f', lease renewed {age:.0f} s ago; a lease not '
                      f'renewed for {self._stale_seconds:.0f} s is taken over')
      logging.warning('taking over the run folder lease of %s (%s)', _describe(current),
                      'an earlier attempt of this job' if same_job and age < self._stale_seconds
                      else f'not renewed for {age:.0f} s')
    try:
      # Over exactly the generation judged above: of runs taking the lease at once, Cloud
      # Storage lets one write through and refuses the others.
      self._write(now, generation or 0)
    except lease_objects.Conflict:
      raise _in_use(self.folder, self._read()[0], ', taken at the same moment') from None
    if not self._object.atomic and not self._ours(self._read()[0]):
      # No compare-and-swap here: of two runs that wrote at the same moment, the one whose
      # write landed last reads its own token back; the other stops here, or at its next
      # renewal at the latest.
      raise _in_use(self.folder, self._read()[0], ', taken at the same moment')
    return self

  def _taken(self) -> bool:
    """Records who has the lease now, if not us; whether it is gone."""
    current, _ = self._read()
    if self._ours(current):
      return False
    self._lost = f'it was taken over by {_describe(current)}' if current else 'it vanished'
    return True

  def renew(self) -> bool:
    """One renewal; False (and `check` raises from then on) once the lease is not ours."""
    now = self._clock()
    try:
      if not self._object.atomic and self._taken():
        return False
      try:
        self._write(now, self._generation)
      except lease_objects.Conflict:
        return not self._taken()
      return True
    except (_tensorflow().errors.OpError, OSError) as e:
      # A bucket can refuse a request now and then: keep trying until others could
      # rightly think us dead.
      if now - self._last_renewed >= self._stale_seconds:
        self._lost = f'it could not be renewed for {now - self._last_renewed:.0f} s'
        return False
      logging.warning('could not renew the run folder lease (%s); retrying', first_line(e))
      return True

  def start_renewing(self) -> 'Lease':
    def renew_until_stopped():
      while not self._stop.wait(self._renew_seconds):
        if not self.renew():
          logging.error('lost the run folder lease: %s', self._lost)
          return
    self._thread = threading.Thread(target=renew_until_stopped, name='run-lease', daemon=True)
    self._thread.start()
    return self

  def check(self) -> None:
    """Raises UserError when the lease was lost, before the run writes anything more."""
    if self._lost:
      raise UserError(f'this run no longer holds the run folder {self.folder} ({self._lost}); '
                      'stopped before writing more: check which run should own it')

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      if self._object.atomic:
        self._object.delete(self._generation)  # Refused if it is no longer ours.
      elif self._ours(self._read()[0]):
        self._object.delete(None)
    except lease_objects.Conflict:
      pass
    except (_tensorflow().errors.OpError, OSError) as e:
      logging.warning('could not remove the run folder lease %s (%s); the next run takes it '
                      'over once it is stale', self.path, first_line(e))


def acquire(folder: str, chief: bool = True):
  """Holds `folder` for this run (only on the chief); call .release() when the run ends."""
  if not chief:
    return NoLock()
  if is_local(folder):
    return FileLock(folder).acquire()
  return Lease(folder).acquire().start_renewing()
