"""Which training examples each step sees, and how they are augmented.

Pure functions of (seed, step, replica), written in integer TensorFlow ops that every
device and XLA run alike: the host pipeline (tf.data, trainer/input_pipeline.py) and the
device-resident input (trainer/device_input.py) call the same functions and so produce the
same batches, and a resumed run sees exactly the batches an uninterrupted one would.

The order: each replica owns a fixed share of the training split (`share_bounds`). Epoch e
visits replica r's share in the order of a permutation drawn from (seed, e, r); step s of
the epoch takes the s-th run of `per_replica` indices of it. No shuffle buffer: the whole
share is shuffled, and only the permutation (4 bytes an example) is recomputed per epoch.
"""

import tensorflow as tf

_MASK32 = 0xFFFFFFFF
# Streams of random numbers that must not coincide for the same (seed, step, replica).
_PERMUTATION, _AUGMENTATION = 1, 2
MAX_SHIFT = 4  # Pixels; the standard CIFAR augmentation pads by 4 and crops back.
_INVERSE_255 = 1.0 / 255.0


def mix(x):
  """A bijective 32-bit integer hash (lowbias32-style) of int64 values in [0, 2**32).

  Products stay below 2**63 (constants < 2**31), so int64 arithmetic is exact everywhere.
  """
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
  x = tf.bitwise.bitwise_and(x * 0x21F0AAAD, _MASK32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
  x = tf.bitwise.bitwise_and(x * 0x735A2D97, _MASK32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))


def derive_key(seed, *parts):
  """A 32-bit key (int64 scalar tensor) for `seed` and the given integers, chained by `mix`."""
  key = mix(tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), _MASK32))
  for part in parts:
    key = mix(tf.bitwise.bitwise_and(key + tf.cast(part, tf.int64), _MASK32))
  return key


def share_bounds(num_examples: int, num_replicas: int, replica: int):
  """(start, size) of `replica`'s share: contiguous, sizes differing by at most one, the
  same split as tfds.even_splits."""
  start = num_examples * replica // num_replicas
  return start, num_examples * (replica + 1) // num_replicas - start


def epoch_permutation(size, capacity: int, seed, epoch, replica):
  """int32 [capacity]: its first `size` entries are a permutation of range(size), drawn from
  (seed, epoch, replica); the rest (padding, for shares smaller than `capacity`) follow.

  `size` may be a tensor: under TPUStrategy every replica runs one program, so shares are
  padded to one shape and each replica's true size is data.
  """
  key = derive_key(seed, _PERMUTATION, epoch, replica)
  positions = tf.range(capacity, dtype=tf.int64)
  # Distinct positions get distinct sort keys (mix is a bijection), so the order is unique
  # and any sort on any device finds the same one. Shifted into int32's range, order kept.
  keys = tf.cast(mix(tf.bitwise.bitwise_xor(positions, key)) - 2**31, tf.int32)
  keys = tf.where(positions < tf.cast(size, tf.int64), keys, tf.int32.min)
  return tf.argsort(keys, direction='DESCENDING', stable=True)


def step_indices(permutation, step_in_epoch, per_replica: int):
  """The `per_replica` example indices (int32) of one step of an epoch."""
  start = tf.cast(step_in_epoch, tf.int32) * per_replica
  return tf.slice(permutation, [start], [per_replica])


def augment(images, seed, step, replica, shift: bool):
  """A random horizontal flip and, if `shift`, a shift of up to MAX_SHIFT pixels with zero
  fill, for each uint8 image of a [N, H, W, C] batch; drawn from (seed, step, replica).

  Vectorised over the batch with gathers, which XLA compiles on any device. (On CPU a
  broadcast select of mirrored images costs three times these gathers.)"""
  count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
  key = derive_key(seed, _AUGMENTATION, step, replica)
  bits = mix(tf.bitwise.bitwise_xor(tf.range(count, dtype=tf.int64), key))
  flip = tf.equal(tf.bitwise.bitwise_and(bits, 1), 1)
  if not shift:
    both = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
    return tf.gather(both, tf.range(count) + count * tf.cast(flip, tf.int32))
  span = 2 * MAX_SHIFT + 1
  rows = tf.cast(tf.bitwise.right_shift(bits, 8) % span, tf.int32)
  cols = tf.cast(tf.bitwise.right_shift(bits, 16) % span, tf.int32)
  padded = tf.pad(images, [[0, 0], [MAX_SHIFT, MAX_SHIFT], [MAX_SHIFT, MAX_SHIFT], [0, 0]])
  padded = tf.gather(padded, rows[:, None] + tf.range(height), axis=1, batch_dims=1)
  columns = cols[:, None] + tf.range(width)
  # A mirrored image reads the padded columns right to left: flip and shift in one gather.
  columns = tf.where(flip[:, None], width + 2 * MAX_SHIFT - 1 - columns, columns)
  return tf.gather(padded, columns, axis=2, batch_dims=1)


def scale(images):
  """uint8 pixels to float32 in [0, 1], as the tutorial does.

  A product, not the tutorial's division: graph optimizers turn a division by a constant
  into a product in some places (tf.function) and not others (tf.data), and host and device
  batches must agree to the bit."""
  return tf.cast(images, tf.float32) * _INVERSE_255


def replica_batch(images, labels, permutation, step, steps_per_epoch: int, per_replica: int,
                  seed, replica, augmentation: str):
  """One replica's batch of step `step`: gathered from its share's uint8 arrays by the
  epoch's permutation, augmented, scaled. Returns (float32 images, labels)."""
  indices = step_indices(permutation, step % steps_per_epoch, per_replica)
  batch = tf.gather(images, indices)
  if augmentation != 'none':
    batch = augment(batch, seed, step, replica, shift=augmentation == 'flip_shift')
  return scale(batch), tf.gather(labels, indices)
