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
_WORD = 4  # Bytes of an int32, the type an image row is held in on a device.
# The Cloud TPU performance guide ("Consequences of tiling"): arrays in TPU memory are
# tiled, one dimension padded to a multiple of 8 and another to a multiple of 128. An image
# shard [N, 32, 32, 3] would have its minor dimension of 3 padded to 128, 43 times its size.
_TPU_TILE = (8, 128)


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


def row_words(image_shape) -> int:
  """int32 words of one image held as a row on a device: its bytes, padded to whole words."""
  return -(-int(np.prod(image_shape)) // _WORD)


def as_rows(images: tf.Tensor) -> tf.Tensor:
  """uint8 images [N, H, W, C] as int32 rows [N, row_words], the layout the device input
  holds: GPUs gather int32 but not uint8 (TensorFlow registers no GPU kernel of GatherV2
  for uint8), and a minor dimension of 768 words (CIFAR) is a whole number of TPU tiles
  where [.., 3] bytes would be padded to 128. Reshape and bitcast share the buffer."""
  count, size = int(images.shape[0]), int(np.prod(images.shape[1:]))
  words = row_words(images.shape[1:])
  flat = tf.reshape(images, [count, size])
  if words * _WORD != size:
    flat = tf.pad(flat, [[0, 0], [0, words * _WORD - size]])
  return tf.bitcast(tf.reshape(flat, [count, words, _WORD]), tf.int32)


def from_rows(rows: tf.Tensor, image_shape) -> tf.Tensor:
  """The uint8 images [B, H, W, C] of int32 rows [B, row_words] (as_rows undone)."""
  size = int(np.prod(image_shape))
  flat = tf.reshape(tf.bitcast(rows, tf.uint8), [-1, row_words(image_shape) * _WORD])
  if flat.shape[1] != size:
    flat = flat[:, :size]
  return tf.reshape(flat, [-1, *image_shape])


def tpu_tiled_bytes(shape, itemsize: int) -> int:
  """Bytes of an array as TPU memory holds it (_TPU_TILE): at least its own size anywhere.
  A rank-1 array is counted as filling whole tiles of 8 x 128 elements."""
  if len(shape) == 1:
    tile = _TPU_TILE[0] * _TPU_TILE[1]
    return -(-int(shape[0]) // tile) * tile * itemsize
  *outer, second, minor = [int(d) for d in shape]
  second = -(-second // _TPU_TILE[0]) * _TPU_TILE[0]
  minor = -(-minor // _TPU_TILE[1]) * _TPU_TILE[1]
  return int(np.prod(outer, dtype=np.int64)) * second * minor * itemsize


def device_shard_bytes(source, num_workers: int) -> int:
  """Device memory one shard takes as the device input holds it (int32 image rows and the
  labels), rounded up to TPU tiles: within a few KB of the bytes on a GPU, and what a TPU
  pads them to."""
  _, label_dtype = _dtypes(source)
  examples = capacity(source.info.num_train_examples, num_workers)
  return (tpu_tiled_bytes([examples, row_words(source.info.image_shape)], _WORD) +
          tpu_tiled_bytes([examples], np.dtype(label_dtype).itemsize))


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
