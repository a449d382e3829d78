"""The objects of the Cloud Storage stand-in (tests/gcs_api.py serves them), in memory.

Tests fill and read the store directly: the data a run starts from, what it wrote.
"""

import base64
import datetime
import hashlib
import itertools
import os
import threading
import time
from typing import Dict, Optional

import google_crc32c

BUCKET = 'trainer-test'

class StoredObject:

  def __init__(self, bucket: str, name: str, data: bytes, generation: int,
               content_type: str = 'application/octet-stream'):
    self.bucket, self.name, self.data, self.generation = bucket, name, data, generation
    self.content_type = content_type
    self.updated = datetime.datetime.now(datetime.timezone.utc)

  def hashes(self):
    crc = google_crc32c.Checksum(self.data).digest()
    return (base64.b64encode(crc).decode(),
            base64.b64encode(hashlib.md5(self.data).digest()).decode())

  def resource(self) -> dict:
    crc32c, md5 = self.hashes()
    when = self.updated.strftime('%Y-%m-%dT%H:%M:%S.') + f'{self.updated.microsecond // 1000:03d}Z'
    return {'kind': 'storage#object', 'id': f'{self.bucket}/{self.name}/{self.generation}',
            'name': self.name, 'bucket': self.bucket, 'generation': str(self.generation),
            'metageneration': '1', 'contentType': self.content_type,
            'size': str(len(self.data)), 'md5Hash': md5, 'crc32c': crc32c,
            'etag': f'e{self.generation}', 'storageClass': 'STANDARD',
            'timeCreated': when, 'updated': when}


class Store:
  """Buckets of objects, thread-safe; generations only grow, as Cloud Storage's do."""

  def __init__(self, buckets=(BUCKET,)):
    self.lock = threading.Lock()
    self.buckets: Dict[str, Dict[str, StoredObject]] = {b: {} for b in buckets}
    self._generation = itertools.count(int(time.time() * 1e6))
    self.uploads: Dict[str, dict] = {}
    self.requests = []  # (method, path, time) of each request, for tests to look at.

  def put(self, bucket: str, name: str, data: bytes, content_type=None) -> StoredObject:
    with self.lock:
      return self._put(bucket, name, data, content_type)

  def _put(self, bucket, name, data, content_type=None):
    stored = StoredObject(bucket, name, bytes(data), next(self._generation),
                          content_type or 'application/octet-stream')
    self.buckets[bucket][name] = stored
    return stored

  def get(self, path: str) -> Optional[bytes]:
    """The content of gs://bucket/name, or None."""
    bucket, name = path[len('gs://'):].split('/', 1)
    stored = self.buckets[bucket].get(name)
    return None if stored is None else stored.data

  def names(self, prefix: str):
    """The object paths under gs://bucket/prefix."""
    bucket, name = prefix[len('gs://'):].split('/', 1)
    return sorted(f'gs://{bucket}/{n}' for n in list(self.buckets[bucket]) if n.startswith(name))

  def copy_in(self, local_folder: str, prefix: str) -> None:
    """Uploads a local folder's files under gs://bucket/prefix/ (test set-up)."""
    bucket, name = prefix[len('gs://'):].split('/', 1)
    for root, _, files in os.walk(local_folder):
      for file in files:
        path = os.path.join(root, file)
        relative = os.path.relpath(path, local_folder).replace(os.sep, '/')
        with open(path, 'rb') as f:
          self.put(bucket, f'{name.rstrip("/")}/{relative}', f.read())


  def copy_out(self, prefix: str, local_folder: str) -> None:
    """Downloads the objects under gs://bucket/prefix/ into a local folder (test checks)."""
    for path in self.names(prefix.rstrip('/') + '/'):
      relative = path[len(prefix.rstrip('/')) + 1:]
      if relative and not relative.endswith('/'):
        target = os.path.join(local_folder, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'wb') as f:
          f.write(self.get(path))
