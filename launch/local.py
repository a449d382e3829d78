"""Runs a multi-worker job on this machine: one trainer process per worker, on localhost ports.

  python -m launch.local --num_workers=2 -- --model_dir=/tmp/run [trainer flags...]

Each worker gets its own TF_CONFIG (launch/tf_config.py) and `--strategy=multi_worker`,
and its output is printed line by line behind a `[worker N]` prefix. When a worker fails,
the others get --grace_seconds to stop on their own (TensorFlow notices a dead peer
within about 10 s and they exit with their own message), then they are killed. With
--max_restarts=N, a set that ended because a worker died (a signal), lost a peer (69) or
was preempted (75) is replaced by a fresh set on new ports, which resumes from the last
checkpoint, up to N times; bad input (exit 2 from any worker) is never retried. Otherwise
the launcher exits with the first failure's code (128+N for a worker killed by signal N).
SIGINT or SIGTERM to the launcher is passed to the workers as SIGTERM, so they save a
checkpoint and stop together; a second one kills them.
"""

import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from launch import cli
from launch import tf_config
from trainer.core.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, EXIT_USER_ERROR
from trainer.report import logs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB_ID_VARIABLE = 'TRAINER_JOB_ID'  # trainer/run_folder/run_lock.py's (which imports TensorFlow).
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_ports(count: int):
  """Ports that are free now; all are held open together so that none is handed out twice."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('localhost', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def worker_env(hosts, index: int) -> dict:
  """This process's environment plus the TF_CONFIG of the worker at `index` of `hosts`."""
  # The relay prefixes every line with its worker: the trainer need not say it again.
  return dict(os.environ, TF_CONFIG=json.dumps(tf_config.tf_config(hosts, index)),
              **{logs.PREFIXED_ENV: '1'})


def _die_with_launcher():
  # The workers run in their own session (so a terminal's Ctrl-C reaches only the
  # launcher, which turns it into a checkpoint-and-stop); this makes the kernel kill them
  # if the launcher itself is killed, instead of leaving them training unattended.
  if sys.platform.startswith('linux'):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def exit_status(returncode: int) -> int:
  """A shell's view of a child's end: 128+N for "killed by signal N"."""
  return 128 - returncode if returncode < 0 else returncode


def restartable(exits) -> bool:
  """Whether a fresh set of workers can do better: none of them reported bad input (a
  rerun would fail the same way), and the first to fail died or lost its peers."""
  codes = [code for _, code in exits]
  failures = [code for code in codes if code != 0]
  if not failures or EXIT_USER_ERROR in codes:
    return False
  return failures[0] < 0 or failures[0] in (EXIT_PEER_LOST, EXIT_PREEMPTED)


def _describe(returncode: int) -> str:
  if returncode < 0:
    return f'was killed by {signal.Signals(-returncode).name}'
  return f'exited with code {returncode}'


class Launcher:
  """Starts the workers, relays their output, and stops them all when one fails."""

  def __init__(self, num_workers: int, trainer_args, grace_seconds: float, out=None,
               max_restarts: int = 0):
    self._num_workers = num_workers
    self._max_restarts = max_restarts
    # One id for every set of workers this launcher starts: a restarted set may take over
    # the run folder's lease (gs://) that its dead predecessor held (trainer/run_folder/run_lock.py).
    self._job_id = f'launch.local-{uuid.uuid4().hex}'
    self._trainer_args = list(trainer_args)
    self._grace_seconds = grace_seconds
    self._out = out or sys.stdout
    self._lock = threading.RLock()  # Re-entrant: the signal handler prints too.
    self._processes = []
    self._relays = []
    self._exits = queue.Queue()
    self._stopping = False

  def _print(self, prefix: str, line: str) -> None:
    with self._lock:
      self._out.write(f'[{prefix}] {line.rstrip()}\n')
      self._out.flush()

  def _start(self) -> None:
    self._processes, self._relays, self._exits = [], [], queue.Queue()
    hosts = [f'localhost:{port}' for port in free_ports(self._num_workers)]
    # Not the working directory: relative paths in the flags stay the user's.
    path = os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p)
    command = [sys.executable, '-m', 'trainer.main', *self._trainer_args,
               '--strategy=multi_worker']  # Last, so that no preset overrides it.
    for index in range(self._num_workers):
      process = subprocess.Popen(
          command, env=dict(worker_env(hosts, index), PYTHONPATH=path,
                            **{JOB_ID_VARIABLE: self._job_id}),
          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          text=True, errors='replace', start_new_session=True, preexec_fn=_die_with_launcher)
      self._processes.append(process)
      self._print('launch', f'worker {index}: pid {process.pid}, {hosts[index]}')
    for index, process in enumerate(self._processes):
      self._relays.append(threading.Thread(target=self._relay, args=(index, process),
                                           daemon=True))
      self._relays[-1].start()
      threading.Thread(target=lambda i=index, p=process: self._exits.put((i, p.wait())),
                       daemon=True).start()

  def _relay(self, index, process) -> None:
    for line in process.stdout:
      self._print(f'worker {index}', line)

  def _running(self):
    return [p for p in self._processes if p.poll() is None]

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    if self._stopping:
      self._print('launch', f'{signal.Signals(signum).name} again: killing the workers')
      for process in self._running():
        process.kill()
      return
    self._stopping = True
    self._print('launch', f'{signal.Signals(signum).name}: asking the workers to save a '
                'checkpoint and stop (send it again to kill them)')
    for process in self._running():
      process.send_signal(signal.SIGTERM)

  def run(self) -> int:
    """Runs the job to its end; returns 0, or the exit status of the first failed worker."""
    previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
      for restart in range(self._max_restarts + 1):
        if restart:
          self._print('launch', f'restart {restart} of {self._max_restarts}: a fresh set of '
                      'workers on new ports, resuming from the last checkpoint')
        self._start()
        status, exits = self._wait()
        if self._stopping or not restartable(exits):
          break
      return status
    finally:
      for process in self._processes:
        if process.poll() is None:
          process.kill()
          process.wait()
      for s, handler in previous.items():
        signal.signal(s, handler)

  def _wait(self):
    """Waits for the current set to end; returns (exit status, [(worker, code)] in order)."""
    exited = {}
    order = []
    first_failure = None
    kill_at = None
    while len(exited) < self._num_workers:
      try:
        timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
        index, returncode = self._exits.get(timeout=timeout)
      except queue.Empty:
        for index, process in enumerate(self._processes):
          if process.poll() is None:
            self._print('launch', f'worker {index} still running {self._grace_seconds:g} s '
                        'after the failure: killing it')
            process.kill()
        kill_at = None  # Each kill is reported through self._exits like any exit.
        continue
      exited[index] = returncode
      order.append((index, returncode))
      if returncode == 0 or first_failure is not None:
        continue
      first_failure = returncode
      # After our own SIGTERM the others are saving a checkpoint together: no deadline.
      if len(exited) < self._num_workers and not self._stopping:
        self._print('launch', f'worker {index} {_describe(returncode)}; the others get '
                    f'{self._grace_seconds:g} s to stop on their own, then are killed')
        kill_at = time.monotonic() + self._grace_seconds
    for relay in self._relays:  # The workers' last lines before our summary.
      relay.join(timeout=10)
    for index in sorted(exited):
      self._print('launch', f'worker {index} {_describe(exited[index])}')
    return (0 if first_failure is None else exit_status(first_failure)), order


def parse_args(argv):
  parser = cli.parser('python -m launch.local', __doc__, usage='%(prog)s [--num_workers=N] '
                      '[--max_restarts=N] [--grace_seconds=S] -- TRAINER_FLAGS...')
  parser.add_argument('--num_workers', type=int, default=2, help='worker processes (default 2)')
  parser.add_argument('--max_restarts', type=int, default=0,
                      help='times to replace the whole set of workers after one died, lost '
                      'a peer (69) or was preempted (75); never after bad input (2)')
  parser.add_argument('--grace_seconds', type=float, default=30.0,
                      help='after a worker fails, how long the others may take to stop on '
                      'their own before they are killed (default 30)')
  args = cli.parse(parser, argv)
  if args.num_workers < 1:
    parser.error(f'--num_workers must be at least 1, got {args.num_workers}')
  if args.max_restarts < 0:
    parser.error(f'--max_restarts must not be negative, got {args.max_restarts}')
  if args.grace_seconds < 0:
    parser.error(f'--grace_seconds must not be negative, got {args.grace_seconds:g}')
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  return Launcher(args.num_workers, args.trainer_args, args.grace_seconds,
                  max_restarts=args.max_restarts).run()


if __name__ == '__main__':
  sys.exit(main())
