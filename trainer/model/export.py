"""Exports the trained model as a SavedModel that serves uint8 images or encoded image files.

Two signatures, one model:
  serving_default  uint8 images [batch, H, W, C] of the training shape (what it always took)
  serving_bytes    `image_bytes`: a batch of PNG, JPEG, GIF, BMP or WebP files, grey or
                   colour, decoded, converted and resized by training's own code
                   (data/image_folder.py decode); TF Serving's REST API takes them as
                   {"signature_name": "serving_bytes", "instances": [{"b64": "..."}]}.
                   Each file's header is read first (data/image_header.py): a request
                   holding a file over the export's pixel limit, truncated or not an image
                   fails as a whole with InvalidArgument naming the file's index and why,
                   before anything is decoded.
Both return `probabilities`, `class_id` and `class_name`. --export_litert adds model.tflite
and, with --litert_quantize=int8, model_int8.tflite (model/litert.py).
"""

import logging
from typing import Optional

import tensorflow as tf

from trainer.data import image_folder
from trainer.data import image_header
from trainer.data import order
from trainer.model import cnn
from trainer.model import litert
from trainer.model import steps

BYTES_SIGNATURE = 'serving_bytes'
# The *_bytes name is the convention of Google's prediction services for encoded binary
# inputs; TF Serving decodes {"b64": ...} into any string input, and names its *outputs*
# *_bytes when they are binary.
BYTES_INPUT = 'image_bytes'


class _Serving(tf.Module):
  """uint8 images [batch, H, W, C], or encoded files -> class probabilities and names."""

  def __init__(self, model, class_names, flip: bool,
               max_pixels: int = image_header.DEFAULT_MAX_PIXELS):
    super().__init__()
    # The tf.Variables under the Keras ones are what the functions capture, and tracked here
    # rather than through the Keras model: TensorFlow's session-based loaders (TF Serving,
    # saved_model_cli run) restore only those, and find none behind Keras 3 variables ("Could
    # not find variable ...": tensorflow/serving#2250, tensorflow/tensorflow#72963); tracking
    # the model as well would store every weight twice (keras-team/keras#23553).
    self.model_variables = [weight.value for weight in model.weights]
    self.class_names = tf.constant(list(class_names))
    # What trainer.predict reads of the export (loaded.classes, loaded.max_pixels); the
    # signatures use constants, as before.
    self.classes = tf.Variable(list(class_names), trainable=False, name='classes')
    self.max_pixels = tf.Variable(max_pixels, trainable=False, dtype=tf.int64, name='max_pixels')
    shape = tuple(model.input_shape[1:])

    def outputs(images):
      # The same scaling as the training pipeline (data/order.py).
      # The same logits as evaluation, so that serving scores what evaluation reported.
      logits = steps.eval_logits(model, order.scale(images), flip)
      probabilities = tf.nn.softmax(logits)
      predicted = tf.argmax(probabilities, axis=-1)
      return {
          'probabilities': probabilities,
          'class_id': predicted,
          'class_name': tf.gather(self.class_names, predicted),
      }

    @tf.function(input_signature=[tf.TensorSpec((None,) + shape, tf.uint8, name='images')])
    def serve(images):
      return outputs(images)

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)])
    def serve_bytes(image_bytes):
      # Every header before any decoding: a refused file costs nothing, wherever it is.
      verdicts = image_header.check(tf.map_fn(
          image_header.read, image_bytes, fn_output_signature=tf.TensorSpec((3,), tf.int64)),
                                    max_pixels)
      bad = tf.not_equal(verdicts[:, 0], image_header.OK)
      # The first bad file, or a row past the end when there is none (or no file at all).
      first = tf.argmax(tf.cast(tf.concat([bad, [True]], 0), tf.int32), output_type=tf.int64)
      padded = tf.concat([verdicts, [[image_header.OK, 0, 0]]], 0)
      refuse = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
          image_header.message_op(first, padded[first], max_pixels)])
      with tf.control_dependencies([refuse]):
        image_bytes = tf.identity(image_bytes)
      # One image at a time: each file has its own size until it is resized.
      images = tf.map_fn(lambda data: image_folder.decode(data, shape[:2], shape[2]),
                         image_bytes, fn_output_signature=tf.TensorSpec(shape, tf.uint8))
      return outputs(images)

    self.serve = serve
    self.serve_bytes = serve_bytes


def save(module, path: str, signatures: dict) -> None:
  """tf.saved_model.save, leaving absl's log level as it was."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  try:
    tf.saved_model.save(module, path, signatures=signatures)
  finally:
    # tf.saved_model.save mutes absl logging and, when absl flags were never parsed (library
    # use, tests), restores it to WARNING instead of what it was: progress lines vanish.
    absl_logger.setLevel(level)


def export_saved_model(model, class_names, export_dir: str, flip: bool = False,
                       litert_quantize: Optional[str] = None, source=None,
                       max_pixels: int = image_header.DEFAULT_MAX_PIXELS) -> str:
  """Writes the SavedModel; the weights are copied into a model outside any strategy, so
  exporting needs no collective and works the same after any strategy's training.

  litert_quantize 'none' also writes model.tflite into it, 'int8' model_int8.tflite as
  well, calibrated on images of `source`'s training split. serving_bytes refuses files
  declaring more than `max_pixels` pixels."""
  plain = cnn.create_model(model.input_shape[1:], model.output_shape[-1])
  plain.set_weights(model.get_weights())
  module = _Serving(plain, class_names, flip, max_pixels)
  tmp = export_dir.rstrip('/') + '.tmp'
  if tf.io.gfile.exists(tmp):
    tf.io.gfile.rmtree(tmp)
  save(module, tmp, {'serving_default': module.serve, BYTES_SIGNATURE: module.serve_bytes})
  if litert_quantize is not None:
    litert.write(plain, flip, tmp, litert_quantize, source)
  # Swap in whole: a reader never sees a half-written export.
  if tf.io.gfile.exists(export_dir):
    tf.io.gfile.rmtree(export_dir)
  tf.io.gfile.rename(tmp, export_dir)
  return export_dir
