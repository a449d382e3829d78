"""The data path's front: the source a Config names, and the tf.data pipelines the loops
draw from (training: host or device input; evaluation: padded, each example once).

Every pipeline yields `(images, labels)` batches of the *per-replica* size, images float32
in [0, 1]. Evaluation batches carry a third element, a 0/1 weight, so that padding lets
every replica run the same number of steps while each real example counts exactly once.
"""

import math

import tensorflow as tf

from trainer.core.errors import UserError
from trainer.data import device_input
from trainer.data import host_input
from trainer.data import image_folder
from trainer.data import order
from trainer.data import shards
from trainer.data import sources
from trainer.data.sources import AUTOTUNE, Source
from trainer.data import tfds_source


def create_source(name: str, data_dir=None, train_split='train', eval_split='test',
                  image_size='', skip_bad_images=False):
  if name == 'image_folder':
    return image_folder.ImageFolderSource(data_dir, train_split, eval_split, image_size,
                                          skip_bad_images)
  if image_size or skip_bad_images:
    raise UserError('--image_size and --skip_bad_images only apply to --dataset=image_folder')
  if name == 'synthetic':
    return sources.SyntheticSource()
  return tfds_source.TfdsSource(name, data_dir, train_split, eval_split)


def source_for(config):
  """The source a Config names (its data set, folder, splits and image options)."""
  return create_source(config.dataset, config.data_dir, config.train_split, config.eval_split,
                       config.image_size, config.skip_bad_images)


def _scale(images, labels, *rest):
  return (order.scale(images), labels) + rest


def _options(threads: int, captures_arrays: bool = False) -> tf.data.Options:
  options = tf.data.Options()
  # We shard by example range ourselves; tf.data must not shard a second time.
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  if threads:
    # A private pool keeps input work from queueing behind (or crowding) the step's ops.
    options.threading.private_threadpool_size = threads
  if captures_arrays:
    # tf.data's graph rewrites serialize the pipeline, and with it a copy of every array
    # its functions capture: 150 MB more peak memory for CIFAR-10, for no gain here.
    options.experimental_optimization.apply_default_optimizations = False
  return options


def _maybe_cache(ds: tf.data.Dataset, cache: bool) -> tf.data.Dataset:
  # The raw uint8 examples, not float copies: a quarter of the memory.
  return ds.cache() if cache else ds


def train_dataset(source: Source, context: tf.distribute.InputContext, global_batch: int,
                  steps_per_epoch: int, seed: int, start_step: int = 0, augment: str = 'none',
                  cache: bool = True, threads: int = 0,
                  shuffle_buffer: int = 50_000) -> tf.data.Dataset:
  """Endless per-replica training batches from step `start_step` on, for one input
  pipeline: step s's batch for each of its local replicas in turn, then step s + 1's.

  With `cache` (the default) the pipeline holds its worker's shard in memory and each
  batch is a function of (seed, step, worker) alone (trainer/data/host_input.py), the same
  batches --input=device draws. Without, for data larger than memory, examples stream
  through a shuffle buffer of `shuffle_buffer`, still in an order fixed by (seed, epoch).
  Either way a resumed run at `start_step` sees exactly the batches an uninterrupted one
  would.
  """
  per_replica = context.get_per_replica_batch_size(global_batch)
  local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
  worker, workers = context.input_pipeline_id, context.num_input_pipelines
  if cache:
    ds = host_input.train_dataset(shards.load_shard(source, worker, workers), per_replica,
                                  local_replicas, steps_per_epoch, seed, start_step, augment)
    return ds.with_options(_options(threads, captures_arrays=True))
  ds = host_input.streaming_dataset(source, worker, workers, per_replica, local_replicas,
                                    steps_per_epoch, seed, start_step, augment, shuffle_buffer)
  return ds.with_options(_options(threads))


def eval_steps(num_examples: int, num_shards: int, global_batch: int) -> int:
  """Steps that cover the largest shard; every worker must run the same count."""
  largest_shard = math.ceil(num_examples / num_shards)
  return math.ceil(largest_shard * num_shards / global_batch)


def eval_dataset(source: Source, context: tf.distribute.InputContext, global_batch: int,
                 steps: int, cache: bool = True, threads: int = 0) -> tf.data.Dataset:
  """Per-replica (images, labels, weights) batches: each eval example once with weight 1."""
  per_replica = context.get_per_replica_batch_size(global_batch)
  local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
  total = steps * per_replica * local_replicas
  real = _maybe_cache(
      source.read('eval', context.input_pipeline_id, context.num_input_pipelines), cache
  ).map(lambda image, label: (image, label, 1.0))
  image_spec, label_spec, _ = real.element_spec
  padding = tf.data.Dataset.from_tensors(
      (tf.zeros(image_spec.shape, image_spec.dtype), tf.zeros([], label_spec.dtype), 0.0)
  ).repeat()
  ds = real.concatenate(padding).take(total).batch(per_replica, drop_remainder=True)
  ds = ds.map(_scale, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
  return ds.with_options(_options(threads))


class _RepeatedBatch:
  """An iterator that yields the same device-resident batch forever (synthetic data)."""

  device_resident = True  # Nothing is produced per step: the loop needs no clocks.

  def __init__(self, values):
    self._values = values

  def __iter__(self):
    return self

  def __next__(self):
    return self._values

  get_next = __next__


def distributed_train_iterator(strategy, source, global_batch, steps_per_epoch, seed,
                               start_step=0, augment='none', cache=True, threads=0,
                               shuffle_buffer=50_000, input_mode='host',
                               device_data_max_mb=device_input.DEFAULT_MAX_MB):
  """What the training loop draws its batches from: a distributed tf.data iterator
  (--input=host), a DeviceInput (--input=device), or one resident batch (synthetic data)."""
  if getattr(source, 'device_resident', False):
    shape = source.info.image_shape
    num_classes = source.info.num_classes

    per_replica = global_batch // strategy.num_replicas_in_sync
    # Mirrored variables: one copy of the batch on each replica's device, read in place.
    with strategy.scope():
      images = tf.Variable(tf.random.uniform((per_replica,) + shape, seed=seed),
                           trainable=False, name='synthetic_images')
      labels = tf.Variable(tf.random.uniform((per_replica,), maxval=num_classes,
                                             dtype=tf.int64, seed=seed),
                           trainable=False, name='synthetic_labels')
    return _RepeatedBatch((images, labels))
  if input_mode == 'device':
    return device_input.DeviceInput(strategy, source, global_batch, steps_per_epoch, seed,
                                    start_step, augment, device_data_max_mb)
  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: train_dataset(source, ctx, global_batch, steps_per_epoch, seed, start_step,
                                augment, cache, threads, shuffle_buffer))
  return iter(dataset)


def distributed_eval_dataset(strategy, source, global_batch, cache=True, threads=0):
  """Returns (distributed dataset, steps per evaluation pass)."""
  steps = []

  def dataset_fn(context):
    # Every input pipeline derives the same count from the same numbers.
    steps.append(eval_steps(source.info.num_eval_examples, context.num_input_pipelines,
                            global_batch))
    return eval_dataset(source, context, global_batch, steps[-1], cache, threads)

  dataset = strategy.distribute_datasets_from_function(dataset_fn)
  return dataset, steps[0]
