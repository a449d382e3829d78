"""Mixed precision, XLA and multi-step loops: faster paths must train like the plain one."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_source
from trainer.core.config import Config
from trainer.jobs import train
from trainer.model import steps


def _config(tmp_path, **overrides):
  values = dict(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=32,
                steps_per_loop=8, learning_rate=3e-3, shuffle_buffer=1)
  values.update(overrides)
  return Config(**values)


def _losses(caplog):
  return [float(line.split('  loss ')[1].split()[0]) for line in caplog.text.splitlines()
          if '/32  loss ' in line]


@pytest.mark.parametrize('policy,compute_dtype', [
    ('mixed_float16', 'float16'),
    pytest.param('mixed_bfloat16', 'bfloat16', marks=pytest.mark.tpu_path)])
def test_mixed_precision_trains_with_float32_logits(tmp_path, caplog, policy, compute_dtype):
  caplog.set_level('INFO')
  outcome = train.train_and_evaluate(_config(tmp_path, mixed_precision=policy), None,
                                     make_source())
  model = outcome.trainer.model
  assert model.layers[0].compute_dtype == compute_dtype
  assert model.layers[0].kernel.dtype == 'float32'  # Variables stay float32.
  assert model(np.zeros((1, 32, 32, 3), np.float32)).dtype == tf.float32
  losses = _losses(caplog)
  assert losses[-1] < losses[0] - 0.2
  assert outcome.metrics['eval_accuracy'] > 0.3
  assert ('loss scale' in caplog.text) == (policy == 'mixed_float16')
  assert keras_policy_is_float32()  # The run leaves no global policy behind.


def test_mirrored_xla_float16_trains_and_every_replica_holds_the_same_weights(tmp_path, caplog,
                                                                            mirrored):
  """The multi-GPU combination (MirroredStrategy, XLA-compiled gradients, float16 with loss
  scaling): the overflow verdict and the update must be the same on every replica."""
  caplog.set_level('INFO')
  outcome = train.train_and_evaluate(
      _config(tmp_path, strategy='mirrored', jit_compile=True, mixed_precision='mixed_float16'),
      mirrored, make_source())
  losses = _losses(caplog)
  assert losses[-1] < losses[0] - 0.2
  assert outcome.metrics['eval_accuracy'] > 0.3
  trainer = outcome.trainer
  assert trainer.model.layers[0].compute_dtype == 'float16'
  for variable in trainer.model.trainable_variables + [trainer.optimizer.dynamic_scale]:
    # Keras variables wrap the strategy's MirroredVariable: one copy per replica.
    first, *others = [v.numpy() for v in mirrored.experimental_local_results(variable.value)]
    assert len(others) == 1
    for other in others:
      np.testing.assert_array_equal(first, other, err_msg=variable.path)


def keras_policy_is_float32():
  import keras  # pylint: disable=g-import-not-at-top
  return keras.mixed_precision.global_policy().name == 'float32'


@pytest.mark.parametrize('replicas', [1, 2])
def test_float16_overflow_skips_the_step_and_lowers_the_loss_scale(tmp_path, replicas):
  import keras  # pylint: disable=g-import-not-at-top
  from trainer.data import pipeline  # pylint: disable=g-import-not-at-top
  devices = [d.name for d in tf.config.list_logical_devices('CPU')[:replicas]]
  strategy = tf.distribute.MirroredStrategy(devices)
  config = _config(tmp_path, mixed_precision='mixed_float16')
  source = make_source()
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    trainer = steps.Trainer(config, strategy, source.info)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  before = trainer.model.get_weights()
  trainer.optimizer.dynamic_scale.assign(3e38)  # Any real loss times this overflows.
  iterator = pipeline.distributed_train_iterator(strategy, source, 32, 16, 0)
  trainer.train_loop(iterator, tf.constant(1))
  assert trainer.step == 1 and trainer.skipped_steps == 1
  assert float(trainer.optimizer.dynamic_scale.numpy()) == pytest.approx(1.5e38)
  for a, b in zip(before, trainer.model.get_weights()):
    np.testing.assert_array_equal(a, b)
  trainer.optimizer.dynamic_scale.assign(1024.0)
  trainer.train_loop(iterator, tf.constant(1))
  assert trainer.step == 2 and trainer.skipped_steps == 1  # This one was applied.
  assert bool(trainer.weights_finite())
  assert not np.array_equal(before[0], trainer.model.get_weights()[0])


def _final_weights(tmp_path, name, **overrides):
  outcome = train.train_and_evaluate(
      _config(tmp_path / name, **overrides), tf.distribute.OneDeviceStrategy('/cpu:0'),
      make_source())
  return outcome.trainer.model.get_weights()


def test_steps_per_loop_does_not_change_training(tmp_path):
  one = _final_weights(tmp_path, 'one', steps_per_loop=1)
  many = _final_weights(tmp_path, 'many', steps_per_loop=16)
  for a, b in zip(one, many):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _batch(source, size=32):
  images, labels = source._splits['train']  # pylint: disable=protected-access
  return tf.constant(images[:size], tf.float32) / 255.0, tf.constant(labels[:size])


def test_xla_computes_what_the_plain_step_computes():
  """The same logits and gradients at the same weights, at the start and after training.

  Compared at one step, where only float rounding differs between XLA's kernels and the
  others (on any CPU, with or without oneDNN); over many steps Adam amplifies such
  rounding into differences of a percent, which says nothing about the wiring.
  """
  source = make_source()
  config = Config(batch_size=32)
  plain = steps.Trainer(config, tf.distribute.get_strategy(), source.info)
  xla = steps.Trainer(config.replace(jit_compile=True), tf.distribute.get_strategy(),
                      source.info)
  images, labels = _batch(source)
  for moved in range(3):
    xla.model.set_weights(plain.model.get_weights())
    (plain_grads, plain_logits, plain_loss), (xla_grads, xla_logits, xla_loss) = (
        trainer._gradients(images, labels) for trainer in (plain, xla))  # pylint: disable=protected-access
    scale = float(tf.reduce_max(tf.abs(plain_logits)))
    np.testing.assert_allclose(xla_logits, plain_logits, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(xla_loss, plain_loss, rtol=1e-4, atol=1e-6)
    for got, want in zip(xla_grads, plain_grads):
      np.testing.assert_allclose(got, want, rtol=1e-3,
                                 atol=1e-4 * float(tf.reduce_max(tf.abs(want))))
    # Move the weights on to where training takes them, and compare there too.
    plain.optimizer.apply_gradients(zip(plain_grads, plain.model.trainable_variables))
    assert moved < 2 or not np.array_equal(plain.model.get_weights()[0],
                                           xla.model.get_weights()[0])


def test_xla_training_follows_the_plain_loss_curve(tmp_path, caplog):
  caplog.set_level('INFO')
  _final_weights(tmp_path, 'plain')
  plain = _losses(caplog)
  caplog.clear()
  _final_weights(tmp_path, 'xla', jit_compile=True)
  xla = _losses(caplog)
  assert len(plain) == len(xla) == 4
  assert xla[-1] < xla[0] - 0.2
  # Within a few percent: the runs start alike (above) and drift apart only by rounding.
  np.testing.assert_allclose(plain, xla, rtol=5e-2)
