"""TensorBoard event files of a run, in the layout TensorBoard users know.

    <tensorboard_dir>/        HParams entry: the run's settings, and at the end its final
                              eval metrics (final/eval_accuracy, final/eval_loss); with
                              --target_accuracy target/accuracy, target/reached and where
                              reached target/step, examples, train_seconds, wall_seconds
    <tensorboard_dir>/train/  per logging interval: loss, accuracy, learning_rate,
                              examples_per_second, step_time, input_wait_fraction;
                              once: training_images; profiler traces under plugins/profile/
    <tensorboard_dir>/eval/   per evaluation: loss, accuracy, per_class/<class name>,
                              confusion_matrix
    <tensorboard_dir>/eval_<split>/   the same, from `python -m trainer.evaluate`

The train and eval runs share tag names, so TensorBoard draws train and eval loss (and
accuracy) on one chart. Every step axis is the global train step.
"""

import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from trainer.model import metrics
from trainer.report import pictures

TRAIN_RUN = 'train'
EVAL_RUN = 'eval'

LOSS = 'loss'
ACCURACY = 'accuracy'
LEARNING_RATE = 'learning_rate'
EXAMPLES_PER_SECOND = 'examples_per_second'
STEP_TIME = 'step_time'
INPUT_WAIT_FRACTION = 'input_wait_fraction'
TRAINING_IMAGES = 'training_images'
CONFUSION_MATRIX = 'confusion_matrix'
PER_CLASS = 'per_class'  # Tags per_class/<class name>: that class's eval accuracy.

TRAIN_SCALARS = (LOSS, ACCURACY, LEARNING_RATE, EXAMPLES_PER_SECOND, STEP_TIME,
                 INPUT_WAIT_FRACTION)
EVAL_SCALARS = (LOSS, ACCURACY)

# --target_accuracy (trainer/jobs/target.py), beside the final metrics.
TARGET = 'target'
TARGET_ACCURACY = 'target/accuracy'
TARGET_REACHED = 'target/reached'
FINAL_EVAL_ACCURACY = 'final/eval_accuracy'
FINAL_EVAL_LOSS = 'final/eval_loss'
# What the HParams dashboard lists beside each run's settings. They live in the run folder
# itself, not in eval/: TensorBoard finds no metrics in subfolders of a session when it
# was started on the run folder itself (it looks for "./eval", the run is named "eval").
HPARAMS_METRICS = (FINAL_EVAL_ACCURACY, FINAL_EVAL_LOSS)

HParamValue = Union[bool, int, float, str]


class RunSummaries:
  """Writes a run's summaries; with `enabled=False` (a non-chief worker) writes nothing.

  Several workers writing one folder would interleave event files and double every point,
  so only the chief gets real writers. Each folder is created on its first summary, so
  that making this object leaves the run folder untouched.
  """

  def __init__(self, logdir: str, enabled: bool = True):
    self.logdir = logdir
    self.enabled = enabled
    self._writers = {}
    self._noop = tf.summary.create_noop_writer()

  def _writer(self, run: str = ''):
    """The writer of `run` (TRAIN_RUN, EVAL_RUN, or '' for the run folder itself)."""
    if not self.enabled:
      return self._noop
    if run not in self._writers:
      self._writers[run] = tf.summary.create_file_writer(
          os.path.join(self.logdir, run) if run else self.logdir)
    return self._writers[run]

  @property
  def train_dir(self) -> str:
    return os.path.join(self.logdir, TRAIN_RUN)

  def hparams(self, values: Mapping[str, HParamValue], trial_id: str) -> None:
    """The run's HParams dashboard entry; `final_metrics` adds its metrics at the end.

    `trial_id` (the run folder, say) keeps runs with equal settings apart: the dashboard
    would otherwise merge them into one averaged row.
    """
    if not self.enabled:
      return
    with self._writer().as_default():
      hparams_api.hparams_config(
          hparams=[hparams_api.HParam(name) for name in sorted(values)],
          metrics=[hparams_api.Metric(FINAL_EVAL_ACCURACY, display_name='final eval accuracy'),
                   hparams_api.Metric(FINAL_EVAL_LOSS, display_name='final eval loss')] + (
                       [hparams_api.Metric(f'{TARGET}/step', display_name='steps to target'),
                        hparams_api.Metric(f'{TARGET}/wall_seconds',
                                           display_name='wall seconds to target')]
                       if values.get('target_accuracy') else []))
      hparams_api.hparams(dict(values), trial_id=trial_id)
    self._writer().flush()

  def final_metrics(self, step: int, *, eval_loss: float, eval_accuracy: float) -> None:
    with self._writer().as_default(step=step):
      tf.summary.scalar(FINAL_EVAL_ACCURACY, eval_accuracy,
                        description='Accuracy on the eval split at the end of training.')
      tf.summary.scalar(FINAL_EVAL_LOSS, eval_loss,
                        description='Loss on the eval split at the end of training.')
    self._writer().flush()

  def target(self, step: int, target: dict) -> None:
    """--target_accuracy's outcome, in the run folder: target/reached (1 or 0) at the step
    the run ended, and where it was reached target/step, target/examples,
    target/train_seconds and target/wall_seconds at that step."""
    with self._writer().as_default(step=target.get('step', step)):
      tf.summary.scalar(TARGET_ACCURACY, target['accuracy'])
      tf.summary.scalar(TARGET_REACHED, float(target['reached']))
      if target['reached']:
        for name in ('step', 'examples', 'train_seconds', 'wall_seconds'):
          tf.summary.scalar(f'{TARGET}/{name}', float(target[name]))
    self._writer().flush()

  def train_interval(self, step: int, *, loss: float, accuracy: float, learning_rate: float,
                     examples_per_second: float, step_time: float,
                     input_wait_fraction: Optional[float]) -> None:
    """One logging interval of training; `step_time` in seconds per step.

    `input_wait_fraction` None (not measured) leaves that tag out.
    """
    with self._writer(TRAIN_RUN).as_default(step=step):
      tf.summary.scalar(LOSS, loss)
      tf.summary.scalar(ACCURACY, accuracy)
      tf.summary.scalar(LEARNING_RATE, learning_rate)
      tf.summary.scalar(EXAMPLES_PER_SECOND, examples_per_second,
                        description='Training examples per second, all replicas together.')
      tf.summary.scalar(STEP_TIME, step_time, description='Seconds per training step.')
      if input_wait_fraction is not None:
        tf.summary.scalar(
            INPUT_WAIT_FRACTION, input_wait_fraction,
            description='Fraction of the training loop spent waiting for the next batch. '
                        'Near 0: the model is the bottleneck; near 1: the input pipeline is.')

  def evaluation(self, step: int, *, loss: float, accuracy: float, confusion: np.ndarray,
                 class_names: Sequence[str], run: str = EVAL_RUN) -> None:
    """One evaluation into `run` (eval, or eval_<split> for the evaluation job)."""
    with self._writer(run).as_default(step=step):
      tf.summary.scalar(LOSS, loss)
      tf.summary.scalar(ACCURACY, accuracy)
      for name, value in metrics.per_class_accuracy(confusion, class_names).items():
        if value is not None:  # A class with no eval examples has no accuracy.
          tf.summary.scalar(f'{PER_CLASS}/{name}', value)
      if self.enabled:  # Rendering costs time; a no-op writer would discard the picture.
        picture = pictures.confusion_matrix_image(confusion, class_names)
        tf.summary.image(CONFUSION_MATRIX, picture[None], step=step,
                         description='Evaluation split; rows: true class, columns: predicted.')
    self._writer(run).flush()

  def training_images(self, images: np.ndarray, labels: Sequence[int],
                      class_names: Sequence[str], step: int = 0) -> None:
    """A grid of training images with their class names."""
    if not self.enabled:
      return
    with self._writer(TRAIN_RUN).as_default(step=step):
      tf.summary.image(TRAINING_IMAGES, pictures.image_grid(images, labels, class_names)[None],
                       description='The first examples of the training split, with their labels.')

  def flush(self) -> None:
    for writer in self._writers.values():
      writer.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers.clear()
