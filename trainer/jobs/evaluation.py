"""Evaluating a run's checkpoints as a job of its own: once, or each new one as it appears.

The job rebuilds the run's model from its config.json (the same Trainer, hence the same
averaged weights under --ema_decay and mirror views under --eval_flip), restores a
checkpoint into it and runs Trainer.evaluate on any split. Nothing of the run is written but
`eval_<split>_<step>.json` files and the TensorBoard run `eval_<split>`.
"""

import dataclasses
import os
import re
import time
from typing import Callable, List, Optional

from absl import logging
import tensorflow as tf

from trainer.core.config import Config
from trainer.core import distribute
from trainer.core.errors import UserError, first_line
from trainer.data import pipeline
from trainer.jobs import plan as plan_lib
from trainer.model import metrics
from trainer.model import steps
from trainer.report import summaries
from trainer.run_folder import checkpointing
from trainer.run_folder import locate
from trainer.run_folder import records
from trainer.run_folder import run_dirs

LATEST = 'latest'
BEST = 'best'


class CheckpointGone(Exception):
  """A listed checkpoint could not be read: the trainer deleted it (keep-N) meanwhile."""


def split_file_name(split: str) -> str:
  """'test' -> 'test'; TFDS slicing like 'test[:50%]' -> 'test_50_'."""
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', split)


@dataclasses.dataclass
class Result:
  step: int
  checkpoint: str
  loss: float
  accuracy: float
  examples: int
  counts: object  # [true, predicted] int64 array.


class Evaluator:
  """A run's model under `strategy`, ready to evaluate any of its checkpoints on one split."""

  def __init__(self, config: Config, dirs: run_dirs.RunDirs, split: str,
               strategy: Optional[tf.distribute.Strategy] = None, source=None):
    """`dirs`: the run's folders, as locate.find() gives them from any folder of the run."""
    config = config.replace(eval_split=split).validate()
    self.config, self.split = config, split
    self.model_dir = dirs.model_dir
    self.checkpoint_dir = locate.require(dirs, 'checkpoint_dir')
    self.strategy = strategy or distribute.create_strategy(
        config.strategy, config.num_cpu_devices, config.tpu, config.startup_timeout)
    self.source = source or pipeline.source_for(config)
    self.info = self.source.info
    self.plan = plan_lib.make_plan(config, self.info, self.strategy)
    self.chief = distribute.is_chief(self.strategy)
    self.summaries = summaries.RunSummaries(dirs.tensorboard_dir, enabled=self.chief)
    self.eval_data, self.eval_steps = pipeline.distributed_eval_dataset(
        self.strategy, self.source, config.batch_size, cache=config.cache,
        threads=config.input_threads)
    self._trainers = {}
    self._check_signature()

  @property
  def final_step(self) -> int:
    return self.plan.total_steps

  @property
  def tensorboard_run(self) -> str:
    return f'{summaries.EVAL_RUN}_{split_file_name(self.split)}'

  def _check_signature(self):
    saved = records.read_json(os.path.join(self.checkpoint_dir, checkpointing.CHECKPOINT_DIR,
                                           checkpointing.SIGNATURE_FILE)) or {}
    # Another data set is fine (that is what --dataset is for), another model shape is not.
    for key, now in (('image_shape', list(self.info.image_shape)),
                     ('num_classes', self.info.num_classes)):
      if key in saved and saved[key] != now:
        raise UserError(f'the run was trained for {key} {saved[key]}, but --dataset='
                        f'{self.info.name} has {now}; evaluate on data of the same shape')

  def _trainer(self, model_only: bool):
    """The full trainer (model, optimizer with its weight averages, step), or a model alone
    for best/ (saved with the averaged weights already in place)."""
    if model_only not in self._trainers:
      config = self.config.replace(ema_decay=0.0) if model_only else self.config
      self._trainers[model_only] = steps.build_trainer(
          config, self.strategy, self.info, self.plan.total_steps, self.plan.steps_per_epoch)
    return self._trainers[model_only]

  def resolve(self, which: str) -> str:
    """The checkpoint path that --checkpoint=latest|best|PATH names."""
    if which == LATEST:
      listed = checkpointing.list_checkpoints(self.checkpoint_dir)
      if not listed:
        raise UserError(f'no checkpoint in {os.path.join(self.checkpoint_dir, "checkpoints")}, '
                        f'where the run {self.model_dir} keeps them: it has saved none yet')
      return listed[-1][1]
    if which == BEST:
      path = tf.train.latest_checkpoint(os.path.join(self.checkpoint_dir, checkpointing.BEST_DIR))
      if not path:
        raise UserError(f'no best checkpoint in {self.checkpoint_dir}/best: the run has not '
                        'evaluated yet')
      return path
    if tf.io.gfile.isdir(which):
      path = tf.train.latest_checkpoint(which)
      if path:
        return path
    elif tf.io.gfile.exists(which + '.index'):
      return which
    raise UserError(f'--checkpoint={which} is neither latest, best, a checkpoint (the path '
                    'without .index) nor a folder of checkpoints')

  def evaluate(self, path: str) -> Result:
    """Restores `path` and evaluates it; raises CheckpointGone if its files vanished."""
    try:
      model_only = not checkpointing.holds_optimizer(path)
      trainer = self._trainer(model_only)
      objects = dict(model=trainer.model) if model_only else dict(
          model=trainer.model, optimizer=trainer.optimizer, step=trainer.global_step)
      tf.train.Checkpoint(**objects).restore(path).expect_partial() \
          .assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:
      if not tf.io.gfile.exists(path + '.index'):
        raise CheckpointGone(first_line(e, 200)) from None
      raise UserError(f'checkpoint {path} does not fit the run\'s model: '
                      f'{first_line(e, 200)}') from None
    except (tf.errors.OpError, OSError, IndexError) as e:
      raise CheckpointGone(first_line(e, 200)) from None
    step = checkpointing.step_of(path) if model_only else trainer.step
    loss, accuracy, examples = trainer.evaluate(self.eval_data, self.eval_steps)
    result = Result(step, path, loss, accuracy, examples, trainer.eval_confusion.result())
    self._record(result)
    return result

  def _record(self, result: Result):
    per_class = metrics.per_class_accuracy(result.counts, self.info.class_names)
    self.summaries.evaluation(result.step, loss=result.loss, accuracy=result.accuracy,
                              confusion=result.counts, class_names=self.info.class_names,
                              run=self.tensorboard_run)
    if not self.chief:
      return
    print(f'step {result.step}  {self.split}  loss {result.loss:.4f}  accuracy '
          f'{result.accuracy:.4f}  ({result.examples} examples)  {result.checkpoint}',
          flush=True)
    out = os.path.join(self.model_dir,
                       f'eval_{split_file_name(self.split)}_{result.step}.json')
    records.write_json(out, {
        'checkpoint': result.checkpoint, 'step': result.step, 'split': self.split,
        'dataset': self.info.name, 'eval_flip': self.config.eval_flip,
        'eval_loss': result.loss, 'eval_accuracy': result.accuracy,
        'eval_examples': result.examples, 'class_names': list(self.info.class_names),
        'per_class_accuracy': per_class, 'confusion_matrix': result.counts.tolist()})

  def close(self):
    self.summaries.close()


def watch(evaluator: Evaluator, poll_seconds: float, timeout: float,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> List[Result]:
  """Evaluates the newest checkpoint whenever there is a newer one than the last evaluated,
  until the run's final step is evaluated or `timeout` s pass without a new checkpoint.

  Checkpoints in between are skipped when evaluation is slower than training saves them;
  one deleted (keep-N) between listing and reading is skipped for the next newest.
  """
  results, gone = [], set()
  last_step, last_news = -1, clock()
  while True:
    fresh = [(step, path) for step, path in checkpointing.list_checkpoints(evaluator.checkpoint_dir)
             if step > last_step and path not in gone]
    if fresh:
      step, path = fresh[-1]
      try:
        results.append(evaluator.evaluate(path))
      except CheckpointGone as e:
        logging.warning('checkpoint %s was deleted before it could be read (%s); '
                        'taking the newest again', path, e)
        gone.add(path)
        continue
      last_step, last_news = results[-1].step, clock()
      if last_step >= evaluator.final_step:
        logging.info('evaluated the final step %d; done', last_step)
        return results
      continue
    if clock() - last_news > timeout:
      logging.warning('no new checkpoint in %s for %g s (--watch_timeout); stopping after '
                      'step %s of %d', evaluator.checkpoint_dir, timeout,
                      last_step if last_step >= 0 else 'none', evaluator.final_step)
      return results
    sleep(poll_seconds)
