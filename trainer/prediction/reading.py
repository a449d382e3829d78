"""trainer.predict's input: the files read, checked and decoded in parallel, in batches.

A tf.data pipeline as training's image folders have (trainer/data/image_folder.py), with
each file's header checked against the pixel limit before it is decoded
(trainer/data/image_header.py). A file that fails (missing, unreadable, refused, damaged)
is dropped from the stream rather than ending it; the batches carry each image's index in
the list, so the job sees which are missing and asks `diagnose` why, one file at a time.
Memory stays that of a few batches in flight, whatever the number of files.
"""

import dataclasses
import re
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.core.errors import op_reason
from trainer.data import image_folder
from trainer.data import image_header
from trainer.data.sources import AUTOTUNE


@dataclasses.dataclass
class Failure:
  status: str  # The gRPC status name, as Vertex AI's batch prediction errors carry it.
  message: str


def batches(paths: Sequence[str], image_shape: Tuple[int, int, int], max_pixels: int,
            batch_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """(indices into `paths`, uint8 images [n, H, W, C]) of the files that decode, in order."""
  size, channels = tuple(image_shape[:2]), image_shape[2]

  def load(index, path):
    data = tf.io.read_file(path)
    verdict = image_header.check(image_header.read(data), max_pixels)
    fine = tf.equal(verdict[0], image_header.OK)
    # A refused file is filtered out, not failed: an op error costs far more than a branch.
    image = tf.cond(fine, lambda: image_folder.decode(data, size, channels),
                    lambda: tf.zeros(tuple(image_shape), tf.uint8))
    return index, image, fine

  ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                           tf.constant(list(paths), tf.string)))
  ds = (ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        .ignore_errors()  # Unreadable or damaged: missing from the batches, diagnosed apart.
        .filter(lambda index, image, fine: fine)
        .map(lambda index, image, fine: (index, image))
        .batch(batch_size).prefetch(2))
  for indices, images in ds:
    yield indices.numpy(), images.numpy()


@tf.function(input_signature=[tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64)])
def _verdict(data, max_pixels):
  return image_header.check(image_header.read(data), max_pixels)


def _read(path: str) -> bytes:
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def diagnose(path: str, image_shape: Tuple[int, int, int],
             max_pixels: int) -> Tuple[Optional[np.ndarray], Optional[Failure]]:
  """(image, None) if the file decodes now (it failed in the pipeline for a passing reason),
  else (None, why it cannot be classified)."""
  try:
    data = _read(path)
  except tf.errors.OpError as e:  # NotFoundError -> NOT_FOUND, as gRPC names the code.
    status = re.sub(r'(?<!^)(?=[A-Z])', '_', type(e).__name__.removesuffix('Error')).upper()
    return None, Failure(status, op_reason(e))
  except (OSError, ValueError) as e:
    return None, Failure('UNKNOWN', str(e))
  verdict = _verdict(tf.constant(data), tf.constant(max_pixels, tf.int64)).numpy()
  if verdict[0] != image_header.OK:
    return None, Failure('INVALID_ARGUMENT', image_header.message(verdict, max_pixels))
  try:
    image = image_folder.decode(tf.constant(data), tuple(image_shape[:2]), image_shape[2])
  except (tf.errors.OpError, ValueError) as e:
    return None, Failure('INVALID_ARGUMENT', f'a damaged image: {op_reason(e, 160)}')
  return image.numpy(), None
