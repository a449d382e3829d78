"""The custom training loop: build the model inside the strategy, train, evaluate, report."""

import dataclasses
import math
import os
import time
from typing import Optional

from absl import logging
import keras
import tensorflow as tf

from trainer.core import accelerators
from trainer.core.config import Config
from trainer.core import distribute
from trainer.core import precision
from trainer.core.errors import UserError
from trainer.data import device_input
from trainer.data import pipeline
from trainer.data import sources
from trainer.jobs import init_from
from trainer.jobs import plan as plan_lib
from trainer.jobs import target as target_lib
from trainer.model import export
from trainer.model import freezing
from trainer.model import input_wait
from trainer.model import metrics
from trainer.model import optimizers
from trainer.model import steps
from trainer.model import whitening
from trainer.report import hypertune
from trainer.report import logs
from trainer.report import profiling
from trainer.report import progress
from trainer.report import summaries
from trainer.run_folder import checkpointing
from trainer.run_folder import failed_writes
from trainer.run_folder import locate
from trainer.run_folder import preemption
from trainer.run_folder import records
from trainer.run_folder import run_dirs
from trainer.run_folder import run_lock


@dataclasses.dataclass
class Outcome:
  metrics: dict  # What results.json holds.
  model_dir: str
  trainer: steps.Trainer
  loops: list  # (steps, seconds) of each host call, for throughput measurements.
  loop_cpu_seconds: list  # This process's CPU time (all threads) in each host call.


def _steady_rate(loops, batch_size):
  """Examples/s without the first loop, which traces the step and starts the pipeline."""
  steps = sum(size for size, _ in loops[1:])
  seconds = sum(elapsed for _, elapsed in loops[1:])
  return round(steps * batch_size / seconds, 1) if seconds else None


def _signature(info, config: Config) -> dict:
  """What a checkpoint must match to be resumed: the model's shape, the data set, and the
  optimizer whose state it holds (with or without weight averages)."""
  return {'dataset': info.name, 'image_shape': list(info.image_shape),
          'num_classes': info.num_classes, 'optimizer': config.optimizer,
          'weight_averaging': bool(config.ema_decay),
          # Which kernels keep AdamW's second moments decides the optimizer's variables.
          'muon_conv_kernels': config.optimizer == 'muon' and config.muon_conv}


def train_and_evaluate(config: Config, strategy: Optional[tf.distribute.Strategy] = None,
                       source=None) -> Outcome:
  """Trains per `config`, resuming from --model_dir's checkpoints; returns the final eval.

  `strategy` and `source` are injectable so tests can run on logical devices and small data.
  Raises errors.Preempted after saving when SIGTERM/SIGINT arrives.
  """
  config.validate()
  dirs = run_dirs.of_config(config)
  created = run_dirs.prepare(dirs)  # Before data or model: a bad folder fails fast.
  lock = None
  try:
    if strategy is None:
      accelerators.warn_if_gpu_unseen()
      strategy = distribute.create_strategy(config.strategy, config.num_cpu_devices,
                                            config.tpu, config.startup_timeout)
    logs.set_worker(distribute.task_label(strategy))
    try:
      lock = run_lock.acquire(dirs.model_dir, chief=distribute.is_chief(strategy))
    except BaseException:
      # Refused: another run holds the folder (it may have taken it just after this run
      # created it) and writes there now, so nothing in it is this run's to remove.
      created = []
      raise
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
      tf.config.experimental.enable_op_determinism()
    if source is None:
      source = pipeline.source_for(config)
    run = _Run(config, strategy, source, dirs, lock)
    try:
      return run.train()
    finally:
      run.close()
  except BaseException:
    # Runs before the lock's release below: no other run writes there meanwhile.
    _discard_if_unsaved(config, dirs, created)
    raise
  finally:
    if lock is not None:
      lock.release()


def _discard_if_unsaved(config: Config, dirs: run_dirs.RunDirs, created) -> None:
  """A run that ends before its first checkpoint removes the folders it created; a
  multi-worker run's folder is shared, and left to the job."""
  if created and config.strategy != 'multi_worker' and \
      not checkpointing.list_checkpoints(dirs.checkpoint_dir):
    run_dirs.discard_created(created)


_WHITENING_IMAGES = 5000  # --whiten_init: the first training images its statistics use.

# Where a run reads and writes, and how often it saves: no bearing on what it learns.
_NOT_HPARAMS = ('data_dir', 'model_dir', 'tensorboard_dir', 'checkpoint_dir', 'export_dir',
                'tpu', 'startup_timeout', 'profile_steps', 'checkpoint_every_steps',
                'keep_checkpoints', 'tune_metric', 'tune_report', 'export_max_pixels')


def _hparams(config: Config, strategy) -> dict:
  """The settings that tell runs apart in TensorBoard's HParams dashboard.

  Every Config field but those above, so that a new training option shows up unasked.
  """
  values = {name: value for name, value in dataclasses.asdict(config).items()
            if name not in _NOT_HPARAMS and value is not None}
  return dict(values, replicas=strategy.num_replicas_in_sync)


class _Run:
  """One run: the trainer and what it records (checkpoints, summaries, profile, log)."""

  def __init__(self, config: Config, strategy, source, dirs: run_dirs.RunDirs,
               lock=run_lock.NoLock()):
    self.config, self.strategy, self.source = config, strategy, source
    self.lock = lock  # Checked before each save: a run that lost its folder writes no more.
    self.dirs = dirs
    self.info = source.info
    self.model_dir = dirs.model_dir
    self.chief = distribute.is_chief(strategy)
    self.plan = plan_lib.make_plan(config, self.info, strategy)
    if config.input == 'device' and not getattr(source, 'device_resident', False):
      # Before the model and the data: a data set that cannot fit stops the run at once.
      device_input.check_fits(source, distribute.num_workers(strategy),
                              config.device_data_max_mb)
    self.trainer = steps.build_trainer(config, strategy, self.info, self.plan.total_steps,
                                       self.plan.steps_per_epoch)
    self.checkpoints = checkpointing.Checkpoints(
        dirs.checkpoint_dir, self.trainer.model, self.trainer.optimizer,
        self.trainer.global_step, strategy, config.keep_checkpoints, _signature(self.info, config))
    self.watcher = preemption.PreemptionWatcher(strategy, self.checkpoints)
    self.freezing = freezing.Freezing(config, self.trainer, self.plan.steps_per_epoch,
                                      self.plan.total_steps)
    self.summaries = summaries.RunSummaries(dirs.tensorboard_dir, enabled=self.chief)
    self.profile = profiling.ProfileWindow(config.profile_window, self.summaries.train_dir,
                                           enabled=self.chief,
                                           total_steps=self.plan.total_steps)
    self.loops = []  # (steps, seconds) per host call.
    self._start_note = ''  # How --whiten_init started the weights, for the start lines.
    self.loop_cpu_seconds = []
    self.progress = progress.Progress(self.plan, config.batch_size)
    self.tuning = hypertune.reporter(config, self.chief)
    self.eval_history = []
    self.train_seconds = 0.0
    self.target = target_lib.TargetWatch(config.target_accuracy, config.batch_size,
                                         dirs.checkpoint_dir, self.chief)
    self.start = time.time()

  def _writing(self, what, folder):
    return failed_writes.stop_on_failure(what, folder, self.checkpoints.last_saved_step)

  def close(self):
    self.watcher.close()
    self.profile.stop()
    self.summaries.close()

  def train(self) -> Outcome:
    # Restore before writing anything: an incompatible run folder must stay untouched.
    resumed = self.checkpoints.restore()
    weights_from = init_from.initialize(self.config, self.trainer.model, self.model_dir, resumed)
    if self.config.whiten_init and resumed is None and not weights_from:
      images, labels = sources.first_examples(self.source, _WHITENING_IMAGES)
      if self.config.whiten_init_all:
        whitening.apply_all(self.trainer.model, images / 255.0, labels, self.config.seed)
      else:
        whitening.apply(self.trainer.model, images / 255.0, self.config.seed)
      layers = 'every layer' if self.config.whiten_init_all else 'the first convolution'
      self._start_note = f'{layers} from the first {len(images)} training images'
    self._announce(resumed, weights_from)
    config, plan, trainer = self.config, self.plan, self.trainer
    train_iterator = pipeline.distributed_train_iterator(
        self.strategy, self.source, config.batch_size, plan.steps_per_epoch, config.seed,
        start_step=trainer.step, augment=config.augment, cache=config.cache,
        threads=config.input_threads, shuffle_buffer=config.shuffle_buffer,
        input_mode=config.input, device_data_max_mb=config.device_data_max_mb)
    eval_data, eval_steps = pipeline.distributed_eval_dataset(
        self.strategy, self.source, config.batch_size, cache=config.cache,
        threads=config.input_threads)
    self.start = time.time()
    self.target.start(resumed)
    eval_result = None
    while trainer.step < plan.total_steps and not self.target.done:
      step = self._train_loop(train_iterator)
      with self._writing(f'the checkpoint of step {step}', self.checkpoints.directory):
        self.target.note(step, self.train_seconds)
        self.watcher.check(step, self.checkpoints)
      if plan.is_eval_step(step):
        eval_result = self._evaluate(step, eval_data, eval_steps)
      # The target reached: save, export and report as at the end of the schedule.
      if plan.is_checkpoint_step(step) or self.target.done:
        self.lock.check()
        with self._writing(f'the checkpoint of step {step}', self.checkpoints.directory):
          self.checkpoints.save(step)
    if eval_result is None:  # Nothing left to train: report on the model as it is.
      eval_result = trainer.evaluate(eval_data, eval_steps)
      self.tuning.report(trainer.step, *eval_result[:2])
    return self._finish(eval_result)

  def _announce(self, resumed, weights_from):
    config, info, plan = self.config, self.info, self.plan
    if self.chief:
      tf.io.gfile.makedirs(self.model_dir)
      # Where every part went, so that the run folder alone finds them (run_folder/locate.py).
      records.write_config(self.model_dir, config, **{locate.RECORD_KEY: locate.record(self.dirs)},
                           **({init_from.RECORD_KEY: weights_from} if weights_from else {}))
      self.trainer.model.summary(print_fn=lambda line, *_: logging.info('%s', line))
      self.summaries.hparams(_hparams(config, self.strategy), trial_id=self.model_dir)
      images, labels = sources.first_examples(self.source, 25)
      self.summaries.training_images(images, labels, info.class_names, step=self.trainer.step)
    logging.info('%s | global batch %d, per-replica batch %d | %d steps/epoch, %d steps in all '
                 '| data %s (%d train / %d eval examples) | run folder %s',
                 distribute.describe(self.strategy), config.batch_size,
                 plan.per_replica_batch, plan.steps_per_epoch, plan.total_steps, info.name,
                 info.num_train_examples, info.num_eval_examples, self.model_dir)
    logging.info('optimizer %s', optimizers.describe(config))
    policy, why = precision.resolve(config.mixed_precision, self.strategy)
    logging.info('precision %s (%s)', precision.describe(policy), why)
    if self._start_note:
      logging.info('start: %s (--whiten_init)', self._start_note)
    if resumed is not None:
      logging.info('resumed from step %d (epoch %d): %s', resumed, plan.epoch_of(resumed),
                   self.checkpoints.restored_path)

  def _train_loop(self, iterator) -> int:
    """One host call of up to --steps_per_loop steps; checks, logs and records it."""
    config, plan, trainer = self.config, self.plan, self.trainer
    size = self.profile.clip(trainer.step, plan.loop_size(trainer.step, config.steps_per_loop))
    size = self.freezing.before_loop(trainer.step, size)
    trainer.train_sums.reset()
    self.profile.before_loop(trainer.step)
    self.progress.before_loop(size)
    loop_start, cpu_start = time.time(), time.process_time()
    waited, loop_seconds = trainer.train_loop(iterator, tf.constant(size))
    loss, accuracy, _ = trainer.train_sums.result()  # Reading waits for the loop to finish.
    elapsed = time.time() - loop_start
    self.loops.append((size, elapsed))
    self.loop_cpu_seconds.append(time.process_time() - cpu_start)
    self.train_seconds += elapsed
    step = trainer.step
    self.profile.after_loop(step)
    # Checked before any save: a diverged model must never replace a good checkpoint.
    if not math.isfinite(loss) or not trainer.weights_finite():
      kept = (f'the last good checkpoint is kept in {self.checkpoints.directory}'
              if self.checkpoints.last_saved_step is not None else 'before its first checkpoint')
      raise UserError(f'training diverged by step {step} (loss {loss}, or non-finite weights); '
                      f'{kept}; lower --learning_rate or check the data')
    self.progress.after_loop(step, size, elapsed, loss, accuracy, *(
        (float(trainer.optimizer.dynamic_scale.numpy()), trainer.skipped_steps)
        if trainer.loss_scaled else ()))
    self.summaries.train_interval(
        step, loss=loss, accuracy=accuracy, learning_rate=trainer.learning_rate,
        examples_per_second=size * config.batch_size / elapsed, step_time=elapsed / size,
        input_wait_fraction=input_wait.fraction(waited, loop_seconds))
    return step

  def _evaluate(self, step, eval_data, eval_steps):
    trainer = self.trainer
    result = trainer.evaluate(eval_data, eval_steps)
    self.progress.evaluation(step, *result)
    self.tuning.report(step, *result[:2])
    self.summaries.evaluation(step, loss=result[0], accuracy=result[1],
                              confusion=trainer.eval_confusion.result(),
                              class_names=self.info.class_names)
    self.eval_history.append({'step': step, 'eval_loss': result[0], 'eval_accuracy': result[1],
                              'train_seconds': round(self.train_seconds, 2),
                              'wall_seconds': round(time.time() - self.start, 2)})
    with self._writing('the time to the target', self.checkpoints.directory):
      self.target.evaluated(step, result[1], self.train_seconds)
    with self._writing('the best model', os.path.join(self.dirs.checkpoint_dir,
                                                      checkpointing.BEST_DIR)):
      with trainer.averaged_weights():
        saved_best = self.checkpoints.maybe_save_best(step, result[1])
    if saved_best:
      logging.info('new best eval accuracy %.4f at step %d', result[1], step)
    return result

  def _finish(self, eval_result) -> Outcome:
    config, trainer = self.config, self.trainer
    results = {
        'eval_loss': eval_result[0],
        'eval_accuracy': eval_result[1],
        'eval_examples': eval_result[2],
        'per_class_accuracy': metrics.per_class_accuracy(trainer.eval_confusion.result(),
                                                         self.info.class_names),
        'global_step': trainer.step,
        'train_seconds': round(self.train_seconds, 2),
        'examples_per_second': _steady_rate(self.loops, config.batch_size),
        'eval_history': self.eval_history,
        'wall_seconds': round(time.time() - self.start, 2),
        'dataset': self.info.name,
    }
    target = self.target.result(trainer.step, self.eval_history)
    if target is not None:
      results['target'] = target
      self.summaries.target(trainer.step, target)
    self.summaries.final_metrics(trainer.step, eval_loss=results['eval_loss'],
                                 eval_accuracy=results['eval_accuracy'])
    if self.chief:
      export_dir = self.dirs.export
      with self._writing('the export', export_dir), trainer.averaged_weights():
        export.export_saved_model(
            trainer.model, self.info.class_names, export_dir, flip=config.eval_flip,
            litert_quantize=config.litert_quantize if config.export_litert else None,
            source=self.source, max_pixels=config.export_max_pixels)
      logging.info('exported the model to %s (signatures: serving_default uint8 images, '
                   'serving_bytes encoded image files -> probabilities, class names%s)',
                   export_dir, ', and LiteRT files' if config.export_litert else '')
      with self._writing(records.RESULTS_FILE, self.model_dir):
        records.write_json(os.path.join(self.model_dir, records.RESULTS_FILE), results)
      progress.summary(results, self.model_dir, export_dir, self.summaries.logdir)
    else:
      progress.summary(results)
    return Outcome(metrics=results, model_dir=self.model_dir, trainer=trainer, loops=self.loops,
                   loop_cpu_seconds=self.loop_cpu_seconds)
