"""The one exception type that means "the user asked for something we cannot do".

`trainer.main` turns it into a single line on stderr and a non-zero exit, so every
check that a user can trip raises this instead of letting a library traceback out.
"""

import re

# Exit codes a scheduler or a wrapper script can rely on.
EXIT_USER_ERROR = 2
# trainer.predict: some inputs could not be classified (each has its error line); the others
# were. Not 1, which a Python crash exits with.
EXIT_SOME_FAILED = 3
# sysexits.h EX_TEMPFAIL, "temporary failure, retry later": what a scheduler should do after
# a preemption, since the rerun continues from the checkpoint saved on the way out.
EXIT_PREEMPTED = 75
# sysexits.h EX_UNAVAILABLE: another worker of a multi-worker run is gone, or never came
# (--startup_timeout). Only a rerun of the whole job can recover (it resumes from the last
# checkpoint), so schedulers retry it.
EXIT_PEER_LOST = 69


def op_reason(error: Exception, limit: int = 200) -> str:
  """The first line of a TensorFlow op error without the op's internal names around it."""
  text = getattr(error, 'message', None) or str(error)
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$', '', text.strip(), flags=re.M)
  return text.splitlines()[0][:limit] if text else type(error).__name__


def first_line(error: Exception, limit: int = 300) -> str:
  """The first line of an exception's message (library errors run to many lines)."""
  text = str(error).strip()
  return text.splitlines()[0][:limit] if text else type(error).__name__


class UserError(Exception):
  """Bad flags, paths, data or environment: the message says what to do."""


class Preempted(Exception):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`."""

  def __init__(self, step: int):
    super().__init__(f'preempted: checkpoint saved at step {step}; rerun the same command '
                     'to continue')
    self.step = step


class StartupEnded(UserError):
  """A multi-worker start-up that ended before training: a signal, or workers that never
  answered. `exit_code` tells a scheduler which (trainer/core/startup.py)."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code
