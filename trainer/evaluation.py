"""Evaluating a run's checkpoints as a job of its own: once, or each new one as it appears.

The job rebuilds the run's model from its config.json (the same Trainer, hence the same
averaged weights under --ema_decay and mirror views under --eval_flip), restores a
checkpoint into it and runs train.evaluate on any split. Nothing of the run is written but
`eval_<split>_<step>.json` files and the TensorBoard run `eval_<split>`.
"""

import dataclasses
import json
import os
import re
import time
from typing import Callable, List, Optional, Tuple

from absl import logging
import tensorflow as tf

from trainer import checkpointing
from trainer import confusion
from trainer import input_pipeline
from trainer import run_dirs
from trainer import strategy as strategy_lib
from trainer import summaries
from trainer import train
from trainer.config import Config
from trainer.errors import UserError, first_line

LATEST = 'latest'
BEST = 'best'


class CheckpointGone(Exception):
  """A listed checkpoint could not be read: the trainer deleted it (keep-N) meanwhile."""


def read_run_config(model_dir: str) -> Config:
  """The Config a run recorded in its config.json (fields it lacks keep their defaults)."""
  path = os.path.join(model_dir, train.CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise UserError(f'no run in --model_dir={model_dir}: it has no {train.CONFIG_FILE} '
                    '(the folder a training run wrote)')
  try:
    with tf.io.gfile.GFile(path) as f:
      recorded = json.load(f)
  except (ValueError, tf.errors.OpError) as e:
    raise UserError(f'cannot read {path}: {first_line(e)}') from None
  fields = {name: value for name, value in recorded.items()
            if name in Config.__dataclass_fields__}
  return Config(**fields)


def wait_for_run(model_dir: str, timeout: float, poll_seconds: float,
                 clock=time.monotonic, sleep=time.sleep) -> Config:
  """read_run_config, once the run's trainer has written config.json (up to `timeout` s)."""
  deadline = clock() + timeout
  while not tf.io.gfile.exists(os.path.join(model_dir, train.CONFIG_FILE)):
    if clock() > deadline:
      break
    sleep(poll_seconds)
  return read_run_config(model_dir)


def split_file_name(split: str) -> str:
  """'test' -> 'test'; TFDS slicing like 'test[:50%]' -> 'test_50_'."""
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', split)


def _step_of(path: str) -> Optional[int]:
  match = re.search(r'-(\d+)$', path)
  return int(match.group(1)) if match else None


def list_checkpoints(checkpoint_dir: str) -> List[Tuple[int, str]]:
  """(step, path) of the run's complete checkpoints, oldest first.

  From the CheckpointManager's index files, which are rewritten only after a checkpoint's
  files are complete: a checkpoint still being written is not listed yet.
  """
  found = {}
  for folder in (checkpointing.CHECKPOINT_DIR, checkpointing.PREEMPTION_DIR):
    try:
      state = tf.train.get_checkpoint_state(os.path.join(checkpoint_dir, folder))
    except (tf.errors.OpError, ValueError):  # An index being replaced: the next poll reads it.
      state = None
    for path in (state.all_model_checkpoint_paths if state else []):
      step = _step_of(path)
      if step is not None:
        found[step] = path
  return sorted(found.items())


def _holds_optimizer(path: str) -> bool:
  return any(name.startswith('optimizer/') for name, _ in tf.train.list_variables(path))


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

  def __init__(self, config: Config, model_dir: str, split: str,
               strategy: Optional[tf.distribute.Strategy] = None, source=None):
    config = config.replace(eval_split=split).validate()
    self.config, self.split = config, split
    self.strategy = strategy or strategy_lib.create_strategy(
        config.strategy, config.num_cpu_devices, config.tpu)
    dirs = run_dirs.resolve(model_dir=model_dir, tensorboard_dir=config.tensorboard_dir,
                            checkpoint_dir=config.checkpoint_dir,
                            multi_worker=config.strategy == 'multi_worker')
    self.model_dir, self.checkpoint_dir = dirs.model_dir, dirs.checkpoint_dir
    self.source = source or input_pipeline.source_for(config)
    self.info = self.source.info
    self.plan = train.make_plan(config, self.info, self.strategy)
    self.chief = strategy_lib.is_chief(self.strategy)
    self.summaries = summaries.RunSummaries(dirs.tensorboard_dir, enabled=self.chief)
    self.eval_data, self.eval_steps = input_pipeline.distributed_eval_dataset(
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
    path = os.path.join(self.checkpoint_dir, checkpointing.CHECKPOINT_DIR,
                        checkpointing.SIGNATURE_FILE)
    if not tf.io.gfile.exists(path):
      return
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
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
      self._trainers[model_only] = train._build_trainer(  # pylint: disable=protected-access
          config, self.strategy, self.info, self.plan)
    return self._trainers[model_only]

  def resolve(self, which: str) -> str:
    """The checkpoint path that --checkpoint=latest|best|PATH names."""
    if which == LATEST:
      listed = list_checkpoints(self.checkpoint_dir)
      if not listed:
        raise UserError(f'no checkpoint in {os.path.join(self.checkpoint_dir, "checkpoints")}')
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
      model_only = not _holds_optimizer(path)
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
    step = _step_of(path) if model_only else trainer.step
    loss, accuracy, examples = train.evaluate(trainer, self.eval_data, self.eval_steps)
    result = Result(step, path, loss, accuracy, examples, trainer.eval_confusion.result())
    self._record(result)
    return result

  def _record(self, result: Result):
    per_class = confusion.per_class_accuracy(result.counts, self.info.class_names)
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
    checkpointing.write_json(out, {
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
    fresh = [(step, path) for step, path in list_checkpoints(evaluator.checkpoint_dir)
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
