"""Test processes forked from a Python that has imported TensorFlow already.

On the 2-core machines CI runs on, importing TensorFlow takes about 7 s of CPU before a
`python -m trainer.main` does anything, and the suite starts about a hundred such processes.
Here one warm process (the zygote: `python -m tests.forked`) imports TensorFlow, Keras,
TFDS and the trainer's library once, and forks a child per command. The child then runs the
command's module as `python -m` would (its own argv, environment, working folder, standard
streams and session), and ends as an interpreter does, exit handlers and all. The zygote
never runs a TensorFlow op, so every child starts TensorFlow's runtime afresh (devices,
logical CPUs, threads), as a new process would.

A test sees a process: `Popen` and `run` take the arguments of subprocess's (`[python, '-m',
module, *args]` or `[python, script, *args]`), and the child has a pid to signal, pipes to
read and an exit code. What must start from nothing uses subprocess itself: a check of what
gets imported, a `-c` program, and the output format of TensorFlow's own lines
(tests/test_logs.py): TensorFlow, imported here before the entry point sets up its logging,
queues a device probe for absl's start-up, which then runs before the first line of `main`,
so the probe's C++ line is not rewritten by trainer/report/logs.py.
"""

import array
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

_HEADER = 'request '


# ---- the zygote -------------------------------------------------------------------------

def _preload():
  # As the entry points do before TensorFlow is imported (trainer/main.py).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  # pylint: disable=g-import-not-at-top
  # In the entry points absl's handler is on the root logger by the time TensorFlow is
  # imported, so TensorFlow's Python logger adds no handler of its own: the same here.
  import logging
  import absl.logging
  absl.logging.use_absl_handler()
  # The library, not the entry points (main, evaluate, predict): those define their flags
  # as they are imported, which the child does.
  for module in ('numpy', 'PIL.Image', 'tensorflow', 'keras', 'tensorflow_datasets',
                 'trainer.jobs.evaluation', 'trainer.jobs.train'):
    importlib.import_module(module)
  logging.getLogger().removeHandler(absl.logging.get_absl_handler())  # absl's app.run adds it.


def _receive(connection):
  """One request: (fds for stdin, stdout, stderr; the command as a dict); None at the end."""
  fds = array.array('i')
  data, ancillary, _, _ = connection.recvmsg(1 << 16, socket.CMSG_SPACE(3 * fds.itemsize))
  if not data:
    return None
  for level, kind, payload in ancillary:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
      fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
  return list(fds), json.loads(data.decode())


def _serve(connection):
  """Answers requests until the client goes; returns (fds, command) in a forked child."""
  wakeup_read, wakeup_write = os.pipe()
  os.set_blocking(wakeup_write, False)
  signal.set_wakeup_fd(wakeup_write)
  signal.signal(signal.SIGCHLD, lambda *_: None)  # Only to wake select() when one ends.
  children = set()
  while True:
    ready, _, _ = select.select([connection, wakeup_read], [], [])
    if wakeup_read in ready:
      os.read(wakeup_read, 4096)
    while children:  # Report every child that ended.
      pid, status = os.waitpid(-1, os.WNOHANG)
      if not pid:
        break
      children.discard(pid)
      connection.sendall(f'exit {pid} {os.waitstatus_to_exitcode(status)}\n'.encode())
    if connection in ready:
      request = _receive(connection)
      if request is None:
        return None
      pid = os.fork()
      if pid == 0:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE):
          signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(wakeup_read)
        os.close(wakeup_write)
        return request
      children.add(pid)
      for fd in request[0]:
        os.close(fd)
      connection.sendall(f'pid {pid}\n'.encode())


def _become(fds, command):
  """Turns this forked child into the process `command` describes."""
  if command['new_session']:
    os.setsid()
  if command['hosts']:
    from tests import namespaces  # pylint: disable=g-import-not-at-top
    namespaces.use_hosts(command['hosts'])
  for target, fd in enumerate(fds):
    os.dup2(fd, target)
  for fd in fds:
    if fd > 2:
      os.close(fd)
  os.chdir(command['cwd'])
  os.environ.clear()
  os.environ.update(command['env'])
  argv = command['argv']
  if argv[0] == '-m':
    sys.argv = [argv[1], *argv[2:]]
    sys.path[0] = command['cwd']  # What `python -m` puts first.
  else:
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
  extra = [p for p in command['env'].get('PYTHONPATH', '').split(os.pathsep) if p]
  sys.path[1:1] = [p for p in extra if p not in sys.path]


def _main():
  _preload()
  connection = socket.socket(fileno=int(sys.argv[1]))
  request = _serve(connection)
  if request is None:
    return
  connection.close()
  fds, command = request
  _become(fds, command)
  import runpy  # pylint: disable=g-import-not-at-top
  if command['argv'][0] == '-m':
    runpy.run_module(command['argv'][1], run_name='__main__', alter_sys=True)
  else:
    runpy.run_path(command['argv'][0], run_name='__main__')
  # From here the interpreter ends as any would: exit handlers, then the exit code (0, or
  # that of a SystemExit, or 1 and a traceback for an exception).


# ---- the client --------------------------------------------------------------------------

class _Zygote:
  """The one warm process of this test session, started on first use."""

  def __init__(self):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    self._process = subprocess.Popen(
        [sys.executable, '-m', 'tests.forked', str(theirs.fileno())], pass_fds=[theirs.fileno()],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    theirs.close()
    self._socket = ours
    self._lock = threading.Lock()
    self._answered = threading.Condition(self._lock)
    self._waiting = []  # Children asked for, in order, until the zygote names their pids.
    self._children = {}  # pid -> Popen, until it ends.
    self._gone = False
    self._reader = threading.Thread(target=self._read, name='zygote-reader', daemon=True)
    self._reader.start()

  def _read(self):
    buffered = b''
    while True:
      chunk = self._socket.recv(4096)
      if not chunk:
        with self._lock:
          self._gone = True
          self._answered.notify_all()
          for child in self._children.values():
            child._ended(-signal.SIGKILL)  # pylint: disable=protected-access
        return
      buffered += chunk
      *lines, buffered = buffered.split(b'\n')
      for line in lines:
        kind, pid, *rest = line.decode().split()
        with self._lock:
          if kind == 'pid':  # Registered here, before any news of its end can come.
            child = self._waiting.pop(0)
            child.pid = int(pid)
            self._children[child.pid] = child
            self._answered.notify_all()
          else:
            self._children.pop(int(pid))._ended(int(rest[0]))  # pylint: disable=protected-access

  def fork(self, child, fds, command) -> None:
    """Has the zygote fork `child`, which gets its pid once the zygote names it."""
    with self._lock:
      if self._gone:
        raise RuntimeError('the test zygote (tests/forked.py) is gone')
      self._waiting.append(child)
      self._socket.sendmsg([json.dumps(command).encode()],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))])
      while child.pid is None and not self._gone:
        self._answered.wait()
      if child.pid is None:
        raise RuntimeError('the test zygote (tests/forked.py) is gone')

  def close(self):
    self._socket.shutdown(socket.SHUT_WR)  # The zygote reads its end and leaves.
    self._process.wait()
    self._reader.join()
    self._socket.close()


_zygote = None


def close():
  global _zygote
  if _zygote is not None:
    _zygote.close()
    _zygote = None


def _command(args):
  """The part of `[python, ...]` after the interpreter, if the zygote can run it."""
  if len(args) >= 3 and args[0] == sys.executable and args[1] == '-m':
    return ['-m', *args[2:]]
  if len(args) >= 2 and args[0] == sys.executable and not args[1].startswith('-'):
    return list(args[1:])
  raise ValueError(f'not a `python -m module` or `python script` command: {args}')


class Popen:
  """subprocess.Popen's ways for a forked child: pid, pipes, poll, wait, signals.

  `hosts`: a file the child reads as /etc/hosts, in its own mount namespace
  (tests/namespaces.py).
  """

  def __init__(self, args, cwd=None, env=None, stdin=None, stdout=None, stderr=None,
               text=False, start_new_session=False, hosts=None):
    global _zygote
    if _zygote is None:
      _zygote = _Zygote()
    self.args = args
    self.pid = None
    self.returncode = None
    self._done = threading.Event()
    ours, theirs = {}, []
    for name, spec, fd in (('stdin', stdin, 0), ('stdout', stdout, 1), ('stderr', stderr, 2)):
      if spec == subprocess.PIPE:
        read, write = os.pipe()
        ours[name] = (write, 'w') if fd == 0 else (read, 'r')
        theirs.append(read if fd == 0 else write)
      elif spec == subprocess.DEVNULL:
        theirs.append(os.open(os.devnull, os.O_RDWR))
      elif spec == subprocess.STDOUT:
        theirs.append(os.dup(theirs[1]))
      else:  # Inherited, as subprocess does with None.
        theirs.append(os.dup(fd))
    command = {'argv': _command(args), 'cwd': os.path.abspath(cwd or os.getcwd()),
               'env': dict(os.environ if env is None else env),
               'new_session': start_new_session, 'hosts': hosts}
    try:
      _zygote.fork(self, theirs, command)
    finally:
      for fd in theirs:
        os.close(fd)
    for name in ('stdin', 'stdout', 'stderr'):
      fd, mode = ours.get(name, (None, None))
      setattr(self, name, None if fd is None else
              os.fdopen(fd, mode, **({'encoding': 'utf-8', 'errors': 'replace'} if text else
                                    {'buffering': 0 if mode == 'w' else -1})))

  def _ended(self, code):
    self.returncode = code
    self._done.set()

  def poll(self):
    return self.returncode

  def wait(self, timeout=None):
    if not self._done.wait(timeout):
      raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def send_signal(self, number):
    if self.returncode is None:
      # The zygote reaps the child, so it can be gone before its exit code reaches us;
      # subprocess.Popen ignores that case the same way.
      try:
        os.kill(self.pid, number)
      except ProcessLookupError:
        pass

  def terminate(self):
    self.send_signal(signal.SIGTERM)

  def kill(self):
    self.send_signal(signal.SIGKILL)

  def communicate(self, timeout=None):
    """Reads stdout and stderr to their ends and waits; (stdout, stderr)."""
    results = {}

    def drain(name):
      stream = getattr(self, name)
      results[name] = stream.read() if stream else None

    readers = [threading.Thread(target=drain, args=(n,), daemon=True)
               for n in ('stdout', 'stderr')]
    for reader in readers:
      reader.start()
    for reader in readers:
      reader.join(timeout)
      if reader.is_alive():
        raise subprocess.TimeoutExpired(self.args, timeout)
    self.wait(timeout)
    return results['stdout'], results['stderr']


def run(args, cwd=None, env=None, capture_output=False, text=False, timeout=None,
        stdin=subprocess.DEVNULL, hosts=None):
  """subprocess.run for a forked child; the child is killed if it outlives `timeout`."""
  pipe = subprocess.PIPE if capture_output else None
  process = Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=pipe, stderr=pipe, text=text,
                  hosts=hosts)
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise
  return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


if __name__ == '__main__':
  _main()
