"""`python -m trainer.predict --model=RUN/export image.png [...]`: classify image files.

Prints one line per image: the file, the predicted class and its probability. The files go
as they are to the export's serving_bytes signature, which decodes, converts and resizes
them as training did: what this prints is what TF Serving or Vertex AI return for them.
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
  from trainer.run_folder import locate  # pylint: disable=g-import-not-at-top
  model_dir = locate.export_folder(model_dir, '--model')  # An export, or a run that has one.
  try:
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures['serving_default']
  except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
    raise UserError(f'cannot load a trainer export from --model={model_dir}: '
                    f'{first_line(e, 200)}') from None
  return loaded, serve


def read_file(path: str) -> bytes:
  """The file's bytes, once checked to be an image, so that a bad file is named."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    tf.io.decode_image(data, channels=0, expand_animations=False)
  except (tf.errors.OpError, ValueError) as e:
    raise UserError(f'cannot read image {path}: {op_reason(e)}') from None
  return data


def predict(model_dir: str, paths):
  """Returns [(path, class name, probability)] for each image file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.data import image_folder  # pylint: disable=g-import-not-at-top
  from trainer.model import export  # pylint: disable=g-import-not-at-top
  loaded, serve = load(model_dir)
  files = tf.constant([read_file(path) for path in paths])
  if export.BYTES_SIGNATURE in loaded.signatures:
    outputs = loaded.signatures[export.BYTES_SIGNATURE](**{export.BYTES_INPUT: files})
  else:  # An export from before serving_bytes: the same decoding, done here.
    height, width, channels = serve.structured_input_signature[1]['images'].shape[1:]
    outputs = serve(images=tf.stack([image_folder.decode(data, (height, width), channels)
                                     for data in files]))
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
