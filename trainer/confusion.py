"""A confusion matrix accumulated on the replicas and summed across all of them."""

from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf


class ConfusionMatrix:
  """Counts of (true class, predicted class), weighted so that padding examples count 0.

  Like the loss sums, a sync-on-read variable: each replica adds to its own copy with no
  communication, and reading it outside `strategy.run` sums replicas and workers.
  Create it inside `strategy.scope()`.
  """

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
