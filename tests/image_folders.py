"""Image folders written by tests: small, mixed sizes, formats and channel counts.

Each image is one solid colour whose grey level encodes its example id, so a test can tell
which examples a pipeline produced after decoding, conversion and resizing (a solid colour
survives all three).
"""

import pathlib

import numpy as np
from PIL import Image

CLASSES = ('cat', 'dog')
FIRST_SIZE = (12, 10)  # (height, width) of the first training image: the default size.
_SIZES = [FIRST_SIZE, (8, 8), (16, 20), (10, 12)]
_FORMATS = ['png', 'png', 'jpg', 'gif', 'bmp', 'png']


def level(example_id: int) -> int:
  return 8 + 4 * example_id


def example_id(pixel_value: float) -> int:
  """The id back from a decoded pixel in [0, 1] (JPEG may be off by a level or two)."""
  return int(round((pixel_value * 255 - 8) / 4))


def _save(path: pathlib.Path, example: int, index: int, mode=None):
  height, width = _SIZES[index % len(_SIZES)]
  value = level(example)
  fmt = _FORMATS[index % len(_FORMATS)]
  mode = mode or ('RGB' if fmt in ('jpg', 'gif') else 'RGB')
  colour = {'L': value, 'RGB': (value,) * 3, 'RGBA': (value, value, value, 128)}[mode]
  path = path.with_suffix('.' + fmt if mode != 'RGBA' else '.png')
  Image.new(mode, (width, height), colour).save(path)
  return path


def write(root, train_per_class=12, test_per_class=5, classes=CLASSES) -> dict:
  """root/train/<class>/..., root/test/<class>/...; returns {split: {id: class index}}.

  The first training image is an RGB PNG of FIRST_SIZE; among the rest are a grayscale and
  an RGBA image, a JPEG, a GIF and a BMP, in four sizes.
  """
  root = pathlib.Path(root)
  labels = {'train': {}, 'test': {}}
  next_id = 0
  for split, count in (('train', train_per_class), ('test', test_per_class)):
    for label, name in enumerate(classes):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for index in range(count):
        mode = {1: 'L', 2: 'RGBA'}.get(index) if label == 0 else None
        _save(folder / f'{index:03d}', next_id, index, mode)
        labels[split][next_id] = label
        next_id += 1
  assert next_id * 4 + 8 < 256, 'too many examples to encode in one grey level'
  return labels


def ids(images) -> np.ndarray:
  """Example ids of a batch of decoded float images [N, H, W, C]."""
  return np.array([example_id(v) for v in np.asarray(images)[:, 0, 0, 0]])


TEXTURED_SIZE = (16, 16)  # (height, width) of write_textured's first training image.
_TEXTURED = [((16, 16), 'png', 'RGB'), ((24, 20), 'jpg', 'RGB'), ((9, 13), 'png', 'L'),
             ((16, 16), 'gif', 'RGB'), ((32, 30), 'bmp', 'RGB'), ((12, 18), 'png', 'RGBA'),
             ((16, 16), 'jpg', 'L')]


def write_textured(root, train_per_class=10, test_per_class=7, classes=('cat', 'dog', 'owl'),
                   seed=0) -> dict:
  """Like write(), but each image is noise around its class's colour, so that resizing
  changes pixels (a solid colour survives any resize) and a short run learns the classes.

  Cycles through TEXTURED_SIZE and other sizes (smaller and larger), PNG, JPEG, GIF and BMP,
  RGB, grey and RGBA; the first training image of each class is an RGB PNG of TEXTURED_SIZE.
  Returns {split: [(path, class index)]} in the image folder's own (sorted) order.
  """
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)
  files = {'train': [], 'test': []}
  for split, count in (('train', train_per_class), ('test', test_per_class)):
    for label, name in enumerate(classes):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      colour = np.array([60 + 70 * label, 200 - 60 * label, 40 + 90 * (label % 2)])
      for index in range(count):
        (height, width), fmt, mode = _TEXTURED[index % len(_TEXTURED)]
        pixels = np.clip(colour + rng.normal(0, 40, (height, width, 3)), 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8), 'RGB').convert(mode)
        path = folder / f'{index:03d}.{fmt}'
        image.save(path)
        files[split].append((str(path), label))
  return files
