"""`python -m tests.benchmark_smoke MODULE [FLAGS...]`: a benchmark script's run in which each
measurement process it starts is forked from this one instead of started afresh.

The benchmarks run every measurement as a `python -m ...` process of its own, so that one's
memory and threads never mix with another's. Each such process pays a TensorFlow import
(about 7 s of CPU on CI's machines), a dozen times over in the smoke tests. This process is
forked from tests/forked.py's warm Python and runs no TensorFlow op, so a child forked from
it starts TensorFlow's runtime afresh, as a new process would. The benchmark's own code
builds each command; here it is checked to be `python -m MODULE ...` and run as that.
"""

import importlib
import os
import runpy
import subprocess
import sys
import threading
import traceback

from absl import app
from absl import flags


def _forget_flags():
  """Leaves absl's own flags only, unparsed: those of the modules run before are gone, and the
  module about to run defines its own, as in a new process."""
  for module, defined in list(flags.FLAGS.flags_by_module_dict().items()):
    if not module.startswith('absl.'):
      for flag in list(defined):
        if flag.name in flags.FLAGS:
          delattr(flags.FLAGS, flag.name)
  flags.FLAGS.unparse_flags()


def _run_module(module, args, cwd, env):
  """What `python -m module *args` does, in this (forked) process; never returns."""
  os.chdir(cwd or os.getcwd())
  if env is not None:
    os.environ.clear()
    os.environ.update(env)
  sys.path[0] = os.getcwd()
  sys.argv = [module, *args]
  _forget_flags()
  code = 0
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def run(command, cwd=None, env=None, capture_output=False, text=False, **_):
  """subprocess.run for `[python, '-m', module, ...]`, forked from this process."""
  if command[:2] != [sys.executable, '-m']:
    raise ValueError(f'not a python -m command: {command}')
  pipes = [os.pipe() for _ in range(2)] if capture_output else []
  sys.stdout.flush()  # Nothing buffered here may be written twice.
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    for target, (_, write) in zip((1, 2), pipes):
      os.dup2(write, target)
    _run_module(command[2], command[3:], cwd, env)
  outputs = []
  for read, write in pipes:
    os.close(write)
  readers = []
  for read, _ in pipes:
    outputs.append(b'')

    def drain(fd=read, index=len(outputs) - 1):
      with os.fdopen(fd, 'rb') as stream:
        outputs[index] = stream.read()

    readers.append(threading.Thread(target=drain, daemon=True))
    readers[-1].start()
  for reader in readers:
    reader.join()
  _, status = os.waitpid(pid, 0)
  if text:
    outputs = [o.decode('utf-8', 'replace') for o in outputs]
  stdout, stderr = outputs or (None, None)
  return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status), stdout, stderr)


class _Subprocess:
  """The `subprocess` the benchmark module sees: its own, but for `run`."""

  def __getattr__(self, name):
    return getattr(subprocess, name)

  run = staticmethod(run)


def main():
  module_name, *args = sys.argv[1:]
  module = importlib.import_module(module_name)
  module.subprocess = _Subprocess()
  app.run(module.main, argv=[module_name, *args])


if __name__ == '__main__':
  main()
