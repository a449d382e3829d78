"""Where a run folder's lease lives (run_lock.py), and how it is written.

- On gs://, a Cloud Storage object written under generation preconditions: each write
  says which generation of the object it replaces (0: none), and Cloud Storage refuses it
  with 412 when another writer got there first, so of two runs taking one lease exactly one
  succeeds (https://cloud.google.com/storage/docs/request-preconditions). Written with
  google-cloud-storage, which finds credentials as every Google client does (Application
  Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, or the metadata
  server of a Google Cloud VM); imported only for gs://.
- On other tf.io.gfile file systems, a plain file: no preconditions, so the lease reads its
  write back (run_lock.Lease).
"""

from typing import Optional, Tuple


class Conflict(Exception):
  """The object is no longer the generation the write or delete expected."""


class Unreachable(OSError):
  """The store could not be asked (network, credentials, permissions): maybe for a moment."""


class GfileObject:
  """A file on any tf.io.gfile file system; generations are not known (None)."""

  atomic = False

  def __init__(self, path: str):
    self.path = path

  def read(self) -> Tuple[Optional[bytes], Optional[int]]:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      with tf.io.gfile.GFile(self.path, 'rb') as f:
        return f.read(), None
    except tf.errors.NotFoundError:
      return None, None

  def write(self, data: bytes, if_generation: Optional[int]) -> Optional[int]:  # pylint: disable=unused-argument
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(self.path, 'wb') as f:
      f.write(data)
    return None

  def delete(self, if_generation: Optional[int]) -> None:  # pylint: disable=unused-argument
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.io.gfile.remove(self.path)


class GcsObject:
  """An object of a Cloud Storage bucket; every write and delete is conditional.

  `client`: a google.cloud.storage.Client (tests point one at a stand-in server); by default
  one with Application Default Credentials.
  """

  atomic = True

  def __init__(self, path: str, client=None):
    self.path = path
    bucket, _, self._name = path[len('gs://'):].partition('/')
    self._bucket_name = bucket
    self._client = client
    self._bucket = None

  def _blob(self):
    # pylint: disable=g-import-not-at-top
    if self._bucket is None:
      from google.cloud import storage
      client = self._client
      if client is None:
        try:
          client = storage.Client()
        except Exception as e:  # pylint: disable=broad-except
          raise Unreachable(f'no Google Cloud credentials for {self.path}: {e}') from None
      self._bucket = client.bucket(self._bucket_name)
    return self._bucket.blob(self._name)

  def _call(self, action):
    """Runs `action`, turning the client's errors into Conflict, None (not found) or
    Unreachable."""
    # pylint: disable=g-import-not-at-top
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    import requests
    try:
      return action()
    except exceptions.PreconditionFailed as e:
      raise Conflict(str(e)) from None
    except exceptions.NotFound:
      return None
    except (exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError,
            requests.RequestException) as e:
      raise Unreachable(f'{type(e).__name__}: {e}') from None

  def read(self) -> Tuple[Optional[bytes], Optional[int]]:
    """(content, generation), or (None, None) when there is no object."""
    blob = self._blob()
    data = self._call(blob.download_as_bytes)
    return (None, None) if data is None else (data, int(blob.generation))

  def write(self, data: bytes, if_generation: Optional[int]) -> int:
    """Writes the object if its generation is still `if_generation` (0: if there is none);
    raises Conflict if not. Returns the new generation."""
    blob = self._blob()
    # A missing object fails a nonzero generation's precondition too: 412, not 404.
    self._call(lambda: blob.upload_from_string(data, content_type='application/json',
                                               if_generation_match=if_generation))
    return int(blob.generation)

  def delete(self, if_generation: Optional[int]) -> None:
    """Deletes the object if its generation is still `if_generation`; Conflict if not."""
    blob = self._blob()
    self._call(lambda: blob.delete(if_generation_match=if_generation))


def at(path: str, gcs_client=None):
  """The lease object for `path`: conditional writes on gs://, a plain file elsewhere."""
  if path.startswith('gs://'):
    return GcsObject(path, gcs_client)
  return GfileObject(path)
