"""`python -m trainer.predict --model=RUN/export image.png [...]`: classify image files.

Prints one line per image: the file, the predicted class and its probability. Images of
another size are resized to the model's input; grayscale/colour is converted to match.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainer.core.errors import EXIT_USER_ERROR, UserError, first_line, op_reason

_MODEL = flags.DEFINE_string('model', None, 'SavedModel folder written by training '
                             '(<model_dir>/export).')


def load(model_dir: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures['serving_default']
  except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
    raise UserError(f'cannot load a trainer export from --model={model_dir}: '
                    f'{first_line(e, 200)}') from None
  return loaded, serve


def read_image(path: str, shape):
  """The image at `path` as uint8 [H, W, C] of the model's input shape."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width, channels = shape
  try:
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
  except (tf.errors.OpError, ValueError) as e:
    raise UserError(f'cannot read image {path}: {op_reason(e)}') from None
  if tuple(image.shape[:2]) != (height, width):
    image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (height, width))), 0, 255),
                    tf.uint8)
  return image


def predict(model_dir: str, paths):
  """Returns [(path, class name, probability)] for each image file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, serve = load(model_dir)
  shape = tuple(serve.structured_input_signature[1]['images'].shape[1:])
  images = tf.stack([read_image(path, shape) for path in paths])
  outputs = serve(images=images)
  names = [n.decode() for n in outputs['class_name'].numpy()]
  best = tf.reduce_max(outputs['probabilities'], axis=-1).numpy()
  return list(zip(paths, names, (float(p) for p in best)))


def main(argv):
  paths = argv[1:]
  try:
    if not _MODEL.value:
      raise UserError('--model is required: the export folder of a run (<model_dir>/export)')
    if not paths:
      raise UserError('no image files given: python -m trainer.predict --model=DIR a.png ...')
    for path, name, probability in predict(_MODEL.value, paths):
      print(f'{path}\t{name}\t{probability:.3f}')
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


if __name__ == '__main__':
  app.run(main)
