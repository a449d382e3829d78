"""The start of a multi-worker job: wait, audibly and interruptibly, until every worker of
TF_CONFIG's cluster answers, before TensorFlow's own wait.

Why not let TensorFlow wait: MultiWorkerMirroredStrategy() blocks in C++ until every task has
registered with the coordination service (up to an hour by default: the agent's
kDefaultClusterRegisterTimeout), and it holds Python's GIL all that time, so no Python thread
and no Python signal handler runs until it returns: no word of who is missing, and Ctrl-C
does nothing. During that call TensorFlow's C++ code also takes SIGTERM over (sigaction then
shows a handler Python did not install), so SIGTERM does nothing either. Only SIGKILL ends
such a worker.

Here a worker is "seen" once a TCP connection to its TF_CONFIG address succeeds. While it
waits, each worker listens on its own port, so that workers which are all still waiting here
see each other; it lets the port go just before TensorFlow's server takes it over, and
TensorFlow's start-up then finds every peer up or starting.
"""

import os
import signal
import socket
import threading
import time
from typing import List, NamedTuple, Optional

from absl import logging

from trainer.core.errors import EXIT_PEER_LOST, StartupEnded, UserError

# How often a waiting worker says who it still waits for; tests shorten it.
REPORT_SECONDS_ENV = 'TRAINER_STARTUP_REPORT_SECONDS'
_REPORT_SECONDS = 30.0
_PROBE_EVERY_S = 1.0
# Short: a peer whose host drops packets must not hold up the probes of the others.
_CONNECT_TIMEOUT_S = 1.0
# The jobs whose tasks MultiWorkerMirroredStrategy waits for (an evaluator is not one).
_COORDINATED_JOBS = ('chief', 'worker')


class Peer(NamedTuple):
  label: str  # 'chief' or 'worker N', as the logs name workers.
  address: str  # host:port, as TF_CONFIG gives it.


def _label(job: str, index: int) -> str:
  return 'chief' if job == 'chief' else f'{job} {index}'


def _host_port(address: str, label: str):
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit():
    raise UserError(f'TF_CONFIG gives {label} the address {address!r}, which is not HOST:PORT')
  return host.strip('[]'), int(port)  # '[::1]:2222' is an IPv6 host.


def peers(tf_config: dict) -> List[Peer]:
  """The other workers this one waits for at start-up, the chief first; none if this task
  is not one of them."""
  task = tf_config['task']
  cluster = tf_config['cluster']
  if task['type'] not in _COORDINATED_JOBS:
    return []
  found = []
  for job in _COORDINATED_JOBS:
    for index, address in enumerate(cluster.get(job) or []):
      if (job, index) != (task['type'], task['index']):
        found.append(Peer(_label(job, index), address))
  return found


def _names(missing: List[Peer]) -> str:
  return ', '.join(f'{p.label} ({p.address})' for p in missing)


def unanswered(peer: Peer, timeout_s: float = _CONNECT_TIMEOUT_S) -> Optional[str]:
  """None once a TCP connection to `peer` succeeds; else why not ('Connection refused')."""
  try:
    socket.create_connection(_host_port(peer.address, peer.label), timeout=timeout_s).close()
    return None
  except OSError as e:  # Refused, unreachable, a name that does not resolve (yet), a timeout.
    return e.strerror or type(e).__name__


def listen(address: str, label: str) -> socket.socket:
  """Listens on this worker's own TF_CONFIG port, so that the other workers see it; raises
  UserError where another program holds the port."""
  _, port = _host_port(address, label)
  try:
    if socket.has_dualstack_ipv6():  # As TensorFlow's server does: IPv4 and IPv6 alike.
      return socket.create_server(('', port), family=socket.AF_INET6, dualstack_ipv6=True)
    return socket.create_server(('', port))
  except OSError as e:
    raise UserError(f'cannot listen on port {port}, the port of this worker ({label}) in '
                    f'TF_CONFIG ({address}): {e.strerror}; another program holds it, or '
                    'TF_CONFIG gives this worker the wrong address') from None


def _drain(beacon: socket.socket) -> None:
  # Peers' probes that were never accepted would fill the listen queue, after which the
  # kernel drops new ones and this worker looks absent.
  while True:
    try:
      connection, _ = beacon.accept()
    except (BlockingIOError, InterruptedError):
      return
    connection.close()


def _duration(seconds: float) -> str:
  if seconds < 120:
    return f'{seconds:.0f} s'
  return f'{seconds / 60:.0f} min'


class _Wait:
  """The waiting loop's state, and the signal that ends it."""

  def __init__(self, missing: List[Peer]):
    self.missing = missing
    self.signum = None

  def on_signal(self, signum, frame):  # pylint: disable=unused-argument
    # Noted, not raised: raised here, it could land inside a logging call, which would
    # print it as a logging error and carry on. The loop looks at least once a second.
    self.signum = signum

  def check_signal(self) -> None:
    if self.signum is not None:
      name = signal.Signals(self.signum).name
      # 128 + signal: the shell's exit status for a process that the signal ended.
      raise StartupEnded(f'{name} while waiting for {_names(self.missing)} to start; nothing '
                         'was trained', 128 + self.signum)


def report_seconds() -> float:
  value = os.environ.get(REPORT_SECONDS_ENV)
  return float(value) if value else _REPORT_SECONDS


def wait_for_workers(tf_config: dict, timeout_s: float,
                     report_every_s: Optional[float] = None) -> None:
  """Returns once every other worker answers. Raises StartupEnded after `timeout_s` (0: no
  limit) naming the workers that never did (exit 69), and on SIGTERM or SIGINT at once."""
  missing = peers(tf_config)
  if not missing:
    return
  report_every_s = report_every_s or report_seconds()
  task = tf_config['task']
  own_label = _label(task['type'], task['index'])
  beacon = listen(tf_config['cluster'][task['type']][task['index']], own_label)
  beacon.setblocking(False)
  wait = _Wait(missing)
  previous = {}
  if threading.current_thread() is threading.main_thread():
    for signum in (signal.SIGTERM, signal.SIGINT):
      previous[signum] = signal.signal(signum, wait.on_signal)
  start = time.monotonic()
  next_report = start + report_every_s
  try:
    while True:
      _drain(beacon)
      wait.check_signal()
      wait.missing = [peer for peer in wait.missing if unanswered(peer)]
      if not wait.missing:
        return
      wait.check_signal()
      now = time.monotonic()
      if timeout_s and now - start >= timeout_s:
        raise StartupEnded(
            f'{_names(wait.missing)} never answered within {_duration(timeout_s)} '
            f'(--startup_timeout={timeout_s:g}); start every worker of TF_CONFIG\'s cluster, '
            'or fix the addresses it gives them', EXIT_PEER_LOST)
      if now >= next_report:
        limit = f'giving up after {_duration(timeout_s)}' if timeout_s else 'no time limit'
        logging.info('waiting for %s to start: %s so far, %s (--startup_timeout)',
                     _names(wait.missing), _duration(now - start), limit)
        next_report += report_every_s
      pause = _PROBE_EVERY_S if not timeout_s else min(_PROBE_EVERY_S,
                                                        start + timeout_s - now)
      time.sleep(max(pause, 0.0))
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    beacon.close()
    wait.check_signal()  # One that came as the last worker answered is not lost.
