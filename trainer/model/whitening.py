"""--whiten_init: the first convolution starts as a whitening filter bank of the training
images' 3x3 patches, as the CIFAR-10 speed runs start theirs (Page 2018; hlb-CIFAR10,
airbench). The model is unchanged; only its starting weights differ.

Each pair of filters is one principal component of the patches, w and -w (the ReLU after the
convolution keeps either sign), scaled by 1 / sqrt(its variance): the strongest components
first, as many as the layer has pairs of filters (16 of the 27 of RGB 3x3 patches). The
bias centres each response on the patches' mean. The kernel is then scaled to the norm of
Keras' default initialisation, so that the later layers see activations of the usual size.

--whiten_init_all starts every later layer from the data too, layer by layer on the first
layers' outputs: the second convolution as the same kind of filter bank of its input
patches, the hidden dense layer of its input vectors (1x1 patches), and the output layer as
the ridge regression of the classes on the hidden features, a least-squares readout. Few
large steps cannot undo a random start: at batch 4096 this took 30 steps from 57-59% to
60-61% validation accuracy (benchmarks/time_to_target.md).
"""

import keras
import numpy as np
import tensorflow as tf

# Patches drawn for the statistics, and a floor under the variances so that the weakest
# components kept are not blown up to noise.
_PATCHES = 100_000
_EPSILON = 5e-4
# The readout's ridge, relative to the features' mean variance: enough to keep the
# regression of 64 features on 5,000 images from fitting noise.
_RIDGE = 1e-2
_CHUNK = 500  # Images per forward pass while the layers are set: bounds the memory.


def whitening_weights(images: np.ndarray, kernel_shape, default_kernel: np.ndarray, seed: int = 0):
  """(kernel, bias) for a conv layer of `kernel_shape` [kh, kw, in, out] from `images`
  [N, H, W, C] in the model's input scale; `default_kernel` gives the norm to keep."""
  kh, kw, channels, filters = kernel_shape
  images = np.asarray(images)
  rng = np.random.default_rng(seed)
  count, height, width = images.shape[:3]
  n = min(_PATCHES, count * (height - kh + 1) * (width - kw + 1))
  which, rows, cols = (rng.integers(0, limit, n) for limit in
                       (count, height - kh + 1, width - kw + 1))
  offsets_r, offsets_c = np.meshgrid(np.arange(kh), np.arange(kw), indexing='ij')
  patches = images[which[:, None, None], rows[:, None, None] + offsets_r,
                   cols[:, None, None] + offsets_c]  # [n, kh, kw, C]
  patches = patches.reshape(n, kh * kw * channels).astype(np.float64)
  mean = patches.mean(axis=0)
  variances, vectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
  order = np.argsort(variances)[::-1][:filters // 2]
  components = vectors[:, order] / np.sqrt(variances[order] + _EPSILON)
  # An eigenvector's sign is arbitrary (it may differ between runs whose inputs differ in
  # rounding only): the largest entry of each is made positive.
  largest = np.abs(components).argmax(axis=0)
  components *= np.sign(components[largest, np.arange(components.shape[1])])
  columns = np.empty((kh * kw * channels, filters))
  columns[:, 0:2 * len(order):2] = components
  columns[:, 1:2 * len(order):2] = -components
  if filters % 2:  # An odd filter count: the last one a copy of the strongest component.
    columns[:, -1] = components[:, 0]
  columns *= np.linalg.norm(default_kernel) / np.linalg.norm(columns)
  kernel = columns.reshape(kh, kw, channels, filters)
  bias = -(mean @ columns)
  return kernel.astype(np.float32), bias.astype(np.float32)


def apply(model, images: np.ndarray, seed: int = 0) -> None:
  """Sets the model's first layer (a convolution with a bias) to whitening_weights."""
  layer = model.layers[0]
  kernel, bias = layer.kernel, layer.bias
  new_kernel, new_bias = whitening_weights(images, tuple(kernel.shape), np.asarray(kernel),
                                           seed)
  kernel.assign(new_kernel)
  bias.assign(new_bias)


def readout_weights(features: np.ndarray, labels, num_classes: int):
  """(kernel, bias) of a dense layer giving the ridge regression of the centred one-hot
  classes on `features` [N, D]."""
  features = np.asarray(features, np.float64)
  targets = np.eye(num_classes)[np.asarray(labels)] - 1.0 / num_classes
  mean = features.mean(axis=0)
  centred = features - mean
  gram = centred.T @ centred
  ridge = _RIDGE * np.trace(gram) / len(gram)
  kernel = np.linalg.solve(gram + ridge * np.eye(len(gram)), centred.T @ targets)
  bias = targets.mean(axis=0) - mean @ kernel
  return kernel.astype(np.float32), bias.astype(np.float32)


def _forward(layer, x: np.ndarray) -> np.ndarray:
  """The layer's output for `x` in float32 on the host, from its current weights (so the
  statistics are the same under any strategy and precision)."""
  outputs = []
  with tf.device('/CPU:0'):
    for start in range(0, len(x), _CHUNK):
      chunk = tf.constant(x[start:start + _CHUNK], tf.float32)
      if isinstance(layer, keras.layers.Conv2D):
        kernel, bias = layer.get_weights()
        chunk = tf.nn.conv2d(chunk, kernel, layer.strides, layer.padding.upper()) + bias
      elif isinstance(layer, keras.layers.Dense):
        kernel, bias = layer.get_weights()
        chunk = tf.matmul(chunk, kernel) + bias
      elif isinstance(layer, keras.layers.MaxPooling2D):
        chunk = tf.nn.max_pool2d(chunk, layer.pool_size, layer.strides, layer.padding.upper())
      elif isinstance(layer, keras.layers.Flatten):
        chunk = tf.reshape(chunk, [len(chunk), -1])
      else:
        raise ValueError(f'no host forward pass for layer {layer.name!r}')
      if hasattr(layer, 'activation'):
        chunk = layer.activation(chunk)
      outputs.append(np.asarray(chunk, np.float32))
  return np.concatenate(outputs)


def apply_all(model, images: np.ndarray, labels, seed: int = 0) -> None:
  """Sets every layer of `model` from the data, in order: each hidden convolution or
  dense layer to whitening_weights of its input, the last layer to readout_weights."""
  x = np.asarray(images, np.float32)
  *hidden, last = model.layers
  for layer in hidden:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      shape = tuple(layer.kernel.shape)
      if len(shape) == 2:  # A dense layer: its input vectors as 1x1 patches.
        kernel, bias = whitening_weights(x[:, None, None, :], (1, 1) + shape,
                                         np.asarray(layer.kernel), seed)
      else:
        kernel, bias = whitening_weights(x, shape, np.asarray(layer.kernel), seed)
      layer.kernel.assign(kernel.reshape(shape))
      layer.bias.assign(bias)
    x = _forward(layer, x)
  kernel, bias = readout_weights(x, labels, last.kernel.shape[-1])
  last.kernel.assign(kernel)
  last.bias.assign(bias)
