"""A write that fails (disk full, permission lost, bucket gone) stops the run with one line.

What makes stopping safe: every file a resume reads is swapped in whole. CheckpointManager
writes a checkpoint's data and index files first and the `checkpoint` state file, which
lists the checkpoints a resume may pick, last and atomically (write then rename;
tf.train.CheckpointManager.save's write callback). A save that fails part way leaves files
that no state file names, so a resume still starts from the newest complete checkpoint.
`best/` works the same way, and the export and the JSON files are written beside their
place and renamed.
"""

import contextlib
from typing import Optional

import tensorflow as tf

from trainer.core import distribute
from trainer.core.errors import UserError, first_line


def _newest(step: Optional[int]) -> str:
  if step is None:
    return 'no checkpoint was complete yet'
  return f'the newest complete checkpoint (step {step}) is intact and a rerun resumes from it'


@contextlib.contextmanager
def stop_on_failure(what: str, folder: str, newest_step: Optional[int]):
  """Turns a file system error inside the block into a UserError naming `what` and `folder`.

  A collective's failure (a lost peer, which saving can involve) is left as it is: that is
  not a write failure, and the launchers retry it.
  """
  try:
    yield
  except distribute.PEER_FAILURES:
    raise
  except (tf.errors.OpError, OSError) as e:
    raise UserError(f'could not write {what} in {folder} ({first_line(e, 200)}); '
                    f'{_newest(newest_step)}; free space or restore write access, then rerun'
                    ) from None
