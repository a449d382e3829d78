"""Checkpoints in the run folder: periodic saves, resume, the best model, and preemption.

Layout under --model_dir:
  checkpoints/ckpt-<step>.*   model, optimizer and the global step (batches consumed)
  checkpoints/signature.json  what the checkpoints were trained on, checked before resuming
  best/ckpt-<step>.*, best/best.json   the weights with the best eval accuracy so far

The data order is derived from --seed and the step (input_pipeline.train_dataset), so the
step alone is enough to continue the same data stream: no iterator state is saved.
"""

import json
import os
import signal
import threading
from typing import Optional

from absl import logging
import tensorflow as tf

from trainer import strategy as strategy_lib
from trainer.errors import Preempted, UserError, first_line

CHECKPOINT_DIR = 'checkpoints'
PREEMPTION_DIR = 'preemption'  # Written by PreemptionCheckpointHandler (multi-worker).
BEST_DIR = 'best'
SIGNATURE_FILE = 'signature.json'
BEST_FILE = 'best.json'
_OLDER_SIGNATURE = {'optimizer': 'adam', 'weight_averaging': False}


def _read_json(path: str) -> Optional[dict]:
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def write_json(path: str, payload: dict) -> None:
  # Write then rename: a crash mid-write must not leave a half file that looks valid.
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(json.dumps(payload, indent=2, sort_keys=True) + '\n')
  tf.io.gfile.rename(tmp, path, overwrite=True)


def _step_of(path: str) -> int:
  return int(path.rsplit('-', 1)[-1])


class _Writer:
  """A CheckpointManager that follows tf.distribute's multi-worker rule: every worker
  saves (saving can involve collectives), but only the chief's copy is kept."""

  def __init__(self, checkpoint, directory: str, strategy, max_to_keep: int):
    self.chief = strategy_lib.is_chief(strategy)
    self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep,
                                              checkpoint_name='ckpt')
    if self.chief:
      self._write_manager, self._scratch = self.manager, None
    else:
      task_id = strategy.cluster_resolver.task_id
      self._scratch = os.path.join(directory, f'.worker_{task_id}_scratch')
      self._write_manager = tf.train.CheckpointManager(checkpoint, self._scratch, max_to_keep=1)

  def save(self, step: int) -> str:
    path = self._write_manager.save(checkpoint_number=step)
    if self._scratch:
      tf.io.gfile.rmtree(self._scratch)
    return path


class Checkpoints:
  """Saving and restoring the training state of one run folder."""

  def __init__(self, model_dir: str, model, optimizer, step, strategy, keep: int,
               signature: dict):
    self.directory = os.path.join(model_dir, CHECKPOINT_DIR)
    self.preemption_directory = os.path.join(model_dir, PREEMPTION_DIR)
    self._signature = signature
    self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    self._writer = _Writer(self._checkpoint, self.directory, strategy, keep)
    self._best_dir = os.path.join(model_dir, BEST_DIR)
    self._best = _Writer(tf.train.Checkpoint(model=model), self._best_dir, strategy, 1)
    best = _read_json(os.path.join(self._best_dir, BEST_FILE))
    self.best_accuracy = best['eval_accuracy'] if best else float('-inf')
    self.last_saved_step = None
    self.restored_path = None

  def _check_signature(self):
    saved = _read_json(os.path.join(self.directory, SIGNATURE_FILE))
    if saved is not None:
      # Checkpoints from before these fields existed were all Adam without averages.
      saved = dict(_OLDER_SIGNATURE, **saved)
    if saved is not None and saved != self._signature:
      differences = ', '.join(f'{k}: checkpoint {saved.get(k)!r} vs now {v!r}'
                              for k, v in self._signature.items() if saved.get(k) != v)
      raise UserError(f'the checkpoints in {self.directory} come from another model or data '
                      f'set ({differences}); use a new --model_dir (nothing was overwritten)')

  def restore(self) -> Optional[int]:
    """Restores the newest intact checkpoint; returns its step, or None when there is none."""
    paths = list(self._writer.manager.checkpoints)
    preemption_state = tf.train.get_checkpoint_state(self.preemption_directory)
    if preemption_state:
      paths += list(preemption_state.all_model_checkpoint_paths)
    paths.sort(key=_step_of, reverse=True)  # Newest first.
    if not paths:
      return None
    self._check_signature()
    for path in paths:
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except (ValueError, AssertionError) as e:
        raise UserError(f'checkpoint {path} does not fit this model ({first_line(e)});'
                        ' use a new --model_dir (nothing was overwritten)') from None
      except Exception as e:  # pylint: disable=broad-except
        # Truncated or missing files surface as OpError, IndexError ("Read less bytes than
        # requested"), OSError...: any failure that is not a mismatch means damage.
        logging.warning('checkpoint %s is damaged (%s); trying the one before it', path,
                        first_line(e, 200))
        continue
      step = _step_of(path)
      self.last_saved_step = step
      self.restored_path = path
      return step
    raise UserError(f'no intact checkpoint in {self.directory} (all {len(paths)} are damaged); '
                    'move that folder away to start over')

  def save(self, step: int) -> None:
    if step == self.last_saved_step:
      return
    path = self._writer.save(step)
    if self._writer.chief and not tf.io.gfile.exists(
        os.path.join(self.directory, SIGNATURE_FILE)):
      write_json(os.path.join(self.directory, SIGNATURE_FILE), self._signature)
    self.last_saved_step = step
    logging.info('saved checkpoint %s', path)

  def maybe_save_best(self, step: int, eval_accuracy: float) -> bool:
    if not eval_accuracy > self.best_accuracy:
      return False
    self._best.save(step)
    if self._best.chief:
      write_json(os.path.join(self._best_dir, BEST_FILE),
                 {'step': step, 'eval_accuracy': eval_accuracy})
    self.best_accuracy = eval_accuracy
    return True


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
        strategy_lib.num_workers(strategy) > 1:
      def exit_fn():
        raise Preempted(-1)  # The handler saved already; the step is filled in by the caller.
      self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
          strategy.cluster_resolver, checkpoints._checkpoint,  # pylint: disable=protected-access
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
