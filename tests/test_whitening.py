"""--whiten_init: the first convolution starts as a whitening filter bank of the data."""

import numpy as np
import tensorflow as tf

from trainer.core.config import Config
from trainer.jobs import train
from trainer.model import cnn
from trainer.model import whitening


def _patches(images, kernel):
  """Every 3x3 patch of `images` through the kernel, as the convolution computes it."""
  return tf.nn.conv2d(images.astype(np.float32), kernel, 1, 'VALID').numpy().reshape(
      -1, kernel.shape[-1])


def test_the_filters_decorrelate_the_patches_in_pairs():
  rng = np.random.default_rng(0)
  # Correlated pixels: smooth random images, as natural images are.
  noise = rng.random((200, 34, 34, 3))
  images = (noise[:, 1:-1, 1:-1] + noise[:, :-2, 1:-1] + noise[:, 1:-1, :-2]) / 3
  default = cnn.create_model((32, 32, 3), 10).layers[0].kernel.numpy()
  kernel, bias = whitening.whitening_weights(images, default.shape, default)
  assert kernel.shape == default.shape and bias.shape == (32,)
  np.testing.assert_allclose(np.linalg.norm(kernel), np.linalg.norm(default), rtol=1e-5)
  responses = _patches(images, kernel) + bias
  np.testing.assert_allclose(responses.mean(axis=0), 0.0, atol=0.05 * responses.std())
  # Each pair is a component and its negative; the components are uncorrelated and of
  # equal variance (the floor under small variances aside).
  np.testing.assert_allclose(kernel[..., 0::2], -kernel[..., 1::2])
  correlation = np.corrcoef(responses[:, 0::2], rowvar=False)
  off_diagonal = correlation - np.diag(np.diag(correlation))
  assert np.abs(off_diagonal).max() < 0.1
  variances = responses[:, 0:8:2].var(axis=0)
  assert variances.max() / variances.min() < 1.5


def test_a_new_run_starts_from_it_and_a_resumed_one_keeps_its_weights(tmp_path, small_source):
  config = Config(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=2,
                  learning_rate=1e-9, whiten_init=True, checkpoint_every_steps=2)
  outcome = train.train_and_evaluate(config, None, small_source)
  images = np.stack([image for image, _ in
                     small_source.read('train', 0, 1).take(5000).as_numpy_iterator()]) / 255.0
  default = cnn.create_model((32, 32, 3), 10).layers[0].kernel.numpy()
  expected, _ = whitening.whitening_weights(images, default.shape, default, seed=config.seed)
  kernel = outcome.trainer.model.layers[0].kernel.numpy()
  # The norm comes from this run's own random kernel; the direction from the data.
  cosine = np.sum(kernel * expected) / np.linalg.norm(kernel) / np.linalg.norm(expected)
  assert cosine > 0.999
  resumed = train.train_and_evaluate(config.replace(train_steps=3), None, small_source)
  moved = resumed.trainer.model.layers[0].kernel.numpy()
  np.testing.assert_allclose(moved, kernel, atol=1e-6)  # Resumed, not whitened again.
