"""Large-batch options: optimizers, learning-rate scaling, weight averaging, flip at eval."""

import json
import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, make_source
from tests import forked
from tests.test_configs import load
from trainer.core.config import MOMENTUM_DEFAULTS, OPTIMIZERS, Config
from trainer.core.errors import UserError
from trainer.data import pipeline
from trainer.jobs import train
from trainer.model import cnn
from trainer.model import optimizers
from trainer.model import steps
from trainer.prediction import exports
from trainer.run_folder import records


def _config(tmp_path, **overrides):
  values = dict(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=8,
                steps_per_loop=4, learning_rate=3e-3, checkpoint_every_steps=0)
  values.update(overrides)
  return Config(**values)


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', OPTIMIZERS)
def test_each_optimizer_lowers_the_loss_and_resumes_bit_exactly(tmp_path, optimizer):
  result = forked.run(
      [sys.executable, '-m', 'tests.optimizer_resume_child', str(tmp_path), optimizer],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  (report,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert report['optimizer'] == optimizer
  assert report['identical'] and report['identical_eval'], report
  assert report['final_eval_loss'] < report['first_eval_loss'], report
  assert report['final_eval_loss'] < 0.97 * math.log(10), report


@pytest.mark.parametrize('scaling,batch,expected', [
    ('none', 512, 1e-3), ('linear', 64, 1e-3), ('linear', 512, 8e-3), ('linear', 32, 5e-4),
    ('sqrt', 256, 2e-3), ('sqrt', 4096, 8e-3), ('sqrt_capped', 16, 5e-4),
    ('sqrt_capped', 64, 1e-3), ('sqrt_capped', 4096, 1e-3)])
def test_the_rate_is_scaled_from_the_base_batch(scaling, batch, expected):
  config = Config(learning_rate=1e-3, lr_scaling=scaling, batch_size=batch)
  assert config.scaled_learning_rate == pytest.approx(expected)
  assert Config(learning_rate=1e-3, lr_scaling='linear', batch_size=512,
                base_batch_size=128).scaled_learning_rate == pytest.approx(4e-3)


@pytest.mark.parametrize('optimizer,momentum,batch,expected', [
    ('muon', None, 1024, 0.95), ('muon', None, 512, 0.95), ('muon', None, 2048, 0.9),
    ('muon', None, 4096, 0.8), ('muon', 0.9, 4096, 0.6), ('sgd', None, 2048, 0.8),
    ('muon', None, 32768, 0.0)])
def test_one_minus_the_momentum_grows_with_the_batch_above_the_base(optimizer, momentum, batch,
                                                                     expected):
  config = Config(optimizer=optimizer, momentum=momentum, momentum_scaling='linear',
                  base_batch_size=1024, batch_size=batch)
  assert config.scaled_momentum == pytest.approx(expected)
  assert optimizers.create(config, 1e-3).momentum == pytest.approx(expected)
  unscaled = Config(optimizer=optimizer, momentum=momentum, batch_size=batch).scaled_momentum
  assert unscaled == (MOMENTUM_DEFAULTS[optimizer] if momentum is None else momentum)


def test_a_preset_states_its_rate_once_for_any_batch():
  preset = REPO / 'configs' / 'multi_gpu.cfg'
  at_8 = load(preset)
  at_64 = load(preset, f'--batch_size={at_8.batch_size * 8}')
  factor = {'linear': 8, 'sqrt': 8 ** 0.5}[at_8.lr_scaling]
  assert at_64.scaled_learning_rate == pytest.approx(factor * at_8.scaled_learning_rate)


def test_the_schedule_peaks_at_the_scaled_rate_after_warmup_epochs():
  config = Config(learning_rate=1e-3, lr_scaling='linear', batch_size=256,
                  lr_schedule='cosine', warmup_epochs=0.5)
  schedule = optimizers.learning_rate_schedule(config, total_steps=100, steps_per_epoch=20)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(4e-3)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)


def test_the_run_says_and_records_the_effective_rate(tmp_path, small_source, caplog):
  caplog.set_level('INFO')
  config = _config(tmp_path, learning_rate=1e-3, lr_scaling='sqrt', base_batch_size=8)
  train.train_and_evaluate(config, None, small_source)
  assert 'optimizer adam, learning rate 0.002 (sqrt scaling of 0.001 at batch 8' in caplog.text
  with open(tmp_path / 'run' / records.CONFIG_FILE) as f:
    assert json.load(f)['scaled_learning_rate'] == pytest.approx(2e-3)


@pytest.mark.parametrize('overrides,message', [
    (dict(optimizer='adagrad'), "unknown --optimizer='adagrad'"),
    (dict(lr_scaling='cube'), "unknown --lr_scaling='cube'"),
    (dict(weight_decay=0.1), 'use --optimizer=adamw'),
    (dict(optimizer='adamw', momentum=0.9), '--momentum only applies to'),
    (dict(optimizer='sgd', momentum=1.0), r'--momentum must be in \[0, 1\)'),
    (dict(optimizer='adam', muon_conv=False), '--nomuon_conv only applies to --optimizer=muon'),
    (dict(optimizer='adamw', momentum_scaling='linear'), '--momentum_scaling only applies to'),
    (dict(momentum_scaling='cube'), "unknown --momentum_scaling='cube'"),
    (dict(optimizer='adam', muon_adam_lr_ratio=0.3), '--muon_adam_lr_ratio only applies to'),
    (dict(optimizer='muon', muon_adam_lr_ratio=0.0), '--muon_adam_lr_ratio must be positive'),
    (dict(ema_decay=1.0), r'--ema_decay must be in \[0, 1\)'),
    (dict(warmup_epochs=1.0), '--warmup_epochs only applies to --lr_schedule=cosine or wsd'),
    (dict(lr_schedule='cosine', warmup_epochs=1.0, warmup_steps=5),
     'give one of --warmup_steps, --warmup_epochs, --warmup_fraction'),
    (dict(base_batch_size=0), '--base_batch_size must be positive'),
])
def test_large_batch_flags_are_validated(overrides, message):
  with pytest.raises(UserError, match=message):
    Config(**overrides).validate()


def test_resuming_with_another_optimizer_is_a_clear_error(tmp_path, small_source):
  train.train_and_evaluate(_config(tmp_path, checkpoint_every_steps=4), None, small_source)
  with pytest.raises(UserError, match="optimizer: checkpoint 'adam' vs now 'sgd'"):
    train.train_and_evaluate(_config(tmp_path, optimizer='sgd', train_steps=12), None,
                             small_source)


def test_weight_averages_are_the_hand_computed_ones_and_the_raw_weights_return(mirrored):
  decay = 0.6
  source = make_source()
  config = Config(batch_size=32, ema_decay=decay, learning_rate=1e-2, steps_per_loop=1)
  trainer = steps.Trainer(config, mirrored, source.info)
  iterator = pipeline.distributed_train_iterator(
      mirrored, source, 32, steps_per_epoch=16, seed=0, shuffle_buffer=512)
  average = None
  for _ in range(4):
    trainer.train_loop(iterator, tf.constant(1))
    raw = trainer.model.get_weights()
    # Keras starts the average at the first step's weights, then decays.
    average = raw if average is None else [decay * a + (1 - decay) * w
                                           for a, w in zip(average, raw)]
  with trainer.averaged_weights():
    averaged = trainer.model.get_weights()
  for got, want, now in zip(averaged, average, trainer.model.get_weights()):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(got, now)
  for restored, before in zip(trainer.model.get_weights(), raw):
    np.testing.assert_array_equal(restored, before)


def _accuracy(model_or_serve, images, labels, flip=False, serve=False):
  if serve:
    return float(np.mean(model_or_serve(images=tf.constant(images))['class_id'].numpy()
                         == labels))
  logits = steps.eval_logits(model_or_serve, tf.constant(images, tf.float32) / 255.0, flip)
  return float(np.mean(np.argmax(logits.numpy(), -1) == labels))


def test_flip_at_eval_averages_the_logits_of_the_two_views():
  model = cnn.create_model((16, 16, 3), 4)
  images = tf.random.uniform((5, 16, 16, 3), seed=1)
  expected = (model(images).numpy() + model(images.numpy()[:, :, ::-1, :]).numpy()) / 2
  np.testing.assert_allclose(steps.eval_logits(model, images, True).numpy(), expected,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(steps.eval_logits(model, images, False).numpy(),
                             model(images).numpy(), rtol=1e-6)


@pytest.mark.parametrize('ema_decay,eval_flip', [(0.8, False), (0.0, True), (0.8, True)])
def test_evaluation_best_and_export_use_the_reported_weights(tmp_path, ema_decay, eval_flip):
  source = make_source(num_eval=200)
  config = _config(tmp_path, ema_decay=ema_decay, eval_flip=eval_flip, train_steps=12)
  outcome = train.train_and_evaluate(config, None, source)
  images, labels = source._splits['eval']  # pylint: disable=protected-access
  trainer = outcome.trainer
  with trainer.averaged_weights():
    reported = trainer.model.get_weights()
  plain = cnn.create_model(source.info.image_shape, source.info.num_classes)
  plain.set_weights(reported)
  accuracy = _accuracy(plain, images, labels, flip=eval_flip)
  assert outcome.metrics['eval_accuracy'] == pytest.approx(accuracy, abs=1e-6)
  serve = exports.load(str(tmp_path / 'run' / 'export')).loaded.signatures['serving_default']
  assert _accuracy(serve, images, labels, serve=True) == pytest.approx(accuracy, abs=1e-6)
  probabilities = serve(images=tf.constant(images[:16]))['probabilities'].numpy()
  expected = tf.nn.softmax(steps.eval_logits(
      plain, tf.constant(images[:16], tf.float32) / 255.0, eval_flip)).numpy()
  np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
  best = tf.train.Checkpoint(model=plain)
  best.restore(tf.train.latest_checkpoint(str(tmp_path / 'run' / 'best'))).expect_partial()
  for got, want in zip(plain.get_weights(), reported):
    np.testing.assert_array_equal(got, want)
  if ema_decay:
    assert not all(np.array_equal(a, b) for a, b in
                   zip(reported, trainer.model.get_weights()))


@pytest.mark.slow
def test_batch_scaling_benchmark_smoke(tmp_path, cifar_dir):
  out = tmp_path / 'scaling'
  result = forked.run(
      [sys.executable, '-m', 'tests.benchmark_smoke', 'benchmarks.batch_scaling', '--smoke',
       f'--data_dir={cifar_dir}', '--batch_sizes=64,256', '--seeds=1', f'--out={out}',
       '--jobs=2', '--', '--eval_flip'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / 'scaling.json') as f:
    report = json.load(f)
  assert [row['batch_size'] for row in report['summary']] == [64, 256]
  assert [(r['batch_size'], r['seed']) for r in report['runs']] == [(64, 1), (256, 1)]
  for row in report['summary']:
    assert row['min_accuracy'] <= row['median_accuracy'] <= row['max_accuracy']
  assert report['summary'][1]['learning_rate'] == pytest.approx(
      2 * report['summary'][0]['learning_rate'])  # configs/scaling.cfg: square-root scaling.
  assert os.path.getsize(out / 'scaling.png') > 1000
  assert '--eval_flip' in report['recipe']


def test_batch_scaling_summarizes_each_batch_over_its_seeds():
  from benchmarks import summaries  # pylint: disable=g-import-not-at-top
  runs = [{'batch_size': b, 'seed': s, 'eval_accuracy': a, 'train_seconds': t,
           'steps': 3905 // (b // 64), 'learning_rate': 1e-3 * b / 64}
          for b, s, a, t in [(64, 1, 0.70, 10), (64, 2, 0.72, 12), (64, 3, 0.71, 11),
                             (256, 1, 0.60, 5), (256, 2, 0.64, 4)]]
  assert summaries.batch_scaling(runs) == [
      {'batch_size': 64, 'median_accuracy': 0.71, 'min_accuracy': 0.70, 'max_accuracy': 0.72,
       'median_train_seconds': 11, 'steps': 3905, 'learning_rate': 1e-3, 'seeds': 3},
      {'batch_size': 256, 'median_accuracy': pytest.approx(0.62), 'min_accuracy': 0.60,
       'max_accuracy': 0.64, 'median_train_seconds': 4.5, 'steps': 976,
       'learning_rate': 4e-3, 'seeds': 2}]
