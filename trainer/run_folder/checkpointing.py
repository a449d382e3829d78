"""Checkpoints in the run folder: periodic saves, resume, and the best model.

Layout under --model_dir:
  checkpoints/ckpt-<step>.*   model, optimizer and the global step (batches consumed)
  checkpoints/signature.json  what the checkpoints were trained on, checked before resuming
  best/ckpt-<step>.*, best/best.json   the weights with the best eval accuracy so far

The data order is derived from --seed and the step (trainer/data/order.py), so the
step alone is enough to continue the same data stream: no iterator state is saved.
"""

import os
import re
from typing import List, Optional, Tuple

from absl import logging
import tensorflow as tf

from trainer.core import distribute
from trainer.core.errors import UserError, first_line
from trainer.run_folder import records

CHECKPOINT_DIR = 'checkpoints'
PREEMPTION_DIR = 'preemption'  # Written by PreemptionCheckpointHandler (multi-worker).
BEST_DIR = 'best'
SIGNATURE_FILE = 'signature.json'
BEST_FILE = 'best.json'
_OLDER_SIGNATURE = {'optimizer': 'adam', 'weight_averaging': False, 'muon_conv_kernels': False}


def step_of(path: str) -> Optional[int]:
  """The step a checkpoint path ends in (`.../ckpt-1200` -> 1200); None for other paths."""
  match = re.search(r'-(\d+)$', path)
  return int(match.group(1)) if match else None


def list_checkpoints(checkpoint_dir: str) -> List[Tuple[int, str]]:
  """(step, path) of the run's complete checkpoints, periodic and preemption ones, oldest
  first.

  From the CheckpointManager's index files, which are rewritten only after a checkpoint's
  files are complete: a checkpoint still being written is not listed yet.
  """
  found = {}
  for folder in (CHECKPOINT_DIR, PREEMPTION_DIR):
    try:
      state = tf.train.get_checkpoint_state(os.path.join(checkpoint_dir, folder))
    except (tf.errors.OpError, ValueError):  # An index being replaced: the next poll reads it.
      state = None
    for path in (state.all_model_checkpoint_paths if state else []):
      step = step_of(path)
      if step is not None:
        found[step] = path
  return sorted(found.items())


def holds_optimizer(path: str) -> bool:
  """Whether the checkpoint at `path` holds the training state, not only the model (best/)."""
  return any(name.startswith('optimizer/') for name, _ in tf.train.list_variables(path))


class _Writer:
  """A CheckpointManager that follows tf.distribute's multi-worker rule: every worker
  saves (saving can involve collectives), but only the chief's copy is kept."""

  def __init__(self, checkpoint, directory: str, strategy, max_to_keep: int):
    self.chief = distribute.is_chief(strategy)
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


def restore_newest_intact(checkpoint: tf.train.Checkpoint, paths, mismatch: str,
                          label: str = 'checkpoint') -> Optional[str]:
  """Restores the first of `paths` (newest first) that is intact and returns it; None if
  every one is damaged. A checkpoint of another model raises UserError(`mismatch`, with
  {path} and {reason} filled in): an older one would not fit either."""
  for path in paths:
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:
      raise UserError(mismatch.format(path=path, reason=first_line(e))) from None
    except Exception as e:  # pylint: disable=broad-except
      # Truncated or missing files surface as OpError, IndexError ("Read less bytes than
      # requested"), OSError...: any failure that is not a mismatch means damage.
      logging.warning('%s %s is damaged (%s); trying the one before it', label, path,
                      first_line(e, 200))
      continue
    return path
  return None


class Checkpoints:
  """Saving and restoring the training state of one run folder."""

  def __init__(self, model_dir: str, model, optimizer, step, strategy, keep: int,
               signature: dict):
    self.directory = os.path.join(model_dir, CHECKPOINT_DIR)
    self.preemption_directory = os.path.join(model_dir, PREEMPTION_DIR)
    self._signature = signature
    # What a resume restores; the preemption handler saves it too (run_folder/preemption.py).
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    self._writer = _Writer(self.checkpoint, self.directory, strategy, keep)
    self._best_dir = os.path.join(model_dir, BEST_DIR)
    self._best = _Writer(tf.train.Checkpoint(model=model), self._best_dir, strategy, 1)
    best = records.read_json(os.path.join(self._best_dir, BEST_FILE))
    self.best_accuracy = best['eval_accuracy'] if best else float('-inf')
    self.last_saved_step = None
    self.restored_path = None

  def _check_signature(self):
    saved = records.read_json(os.path.join(self.directory, SIGNATURE_FILE))
    if saved is not None:
      # Checkpoints from before these fields existed were all Adam without averages (and
      # a Muon of before --muon_conv orthogonalised the dense kernel only).
      saved = dict(_OLDER_SIGNATURE, **saved)
    if saved is not None and saved != self._signature:
      differences = ', '.join(f'{k}: checkpoint {saved.get(k)!r} vs now {v!r}'
                              for k, v in self._signature.items() if saved.get(k) != v)
      hint = ('; or --nomuon_conv to resume a Muon run from before the conv kernels took '
              'its step') if saved.get('muon_conv_kernels') is False and \
          self._signature.get('muon_conv_kernels') else ''
      raise UserError(f'the checkpoints in {self.directory} come from another model or data '
                      f'set ({differences}); use a new --model_dir (nothing was overwritten)'
                      + hint)

  def restore(self) -> Optional[int]:
    """Restores the newest intact checkpoint; returns its step, or None when there is none."""
    paths = list(self._writer.manager.checkpoints)
    preemption_state = tf.train.get_checkpoint_state(self.preemption_directory)
    if preemption_state:
      paths += list(preemption_state.all_model_checkpoint_paths)
    paths.sort(key=step_of, reverse=True)  # Newest first.
    if not paths:
      return None
    self._check_signature()
    path = restore_newest_intact(
        self.checkpoint, paths, mismatch='checkpoint {path} does not fit this model ({reason}); '
        'use a new --model_dir (nothing was overwritten)')
    if path is None:
      raise UserError(f'no intact checkpoint in {self.directory} (all {len(paths)} are '
                      'damaged); move that folder away to start over')
    step = step_of(path)
    self.last_saved_step = step
    self.restored_path = path
    return step

  def save(self, step: int) -> None:
    if step == self.last_saved_step:
      return
    path = self._writer.save(step)
    if self._writer.chief and not tf.io.gfile.exists(
        os.path.join(self.directory, SIGNATURE_FILE)):
      records.write_json(os.path.join(self.directory, SIGNATURE_FILE), self._signature)
    self.last_saved_step = step
    logging.info('saved checkpoint %s', path)

  def maybe_save_best(self, step: int, eval_accuracy: float) -> bool:
    if not eval_accuracy > self.best_accuracy:
      return False
    self._best.save(step)
    if self._best.chief:
      records.write_json(os.path.join(self._best_dir, BEST_FILE),
                         {'step': step, 'eval_accuracy': eval_accuracy})
    self.best_accuracy = eval_accuracy
    return True
