"""tf.data input pipelines: TFDS reading, sharding per worker, batching per replica.

Every pipeline yields `(images, labels)` batches of the *per-replica* size, images float32
in [0, 1]. Evaluation batches carry a third element, a 0/1 weight, so that padding lets
every replica run the same number of steps while each real example counts exactly once.
"""

import dataclasses
import math
from typing import Optional, Protocol, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import data_order
from trainer import device_input
from trainer import host_input
from trainer import shards
from trainer.errors import UserError, first_line

AUTOTUNE = tf.data.AUTOTUNE

# Probed before a download: with no network TFDS retries for minutes before failing.
_NETWORK_PROBE_URLS = ('https://storage.googleapis.com',)
_NETWORK_PROBE_TIMEOUT_S = 5


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  class_names: Tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int


class Source(Protocol):
  """Where raw examples come from: a TFDS data set, or anything a test injects."""
  info: DatasetInfo

  def read(self, split: str, shard_index: int, num_shards: int) -> tf.data.Dataset:
    """Shard `shard_index` of `num_shards` of split 'train' or 'eval' as (uint8 image, label).

    The shards of a split must together hold each example exactly once.
    """


class InMemorySource:
  """Arrays held in memory: for tests and for data that is not in TFDS."""

  def __init__(self, name: str, train: Tuple, eval: Tuple, class_names: Sequence[str]):
    self._splits = {'train': train, 'eval': eval}
    self.info = DatasetInfo(
        name=name, image_shape=tuple(int(d) for d in train[0].shape[1:]),
        num_classes=len(class_names), class_names=tuple(class_names),
        num_train_examples=len(train[0]), num_eval_examples=len(eval[0]))

  def read(self, split, shard_index, num_shards):
    images, labels = self._splits[split]
    return tf.data.Dataset.from_tensor_slices((images, labels)).shard(num_shards, shard_index)


def _network_reachable() -> bool:
  import requests  # pylint: disable=g-import-not-at-top  (TFDS's own HTTP client)
  for url in _NETWORK_PROBE_URLS:
    try:
      requests.head(url, timeout=_NETWORK_PROBE_TIMEOUT_S)
      return True
    except requests.RequestException:
      continue
  return False


class TfdsSource:
  """A TFDS image classification data set with `image` and `label` features."""

  def __init__(self, name: str, data_dir: Optional[str] = None,
               train_split: str = 'train', eval_split: str = 'test', download: bool = True):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
    self._tfds = tfds
    try:
      self._builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise UserError(f'unknown --dataset={name!r}: not a TFDS data set; see '
                      'https://www.tensorflow.org/datasets/catalog/overview or use '
                      '--dataset=synthetic') from None
    except Exception as e:  # A malformed data_dir or name surfaces as many error types.
      raise UserError(f'cannot open --dataset={name!r} in --data_dir={data_dir}: '
                      f'{first_line(e)}') from None
    if not self._builder.is_prepared():
      if not download:
        raise UserError(f'{name} is not prepared in {self._builder.data_dir}')
      self._download()
    self._splits = {'train': train_split, 'eval': eval_split}
    self.info = self._read_info(name)

  def _download(self):
    where = self._builder.data_dir
    if not _network_reachable():
      raise UserError(
          f'{self._builder.name} is not in --data_dir (looked in {where}) and there is no network '
          'to download it; point --data_dir at a folder holding a prepared copy, or run once '
          'where the network is reachable')
    logging.info('Downloading and preparing %s into %s (first use only)',
                 self._builder.name, where)
    try:
      self._builder.download_and_prepare()
    except Exception as e:  # Download and preparation raise many unrelated types.
      raise UserError(f'could not download/prepare {self._builder.name} into {where}: '
                      f'{first_line(e)}') from None

  def _read_info(self, name: str) -> DatasetInfo:
    info = self._builder.info
    shape, label = check_features(name, info.features)
    counts = {}
    for kind, split in self._splits.items():
      try:
        counts[kind] = info.splits[split].num_examples
      except (KeyError, ValueError):
        raise UserError(f'--dataset={name} has no split {split!r} for {kind}; it has: '
                        f'{", ".join(info.splits.keys()) or "none"}') from None
    return DatasetInfo(name=name, image_shape=shape, num_classes=label.num_classes,
                       class_names=tuple(label.names), num_train_examples=counts['train'],
                       num_eval_examples=counts['eval'])

  def read(self, split, shard_index, num_shards):
    name = self._splits[split]
    if num_shards > 1:
      # Sharding by example range, not by file: CIFAR-10 has a single file per split.
      name = self._tfds.even_splits(name, n=num_shards)[shard_index]
    ds = self._builder.as_dataset(
        split=name, shuffle_files=False,
        read_config=self._tfds.ReadConfig(try_autocache=False))
    return ds.map(lambda ex: (ex['image'], ex['label']), num_parallel_calls=AUTOTUNE)


def check_features(name: str, features):
  """Returns (image shape, label feature) of an image classification data set, or raises."""
  if 'image' not in features or 'label' not in features:
    raise UserError(f'--dataset={name} is not image classification: it needs "image" and '
                    f'"label" features, it has {", ".join(features.keys())}')
  shape = tuple(features['image'].shape)
  if len(shape) != 3 or None in shape:
    raise UserError(f'--dataset={name} has images of varying size {shape}; this trainer '
                    'needs a fixed image shape')
  label = features['label']
  if not hasattr(label, 'num_classes'):
    raise UserError(f'--dataset={name}: "label" is not a class label')
  return shape, label


def create_source(name: str, data_dir=None, train_split='train', eval_split='test',
                  image_size='', skip_bad_images=False):
  if name == 'image_folder':
    from trainer import image_folder  # pylint: disable=g-import-not-at-top  (imports this)
    return image_folder.ImageFolderSource(data_dir, train_split, eval_split, image_size,
                                          skip_bad_images)
  if image_size or skip_bad_images:
    raise UserError('--image_size and --skip_bad_images only apply to --dataset=image_folder')
  if name == 'synthetic':
    return SyntheticSource()
  return TfdsSource(name, data_dir, train_split, eval_split)


def source_for(config):
  """The source a Config names (its data set, folder, splits and image options)."""
  return create_source(config.dataset, config.data_dir, config.train_split, config.eval_split,
                       config.image_size, config.skip_bad_images)


class SyntheticSource:
  """Random CIFAR-10-shaped data; the trainer keeps one batch on the device for it."""
  device_resident = True

  def __init__(self, image_shape=(32, 32, 3), num_classes=10):
    self.info = DatasetInfo(
        name='synthetic', image_shape=tuple(image_shape), num_classes=num_classes,
        class_names=tuple(f'class_{i}' for i in range(num_classes)),
        num_train_examples=50_000, num_eval_examples=10_000)

  def read(self, split, shard_index, num_shards):
    count = self.info.num_train_examples if split == 'train' else self.info.num_eval_examples
    size = count // num_shards + (1 if shard_index < count % num_shards else 0)
    image = tf.random.stateless_uniform(self.info.image_shape, seed=[1, 2], maxval=256,
                                        dtype=tf.int32)
    example = (tf.cast(image, tf.uint8), tf.constant(0, tf.int64))
    return tf.data.Dataset.from_tensors(example).repeat(size)


def first_examples(source: Source, count: int):
  """The first `count` training examples as stored: (images [N, H, W, C], labels [N])."""
  images, labels = [], []
  for image, label in source.read('train', 0, 1).take(count).as_numpy_iterator():
    images.append(image)
    labels.append(int(label))
  return np.stack(images), labels


def _scale(images, labels, *rest):
  return (data_order.scale(images), labels) + rest


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
  batch is a function of (seed, step, worker) alone (trainer/host_input.py), the same
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
