"""The training split as each replica's share of uint8 arrays in memory.

Both training inputs start here: the host pipeline gathers its batches from these arrays,
the device input copies them to the replicas' devices once. Replica r of R owns shard r of
R of the split (`Source.read`), so each worker reads only its own replicas' shares.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from trainer.errors import UserError

_READ_CHUNK = 1024  # Examples per copy while loading: bounds the transient memory.
_ALIGNMENT = 64  # Bytes; TensorFlow's CPU kernels require tensors aligned to this.


@dataclasses.dataclass
class Share:
  """One replica's share: uint8 images [capacity, H, W, C] and int64 labels [capacity], of
  which the first `size` are examples. Every share has the same shape (`capacity`), which
  TPUStrategy needs: all its replicas run one program."""
  replica: int  # Global replica index, 0 .. num_replicas - 1.
  size: int
  images: tf.Tensor
  labels: tf.Tensor


def capacity(num_examples: int, num_replicas: int) -> int:
  """The largest share's size: shards of one split differ by at most one example."""
  return math.ceil(num_examples / num_replicas)


def bytes_per_replica(info, num_replicas: int) -> int:
  """Memory one replica's share takes (images and labels), for the largest share."""
  per_example = int(np.prod(info.image_shape)) + np.dtype(np.int64).itemsize
  return capacity(info.num_train_examples, num_replicas) * per_example


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


def load_share(source, replica: int, num_replicas: int) -> Share:
  """Reads replica `replica`'s shard of the training split into memory, once."""
  info = source.info
  limit = capacity(info.num_train_examples, num_replicas)
  images = _aligned_empty((limit,) + tuple(info.image_shape), np.uint8)
  labels = _aligned_empty((limit,), np.int64)
  count = 0
  for chunk_images, chunk_labels in source.read('train', replica, num_replicas).batch(
      _READ_CHUNK).as_numpy_iterator():
    end = count + len(chunk_images)
    if end > limit:
      raise UserError(f'{info.name}: the training split holds more than the '
                      f'{info.num_train_examples} examples its metadata lists')
    images[count:end] = chunk_images
    labels[count:end] = chunk_labels
    count = end
  if count == 0:
    raise UserError(f'{info.name}: replica {replica} of {num_replicas} got no training '
                    'examples; use fewer replicas or more data')
  images[count:] = 0  # Padding is never drawn, but memory should not hold stale bytes.
  labels[count:] = 0
  return Share(replica, count, _as_tensor(images), _as_tensor(labels))
