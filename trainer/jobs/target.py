"""Time to a result (--target_accuracy): the run stops at the first evaluation whose
accuracy reaches the target and records when it got there, as MLPerf Training measures.

What is counted: the step and the training examples to that evaluation, the seconds spent in
training loops, and the wall seconds from the start of training (evaluations, checkpoints
and logging included; start-up, tracing before the first loop and the final export not).
Across preemption and resume the count goes on from the checkpoint the run resumes from:
after each host call the chief writes the seconds so far beside the checkpoints
(checkpoints/time_to_target.json, keyed by step), and a resumed run starts from the entry of
its step. Time lost between the checkpoint and the preemption is not counted, as the steps
it trained are not. A run resumed after it reached the target trains no further.
"""

import logging
import math
import os
import time
from typing import Optional

import tensorflow as tf

from trainer.core.errors import UserError
from trainer.report import logs
from trainer.run_folder import checkpointing
from trainer.run_folder import records

RECORD_FILE = 'time_to_target.json'

# --target_schedule: the run's steps for each target at the global batches tuned, with
# configs/time_to_target.cfg on CIFAR-10 (a validation split held out of the training data;
# benchmarks/time_to_target.md): the shortest schedule tried that ended at or above the
# target in each of 10 seeds, and half a point above it on average, so that every seed
# reaches it (4 seeds missed the odd weak one at batch 64). In between, log(steps) is
# interpolated linearly in log(batch), and linearly between the targets; beyond the batches
# measured the nearest segment's slope goes on.
SCHEDULE_STEPS = {0.65: {64: 350, 512: 60, 4096: 30},
                  0.70: {64: 750, 512: 140, 4096: 70}}


def _log_log(batch: int, table: dict) -> float:
  batches = sorted(table)
  index = max(1, min(len(batches) - 1, sum(b <= batch for b in batches)))
  low, high = batches[index - 1], batches[index]
  slope = math.log(table[high] / table[low]) / math.log(high / low)
  return table[low] * (batch / low) ** slope


def schedule_steps(batch_size: int, target: float) -> int:
  """The steps of a run meant to end at `target` with global batch `batch_size`."""
  targets = sorted(SCHEDULE_STEPS)
  if not targets[0] <= target <= targets[-1]:
    raise UserError(f'--target_schedule knows targets from {targets[0]} to {targets[-1]} '
                    f'(measured on CIFAR-10), not {target}; give --train_steps or --epochs '
                    'instead')
  upper = next(t for t in targets if t >= target)
  lower = targets[max(targets.index(upper) - 1, 0)]
  share = (target - lower) / (upper - lower) if upper > lower else 0.0
  steps = (1 - share) * _log_log(batch_size, SCHEDULE_STEPS[lower]) + \
      share * _log_log(batch_size, SCHEDULE_STEPS[upper])
  return max(1, math.ceil(steps))


class TargetWatch:
  """Whether and when the run reached --target_accuracy (disabled when it is 0)."""

  def __init__(self, target: float, batch_size: int, checkpoint_dir: str, chief: bool):
    self.target, self.batch_size = target, batch_size
    self.enabled = bool(target)
    self._checkpoint_dir = checkpoint_dir  # The folder holding checkpoints/.
    self._path = os.path.join(checkpoint_dir, checkpointing.CHECKPOINT_DIR, RECORD_FILE)
    self._chief = chief
    self._seconds = {}  # str(step) -> [train seconds, wall seconds] at that step, in all.
    self._before = (0.0, 0.0)  # Counted by the processes before this one.
    self._start = time.time()
    self.reached: Optional[dict] = None

  @property
  def done(self) -> bool:
    return self.reached is not None

  def start(self, resumed_step: Optional[int]) -> None:
    """At the start of training: takes up the count of the checkpoint resumed from."""
    self._start = time.time()
    if not self.enabled or resumed_step is None:
      return
    record = records.read_json(self._path) or {}
    self._seconds = record.get('seconds', {})
    before = self._seconds.get(str(resumed_step))
    if before is None:
      logs.log(logging.WARNING, f'{self._path} has no time for step {resumed_step}: the '
               'seconds to the target count from this resume', {'event': 'target_time_lost'})
    else:
      self._before = tuple(before)
    reached = record.get('reached')
    if reached and reached['step'] <= resumed_step:
      self.reached = reached
      logs.log(logging.INFO, f'the target accuracy {self.target:.2%} was reached at step '
               f'{reached["step"]} already: no more training', {'event': 'target_done'})

  def totals(self, train_seconds: float):
    """(training seconds, wall seconds) since the start of training, resumes included;
    `train_seconds` is this process's."""
    return (round(self._before[0] + train_seconds, 2),
            round(self._before[1] + time.time() - self._start, 2))

  def note(self, step: int, train_seconds: float) -> None:
    """After a host call, before any checkpoint of `step`: the seconds so far, for a resume.
    Entries older than the oldest checkpoint kept are dropped."""
    if not self.enabled or not self._chief:
      return
    self._seconds[str(step)] = list(self.totals(train_seconds))
    kept = [s for s, _ in checkpointing.list_checkpoints(self._checkpoint_dir)]
    oldest = min(kept, default=step)
    self._seconds = {s: v for s, v in self._seconds.items() if int(s) >= oldest}
    self._write()

  def evaluated(self, step: int, accuracy: float, train_seconds: float) -> bool:
    """After an evaluation at `step`: True once the target is reached (the run then stops)."""
    if not self.enabled or self.done:
      return self.done
    if accuracy < self.target:
      return False
    train, wall = self.totals(train_seconds)
    self.reached = {'step': step, 'examples': step * self.batch_size, 'eval_accuracy': accuracy,
                    'train_seconds': train, 'wall_seconds': wall}
    logs.log(logging.INFO, f'reached the target accuracy {self.target:.2%} at step {step} '
             f'({step * self.batch_size:,} examples): eval accuracy {accuracy:.4f} after '
             f'{train:.1f} s of training, {wall:.1f} s from the start of training',
             dict(event='target_reached', target_accuracy=self.target, **self.reached))
    self.note(step, train_seconds)
    return True

  def result(self, step: int, eval_history) -> Optional[dict]:
    """What results.json records under 'target' (None without a target); says in one line
    when the target was not reached."""
    if not self.enabled:
      return None
    if self.reached:
      return dict(accuracy=self.target, reached=True, **self.reached)
    best = max(eval_history, key=lambda e: e['eval_accuracy'], default=None)
    result = {'accuracy': self.target, 'reached': False, 'steps_trained': step}
    text = f'the target accuracy {self.target:.2%} was not reached in {step} steps'
    if best:
      result.update(best_eval_accuracy=best['eval_accuracy'], best_step=best['step'])
      text += f' (best eval accuracy {best["eval_accuracy"]:.4f} at step {best["step"]})'
    logs.log(logging.WARNING, text, dict(event='target_not_reached', target_accuracy=self.target,
                                         **result))
    return result

  def _write(self):
    payload = {'target_accuracy': self.target, 'seconds': self._seconds}
    if self.reached:
      payload['reached'] = self.reached
    tf.io.gfile.makedirs(os.path.dirname(self._path))  # Before the first checkpoint, too.
    records.write_json(self._path, payload)
