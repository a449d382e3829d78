"""Where raw examples come from: what a source is, and the simple ones.

A source hands out (uint8 image, label) examples of its 'train' and 'eval' splits, shard by
shard, and describes itself in a DatasetInfo. The TFDS source (tfds_source.py) and image
folders (image_folder.py) are the ones users name; the in-memory source serves tests and
data that is not in TFDS, the synthetic one measures the compute limit.
"""

import dataclasses
from typing import Protocol, Sequence, Tuple

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


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


def random_source(num_train: int, num_eval: int, shape=(32, 32, 3), num_classes: int = 10,
                  seed: int = 0) -> InMemorySource:
  """Random but learnable data held in memory (the label shows in the image's mean): for
  tests, and for checks that must run a data set's shapes without reading it."""
  rng = np.random.default_rng(seed)

  def split(n):
    labels = rng.integers(0, num_classes, size=n)
    noise = rng.integers(0, 64, size=(n,) + tuple(shape))
    images = (noise + (labels * (190 // num_classes))[:, None, None, None]).astype(np.uint8)
    return images, labels.astype(np.int64)

  return InMemorySource('random', split(num_train), split(num_eval),
                        [f'c{i}' for i in range(num_classes)])


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
