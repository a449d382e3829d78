"""A Cloud Storage stand-in on loopback that TensorFlow's own GCS client and
google-cloud-storage talk to as they talk to Google Cloud.

TensorFlow 2.21's file system for gs:// sends its requests to the fixed
`https://www.googleapis.com/storage/v1/`, `/upload/storage/v1/` and
`https://storage.googleapis.com/<bucket>/<object>`; google-cloud-storage to
`https://storage.googleapis.com`. Neither can be pointed elsewhere, so the processes under
test get their own view of the machine instead (tests/namespaces.py): a private mount
namespace whose /etc/hosts maps those names, and the metadata server's, to one 127.x.y.z
address of this stand-in, and a test certificate authority they trust through
CURL_CA_BUNDLE (TensorFlow's curl, and python-requests). Credentials come as on a Google
Cloud VM: both clients ask the metadata server (GCE_METADATA_HOST) for a token, which the
storage (tests/gcs_api.py) requires on every request. Nothing leaves loopback.
"""

import datetime
import http.server
import json
import os
import random
import ssl
import threading
from typing import Optional

from tests.gcs_api import TOKEN, Store, StorageHandler

PROJECT = 'trainer-test-project'
ACCOUNT = f'trainer@{PROJECT}.iam.gserviceaccount.com'
# The names a process in the stand-in's namespace resolves to it.
HOST_NAMES = ('www.googleapis.com', 'storage.googleapis.com', 'oauth2.googleapis.com',
              'metadata.google.internal', 'metadata')


# ---- the metadata server --------------------------------------------------------------

def _metadata_answers(address: str) -> dict:
  account = ACCOUNT
  return {
      '': 'computeMetadata/\n',  # google-auth's ping asks for the root.
      'project/project-id': PROJECT,
      'instance/hostname': 'trainer-test.c.project.internal',
      'instance/maintenance-event': 'NONE',
      'instance/service-accounts/default/email': account,
      'instance/service-accounts/default/': json.dumps(
          {'email': account, 'aliases': ['default'],
           'scopes': ['https://www.googleapis.com/auth/cloud-platform']}),
      'instance/service-accounts/default/token': json.dumps(
          {'access_token': TOKEN, 'expires_in': 3599, 'token_type': 'Bearer'}),
      'universe/universe-domain': 'googleapis.com',
      'instance/zone': f'projects/0/zones/us-central1-a ({address})',
  }


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
  answers: dict = None

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass

  def do_GET(self):  # pylint: disable=invalid-name
    path = self.path.partition('?')[0].lstrip('/')
    path = path[len('computeMetadata/v1/'):] if path.startswith('computeMetadata/v1/') else path
    # google-auth asks by the account's email once it knows it.
    path = path.replace(f'service-accounts/{ACCOUNT}/', 'service-accounts/default/')
    answer = self.answers.get(path)
    if answer is None or self.headers.get('Metadata-Flavor') != 'Google':
      self.send_error(404 if answer is None else 403)
      return
    body = answer.encode()
    self.send_response(200)
    self.send_header('Metadata-Flavor', 'Google')
    self.send_header('Content-Type', 'application/json' if answer.startswith('{')
                     else 'application/text')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)


# ---- TLS and the servers -------------------------------------------------------------

def _certificates(folder: str, address: str):
  """A test CA and a certificate it signed for HOST_NAMES and `address`: (CA file, cert
  file, key file)."""
  # pylint: disable=g-import-not-at-top
  import ipaddress
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID

  def name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

  now = datetime.datetime.now(datetime.timezone.utc)
  ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
  ca = (x509.CertificateBuilder().subject_name(name('trainer test CA'))
        .issuer_name(name('trainer test CA')).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256()))
  leaf = (x509.CertificateBuilder().subject_name(name(HOST_NAMES[0]))
          .issuer_name(ca.subject).public_key(key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.SubjectAlternativeName(
              [x509.DNSName(n) for n in HOST_NAMES]
              + [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
          .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
  files = [os.path.join(folder, n) for n in ('ca.pem', 'server.pem', 'server.key')]
  for path, data in zip(files, (
      ca.public_bytes(serialization.Encoding.PEM), leaf.public_bytes(serialization.Encoding.PEM),
      key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()))):
    with open(path, 'wb') as f:
      f.write(data)
  return files


class _TlsServer(http.server.ThreadingHTTPServer):
  daemon_threads = True
  context: ssl.SSLContext = None

  def finish_request(self, request, client_address):
    # The handshake on the connection's own thread: a slow client does not stall accept().
    try:
      request = self.context.wrap_socket(request, server_side=True)
    except (ssl.SSLError, OSError):
      return
    super().finish_request(request, client_address)


def _bind(server_class, handler, port):
  """Binds a server to `port` of a free address of 127.0.0.0/8, so that parallel tests
  each have their own."""
  for _ in range(100):
    address = f'127.{random.randint(64, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}'
    try:
      return server_class((address, port), handler)
    except OSError:
      continue
  raise OSError(f'no free loopback address for port {port}')


def skip_unless_root() -> None:
  """The stand-in listens on port 443 and its clients get their own mount namespace: both
  need root, which CI has. Elsewhere its tests are skipped, saying why."""
  if os.geteuid() != 0:
    import pytest  # pylint: disable=g-import-not-at-top
    pytest.skip('the Cloud Storage stand-in needs root (port 443, a mount namespace)')


class StandIn:
  """The storage (HTTPS, port 443) and metadata (HTTP, port 80) servers on one loopback
  address, the CA and /etc/hosts replacement that lead clients to them, and their store."""

  def __init__(self, folder: str, store: Optional[Store] = None):
    self.store = store or Store()
    handler = type('Handler', (StorageHandler,), {'store': self.store})
    self._storage = _bind(_TlsServer, handler, 443)
    self.address = self._storage.server_address[0]
    self.ca_file, cert, key = _certificates(folder, self.address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    self._storage.context = context
    metadata = type('Metadata', (_MetadataHandler,),
                    {'answers': _metadata_answers(self.address)})
    self._metadata = http.server.ThreadingHTTPServer((self.address, 80), metadata)
    self._metadata.daemon_threads = True
    self.hosts_file = os.path.join(folder, 'hosts')
    with open('/etc/hosts') as f:
      original = f.read()
    with open(self.hosts_file, 'w') as f:
      f.write(original.rstrip('\n') + f'\n{self.address} {" ".join(HOST_NAMES)}\n')
    for server in (self._storage, self._metadata):
      threading.Thread(target=server.serve_forever, daemon=True).start()

  def env(self, base: Optional[dict] = None) -> dict:
    """`base` (os.environ) with what a process needs to use the stand-in as Google Cloud."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ('GOOGLE_APPLICATION_CREDENTIALS', 'STORAGE_EMULATOR_HOST',
                        'GOOGLE_AUTH_TOKEN_FOR_TESTING', 'NO_GCE_CHECK')}
    metadata = f'{self.address}:80'
    return dict(env, CURL_CA_BUNDLE=self.ca_file, REQUESTS_CA_BUNDLE=self.ca_file,
                GCE_METADATA_HOST=metadata, GCE_METADATA_IP=metadata)

  def popen(self, args, **kwargs):
    """A forked child (tests/forked.py) that sees the stand-in as Google Cloud."""
    from tests import forked  # pylint: disable=g-import-not-at-top
    return forked.Popen(args, env=self.env(kwargs.pop('env', None)), hosts=self.hosts_file,
                        **kwargs)

  def run(self, args, **kwargs):
    """forked.run for a child that sees the stand-in as Google Cloud."""
    from tests import forked  # pylint: disable=g-import-not-at-top
    return forked.run(args, env=self.env(kwargs.pop('env', None)), hosts=self.hosts_file,
                      **kwargs)

  def client(self):
    """A google-cloud-storage client of this process for the stand-in, which it reaches
    by address (this process keeps the machine's /etc/hosts). python-requests must trust
    the stand-in's CA: REQUESTS_CA_BUNDLE=ca_file (the `gcs` fixture sets it)."""
    # pylint: disable=g-import-not-at-top
    from google.cloud import storage
    from google.oauth2.credentials import Credentials
    return storage.Client(project=PROJECT, credentials=Credentials(TOKEN),
                          client_options={'api_endpoint': f'https://{self.address}'})

  def close(self):
    for server in (self._storage, self._metadata):
      server.shutdown()
      server.server_close()

