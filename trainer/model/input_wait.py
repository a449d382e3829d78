"""How long a training loop waits for its input: the number that says whether the input
pipeline or the model is the bottleneck.

The clocks run inside the compiled loop (tf.timestamp), around each `next(iterator)`: the
host only sees a whole loop of many steps, and with prefetching, the time a batch takes
to produce is not the time the loop waits for it.

A clock is a host (CPU-only) op, and on a GPU a host op ordered after GPU ops costs a
round trip: TensorFlow turns the cross-device control edge into a send of a dummy tensor
whose receive completes only once the GPU's compute stream has run everything queued
before it (tensorflow/core/graph/graph_partition.cc AddDummyConst;
tensorflow/core/common_runtime/gpu/gpu_util.cc CopyGPUTensorToCPU waits for the sender's
stream). A clock in every iteration, ordered (as every stateful op of a loop body is)
after the previous step, therefore lets the host enqueue step s + 1 only after the GPU has
finished step s, and the GPU idles for that host latency on every step. So the clocks
run per step only where the element is produced per step on the host (tf.data, which
the loop does wait for); an input whose data already sits on the devices (device input,
resident synthetic batches) produces nothing per step, waits for nothing, and gets one
pair of clocks around the whole loop, which the end of a host call syncs anyway.
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


def timed_loop(iterator, steps, step_fn: Callable[[object], None], clocked: bool = True,
               produced_per_step: bool = True):
  """Runs `step_fn(next(iterator))` `steps` times in a tf.function.

  Returns (seconds waiting for input, seconds for the whole loop), both float64 scalars.
  Iterations cannot overlap (TensorFlow makes each loop iteration's outputs wait for all
  of its stateful ops, the training step's variable updates among them), so a wait is
  never counted while the previous step still computes.

  `clocked=False` runs the loop without clocks and returns NaNs: under TensorFlow's op
  determinism (--deterministic) reading the clock is an error. `produced_per_step=False`
  (an iterator that hands out data already on the devices) clocks only the whole loop,
  and the wait is 0.
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
      if produced_per_step:
        element, seconds = timed_next(iterator)
        waited += seconds
      else:
        element = next(iterator)
        # Carried through the loop all the same: the loop's outputs wait for its steps,
        # and the end clock waits for them.
        waited += 0.0
      step_fn(element)
  with tf.control_dependencies([waited]):
    end = tf.timestamp()
  return waited, end - begin


def fraction(waited, total) -> Optional[float]:
  """The share of a loop spent waiting for input, or None if the loop ran without clocks."""
  waited, total = float(waited), float(total)
  if not (math.isfinite(waited) and math.isfinite(total)):
    return None
  return waited / total if total > 0 else 0.0
