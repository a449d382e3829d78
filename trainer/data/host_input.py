"""`--input=host` (the default): training batches made by tf.data on the host.

Each input pipeline (one per worker) holds its worker's shard in memory and yields the
batches of its local replicas in turn, one per replica per step, as
`distribute_datasets_from_function` hands them out. A batch is one gather by the epoch's
permutation, then augmentation and scaling of the whole batch: a handful of ops per step,
where a shuffle buffer and a map call per example used to compete with the training step
for the same cores. `streaming_dataset` keeps that shuffle buffer for data sets larger than
memory (--nocache).
"""

import tensorflow as tf

from trainer.data import order
from trainer.data import shards as shards_lib

AUTOTUNE = tf.data.AUTOTUNE


def train_dataset(shard: shards_lib.Shard, per_replica: int, local_replicas: int,
                  steps_per_epoch: int, seed: int, start_step: int = 0,
                  augment: str = 'none') -> tf.data.Dataset:
  """Endless per-replica batches (float32 images, labels) from step `start_step` on:
  step s's batch of local replica 0, of local replica 1, ..., then step s + 1's."""
  start_epoch, steps_into_epoch = divmod(start_step, steps_per_epoch)

  def epoch(index):
    permutation = order.epoch_permutation(shard.size, shard.capacity, seed, index,
                                          shard.worker)
    first = tf.where(index == start_epoch, tf.constant(steps_into_epoch, tf.int64), 0)

    def element(position):
      return order.replica_batch(
          shard.images, shard.labels, permutation,
          step=index * steps_per_epoch + position // local_replicas,
          steps_per_epoch=steps_per_epoch, per_replica=per_replica,
          local_replica=position % local_replicas, local_replicas=local_replicas,
          seed=seed, worker=shard.worker, augmentation=augment)

    return tf.data.Dataset.range(first * local_replicas,
                                 steps_per_epoch * local_replicas).map(
                                     element, num_parallel_calls=AUTOTUNE)

  return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).prefetch(AUTOTUNE)


def streaming_dataset(source, worker: int, workers: int, per_replica: int, local_replicas: int,
                      steps_per_epoch: int, seed: int, start_step: int, augment: str,
                      shuffle_buffer: int) -> tf.data.Dataset:
  """The same stream of per-replica batches for data sets too large to hold (--nocache):
  examples stream through a shuffle buffer, in an order of their own, still fixed by
  (seed, epoch); augmentation and scaling as for held data."""
  examples_per_epoch = steps_per_epoch * per_replica * local_replicas
  raw = source.read('train', worker, workers)

  def epoch(index):
    epoch_seed = seed * 100_003 + index
    return (raw.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
            .take(examples_per_epoch).batch(per_replica, drop_remainder=True))

  start_epoch, steps_into_epoch = divmod(start_step, steps_per_epoch)
  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch)
  ds = ds.skip(steps_into_epoch * local_replicas)
  if augment != 'none':
    def augmented(position, batch):
      images, labels = batch
      step = start_step + position // local_replicas
      first = (position % local_replicas) * per_replica
      return order.augment(images, seed, step, worker, augment == 'flip_shift',
                           first_position=first), labels
    ds = ds.enumerate().map(augmented, num_parallel_calls=AUTOTUNE)
  return ds.map(lambda images, labels: (order.scale(images), labels),
                num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
