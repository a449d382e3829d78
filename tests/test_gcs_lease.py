"""The gs:// run folder lease on the Cloud Storage stand-in: generation preconditions make
taking it atomic (trainer/run_folder/lease_objects.py), in this process and between runs."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests import forked
from tests.conftest import REPO
from tests.gcs_store import BUCKET
from tests.test_run_lock import Clock
from trainer.core.errors import UserError
from trainer.run_folder import run_lock

FOLDER = f'gs://{BUCKET}/runs/a'
LEASE = f'{FOLDER}/{run_lock.LEASE_FILE}'


def _lease(gcs, clock, job=''):
  return run_lock.Lease(FOLDER, clock=clock, job=job, gcs_client=gcs.client())


def test_a_live_lease_refuses_a_second_run_and_a_stale_one_is_taken_over(gcs):
  clock = Clock()
  old = _lease(gcs, clock).acquire()
  clock.now += 100
  assert old.renew()
  with pytest.raises(UserError, match=r'in use by another run \(host .*, lease renewed 0 s ago'):
    _lease(gcs, clock).acquire()
  clock.now += run_lock.LEASE_STALE_SECONDS
  new = _lease(gcs, clock).acquire()
  assert not old.renew()  # Its precondition names the generation it wrote, now replaced.
  with pytest.raises(UserError, match=r'\(it was taken over by host .*\); stopped before'):
    old.check()
  old.release()  # Must not delete the new holder's lease.
  assert json.loads(gcs.store.get(LEASE))['token'] == new._holder['token']  # pylint: disable=protected-access
  assert new.renew()
  new.release()
  assert gcs.store.get(LEASE) is None


def test_of_two_runs_that_both_saw_the_lease_stale_only_one_takes_it(gcs):
  clock = Clock()
  _lease(gcs, clock).acquire()
  clock.now += run_lock.LEASE_STALE_SECONDS
  first, second = _lease(gcs, clock), _lease(gcs, clock)
  seen_by_second = second._read()  # pylint: disable=protected-access
  second._read = lambda: seen_by_second  # It reads before the first one writes...
  first.acquire()
  with pytest.raises(UserError, match='taken at the same moment'):
    second.acquire()  # ...and writes after: over a generation that is gone.
  first.check()
  assert json.loads(gcs.store.get(LEASE))['token'] == first._holder['token']  # pylint: disable=protected-access


def test_a_lease_deleted_under_its_holder_is_lost(gcs):
  lease = _lease(gcs, Clock()).acquire()
  gcs.client().bucket(BUCKET).blob(LEASE[len(f'gs://{BUCKET}/'):]).delete()
  assert not lease.renew()
  with pytest.raises(UserError, match=r'\(it vanished\)'):
    lease.check()


def test_a_lease_not_valid_json_is_taken_over_at_its_generation(gcs):
  gcs.store.put(BUCKET, LEASE[len(f'gs://{BUCKET}/'):], b'{"host": "a", "pi')
  _lease(gcs, Clock()).acquire().check()


@pytest.mark.slow
def test_processes_racing_for_one_folder_exactly_one_wins_every_time(gcs):
  """`racers` processes take the lease of one folder at the same moment, `tries` times: of a
  fresh folder, and (every other time) of one whose lease is stale. The processes, their
  credentials and their client are those of real runs (Application Default Credentials from
  the metadata server, Cloud Storage's own address)."""
  # LEASE_RACE_TRIES=500 for the full figure (docs/gcs.md); CI races 40 times to stay short.
  racers, tries = 3, int(os.environ.get('LEASE_RACE_TRIES', '40'))
  children = [gcs.popen([sys.executable, str(REPO / 'tests' / 'lease_racer.py'),
                         f'gs://{BUCKET}/race'], cwd=REPO, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(racers)]
  try:
    for child in children:
      assert child.stdout.readline().strip() == 'ready', child.stderr.read()[-3000:]
    for attempt in range(tries):
      if attempt % 2:
        stale = {'host': 'gone', 'pid': 1, 'since': 0, 'job': '', 'token': 't', 'renewed': 0}
        gcs.store.put(BUCKET, f'race/{attempt}/{run_lock.LEASE_FILE}', json.dumps(stale).encode())
      for child in children:  # Each child waits for its line, then goes at once.
        child.stdin.write(f'{attempt}\n')
        child.stdin.flush()
      outcomes = [child.stdout.readline().strip() for child in children]
      assert sorted(o.split(':')[0] for o in outcomes) == ['lost'] * (racers - 1) + ['won'], \
          (attempt, outcomes)
    for child in children:
      child.stdin.close()
      assert child.wait(timeout=60) == 0, child.stderr.read()[-3000:]
  finally:
    for child in children:
      child.kill()
      child.wait()


def test_no_credentials_is_one_line(gcs, tmp_path):
  """No credentials file, no gcloud login, and a metadata server that does not answer (a
  closed loopback port): Application Default Credentials find nothing. In a child that
  resolves Google's names to the stand-in, so that nothing can reach Google Cloud."""
  with socket.socket() as closed:
    closed.bind(('127.0.0.1', 0))
    nowhere = f'127.0.0.1:{closed.getsockname()[1]}'
  env = {name: value for name, value in gcs.env().items()
         if name not in ('GOOGLE_APPLICATION_CREDENTIALS', 'GOOGLE_CLOUD_PROJECT')}
  env.update(CLOUDSDK_CONFIG=str(tmp_path), GCE_METADATA_HOST=nowhere, GCE_METADATA_IP=nowhere,
             GCE_METADATA_DETECT_RETRIES='1')  # Asks once: nothing answers there anyway.
  child = forked.run([sys.executable, str(REPO / 'tests' / 'lease_racer.py'), FOLDER], cwd=REPO,
                     env=env, hosts=gcs.hosts_file, capture_output=True, text=True, timeout=120)
  assert child.returncode == 2, child.stderr[-3000:]
  message = child.stdout.strip()
  assert message.startswith(f'error: cannot take the run folder lease {FOLDER}/warm-up-') and \
      ': no Google Cloud credentials for ' in message and '\n' not in message, message
  assert message.endswith("; check this machine's Google Cloud credentials and its access to "
                          'the bucket'), message
