"""How long a training loop waits for its input: the number that says whether the input
pipeline or the model is the bottleneck.

The clocks run inside the compiled loop (tf.timestamp), around each `next(iterator)`: the
host only sees a whole loop of many steps, and with prefetching, the time a batch takes
to produce is not the time the loop waits for it.
"""

import math
from typing import Callable, Optional, Tuple

import tensorflow as tf


def timed_next(iterator) -> Tuple[object, tf.Tensor]:
  """`next(iterator)` in a tf.function, and the seconds (float64) it waited for the element."""
  start = tf.timestamp()
  with tf.control_dependencies([start]):
    element = next(iterator)
  # The end clock reads only once every component of the element exists. Elements that
  # are not tensors (a batch held in variables, as for synthetic data) take no waiting.
  ready = [t for t in tf.nest.flatten(element, expand_composites=True)
           if isinstance(t, tf.Tensor) and t.dtype != tf.resource]
  with tf.control_dependencies(ready):
    end = tf.timestamp()
  return element, end - start


def timed_loop(iterator, steps, step_fn: Callable[[object], None], clocked: bool = True):
  """Runs `step_fn(next(iterator))` `steps` times in a tf.function.

  Returns (seconds waiting for input, seconds for the whole loop), both float64 scalars.
  Iterations cannot overlap (TensorFlow makes each loop iteration's outputs wait for all
  of its stateful ops, the training step's variable updates among them), so a wait is
  never counted while the previous step still computes.

  `clocked=False` runs the loop without clocks and returns NaNs: under TensorFlow's op
  determinism (--deterministic) reading the clock is an error.
  """
  if not clocked:
    for _ in tf.range(steps):
      step_fn(next(iterator))
    unknown = tf.constant(float('nan'), tf.float64)
    return unknown, unknown
  begin = tf.timestamp()
  waited = tf.constant(0.0, tf.float64)
  with tf.control_dependencies([begin]):
    for _ in tf.range(steps):
      element, seconds = timed_next(iterator)
      step_fn(element)
      waited += seconds
  with tf.control_dependencies([waited]):
    end = tf.timestamp()
  return waited, end - begin


def fraction(waited, total) -> Optional[float]:
  """The share of a loop spent waiting for input, or None if the loop ran without clocks."""
  waited, total = float(waited), float(total)
  if not (math.isfinite(waited) and math.isfinite(total)):
    return None
  return waited / total if total > 0 else 0.0
