"""The Cloud Storage JSON API, as far as TensorFlow's GCS client and google-cloud-storage
use it, served from memory (tests/gcs_stand_in.py puts it on loopback, behind TLS).

Bucket metadata; object metadata, ranged media downloads (also the XML API's
https://storage.googleapis.com/<bucket>/<object>, which TensorFlow reads files with),
listing with prefix, delimiter and pages; media, multipart and resumable uploads; delete,
rewrite, copy and compose; and the generation preconditions (ifGenerationMatch,
ifGenerationNotMatch, ifMetagenerationMatch) with Cloud Storage's 412 when one fails
(https://cloud.google.com/storage/docs/json_api/v1/objects). Every request must carry the
stand-in's access token, as Cloud Storage wants one.
"""

import http.server
import json
import os
import time
import urllib.parse
from typing import Dict, Optional

from tests.gcs_store import Store, StoredObject

TOKEN = 'stand-in-access-token'


class _Failure(Exception):

  def __init__(self, code: int, reason: str, message: str):
    super().__init__(message)
    self.code, self.reason, self.message = code, reason, message


def _check_preconditions(query: dict, current: Optional[StoredObject]) -> None:
  generation = current.generation if current else 0
  match = query.get('ifGenerationMatch')
  if match is not None and int(match) != generation:
    raise _Failure(412, 'conditionNotMet', 'At least one of the pre-conditions you specified '
                   'did not hold.')
  not_match = query.get('ifGenerationNotMatch')
  if not_match is not None and int(not_match) == generation:
    raise _Failure(304, 'notModified', 'ifGenerationNotMatch')  # 304, as Cloud Storage does.
  metageneration = query.get('ifMetagenerationMatch')
  if metageneration is not None and (current is None or metageneration != '1'):
    raise _Failure(412, 'conditionNotMet', 'ifMetagenerationMatch')


class StorageHandler(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'  # Keep-alive: one TLS handshake serves many requests.
  store: Store = None

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass

  # ---- plumbing ----

  def _body(self) -> bytes:
    if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
      chunks = []
      while True:
        size = int(self.rfile.readline().split(b';')[0], 16)
        chunks.append(self.rfile.read(size))
        self.rfile.readline()
        if not size:
          return b''.join(chunks)
    return self.rfile.read(int(self.headers.get('Content-Length') or 0))

  def _send(self, code: int, body: bytes = b'', headers=None, content_type='application/json'):
    self.send_response(code)
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    if body:
      self.send_header('Content-Type', content_type)
    if code != 304:
      self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _json(self, code: int, value: dict, headers=None):
    self._send(code, json.dumps(value).encode(), headers)

  def _fail(self, failure: _Failure):
    if failure.code == 304:
      return self._send(304)
    error = {'domain': 'global', 'reason': failure.reason, 'message': failure.message}
    return self._json(failure.code, {'error': {'code': failure.code, 'message': failure.message,
                                               'errors': [error]}})

  def _route(self, method: str):
    raw_path, _, raw_query = self.path.partition('?')
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_query, keep_blank_values=True).items()}
    parts = [urllib.parse.unquote(p) for p in raw_path.split('/')[1:]]
    with self.store.lock:
      self.store.requests.append((method, self.path, time.time()))
    body = self._body() if method in ('POST', 'PUT', 'PATCH') else b''
    try:
      if self.headers.get('Authorization') != f'Bearer {TOKEN}':
        raise _Failure(401, 'required', 'Anonymous caller does not have storage access.')
      self._dispatch(method, parts, query, body)
    except _Failure as failure:
      self._fail(failure)

  def do_GET(self):  # pylint: disable=invalid-name
    self._route('GET')

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._route('HEAD')

  def do_POST(self):  # pylint: disable=invalid-name
    self._route('POST')

  def do_PUT(self):  # pylint: disable=invalid-name
    self._route('PUT')

  def do_DELETE(self):  # pylint: disable=invalid-name
    self._route('DELETE')

  # ---- the API ----

  def _bucket(self, name: str) -> Dict[str, StoredObject]:
    if name not in self.store.buckets:
      raise _Failure(404, 'notFound', f'The specified bucket does not exist: {name}')
    return self.store.buckets[name]

  def _object(self, bucket: str, name: str, query: dict) -> StoredObject:
    stored = self._bucket(bucket).get(name)
    if stored is None or ('generation' in query and query['generation'] != str(stored.generation)):
      raise _Failure(404, 'notFound', f'No such object: {bucket}/{name}')
    _check_preconditions(query, stored)
    return stored

  def _dispatch(self, method, parts, query, body):
    if parts[:3] == ['upload', 'storage', 'v1'] and len(parts) == 6 and parts[5] == 'o':
      return self._upload(method, parts[4], query, body)
    if parts[0] in self.store.buckets and method in ('GET', 'HEAD'):
      # The XML API's media download, which TensorFlow reads files with:
      # https://storage.googleapis.com/<bucket>/<object>.
      return self._media(self._object(parts[0], '/'.join(parts[1:]), query))
    if parts[:3] == ['download', 'storage', 'v1']:
      parts = parts[1:]
      query = dict(query, alt='media')
    if parts[:2] != ['storage', 'v1'] or len(parts) < 4 or parts[2] != 'b':
      raise _Failure(404, 'notFound', f'Not Found: {self.path}')
    bucket, rest = parts[3], parts[4:]
    if not rest and method == 'GET':
      self._bucket(bucket)
      return self._json(200, {'kind': 'storage#bucket', 'id': bucket, 'name': bucket,
                              'location': 'US-CENTRAL1', 'locationType': 'region',
                              'storageClass': 'STANDARD', 'metageneration': '1'})
    if rest == ['storageLayout'] and method == 'GET':
      # TensorFlow asks before renaming a folder: a bucket with a hierarchical namespace
      # renames folders itself. This one is flat, as buckets are unless made otherwise.
      self._bucket(bucket)
      return self._json(200, {'kind': 'storage#storageLayout', 'bucket': bucket,
                              'location': 'US-CENTRAL1', 'locationType': 'region',
                              'hierarchicalNamespace': {'enabled': False}})
    if rest == ['o'] and method == 'GET':
      return self._list(bucket, query)
    if len(rest) == 2 and rest[0] == 'o':
      if method in ('GET', 'HEAD'):
        stored = self._object(bucket, rest[1], query)
        if query.get('alt') == 'media':
          return self._media(stored)
        return self._json(200, stored.resource())
      if method == 'DELETE':
        with self.store.lock:
          self._object(bucket, rest[1], query)
          del self.store.buckets[bucket][rest[1]]
        return self._send(204)
    if len(rest) == 7 and rest[0] == 'o' and rest[2] in ('rewriteTo', 'copyTo') and \
        method == 'POST':
      source_conditions = {'if' + k[len('ifSource'):]: v for k, v in query.items()
                           if k.startswith('ifSource')}
      with self.store.lock:
        source = self._object(bucket, rest[1], source_conditions)
        _check_preconditions(query, self._bucket(rest[4]).get(rest[6]))
        stored = self.store._put(rest[4], rest[6], source.data, source.content_type)  # pylint: disable=protected-access
      if rest[2] == 'copyTo':
        return self._json(200, stored.resource())
      size = str(len(stored.data))
      return self._json(200, {'kind': 'storage#rewriteResponse', 'done': True,
                              'totalBytesRewritten': size, 'objectSize': size,
                              'resource': stored.resource()})
    if len(rest) == 3 and rest[0] == 'o' and rest[2] == 'compose' and method == 'POST':
      request = json.loads(body or b'{}')
      with self.store.lock:
        objects = self._bucket(bucket)
        sources = [objects.get(s['name']) for s in request.get('sourceObjects', [])]
        if not sources or None in sources:
          raise _Failure(404, 'notFound', 'a source object of the compose does not exist')
        _check_preconditions(query, objects.get(rest[1]))
        stored = self.store._put(bucket, rest[1], b''.join(s.data for s in sources))  # pylint: disable=protected-access
      return self._json(200, stored.resource())
    raise _Failure(404, 'notFound', f'Not Found: {method} {self.path}')

  def _media(self, stored: StoredObject):
    crc32c, md5 = stored.hashes()
    headers = {'x-goog-generation': str(stored.generation), 'x-goog-metageneration': '1',
               'x-goog-stored-content-length': str(len(stored.data)),
               'x-goog-stored-content-encoding': 'identity',
               'x-goog-hash': f'crc32c={crc32c},md5={md5}', 'ETag': f'e{stored.generation}'}
    wanted = self.headers.get('Range')
    if not wanted:
      return self._send(200, stored.data, headers, stored.content_type)
    first, _, last = wanted.strip().split('=', 1)[1].partition('-')
    size = len(stored.data)
    start = int(first) if first else max(0, size - int(last))
    end = min(size - 1, int(last)) if first and last else size - 1
    if start >= size:
      return self._send(416, b'', dict(headers, **{'Content-Range': f'bytes */{size}'}))
    headers['Content-Range'] = f'bytes {start}-{end}/{size}'
    return self._send(206, stored.data[start:end + 1], headers, stored.content_type)

  def _list(self, bucket: str, query: dict):
    prefix, delimiter = query.get('prefix', ''), query.get('delimiter', '')
    with self.store.lock:
      names = sorted(n for n in self._bucket(bucket) if n.startswith(prefix))
      objects = dict(self.store.buckets[bucket])
    entries = []  # (name, is_prefix), in name order, each prefix once.
    for name in names:
      rest = name[len(prefix):]
      if delimiter and delimiter in rest:
        folder = prefix + rest[:rest.index(delimiter) + len(delimiter)]
        if not entries or entries[-1][0] != folder:
          entries.append((folder, True))
      else:
        entries.append((name, False))
    token = query.get('pageToken')
    if token:
      entries = [e for e in entries if e[0] > token]
    page = entries[:int(query.get('maxResults') or 1000)]
    answer = {'kind': 'storage#objects',
              'items': [objects[n].resource() for n, folder in page if not folder],
              'prefixes': [n for n, folder in page if folder]}
    if len(entries) > len(page):
      answer['nextPageToken'] = page[-1][0]
    return self._json(200, {k: v for k, v in answer.items() if v != []})

  def _upload(self, method, bucket, query, body):
    self._bucket(bucket)
    kind = query.get('uploadType', 'media')
    if method == 'POST' and kind == 'media':
      return self._finish(bucket, query.get('name'), query, body,
                          self.headers.get('Content-Type'))
    if method == 'POST' and kind == 'multipart':
      boundary = self.headers.get_param('boundary').encode()
      parts = body.split(b'--' + boundary)[1:-1]
      head, data = [p.split(b'\r\n\r\n', 1)[1] for p in parts[:2]]
      metadata = json.loads(head.strip())
      return self._finish(bucket, metadata.get('name') or query.get('name'), query,
                          data[:-2] if data.endswith(b'\r\n') else data,
                          metadata.get('contentType'))
    if method == 'POST' and kind == 'resumable':
      metadata = json.loads(body) if body.strip() else {}
      upload_id = os.urandom(12).hex()
      with self.store.lock:
        self.store.uploads[upload_id] = {
            'name': metadata.get('name') or query.get('name'), 'query': query, 'data': b'',
            'type': metadata.get('contentType') or self.headers.get('X-Upload-Content-Type')}
      host = self.headers.get('Host', 'www.googleapis.com')
      return self._send(200, headers={'Location': f'https://{host}/upload/storage/v1/b/{bucket}'
                                                  f'/o?uploadType=resumable&upload_id={upload_id}'})
    if method == 'PUT' and kind == 'resumable':
      with self.store.lock:
        upload = self.store.uploads.get(query.get('upload_id'))
      if upload is None:
        raise _Failure(404, 'notFound', 'No such upload session')
      # "bytes a-b/total", "bytes a-b/*" (more to come) or "bytes */total" (a status query).
      content_range = self.headers.get('Content-Range', f'bytes */{len(body)}')
      span, _, total = content_range.split(' ', 1)[1].partition('/')
      if span != '*':
        start = int(span.split('-')[0])
        upload['data'] = upload['data'][:start] + body
      if total != '*' and len(upload['data']) == int(total):
        with self.store.lock:
          self.store.uploads.pop(query['upload_id'], None)
        return self._finish(bucket, upload['name'], upload['query'], upload['data'],
                            upload['type'])
      headers = {'Range': f'bytes=0-{len(upload["data"]) - 1}'} if upload['data'] else {}
      return self._send(308, headers=headers)
    raise _Failure(400, 'invalid', f'unsupported upload {method} {kind}')

  def _finish(self, bucket, name, query, data, content_type):
    if not name:
      raise _Failure(400, 'required', 'Required: object name')
    with self.store.lock:
      _check_preconditions(query, self.store.buckets[bucket].get(name))
      stored = self.store._put(bucket, name, data, content_type)  # pylint: disable=protected-access
    return self._json(200, stored.resource())
