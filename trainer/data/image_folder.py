"""`--dataset=image_folder`: a folder of image files, one subfolder per class.

    DATA_DIR/train/<class name>/*.png|jpg|jpeg|gif|bmp
    DATA_DIR/test/<class name>/...        (the split folders are --train_split/--eval_split)

tf.data over the listed files rather than TFDS's `ImageFolder` builder: that one reads only
JPEG and PNG, needs images of one size, and skips unknown files silently, where users need
GIF/BMP, mixed sizes, and an error that names the bad file. Every file is decoded once when
the source is made, so a bad file stops the run before training starts, not hours in.
"""

import collections
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from trainer.core.errors import UserError, op_reason
from trainer.data.sources import AUTOTUNE, DatasetInfo

NAME = 'image_folder'
# What tf.io.decode_image reads; other files in a class folder are an error, not skipped,
# so that a stray file never silently changes the data set.
EXTENSIONS = ('.png', '.jpg', '.jpeg', '.gif', '.bmp')
_NOT_AN_IMAGE = 'Unknown image file format'


@dataclasses.dataclass
class _Split:
  folder: str
  paths: List[str]
  labels: List[int]
  shapes: List[Tuple[int, int, int]]  # Decoded (height, width, channels) of each file.


def parse_image_size(text: str) -> Optional[Tuple[int, int]]:
  """(height, width) from 'H,W'; None for ''."""
  if not text:
    return None
  try:
    height, width = (int(part) for part in text.split(','))
  except ValueError:
    height = width = 0
  if height <= 0 or width <= 0:
    raise UserError(f'--image_size must be HEIGHT,WIDTH in pixels, e.g. 32,32; got {text!r}')
  return height, width


def _class_folders(split_dir: str, flag: str) -> List[str]:
  if not tf.io.gfile.isdir(split_dir):
    raise UserError(f'{split_dir} is not a folder; --dataset=image_folder needs '
                    f'--data_dir/{flag}/<class name>/<image files>')
  names = sorted(name.rstrip('/') for name in tf.io.gfile.listdir(split_dir)
                 if tf.io.gfile.isdir(os.path.join(split_dir, name)))
  if not names:
    raise UserError(f'{split_dir} has no class folders; put each class\'s images in '
                    f'{split_dir}/<class name>/')
  return names


def list_files(folder: str) -> List[str]:
  """Every file under `folder`, sorted; hidden files (.DS_Store, ._*) left out."""
  files = []
  for directory, subdirs, names in tf.io.gfile.walk(folder):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith('.'))
    files += [os.path.join(directory, name) for name in names if not name.startswith('.')]
  return sorted(files)


def _probe(path):
  image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
  return path, tf.shape(image)


def _decoded_shapes(paths: Sequence[str]) -> Dict[str, Tuple[int, int, int]]:
  """{path: shape} of the files that decode; the others are left out (see _why_bad)."""
  ds = tf.data.Dataset.from_tensor_slices(list(paths)).map(_probe, num_parallel_calls=AUTOTUNE)
  # A failing file must not end the scan: it is found as missing from the result.
  return {path.decode(): tuple(int(d) for d in shape)
          for path, shape in ds.ignore_errors().as_numpy_iterator()}


def _why_bad(path: str) -> Tuple[str, bool]:
  """(reason, skippable) for a file that did not decode: corrupt images are skippable,
  unreadable and non-image files are not."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except Exception as e:  # pylint: disable=broad-except  (NotFound, PermissionDenied, ...)
    return f'cannot read {path}: {op_reason(e)}', False
  try:
    tf.io.decode_image(data, channels=0, expand_animations=False)
  except (tf.errors.OpError, ValueError) as e:
    reason = op_reason(e, 120)
    if _NOT_AN_IMAGE in reason or not path.lower().endswith(EXTENSIONS):
      return (f'{path} is not an image file (PNG, JPEG, GIF or BMP); remove it from the '
              'data folder'), False
    return f'{path} is a damaged image ({reason})', True
  return f'{path} did not decode', True  # Decodes alone: a transient read failure.


class ImageFolderSource:
  """Images from class folders, decoded, converted to one channel count and resized."""

  def __init__(self, data_dir: Optional[str], train_split: str = 'train',
               eval_split: str = 'test', image_size: str = '', skip_bad_images: bool = False):
    if not data_dir:
      raise UserError('--dataset=image_folder needs --data_dir: the folder holding '
                      f'{train_split}/<class name>/ and {eval_split}/<class name>/')
    size = parse_image_size(image_size)
    self._skip_bad_images = skip_bad_images
    train_dir = os.path.join(data_dir, train_split)
    class_names = _class_folders(train_dir, train_split)
    eval_dir = os.path.join(data_dir, eval_split)
    eval_names = _class_folders(eval_dir, eval_split) if eval_dir != train_dir else class_names
    missing = sorted(set(class_names) - set(eval_names))
    extra = sorted(set(eval_names) - set(class_names))
    if missing or extra:
      where = (f'{", ".join(missing)} missing from {eval_dir}' if missing else
               f'{", ".join(extra)} in {eval_dir} but not in {train_dir}')
      raise UserError(f'the {train_split} and {eval_split} folders must hold the same class '
                      f'folders: {where}')
    self._splits = {'train': self._scan(train_dir, class_names)}
    self._splits['eval'] = (self._splits['train'] if eval_dir == train_dir
                            else self._scan(eval_dir, class_names))
    first_height, first_width, channels = self._splits['train'].shapes[0]
    # Two-channel PNGs (grey + alpha) train as grey.
    self._channels = 1 if channels == 2 else channels
    self._size = size or (first_height, first_width)
    self.info = DatasetInfo(
        name=NAME, image_shape=self._size + (self._channels,), num_classes=len(class_names),
        class_names=tuple(class_names), num_train_examples=len(self._splits['train'].paths),
        num_eval_examples=len(self._splits['eval'].paths))
    logging.info('image folder %s: %d classes, %d %s and %d %s images, read as %dx%dx%d',
                 data_dir, self.info.num_classes, self.info.num_train_examples, train_split,
                 self.info.num_eval_examples, eval_split, *self.info.image_shape)

  def _scan(self, split_dir: str, class_names: Sequence[str]) -> _Split:
    paths, labels = [], []
    for label, name in enumerate(class_names):
      files = list_files(os.path.join(split_dir, name))
      if not files:
        raise UserError(f'class folder {os.path.join(split_dir, name)} holds no images')
      paths += files
      labels += [label] * len(files)
    shapes = _decoded_shapes(paths)
    bad = [path for path in paths if path not in shapes]
    skipped = []
    for path in bad:
      reason, skippable = _why_bad(path)
      if not (skippable and self._skip_bad_images):
        hint = '; or pass --skip_bad_images to leave damaged images out' if skippable else ''
        raise UserError(reason + hint)
      logging.warning('skipping %s', reason)
      skipped.append(path)
    if skipped:
      logging.warning('skipped %d damaged images in %s (--skip_bad_images)', len(skipped),
                      split_dir)
      kept = [(p, l) for p, l in zip(paths, labels) if p in shapes]
      counts = collections.Counter(l for _, l in kept)
      for label, name in enumerate(class_names):
        if not counts[label]:
          raise UserError(f'class folder {os.path.join(split_dir, name)} holds no intact images')
      paths, labels = [p for p, _ in kept], [l for _, l in kept]
    return _Split(split_dir, paths, labels, [shapes[p] for p in paths])

  def _decode(self, path, label):
    return decode(tf.io.read_file(path), self._size, self._channels), label

  def read(self, split, shard_index, num_shards):
    files = self._splits[split]
    ds = tf.data.Dataset.from_tensor_slices(
        (files.paths, tf.constant(files.labels, tf.int64)))
    # Sharded by file before decoding: each worker decodes only its own share.
    return ds.shard(num_shards, shard_index).map(self._decode, num_parallel_calls=AUTOTUNE)


def decode(data, size: Tuple[int, int], channels: int):
  """Encoded image bytes (PNG, JPEG, GIF, BMP) as uint8 [height, width, channels]: how
  training reads each file, and what the export's serving_bytes signature does to each
  request (trainer/model/export.py), so that a server sees what training saw."""
  image = tf.io.decode_image(data, channels=0, expand_animations=False)
  image = to_channels(image, channels)
  height, width = size
  image = tf.cond(
      tf.reduce_all(tf.shape(image)[:2] == [height, width]),
      lambda: image,
      lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
          image, (height, width), antialias=True)), 0, 255), tf.uint8))
  image.set_shape((height, width, channels))
  return image


def to_channels(image, channels: int):
  """uint8 [H, W, 1|2|3|4] (grey, grey+alpha, RGB, RGBA) as [H, W, channels] (1, 3 or 4);
  colour becomes grey by luminance, grey is copied to RGB, a missing alpha is opaque."""
  have = tf.shape(image)[-1]
  has_colour = have >= 3
  colour = tf.cond(has_colour, lambda: image[..., :3],
                   lambda: tf.tile(image[..., :1], [1, 1, 3]))
  if channels == 1:
    return tf.cond(has_colour, lambda: tf.image.rgb_to_grayscale(image[..., :3]),
                   lambda: image[..., :1])
  if channels == 3:
    return colour
  opaque = lambda: tf.fill(tf.concat([tf.shape(image)[:2], [1]], 0), tf.constant(255, tf.uint8))
  alpha = tf.cond(tf.equal(have % 2, 0), lambda: image[..., -1:], opaque)
  return tf.concat([colour, alpha], axis=-1)
