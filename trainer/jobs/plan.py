"""The run's schedule in steps: how many, how they fall into epochs and host calls, and at
which of them the run evaluates and saves. Pure arithmetic on the Config and the data's size."""

import dataclasses

from trainer.core.config import Config
from trainer.core import distribute
from trainer.core.errors import UserError
from trainer.jobs import target


@dataclasses.dataclass
class Plan:
  steps_per_epoch: int
  total_steps: int
  per_replica_batch: int
  checkpoint_every_steps: int = 0
  eval_every_steps: int = 0
  # --eval_every_examples: a fixed cadence in examples, so no extra evaluation at epoch ends.
  eval_at_epoch_ends: bool = True

  @property
  def epochs(self) -> int:
    return -(-self.total_steps // self.steps_per_epoch)

  def epoch_of(self, step: int) -> int:
    """1-based epoch that step `step` (0-based, not yet run) belongs to."""
    return step // self.steps_per_epoch + 1

  def is_epoch_end(self, step: int) -> bool:
    return step % self.steps_per_epoch == 0 or step == self.total_steps

  def is_checkpoint_step(self, step: int) -> bool:
    every = self.checkpoint_every_steps
    return self.is_epoch_end(step) or bool(every and step % every == 0)

  def is_eval_step(self, step: int) -> bool:
    every = self.eval_every_steps
    if not self.eval_at_epoch_ends:
      return step == self.total_steps or step % every == 0
    return self.is_epoch_end(step) or bool(every and step % every == 0)

  def loop_size(self, step: int, steps_per_loop: int) -> int:
    """Steps in the next host call: never past an epoch end, an evaluation or a checkpoint."""
    periods = (self.steps_per_epoch, self.checkpoint_every_steps, self.eval_every_steps)
    return min([steps_per_loop, self.total_steps - step] +
               [every - step % every for every in periods if every])


def make_plan(config: Config, info, strategy) -> Plan:
  per_replica = distribute.per_replica_batch_size(config.batch_size, strategy)
  steps_per_epoch = info.num_train_examples // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(f'--batch_size={config.batch_size} is larger than the '
                    f'{info.num_train_examples} training examples of {info.name}')
  total = config.train_steps or config.epochs * steps_per_epoch
  if config.target_schedule:
    total = target.schedule_steps(config.batch_size, config.target_accuracy)
  eval_every = config.eval_every_steps
  if config.eval_every_examples:
    eval_every = -(-config.eval_every_examples // config.batch_size)
  return Plan(steps_per_epoch=steps_per_epoch, total_steps=total, per_replica_batch=per_replica,
              checkpoint_every_steps=config.checkpoint_every_steps,
              eval_every_steps=eval_every, eval_at_epoch_ends=not config.eval_every_examples)
