"""Reading a child process's output line by line with deadlines, for tests that act on it."""

import queue
import re
import threading
import time


class Lines:
  """Collects `stream`'s lines on a thread; the test waits for the ones it needs."""

  def __init__(self, stream):
    self.lines = []
    self._queue = queue.Queue()
    threading.Thread(target=self._read, args=(stream,), daemon=True).start()

  def _read(self, stream):
    for line in stream:
      self._queue.put(line)
    self._queue.put(None)

  def wait_for(self, pattern, timeout):
    """Returns the first new line matching regex `pattern`; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
      try:
        line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        line = None
      if line is None:
        raise AssertionError(f'no line matching {pattern!r} within {timeout} s:\n'
                             + ''.join(self.lines[-40:]))
      self.lines.append(line)
      if re.search(pattern, line):
        return line

  def rest(self, timeout=10):
    """All output, once the stream has ended (call after the process exited)."""
    while (line := self._queue.get(timeout=timeout)) is not None:
      self.lines.append(line)
    return ''.join(self.lines)
