"""The Cloud Storage stand-in (tests/gcs_stand_in.py) as the clients see it: TensorFlow's GCS
file system in a child process, google-cloud-storage's preconditions in this one."""

import json
import sys

import pytest
from google.api_core import exceptions

from tests.conftest import REPO
from tests.gcs_store import BUCKET


def test_tensorflow_reads_and_writes_gs_through_its_own_client(gcs):
  folder = f'gs://{BUCKET}/ops'
  child = gcs.run([sys.executable, str(REPO / 'tests' / 'gcs_file_ops.py'), folder], cwd=REPO,
                  capture_output=True, text=True, timeout=240)
  assert child.returncode == 0, child.stderr[-3000:]
  seen = json.loads(child.stdout.strip().splitlines()[-1])
  assert seen['exists'] == [True, False]
  assert seen['isdir'] == [True, True, False]
  assert seen['listdir'] == ['a/', 'b/']
  assert seen['read'] == 'one'
  assert seen['seek_read'] == [(1_000_000 + i) % 256 for i in range(4)]
  assert seen['size'] == 10_240_000
  assert seen['glob'] == [f'{folder}/a/two.txt']
  assert seen['rename_refused']
  assert seen['after_rmtree'] == ['a/']
  # What the child wrote is in the bucket, as written.
  assert gcs.store.get(f'{folder}/a/two.txt') == b'one'
  assert gcs.store.get(f'{folder}/a/big.bin') == bytes(range(256)) * 40_000
  assert gcs.store.names(f'{folder}/a/one') == []
  # TensorFlow used the APIs Cloud Storage has: resumable uploads, rewrites, ranged reads.
  paths = [path for _, path, _ in gcs.store.requests]
  assert any('uploadType=resumable' in p for p in paths)
  assert any('/rewriteTo/' in p for p in paths)
  assert any(p.startswith(f'/{BUCKET}/') for p in paths)


def test_writes_and_deletes_hold_to_their_generation_preconditions(gcs):
  blob = gcs.client().bucket(BUCKET).blob('lease')
  blob.upload_from_string(b'first', if_generation_match=0)
  first = blob.generation
  with pytest.raises(exceptions.PreconditionFailed):
    blob.upload_from_string(b'again', if_generation_match=0)
  blob.upload_from_string(b'second', if_generation_match=first)
  assert blob.generation > first
  with pytest.raises(exceptions.PreconditionFailed):
    blob.upload_from_string(b'stale', if_generation_match=first)
  with pytest.raises(exceptions.PreconditionFailed):
    blob.delete(if_generation_match=first)
  assert gcs.store.get(f'gs://{BUCKET}/lease') == b'second'
  blob.delete(if_generation_match=blob.generation)
  assert gcs.store.get(f'gs://{BUCKET}/lease') is None


def test_requests_without_the_token_are_refused(gcs):
  import requests  # pylint: disable=g-import-not-at-top
  url = f'https://{gcs.address}/storage/v1/b/{BUCKET}/o'
  assert requests.get(url, timeout=30).status_code == 401
  assert requests.get(url, headers={'Authorization': 'Bearer stolen'}, timeout=30).status_code == 401
