"""--export_litert: the served model as LiteRT (TensorFlow Lite) files, float and int8.

The file takes what the SavedModel's default signature takes, uint8 images [batch, H, W, C],
and returns the same softmax probabilities (mirror views averaged under --eval_flip), so
that a phone runs what the server runs. Class names are the export's, in the same order.
"""

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from trainer.data import order

FILE = 'model.tflite'
INT8_FILE = 'model_int8.tflite'
# tf.lite.RepresentativeDataset's doc: "a small subset of a few hundred samples" of the
# training data calibrates the ranges; more only costs conversion time.
REPRESENTATIVE_EXAMPLES = 300
# What TensorFlow's converter writes to stderr on every conversion, from C++, asking nothing
# of anyone: options it ignores, the quantizer's settings, metadata it leaves to others.
_CONVERTER_NOISE = re.compile(r'Ignored (output_format|drop_control_dependency)\.$|'
                              r'^fully_quantize: \d|Skipping runtime version metadata')


@contextlib.contextmanager
def _converter_noise_dropped():
  """Holds back what is written to file descriptor 2 meanwhile (where C++ code logs), then
  passes it on without the converter's noise; all of it if the conversion failed."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    failed = True
    try:
      yield
      failed = False
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      lines = held.read().decode('utf-8', errors='replace').splitlines(keepends=True)
      kept = ''.join(line for line in lines if failed or not _CONVERTER_NOISE.search(line))
      if kept:
        os.write(2, kept.encode())


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
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
        _converter_noise_dropped():
      # "Statistics for quantized inputs were expected": the uint8 input is not quantized
      # but cast (pixels, not a scaled tensor), so it has no statistics to give.
      warnings.filterwarnings('ignore', 'Statistics for quantized inputs')
      return converter.convert()
  finally:
    absl_logger.setLevel(level)  # As in export.py: conversion saves a SavedModel too.


def write(model: keras.Model, flip: bool, folder: str, quantize: str, source) -> None:
  """model.tflite (float) into `folder`; with quantize='int8', model_int8.tflite as well:
  both from the same weights, so that the one can be checked against the other."""
  files = {FILE: convert(model, flip)}
  if quantize == 'int8':
    files[INT8_FILE] = convert(model, flip, 'int8', representative_images(source))
  for name, content in files.items():
    with tf.io.gfile.GFile(os.path.join(folder, name), 'wb') as f:
      f.write(content)
