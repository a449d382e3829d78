"""`--input=host` (the default): training batches made by tf.data on the host.

Each input pipeline (one per worker) holds its local replicas' shares in memory and yields
their batches in turn, one per replica per step, as `distribute_datasets_from_function`
hands them out. A batch is one gather by the epoch's permutation, then augmentation and
scaling of the whole batch: a handful of ops per step, where a shuffle buffer and a map call
per example used to compete with the training step for the same cores.
"""

from typing import Sequence

import tensorflow as tf

from trainer import data_order
from trainer import shares as shares_lib

AUTOTUNE = tf.data.AUTOTUNE


def train_dataset(local_shares: Sequence[shares_lib.Share], capacity: int, per_replica: int,
                  steps_per_epoch: int, seed: int, start_step: int = 0,
                  augment: str = 'none') -> tf.data.Dataset:
  """Endless per-replica batches (float32 images, labels) from step `start_step` on:
  step s's batch of local replica 0, of local replica 1, ..., then step s + 1's."""
  count = len(local_shares)
  start_epoch, steps_into_epoch = divmod(start_step, steps_per_epoch)

  def epoch(index):
    permutations = [data_order.epoch_permutation(share.size, capacity, seed, index,
                                                 share.replica) for share in local_shares]
    first = tf.where(index == start_epoch, tf.constant(steps_into_epoch, tf.int64), 0) * count

    def element(position):
      step = index * steps_per_epoch + position // count

      def batch_of(local):
        share = local_shares[local]
        return lambda: data_order.replica_batch(
            share.images, share.labels, permutations[local], step, steps_per_epoch,
            per_replica, seed, share.replica, augment)
      if count == 1:
        return batch_of(0)()
      return tf.switch_case(tf.cast(position % count, tf.int32),
                            [batch_of(local) for local in range(count)])

    return tf.data.Dataset.range(first, steps_per_epoch * count).map(
        element, num_parallel_calls=AUTOTUNE)

  return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).prefetch(AUTOTUNE)
