"""`--input=device`: the training data held in accelerator memory, batches drawn there.

Every device of a worker holds that worker's shard of the training split, put there once
(CIFAR-10: 147 MB on one machine), each image as one row of int32 words (its bytes; see
shards.as_rows for why not uint8). The compiled training loop then draws every batch on the
device: the epoch's permutation (recomputed once an epoch), one gather of rows, unpacking
and scaling to float32, augmentation, all in the same replica function as the training
step. Each replica counts the steps it has drawn in a variable of its own, so per step the
host sends nothing and reads nothing, and no tf.data thread competes with the step for
the host's cores.

Batches are those of the host pipeline for the same (seed, step) (trainer/data/order.py),
to the bit, so resuming, the data order and the accuracy do not depend on which input a
run uses. Evaluation stays on the host pipeline: it runs once an epoch.
"""

from absl import logging
import tensorflow as tf

from trainer.core.config import Config
from trainer.core import distribute
from trainer.core.errors import UserError
from trainer.data import order
from trainer.data import shards as shards_lib

DEFAULT_MAX_MB = Config.device_data_max_mb


def check_fits(source, num_workers: int, max_mb: int) -> int:
  """Bytes of the training data on each device, as a TPU pads them (shards.py); raises
  UserError if over `max_mb`."""
  needed = shards_lib.device_shard_bytes(source, num_workers)
  if needed > max_mb * 2**20:
    raise UserError(
        f'--input=device: {source.info.name} takes {needed / 2**20:.0f} MB on each device '
        f'({num_workers} worker(s)), over --device_data_max_mb={max_mb}; use --input=host '
        '(batches made on the host), or raise --device_data_max_mb if the device has room')
  return needed


class DeviceInput:
  """The iterator the training loop draws from under --input=device.

  `next()` runs in the loop's cross-replica context and returns the per-replica data (the
  shard already on each device: nothing is produced per step, so the loop has no input to
  wait for); `replica_batch(data)` runs in each replica, inside the training step, and
  returns that replica's (float32 images, labels) for its next step.
  """

  # The loop needs no clocks around next(): see trainer/model/input_wait.py.
  device_resident = True

  def __init__(self, strategy, source, global_batch: int, steps_per_epoch: int, seed: int,
               start_step: int = 0, augment: str = 'none',
               max_mb: int = DEFAULT_MAX_MB):
    workers = distribute.num_workers(strategy)
    needed = check_fits(source, workers, max_mb)
    self._per_replica = global_batch // strategy.num_replicas_in_sync
    self._local_replicas = strategy.num_replicas_in_sync // workers
    self._steps_per_epoch = steps_per_epoch
    self._seed = seed
    self._augment = augment
    self._image_shape = tuple(source.info.image_shape)
    worker = distribute.worker_index(strategy)
    shard = shards_lib.load_shard(source, worker, workers)
    self._shard_size, self._worker, self._capacity = shard.size, worker, shard.capacity
    rows = shards_lib.as_rows(shard.images)
    devices = distribute.replica_devices(strategy)
    on_device = []
    for local, device in enumerate(devices):
      with tf.device(device):
        on_device.append((tf.identity(rows), tf.identity(shard.labels),
                          tf.constant(local, tf.int64)))
    first = worker * self._local_replicas
    self._data = strategy.experimental_distribute_values_from_function(
        lambda context: on_device[context.replica_id_in_sync_group - first])
    with strategy.scope():
      # Each replica's own copies, read and written only inside the replica function: the
      # next step it draws, the epoch's permutation, and the epoch that is for.
      on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.NONE)
      self._step = tf.Variable(tf.constant(start_step, tf.int64), name='input_step',
                               **on_read)
      self._permutation = tf.Variable(tf.zeros([self._capacity], tf.int32),
                                      name='input_permutation', **on_read)
      self._permutation_epoch = tf.Variable(tf.constant(-1, tf.int64),
                                            name='input_permutation_epoch', **on_read)
    logging.info('--input=device: %d training examples (%.0f MB) on each of %s',
                 shard.size, needed / 2**20, ', '.join(devices))

  def __iter__(self):
    return self

  def __next__(self):
    return self._data

  get_next = __next__

  def replica_batch(self, data):
    rows, labels, local_replica = data
    step = self._step.read_value()
    with tf.control_dependencies([step]):
      advanced = self._step.assign_add(1)
    epoch = step // self._steps_per_epoch

    def new_permutation():
      permutation = order.epoch_permutation(self._shard_size, self._capacity, self._seed,
                                            epoch, self._worker)
      with tf.control_dependencies([self._permutation.assign(permutation),
                                    self._permutation_epoch.assign(epoch)]):
        return tf.identity(permutation)

    permutation = tf.cond(tf.equal(self._permutation_epoch.read_value(), epoch),
                          self._permutation.read_value, new_permutation)
    indices = order.replica_indices(permutation, step, self._steps_per_epoch,
                                    self._per_replica, local_replica, self._local_replicas)
    # Scaled before augmentation, the reverse of the host pipeline: every gather, reverse
    # and pad then works on float32, which GPUs have kernels for, and the floats are the
    # same (order.augment_batch).
    images = order.scale(shards_lib.from_rows(tf.gather(rows, indices), self._image_shape))
    images = order.augment_batch(images, self._seed, step, self._worker, local_replica,
                                 self._per_replica, self._augment)
    with tf.control_dependencies([advanced]):
      return tf.identity(images), tf.gather(labels, indices)
