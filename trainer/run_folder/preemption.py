"""Preemption: SIGTERM (what cloud schedulers send) or Ctrl-C becomes "save a checkpoint at the
end of this loop, then exit restartably" (errors.Preempted, exit 75).
"""

import signal
import threading

from absl import logging
import tensorflow as tf

from trainer.core import distribute
from trainer.core.errors import Preempted
from trainer.run_folder.checkpointing import Checkpoints


class PreemptionWatcher:
  """Turns SIGTERM/SIGINT into "save at the end of this loop and stop".

  Single-process strategies (default, one_device, mirrored, and TPUStrategy, whose one
  client process drives all TPU hosts) watch the signals themselves. Multi-worker runs use
  tf.distribute's PreemptionCheckpointHandler, which agrees on one step across workers so
  that all of them save together.
  """

  def __init__(self, strategy, checkpoints: Checkpoints):
    self._requested = threading.Event()
    self._handler = None
    self._previous = {}
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        distribute.num_workers(strategy) > 1:
      def exit_fn():
        raise Preempted(-1)  # The handler saved already; the step is filled in by the caller.
      self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
          strategy.cluster_resolver, checkpoints.checkpoint,
          checkpoint_dir=checkpoints.preemption_directory,
          termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=exit_fn))
    elif threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    if self._requested.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C means "now", not "after this loop".
    logging.warning('received %s: saving a checkpoint after the current loop, then exiting',
                    signal.Signals(signum).name)
    self._requested.set()

  def check(self, step: int, checkpoints: Checkpoints) -> None:
    """Raises Preempted after saving, if a termination signal arrived."""
    if self._handler is not None:
      try:
        self._handler.save_checkpoint_if_preempted(checkpoint_number=step)
      except Preempted:
        raise Preempted(step) from None
      return
    if self._requested.is_set():
      checkpoints.save(step)
      raise Preempted(step)

  def close(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
