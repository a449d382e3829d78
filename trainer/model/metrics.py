"""What the compiled loops count: loss and accuracy sums and the confusion matrix.

Each is a sync-on-read variable: every replica adds to its own copy inside the loop with no
communication, and reading it outside `strategy.run` sums replicas and workers once per
log line or evaluation. Create them inside `strategy.scope()`.
"""

from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf


class Sums:
  """Running sums of loss, correct predictions and example weight."""

  def __init__(self, name: str):
    def variable(suffix):
      return tf.Variable(0.0, trainable=False, name=f'{name}_{suffix}',
                         synchronization=tf.VariableSynchronization.ON_READ,
                         aggregation=tf.VariableAggregation.SUM)
    self.loss, self.correct, self.count = variable('loss'), variable('correct'), variable('count')

  def add(self, labels, logits, per_example_loss, weights):
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    hits = tf.cast(tf.equal(predictions, labels), tf.float32)
    self.loss.assign_add(tf.reduce_sum(per_example_loss * weights))
    self.correct.assign_add(tf.reduce_sum(hits * weights))
    self.count.assign_add(tf.reduce_sum(weights))

  def result(self):
    """Returns (mean loss, accuracy, example count) over everything added since reset."""
    count = float(self.count.numpy())
    if not count:
      return float('nan'), float('nan'), 0
    return float(self.loss.numpy()) / count, float(self.correct.numpy()) / count, int(count)

  def reset(self):
    for v in (self.loss, self.correct, self.count):
      v.assign(0.0)


class ConfusionMatrix:
  """Counts of (true class, predicted class), weighted so that padding examples count 0."""

  def __init__(self, num_classes: int, name: str = 'confusion'):
    self.num_classes = num_classes
    self.counts = tf.Variable(tf.zeros([num_classes, num_classes]), trainable=False, name=name,
                              synchronization=tf.VariableSynchronization.ON_READ,
                              aggregation=tf.VariableAggregation.SUM)

  def add(self, labels, logits, weights) -> None:
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    self.counts.assign_add(tf.math.confusion_matrix(
        labels, predictions, num_classes=self.num_classes, weights=weights, dtype=tf.float32))

  def result(self) -> np.ndarray:
    """[true, predicted] example counts since the last reset, as int64."""
    return np.rint(self.counts.numpy()).astype(np.int64)

  def reset(self) -> None:
    self.counts.assign(tf.zeros_like(self.counts))


def per_class_accuracy(counts: np.ndarray,
                       class_names: Sequence[str]) -> Dict[str, Optional[float]]:
  """{class name: share of its examples predicted right}; None for a class with none."""
  totals = counts.sum(axis=1)
  return {name: (float(counts[i, i] / totals[i]) if totals[i] else None)
          for i, name in enumerate(class_names)}
