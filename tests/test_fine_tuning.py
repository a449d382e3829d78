"""--init_from and --freeze: a new run from another run's weights (trainer/jobs/init_from.py,
trainer/model/freezing.py)."""

import os
import re
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import forked
from tests import image_folders
from tests.conftest import REPO, TEN_STEPS, make_source
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.jobs import init_from
from trainer.jobs import train
from trainer.model import cnn
from trainer.run_folder import records

# A small source run with weight averaging, so the averaged and the raw weights differ.
_SOURCE = dict(batch_size=32, epochs=0, train_steps=10, steps_per_loop=5,
               checkpoint_every_steps=5, learning_rate=3e-3, ema_decay=0.9)


@pytest.fixture(scope='module')
def source_run(tmp_path_factory):
  """(run folder, its raw weights at the end) of 10 steps on make_source(), averaged."""
  model_dir = str(tmp_path_factory.mktemp('source') / 'run')
  outcome = train.train_and_evaluate(Config(model_dir=model_dir, **_SOURCE), None,
                                     make_source())
  return model_dir, outcome.trainer.model.get_weights()


def _config(tmp_path, source_dir, **overrides):
  values = dict(model_dir=str(tmp_path / 'tuned'), batch_size=32, epochs=0, train_steps=5,
                steps_per_loop=5, learning_rate=3e-3, init_from=source_dir, seed=7)
  values.update(overrides)
  return Config(**values)


def _layers(model):
  return [layer for layer in model.layers if layer.weights]


def _assert_same(arrays, expected):
  assert len(arrays) == len(expected)
  for a, b in zip(arrays, expected):
    np.testing.assert_array_equal(a, b)


def _differs(arrays, expected):
  return any(not np.array_equal(a, b) for a, b in zip(arrays, expected))


def _checkpoint_layers(path, image_shape=(32, 32, 3), classes=10):
  model = cnn.create_model(image_shape, classes)
  tf.train.Checkpoint(model=model).read(path).expect_partial()
  return [layer.get_weights() for layer in _layers(model)]


def test_a_run_folder_gives_its_averaged_weights(source_run):
  model_dir, raw = source_run
  weights = init_from.read(model_dir)
  exported = init_from.read(os.path.join(model_dir, 'export'))  # Exported under averaging.
  assert (weights.kind, weights.step, weights.num_classes) == ('averaged', 10, 10)
  assert weights.path == os.path.join(model_dir, 'checkpoints', 'ckpt-10')
  assert (exported.kind, exported.step) == ('exported', 10)  # Its run's results.json.
  flat = [a for arrays in weights.layers for a in arrays]
  _assert_same(flat, [a for arrays in exported.layers for a in arrays])
  assert _differs(flat, raw)


def test_weights_are_copied_exactly_and_a_new_head_when_classes_differ(source_run):
  weights = init_from.read(source_run[0])
  same = cnn.create_model((32, 32, 3), 10)
  record = init_from.apply(weights, same)
  assert record['output_layer'] == 'copied'
  for layer, arrays in zip(_layers(same), weights.layers):
    _assert_same(layer.get_weights(), arrays)
  fewer = cnn.create_model((32, 32, 3), 4)
  own_head = fewer.get_layer(cnn.OUTPUT_LAYER).get_weights()
  record = init_from.apply(weights, fewer)
  assert record['output_layer'] == 'new (10 -> 4 classes)'
  for layer, arrays in zip(_layers(fewer)[:-1], weights.layers[:-1]):
    _assert_same(layer.get_weights(), arrays)
  _assert_same(fewer.get_layer(cnn.OUTPUT_LAYER).get_weights(), own_head)


def test_fresh_optimizer_step_0_recorded_source_and_resume_ignores_init_from(
    tmp_path, source_run, caplog):
  caplog.set_level('INFO')
  model_dir = source_run[0]
  config = _config(tmp_path, model_dir)
  outcome = train.train_and_evaluate(config, None, make_source())
  assert outcome.metrics['global_step'] == 5  # Not the source's 10 + 5.
  assert int(outcome.trainer.optimizer.iterations.numpy()) == 5
  assert 'initialized from' in caplog.text
  expected = {'path': os.path.join(model_dir, 'checkpoints', 'ckpt-10'), 'step': 10,
              'weights': 'averaged', 'output_layer': 'copied'}
  config_file = os.path.join(config.model_dir, records.CONFIG_FILE)
  assert records.read_json(config_file)[init_from.RECORD_KEY] == expected
  caplog.clear()
  resumed = train.train_and_evaluate(config.replace(train_steps=10), None, make_source())
  assert resumed.metrics['global_step'] == 10
  ignored = [r for r in caplog.records if '--init_from' in r.getMessage()]
  assert len(ignored) == 1 and 'ignored' in ignored[0].getMessage(), caplog.text
  assert 'resumes from step 5' in ignored[0].getMessage()
  assert 'initialized from' not in caplog.text
  assert records.read_json(config_file)[init_from.RECORD_KEY] == expected  # Kept.


def test_freeze_all_but_head_holds_layers_bit_identical(tmp_path, source_run):
  model_dir, _ = source_run
  weights = init_from.read(model_dir)
  source = make_source(num_classes=3)  # A new head of 3 classes, trained alone.
  outcome = train.train_and_evaluate(
      _config(tmp_path, model_dir, freeze='all_but_head', optimizer='adamw'), None, source)
  layers = _layers(outcome.trainer.model)
  for layer, arrays in zip(layers[:-1], weights.layers[:-1]):  # Weight decay spared them too.
    _assert_same(layer.get_weights(), arrays)
  assert layers[-1].get_weights()[0].shape == (64, 3)


def test_freeze_conv_for_an_epoch_then_trains_them(tmp_path, source_run, caplog):
  caplog.set_level('INFO')
  model_dir, _ = source_run
  weights = init_from.read(model_dir)
  # 4 steps an epoch, loops of 3: the freeze ends inside the second loop, which is cut there.
  config = _config(tmp_path, model_dir, train_steps=0, epochs=2, steps_per_loop=3,
                   checkpoint_every_steps=0, freeze='conv', freeze_epochs=1)
  outcome = train.train_and_evaluate(config, None, make_source(num_train=128))
  checkpoints = os.path.join(config.model_dir, 'checkpoints')
  at_thaw = _checkpoint_layers(os.path.join(checkpoints, 'ckpt-4'))
  for arrays, expected in zip(at_thaw[:2], weights.layers[:2]):  # The conv layers.
    _assert_same(arrays, expected)
  for arrays, expected in zip(at_thaw[2:], weights.layers[2:]):
    assert _differs(arrays, expected)
  final = [layer.get_weights() for layer in _layers(outcome.trainer.model)]
  for arrays, expected in zip(final[:2], weights.layers[:2]):
    assert _differs(arrays, expected)
  assert 'frozen until step 4' in caplog.text
  assert 'step 4: the freeze ends' in caplog.text


def test_from_an_export(tmp_path, source_run):
  export_dir = os.path.join(source_run[0], 'export')
  weights = init_from.read(export_dir)
  config = _config(tmp_path, export_dir, freeze='conv')
  outcome = train.train_and_evaluate(config, None, make_source())
  for layer, arrays in zip(_layers(outcome.trainer.model)[:2], weights.layers[:2]):
    _assert_same(layer.get_weights(), arrays)
  recorded = records.read_json(os.path.join(config.model_dir, records.CONFIG_FILE))
  assert recorded[init_from.RECORD_KEY] == {'path': export_dir, 'step': 10,
                                            'weights': 'exported', 'output_layer': 'copied'}


@pytest.mark.parametrize('shape', [(28, 28, 1), (32, 32, 1), (24, 24, 3)])
def test_another_input_shape_is_a_clear_error(tmp_path, source_run, shape):
  text = 'x'.join(map(str, shape))
  with pytest.raises(UserError, match=f'its model takes 32x32x3 images, this run.s data is '
                                      f'{text}'):
    train.train_and_evaluate(_config(tmp_path, source_run[0]), None,
                             make_source(num_train=64, shape=shape))
  assert not os.path.exists(os.path.join(tmp_path, 'tuned', records.CONFIG_FILE))


def test_a_folder_that_is_neither_run_nor_export_is_a_clear_error(tmp_path, ten_step_run):
  (tmp_path / 'empty').mkdir()
  empty = tmp_path / 'empty'
  with pytest.raises(UserError, match=re.escape(
      f'--init_from={empty} is neither an export (no saved_model.pb in it) nor a run: no '
      f'config.json in {empty}, {empty / "model"}, {tmp_path} or ')):
    init_from.read(str(empty))
  with pytest.raises(UserError, match='no such folder'):
    init_from.read(str(tmp_path / 'missing'))
  # A run without averaging gives its raw weights.
  weights = init_from.read(str(tmp_path))
  assert (weights.kind, weights.step) == ('raw', TEN_STEPS['train_steps'])


@pytest.mark.parametrize('changes,message', [
    (dict(freeze='top'), "unknown --freeze='top'; choose one of: none, first_conv, conv, "
                         "all_but_head"),
    (dict(freeze='conv'), '--freeze=conv holds layers at the weights the run starts from'),
    (dict(freeze_epochs=1.0), '--freeze_epochs only applies with --freeze'),
    (dict(freeze='conv', init_from='R', freeze_epochs=-1.0), '--freeze_epochs must not be '
     'negative'),
])
def test_bad_fine_tuning_flags(changes, message):
  with pytest.raises(UserError, match=message):
    Config(**changes).validate()


@pytest.mark.slow
def test_the_command_line_takes_the_flags_and_fails_in_one_line(tmp_path):
  result = forked.run(
      [sys.executable, '-m', 'trainer.main', '--dataset=synthetic', '--train_steps=2',
       f'--model_dir={tmp_path / "run"}', f'--init_from={tmp_path / "nothing"}',
       '--freeze=conv', '--freeze_epochs=0.5'],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error')]
  assert errors == [f'error: --init_from={tmp_path / "nothing"}: no such folder (give a run '
                    'folder or an export)'], result.stderr[-2000:]


@pytest.mark.slow
def test_an_image_folder_under_mirrored_from_the_command_line(tmp_path, source_run):
  """Two replicas, a new 2-class head, conv layers frozen for the first epoch.

  In a process of its own: TensorFlow caches each collective's shape by its key, which a
  MirroredStrategy created later in the same process reuses (tensorflow/tensorflow#62790), so
  other tests' all-reduces of the whole model would clash with these smaller ones.
  """
  model_dir, _ = source_run
  weights = init_from.read(model_dir)
  image_folders.write(tmp_path / 'pets')  # 12 training images a class: 3 steps an epoch.
  run = tmp_path / 'run'
  result = forked.run(
      [sys.executable, '-m', 'trainer.main', '--dataset=image_folder',
       f'--data_dir={tmp_path / "pets"}', '--image_size=32,32', f'--model_dir={run}',
       '--strategy=mirrored', '--num_cpu_devices=2', '--batch_size=8', '--epochs=2',
       '--steps_per_loop=2', '--checkpoint_every_steps=0', f'--init_from={model_dir}',
       '--freeze=conv', '--freeze_epochs=1'],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'frozen until step 3' in result.stderr and 'step 3: the freeze ends' in result.stderr
  at_thaw = _checkpoint_layers(str(run / 'checkpoints' / 'ckpt-3'), classes=2)
  final = _checkpoint_layers(str(run / 'checkpoints' / 'ckpt-6'), classes=2)
  for layer in range(2):  # The conv layers.
    _assert_same(at_thaw[layer], weights.layers[layer])
    assert _differs(final[layer], weights.layers[layer])
  assert _differs(at_thaw[2], weights.layers[2])
  recorded = records.read_json(str(run / records.CONFIG_FILE))[init_from.RECORD_KEY]
  assert recorded['output_layer'] == 'new (10 -> 2 classes)'


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, source_run, caplog):
  copy = tmp_path / 'source'
  shutil.copytree(source_run[0], copy)
  for data in (copy / 'checkpoints').glob('ckpt-10.data-*'):
    data.write_bytes(data.read_bytes()[:100])  # Truncated, as by a full disk.
  weights = init_from.read(str(copy))
  assert (weights.step, weights.path) == (5, str(copy / 'checkpoints' / 'ckpt-5'))
  assert 'checkpoint' in caplog.text and 'is damaged' in caplog.text
