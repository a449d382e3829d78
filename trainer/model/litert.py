"""--export_litert: the served model as a LiteRT (TensorFlow Lite) file, float or int8.

The file takes what the SavedModel's default signature takes, uint8 images [batch, H, W, C],
and returns the same softmax probabilities (mirror views averaged under --eval_flip), so
that a phone runs what the server runs. Class names are the export's, in the same order.
"""

import contextlib
import io
import logging

import keras
import numpy as np
import tensorflow as tf

from trainer.data import order

FILE = 'model.tflite'
# tf.lite.RepresentativeDataset's doc: "a small subset of a few hundred samples" of the
# training data calibrates the ranges; more only costs conversion time.
REPRESENTATIVE_EXAMPLES = 300


def serving_model(model: keras.Model, flip: bool) -> keras.Model:
  """`model` wrapped as uint8 images -> probabilities, with steps.eval_logits' arithmetic.

  A Keras model rather than a tf.function: TensorFlow 2.21's converter leaves a Keras 3
  model's weights as variables when given a tf.function or a SavedModel (a 7 KB file whose
  READ_VARIABLE ops fail), and freezes them only through from_keras_model."""
  images = keras.Input(model.input_shape[1:], dtype='uint8', name='images')
  scaled = keras.layers.Lambda(order.scale, name='scale')(images)
  logits = model(scaled)
  if flip:
    mirror = keras.layers.Lambda(lambda x: tf.reverse(x, axis=[2]), name='mirror')(scaled)
    logits = keras.layers.Average(name='mean_logits')([logits, model(mirror)])
  probabilities = keras.layers.Softmax(name='probabilities')(logits)
  return keras.Model(images, probabilities, name='serving')


def representative_images(source, count: int = REPRESENTATIVE_EXAMPLES) -> np.ndarray:
  """uint8 images spread evenly over the training split (every k-th): image folders list
  their files class by class, so the first `count` would miss most classes."""
  total = source.info.num_train_examples
  stride = max(1, total // count)
  images = [image for image, _ in source.read('train', 0, stride).take(count)
            .as_numpy_iterator()]
  return np.stack(images)


def convert(model: keras.Model, flip: bool, quantize: str = 'none',
            representative=None) -> bytes:
  """The .tflite bytes; quantize='int8': weights and activations in int8 (integer-only ops,
  calibrated on `representative` uint8 images), uint8 input and float32 probabilities."""
  converter = tf.lite.TFLiteConverter.from_keras_model(serving_model(model, flip))
  if quantize == 'int8':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in representative)
    # Integer-only ops: conversion fails rather than leave a float op behind.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  try:
    # Keras prints the traced endpoint to stdout, which is the run's, not the converter's.
    with contextlib.redirect_stdout(io.StringIO()):
      return converter.convert()
  finally:
    absl_logger.setLevel(level)  # As in export.py: conversion saves a SavedModel too.
