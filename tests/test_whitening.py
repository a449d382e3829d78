"""--whiten_init: the first convolution starts as a whitening filter bank of the data."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from trainer.core.config import Config
from trainer.core.errors import UserError
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


def _inputs_of(model, layer_index, images):
  """The batch `images` as layer `layer_index` of `model` receives it."""
  x = images.astype(np.float32)
  for layer in model.layers[:layer_index]:
    x = layer(x)
  return np.asarray(x)


def test_whiten_init_all_sets_each_later_layer_from_its_inputs():
  rng = np.random.default_rng(1)
  noise = rng.random((600, 34, 34, 3))
  images = (noise[:, 1:-1, 1:-1] + noise[:, :-2, 1:-1] + noise[:, 1:-1, :-2]) / 3
  # Two classes, the second brighter: a readout of the features can tell them apart.
  labels = rng.integers(0, 2, len(images))
  images = images + 0.2 * labels[:, None, None, None]
  model = cnn.create_model((32, 32, 3), 2)
  defaults = [np.linalg.norm(layer.kernel.numpy()) for layer in model.layers if layer.weights]
  whitening.apply_all(model, images, labels, seed=3)
  weighted = [layer for layer in model.layers if layer.weights]
  # The hidden layers keep the size of Keras' start; their responses come in +/- pairs of
  # uncorrelated components.
  for layer, norm in zip(weighted[:-1], defaults):
    np.testing.assert_allclose(np.linalg.norm(layer.kernel.numpy()), norm, rtol=1e-4)
    np.testing.assert_allclose(layer.kernel.numpy()[..., 0::2], -layer.kernel.numpy()[..., 1::2])
  conv2 = model.layers[2]
  responses = tf.nn.conv2d(_inputs_of(model, 2, images), conv2.kernel, 1, 'VALID').numpy()
  responses = responses.reshape(-1, responses.shape[-1])[:, 0::2]
  correlation = np.corrcoef(responses[:, :8], rowvar=False)
  assert np.abs(correlation - np.eye(8)).max() < 0.2
  # The output layer starts as a readout: it already separates the classes it was fit on,
  # and it is the least-squares one (moving it raises the squared error).
  logits = model(images.astype(np.float32)).numpy()
  assert np.mean(logits.argmax(axis=1) == labels) > 0.9
  hidden = _inputs_of(model, len(model.layers) - 1, images)
  kernel, bias = whitening.readout_weights(hidden, labels, 2)
  targets = np.eye(2)[labels] - 0.5
  error = np.sum((hidden @ kernel + bias - targets) ** 2)
  nudged = np.sum((hidden @ (kernel * 1.05) + bias - targets) ** 2)
  assert error < nudged


def test_whiten_init_all_needs_whiten_init():
  with pytest.raises(UserError, match='--whiten_init_all extends --whiten_init'):
    Config(whiten_init_all=True).validate()


def test_a_run_with_whiten_init_all_starts_every_layer_from_the_data(tmp_path, small_source,
                                                                   caplog):
  config = Config(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=1,
                  learning_rate=1e-9, whiten_init=True, whiten_init_all=True)
  with caplog.at_level(logging.INFO):
    model = train.train_and_evaluate(config, None, small_source).trainer.model
  assert any(r.getMessage().startswith('start: every layer from the first ')
             for r in caplog.records)
  pairs = list(small_source.read('train', 0, 1).take(5000).as_numpy_iterator())
  images = np.stack([image for image, _ in pairs]) / 255.0
  labels = [int(label) for _, label in pairs]
  # Each layer as it would be set from what the run's own earlier layers make of the data,
  # through the same host forward pass (no second kernel path whose rounding could differ on
  # another CPU).
  inputs = images.astype(np.float32)
  for index, layer in enumerate(model.layers):
    if index:
      inputs = whitening._forward(model.layers[index - 1], inputs)  # pylint: disable=protected-access
    if not layer.weights:
      continue
    kernel = layer.kernel.numpy()
    if index == len(model.layers) - 1:
      expected, _ = whitening.readout_weights(inputs, labels, kernel.shape[-1])
    else:
      shape = kernel.shape if kernel.ndim == 4 else (1, 1) + kernel.shape
      patches = inputs if kernel.ndim == 4 else inputs[:, None, None, :]
      expected, _ = whitening.whitening_weights(patches, shape, kernel, seed=config.seed)
    got, want = kernel.ravel(), expected.ravel()
    assert np.dot(got, want) / np.linalg.norm(got) / np.linalg.norm(want) > 0.999, layer.name


def test_freeze_first_conv_holds_the_whitening_filters_through_training_and_resume(
    tmp_path, small_source, caplog):
  config = Config(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=3,
                  learning_rate=1e-2, whiten_init=True, freeze='first_conv',
                  checkpoint_every_steps=3, steps_per_loop=3)
  with caplog.at_level(logging.INFO):
    model = train.train_and_evaluate(config, None, small_source).trainer.model
  assert 'frozen until step 3: ' + model.layers[0].name in caplog.text
  images = np.stack([image for image, _ in
                     small_source.read('train', 0, 1).take(5000).as_numpy_iterator()]) / 255.0
  kernel = model.layers[0].kernel.numpy()
  expected, _ = whitening.whitening_weights(images, kernel.shape, kernel, seed=config.seed)
  assert np.dot(kernel.ravel(), expected.ravel()) / np.linalg.norm(kernel) ** 2 > 0.999
  resumed = train.train_and_evaluate(config.replace(train_steps=6), None, small_source)
  later = resumed.trainer.model
  np.testing.assert_array_equal(later.layers[0].kernel.numpy(), kernel)
  np.testing.assert_array_equal(later.layers[0].bias.numpy(), model.layers[0].bias.numpy())
  assert not np.allclose(later.layers[2].kernel.numpy(), model.layers[2].kernel.numpy())


def test_below_freeze_min_batch_every_layer_trains(tmp_path, small_source, caplog):
  config = Config(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=2,
                  learning_rate=1e-2, whiten_init=True, freeze='first_conv',
                  freeze_min_batch=64)
  with caplog.at_level(logging.INFO):
    outcome = train.train_and_evaluate(config, None, small_source)
  assert ('--freeze=first_conv not applied: batch 32 is below --freeze_min_batch=64'
          in caplog.text)
  assert 'frozen until' not in caplog.text
  assert outcome.trainer.updated_variables == outcome.trainer.model.trainable_variables


@pytest.mark.parametrize('overrides,message', [
    (dict(freeze='first_conv'), 'give --init_from=RUN_FOLDER or EXPORT, or --whiten_init'),
    (dict(freeze_min_batch=512), '--freeze_min_batch only applies with --freeze'),
    (dict(freeze='first_conv', whiten_init=True, freeze_min_batch=-1),
     '--freeze_min_batch must not be negative'),
])
def test_freeze_needs_a_start_worth_holding_and_a_sane_batch_threshold(overrides, message):
  with pytest.raises(UserError, match=message):
    Config(**overrides).validate()
  Config(freeze='first_conv', whiten_init=True, freeze_min_batch=512).validate()
