import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.core.config import Config
from trainer.core import distribute
from trainer.core.errors import UserError
from trainer.jobs import train
from trainer.model import optimizers
from trainer.model import steps
from trainer.run_folder import records


def _config(tmp_path, **overrides):
  values = dict(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=2, steps_per_loop=5,
                learning_rate=3e-3)
  values.update(overrides)
  return Config(**values)


@pytest.mark.parametrize('name', ['default', 'one_device', 'mirrored'])
def test_end_to_end_under_each_local_strategy(tmp_path, small_source, name):
  strategy = distribute.create_strategy(name, num_cpu_devices=2 if name == 'mirrored' else 0)
  outcome = train.train_and_evaluate(_config(tmp_path, strategy=name), strategy, small_source)
  metrics = outcome.metrics
  assert metrics['global_step'] == 2 * (512 // 32)
  assert metrics['eval_examples'] == 100
  assert metrics['eval_accuracy'] > 0.3  # Chance is 0.1; the labels are visible in the data.
  with open(os.path.join(outcome.model_dir, records.RESULTS_FILE)) as f:
    assert json.load(f) == metrics
  with open(os.path.join(outcome.model_dir, records.CONFIG_FILE)) as f:
    assert json.load(f)['strategy'] == name


def test_mirrored_matches_single_device_training(tmp_path, small_source, mirrored):
  """The loss is averaged over the global batch, so replicas change nothing but speed."""
  config = _config(tmp_path, epochs=0, train_steps=6, shuffle_buffer=1)
  single = train.train_and_evaluate(config, tf.distribute.OneDeviceStrategy('/cpu:0'),
                                    small_source)
  double = train.train_and_evaluate(config.replace(model_dir=str(tmp_path / 'm')), mirrored,
                                    small_source)
  for a, b in zip(single.trainer.model.get_weights(), double.trainer.model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_train_steps_override_epochs_and_eval_runs_at_the_end(tmp_path, small_source):
  outcome = train.train_and_evaluate(_config(tmp_path, train_steps=7), None, small_source)
  assert outcome.metrics['global_step'] == 7
  assert outcome.metrics['eval_examples'] == 100


def test_progress_lines_say_where_the_run_is(tmp_path, small_source, caplog):
  caplog.set_level('INFO')
  train.train_and_evaluate(_config(tmp_path, epochs=1), None, small_source)
  text = caplog.text
  assert 'global batch 32, per-replica batch 32 | 16 steps/epoch, 16 steps in all' in text
  assert 'epoch 1/1  step 5/16  loss' in text and 'examples/s  ETA' in text
  assert 'epoch 1/1  eval  loss' in text and '(100 examples)' in text
  assert 'final test loss' in text


def test_batch_larger_than_the_data_is_a_clear_error(tmp_path, small_source):
  with pytest.raises(UserError, match='larger than the 512 training examples'):
    train.train_and_evaluate(_config(tmp_path, batch_size=1024), None, small_source)


def test_nan_weights_stop_the_run(tmp_path):
  from tests.conftest import make_source  # pylint: disable=g-import-not-at-top
  source = make_source()
  images, labels = source._splits['train']  # pylint: disable=protected-access
  poisoned = images.astype(np.float32)
  poisoned[7] = np.nan
  source._splits['train'] = (poisoned, labels)  # pylint: disable=protected-access
  with pytest.raises(UserError, match='training diverged by step 5'):
    train.train_and_evaluate(_config(tmp_path, shuffle_buffer=1), None, source)


@pytest.mark.slow
def test_learns_real_cifar10(tmp_path, cifar_dir):
  """A few hundred steps on the real data must clearly beat chance (10%): two epochs of a
  quarter of the training split (42-45% here), judged on 2,000 test images."""
  config = Config(data_dir=cifar_dir, model_dir=str(tmp_path / 'run'), epochs=0,
                  train_steps=400, train_split='train[:12800]', eval_split='test[:2000]')
  outcome = train.train_and_evaluate(config)
  assert outcome.metrics['eval_examples'] == 2_000
  assert outcome.metrics['eval_accuracy'] > 0.35


def test_cosine_schedule_warms_up_then_decays_to_zero():
  config = Config(lr_schedule='cosine', learning_rate=0.01, warmup_steps=10)
  schedule = optimizers.learning_rate_schedule(config, total_steps=110, steps_per_epoch=11)
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(0.005)
  assert float(schedule(10)) == pytest.approx(0.01)
  assert float(schedule(60)) == pytest.approx(0.005, rel=1e-3)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)
  assert optimizers.learning_rate_schedule(Config(), 100, 10) == 1e-3


def test_wsd_schedule_warms_up_holds_the_peak_then_decays_linearly_to_zero():
  config = Config(lr_schedule='wsd', learning_rate=0.01, warmup_fraction=0.1, decay_fraction=0.4)
  schedule = optimizers.learning_rate_schedule(config, total_steps=100, steps_per_epoch=10)
  rates = [float(schedule(step)) for step in range(101)]
  assert rates[0] == 0.0 and rates[5] == pytest.approx(0.005)
  assert rates[10:61] == pytest.approx([0.01] * 51)
  assert rates[80] == pytest.approx(0.005) and rates[100] == 0.0
  # The default decay takes the last 30%; no warm-up starts at the peak.
  default = optimizers.learning_rate_schedule(Config(lr_schedule='wsd', learning_rate=0.01), 10, 10)
  assert [float(default(step)) for step in (0, 7, 8, 10)] == pytest.approx(
      [0.01, 0.01, 0.01 * 2 / 3, 0.0])
  restored = optimizers.WarmupStableDecay.from_config(schedule.get_config())
  assert float(restored(80)) == pytest.approx(0.005)


def test_label_smoothing_spreads_the_target():
  labels = tf.constant([0, 1])
  logits = tf.constant([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
  plain = steps.cross_entropy(labels, logits)
  smoothed = steps.cross_entropy(labels, logits, 0.3)
  # With targets (0.8, 0.1, 0.1): a confident right answer now costs more.
  expected = -(0.8 * tf.nn.log_softmax(logits)[0, 0] + 0.2 * tf.nn.log_softmax(logits)[0, 1])
  np.testing.assert_allclose(smoothed.numpy(), [expected.numpy()] * 2, rtol=1e-5)
  assert np.all(smoothed.numpy() > plain.numpy())


@pytest.mark.parametrize('overrides,message', [
    (dict(lr_schedule='linear'), "unknown --lr_schedule='linear'"),
    (dict(augment='rotate'), "unknown --augment='rotate'"),
    (dict(label_smoothing=1.0), '--label_smoothing must be in'),
    (dict(warmup_steps=5), '--warmup_steps only applies to --lr_schedule=cosine or wsd'),
    (dict(lr_schedule='cosine', decay_fraction=0.3), '--decay_fraction only applies to --lr_'),
    (dict(lr_schedule='wsd', decay_fraction=1.5), '--decay_fraction is a share of the run'),
])
def test_recipe_flags_are_validated(overrides, message):
  with pytest.raises(UserError, match=message):
    Config(**overrides).validate()


def test_eval_every_steps_adds_evaluations_between_epoch_ends(tmp_path, small_source):
  outcome = train.train_and_evaluate(
      _config(tmp_path, epochs=1, eval_every_steps=6, steps_per_loop=4), None, small_source)
  assert [e['step'] for e in outcome.metrics['eval_history']] == [6, 12, 16]
  assert [size for size, _ in outcome.loops] == [4, 2, 4, 2, 4]
