"""Exports the trained model as a SavedModel that serves raw uint8 images."""

import logging
import os

import tensorflow as tf

from trainer.data import order
from trainer.model import cnn
from trainer.model import steps

EXPORT_DIR = 'export'


class _Serving(tf.Module):
  """uint8 images [batch, H, W, C] -> class probabilities and class names."""

  def __init__(self, model, class_names, flip: bool):
    super().__init__()
    self.model = model
    self.class_names = tf.constant(list(class_names))
    shape = tuple(model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec((None,) + shape, tf.uint8, name='images')])
    def serve(images):
      # The same scaling as the training pipeline (data/order.py).
      # The same logits as evaluation, so that serving scores what evaluation reported.
      logits = steps.eval_logits(self.model, order.scale(images), flip)
      probabilities = tf.nn.softmax(logits)
      predicted = tf.argmax(probabilities, axis=-1)
      return {
          'probabilities': probabilities,
          'class_id': predicted,
          'class_name': tf.gather(self.class_names, predicted),
      }

    self.serve = serve


def export_saved_model(model, class_names, export_dir: str, flip: bool = False) -> str:
  """Writes the SavedModel; the weights are copied into a model outside any strategy, so
  exporting needs no collective and works the same after any strategy's training."""
  plain = cnn.create_model(model.input_shape[1:], model.output_shape[-1])
  plain.set_weights(model.get_weights())
  module = _Serving(plain, class_names, flip)
  tmp = export_dir.rstrip('/') + '.tmp'
  if tf.io.gfile.exists(tmp):
    tf.io.gfile.rmtree(tmp)
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  try:
    tf.saved_model.save(module, tmp, signatures={'serving_default': module.serve})
  finally:
    # tf.saved_model.save mutes absl logging and, when absl flags were never parsed (library
    # use, tests), restores it to WARNING instead of what it was: progress lines vanish.
    absl_logger.setLevel(level)
  # Swap in whole: a reader never sees a half-written export.
  if tf.io.gfile.exists(export_dir):
    tf.io.gfile.rmtree(export_dir)
  tf.io.gfile.rename(tmp, export_dir)
  return export_dir


def default_export_dir(model_dir: str) -> str:
  return os.path.join(model_dir, EXPORT_DIR)
