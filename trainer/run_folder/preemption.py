"""Preemption: SIGTERM (what cloud schedulers send) or Ctrl-C becomes "save a checkpoint at the
end of this loop, then exit restartably" (errors.Preempted, exit 75).
"""

import contextlib
import signal
import threading

from absl import logging
import tensorflow as tf
# Private, and the only way in: see _without_google_cloud_detection.
from tensorflow.python.distribute.failure_handling import failure_handling_util

from trainer.core import distribute
from trainer.core.errors import Preempted
from trainer.run_folder.checkpointing import Checkpoints


class PreemptionWatcher:
  """Turns SIGTERM/SIGINT into "save at the end of this loop and stop".

  Every strategy catches the signals here. Single-process ones (default, one_device,
  mirrored, and TPUStrategy, whose one client process drives all TPU hosts) act on them
  themselves. Multi-worker runs hand them to tf.distribute's PreemptionCheckpointHandler,
  which agrees on one step across workers so that all of them save together.
  """

  def __init__(self, strategy, checkpoints: Checkpoints):
    self._requested = threading.Event()
    self._handler = None
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._on_signal)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        distribute.num_workers(strategy) > 1:
      def exit_fn():
        raise Preempted(-1)  # The handler saved already; the step is filled in by the caller.
      # The handler polls termination_watcher_fn on a thread of its own (every second) and,
      # once it is true, agrees with the other workers on the step to save at. No grace
      # period: save at that step and stop, as on SIGTERM anywhere else.
      config = tf.distribute.experimental.TerminationConfig(
          termination_watcher_fn=self._requested.is_set, exit_fn=exit_fn, grace_period=0)
      with _without_google_cloud_detection():
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, checkpoints.checkpoint,
            checkpoint_dir=checkpoints.preemption_directory, termination_config=config)

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


@contextlib.contextmanager
def _without_google_cloud_detection():
  """PreemptionCheckpointHandler built as off Google Cloud, where it honours our config.

  Where the GCE metadata server answers (every Compute Engine, GKE and Vertex AI machine),
  TensorFlow 2.21's handler (failure_handling.py: detect_platform,
  _complete_config_for_environment) ignores SIGTERM: on a GPU VM it polls the metadata
  server's instance/maintenance-event instead (the host-maintenance notice, not a spot
  preemption, whose guest shutdown gives 30 s, nor a pod's deletion), with an hour's grace
  period; on a CPU VM it logs "does not support" and does nothing at all. Either way a
  preempted job would lose every step since its last periodic checkpoint. Off Google Cloud
  the handler runs its general path, which takes the termination_watcher_fn, exit_fn and
  grace_period it is given; TensorFlow's own variants of that path differ only in a metrics
  label. No TerminationConfig alone can change this: the CPU VM branch skips it.
  """
  detect = failure_handling_util.detect_platform
  platforms = failure_handling_util.PlatformDevice

  def off_google_cloud():
    if tf.config.list_logical_devices('GPU'):
      return platforms.INTERNAL_GPU
    return platforms.INTERNAL_CPU

  failure_handling_util.detect_platform = off_google_cloud
  try:
    yield
  finally:
    failure_handling_util.detect_platform = detect
