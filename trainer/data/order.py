"""Which training examples each step sees, and how they are augmented.

Pure functions of (seed, step, worker), written in integer TensorFlow ops that every
device and XLA run alike: the host pipeline (tf.data, trainer/data/host_input.py) and the
device-resident input (trainer/data/device_input.py) call the same functions and so produce the
same batches, and a resumed run sees exactly the batches an uninterrupted one would.

The order: each worker owns a fixed shard of the training split. Epoch e visits worker w's
shard in the order of a permutation drawn from (seed, e, w); step s of the epoch takes the
s-th run of `worker_batch` indices of it, and the worker's replicas split that run in
order. So the number of replicas on a worker (1 GPU or 8, or a CPU split in two) changes
nothing but speed: a run can resume on another number of local devices and continue with
the same batches. No shuffle buffer: the whole shard is shuffled, and only the permutation
(4 bytes an example) is recomputed each epoch.
"""

import tensorflow as tf

_MASK32 = 0xFFFFFFFF
# Streams of random numbers that must not coincide for the same (seed, step, worker).
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


def epoch_permutation(size, capacity: int, seed, epoch, worker):
  """int32 [capacity]: its first `size` entries are a permutation of range(size), drawn from
  (seed, epoch, worker); the rest (padding, for shards smaller than `capacity`) follow.

  Every worker's shard is padded to one shape (`capacity`; on a TPU every core runs one
  program), so the true `size` is passed apart; it may be a tensor.
  """
  key = derive_key(seed, _PERMUTATION, epoch, worker)
  positions = tf.range(capacity, dtype=tf.int64)
  # Distinct positions get distinct sort keys (mix is a bijection), so the order is unique
  # and any sort on any device finds the same one. Shifted into int32's range, order kept.
  keys = tf.cast(mix(tf.bitwise.bitwise_xor(positions, key)) - 2**31, tf.int32)
  keys = tf.where(positions < tf.cast(size, tf.int64), keys, tf.int32.min)
  return tf.argsort(keys, direction='DESCENDING', stable=True)


def augment(images, seed, step, worker, shift: bool, first_position=0):
  """A random horizontal flip and, if `shift`, a shift of up to MAX_SHIFT pixels with zero
  fill, for each image of a [N, H, W, C] batch; drawn from (seed, step, worker) and each
  image's position in the worker's batch (`first_position` for the first one here).

  Vectorised over the batch with gathers, which XLA compiles on any device. (On CPU a
  broadcast select of mirrored images costs three times these gathers.)"""
  count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
  key = derive_key(seed, _AUGMENTATION, step, worker)
  positions = tf.cast(first_position, tf.int64) + tf.range(count, dtype=tf.int64)
  bits = mix(tf.bitwise.bitwise_xor(positions, key))
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


def replica_indices(permutation, step, steps_per_epoch: int, per_replica: int,
                    local_replica, local_replicas: int):
  """int32 [per_replica]: the shard positions of replica `local_replica`'s examples in step
  `step`, its part of the worker's batch, taken from the epoch's permutation."""
  first = (tf.cast(step % steps_per_epoch, tf.int32) * local_replicas +
           tf.cast(local_replica, tf.int32)) * per_replica
  return tf.slice(permutation, [first], [per_replica])


def augment_batch(batch, seed, step, worker, local_replica, per_replica: int,
                  augmentation: str):
  """`augment` of a replica's batch under --augment=`augmentation` ('none': the batch).

  The result does not depend on whether the batch is uint8 or already scaled: augmentation
  only moves pixels and fills with 0, which `scale` maps to 0.0."""
  if augmentation == 'none':
    return batch
  return augment(batch, seed, step, worker, augmentation == 'flip_shift',
                 first_position=tf.cast(local_replica, tf.int64) * per_replica)


def replica_batch(images, labels, permutation, step, steps_per_epoch: int,
                  per_replica: int, local_replica, local_replicas: int, seed, worker,
                  augmentation: str):
  """Replica `local_replica`'s batch of step `step`: its part of the worker's batch,
  gathered from the worker's shard (uint8 arrays) by the epoch's permutation, augmented
  (in uint8: a quarter of the bytes to move), scaled. Returns (float32 images, labels)."""
  indices = replica_indices(permutation, step, steps_per_epoch, per_replica, local_replica,
                            local_replicas)
  batch = augment_batch(tf.gather(images, indices), seed, step, worker, local_replica,
                        per_replica, augmentation)
  return scale(batch), tf.gather(labels, indices)
