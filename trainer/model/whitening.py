"""--whiten_init: the first convolution starts as a whitening filter bank of the training
images' 3x3 patches, as the CIFAR-10 speed runs start theirs (Page 2018; hlb-CIFAR10,
airbench). The model is unchanged; only its starting weights differ.

Each pair of filters is one principal component of the patches, w and -w (the ReLU after the
convolution keeps either sign), scaled by 1 / sqrt(its variance): the strongest components
first, as many as the layer has pairs of filters (16 of the 27 of RGB 3x3 patches). The
bias centres each response on the patches' mean. The kernel is then scaled to the norm of
Keras' default initialisation, so that the later layers see activations of the usual size.
"""

import numpy as np

# Patches drawn for the statistics, and a floor under the variances so that the weakest
# components kept are not blown up to noise.
_PATCHES = 100_000
_EPSILON = 5e-4


def whitening_weights(images: np.ndarray, kernel_shape, default_kernel: np.ndarray, seed: int = 0):
  """(kernel, bias) for a conv layer of `kernel_shape` [kh, kw, in, out] from `images`
  [N, H, W, C] in the model's input scale; `default_kernel` gives the norm to keep."""
  kh, kw, channels, filters = kernel_shape
  images = np.asarray(images, np.float64)
  rng = np.random.default_rng(seed)
  count, height, width = images.shape[:3]
  n = min(_PATCHES, count * (height - kh + 1) * (width - kw + 1))
  which, rows, cols = (rng.integers(0, limit, n) for limit in
                       (count, height - kh + 1, width - kw + 1))
  offsets_r, offsets_c = np.meshgrid(np.arange(kh), np.arange(kw), indexing='ij')
  patches = images[which[:, None, None], rows[:, None, None] + offsets_r,
                   cols[:, None, None] + offsets_c]  # [n, kh, kw, C]
  patches = patches.reshape(n, kh * kw * channels)
  mean = patches.mean(axis=0)
  variances, vectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
  order = np.argsort(variances)[::-1][:filters // 2]
  components = vectors[:, order] / np.sqrt(variances[order] + _EPSILON)
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
