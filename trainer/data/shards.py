"""The training split as each worker's shard, held in memory as arrays (uint8 images).

Both training inputs start here: the host pipeline gathers its batches from these arrays,
the device input copies them to each of the worker's devices once. Worker w of W reads
only shard w of W of the split (`Source.read`).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from trainer.core.errors import UserError

_READ_CHUNK = 1024  # Examples per copy while loading: bounds the transient memory.
_ALIGNMENT = 64  # Bytes; TensorFlow's CPU kernels require tensors aligned to this.


@dataclasses.dataclass
class Shard:
  """One worker's shard: images [capacity, H, W, C] and labels [capacity], of which the
  first `size` are examples. Every shard has the same shape (`capacity`), which TPUs need
  (all cores run one program) and which keeps one compiled step for all workers."""
  worker: int
  size: int
  images: tf.Tensor
  labels: tf.Tensor

  @property
  def capacity(self) -> int:
    return int(self.images.shape[0])


def capacity(num_examples: int, num_workers: int) -> int:
  """The largest shard's size: shards of one split differ by at most one example."""
  return math.ceil(num_examples / num_workers)


def _dtypes(source):
  image_spec, label_spec = source.read('train', 0, 1).element_spec
  return image_spec.dtype.as_numpy_dtype, label_spec.dtype.as_numpy_dtype


def shard_bytes(source, num_workers: int) -> int:
  """Memory one shard takes (images and labels), for the largest shard."""
  image_dtype, label_dtype = _dtypes(source)
  per_example = (int(np.prod(source.info.image_shape)) * np.dtype(image_dtype).itemsize +
                 np.dtype(label_dtype).itemsize)
  return capacity(source.info.num_train_examples, num_workers) * per_example


def _aligned_empty(shape, dtype) -> np.ndarray:
  dtype = np.dtype(dtype)
  size = int(np.prod(shape)) * dtype.itemsize
  buffer = np.empty(size + _ALIGNMENT, np.uint8)
  offset = -buffer.ctypes.data % _ALIGNMENT
  return buffer[offset:offset + size].view(dtype).reshape(shape)


def _as_tensor(array: np.ndarray) -> tf.Tensor:
  # DLPack hands the NumPy buffer to TensorFlow without a copy; tf.constant would make two
  # transient copies of a 150 MB array and raise the run's peak memory by that much.
  return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def load_shard(source, worker: int, num_workers: int) -> Shard:
  """Reads worker `worker`'s shard of the training split into memory, once."""
  info = source.info
  limit = capacity(info.num_train_examples, num_workers)
  image_dtype, label_dtype = _dtypes(source)
  images = _aligned_empty((limit,) + tuple(info.image_shape), image_dtype)
  labels = _aligned_empty((limit,), label_dtype)
  count = 0
  for chunk_images, chunk_labels in source.read('train', worker, num_workers).batch(
      _READ_CHUNK).as_numpy_iterator():
    end = count + len(chunk_images)
    if end > limit:
      raise UserError(f'{info.name}: the training split holds more than the '
                      f'{info.num_train_examples} examples its metadata lists')
    images[count:end] = chunk_images
    labels[count:end] = chunk_labels
    count = end
  if count == 0:
    raise UserError(f'{info.name}: worker {worker} of {num_workers} got no training '
                    'examples; use fewer workers or more data')
  images[count:] = 0  # Padding is never drawn, but memory should not hold stale bytes.
  labels[count:] = 0
  return Shard(worker, count, _as_tensor(images), _as_tensor(labels))
