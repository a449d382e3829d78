"""Checkpoints, resume, damaged and incompatible run folders, export (in-process, fast)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TEN_STEPS, make_source
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.jobs import train
from trainer.prediction import exports
from trainer.prediction import job
from trainer.run_folder import checkpointing
from trainer.run_folder import records


def _config(model_dir, **overrides):
  return Config(**dict(TEN_STEPS, model_dir=str(model_dir), **overrides))


def _steps(model_dir):
  state = tf.train.get_checkpoint_state(os.path.join(model_dir, checkpointing.CHECKPOINT_DIR))
  return [int(p.rsplit('-', 1)[-1]) for p in state.all_model_checkpoint_paths] if state else []


def _snapshot(model_dir):
  """Every file of the run folder with its bytes, to prove nothing was touched."""
  files = {}
  for root, _, names in os.walk(model_dir):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        files[os.path.relpath(os.path.join(root, name), model_dir)] = f.read()
  return files


def test_rerun_resumes_from_the_newest_checkpoint(tmp_path, ten_step_run, caplog):
  caplog.set_level('INFO')
  source = make_source()
  assert _steps(tmp_path) == [5, 10]
  outcome = train.train_and_evaluate(_config(tmp_path, train_steps=20), None, source)
  assert 'resumed from step 10 (epoch 1)' in caplog.text
  assert outcome.metrics['global_step'] == 20
  assert 'step 15/20' in caplog.text and 'step 5/20' not in caplog.text


def test_finished_run_rerun_trains_nothing_more(tmp_path, ten_step_run):
  again = train.train_and_evaluate(_config(tmp_path), None, make_source())
  assert again.metrics['global_step'] == 10
  assert again.metrics['eval_accuracy'] == pytest.approx(ten_step_run['eval_accuracy'])


def test_keep_checkpoints_keeps_the_newest_n(tmp_path):
  train.train_and_evaluate(_config(tmp_path, train_steps=30, keep_checkpoints=2), None,
                           make_source())
  assert _steps(tmp_path) == [25, 30]
  names = os.listdir(tmp_path / 'checkpoints')
  assert not any(n.startswith(('ckpt-5.', 'ckpt-10.', 'ckpt-20.')) for n in names)


@pytest.mark.parametrize('damage', ['truncate', 'delete_index'])
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, ten_step_run, caplog,
                                                                 damage):
  source = make_source()
  newest = tmp_path / 'checkpoints' / 'ckpt-10'
  if damage == 'truncate':
    data = tmp_path / 'checkpoints' / 'ckpt-10.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[:1000])
  else:
    os.remove(f'{newest}.index')
  caplog.set_level('INFO')
  outcome = train.train_and_evaluate(_config(tmp_path, train_steps=15), None, source)
  assert 'checkpoint' in caplog.text and 'ckpt-10 is damaged' in caplog.text
  assert 'resumed from step 5' in caplog.text
  assert outcome.metrics['global_step'] == 15


def test_checkpoint_of_another_data_set_is_refused_and_left_alone(tmp_path, ten_step_run):
  before = _snapshot(tmp_path)
  with pytest.raises(UserError, match='come from another model or data set .*num_classes: '
                     'checkpoint 10 vs now 5.*nothing was overwritten'):
    train.train_and_evaluate(_config(tmp_path, train_steps=20), None,
                             make_source(num_classes=5))
  assert _snapshot(tmp_path) == before


def test_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path, ten_step_run):
  os.remove(tmp_path / 'checkpoints' / checkpointing.SIGNATURE_FILE)
  with pytest.raises(UserError, match='does not fit this model'):
    train.train_and_evaluate(_config(tmp_path, train_steps=20), None,
                             make_source(num_classes=5))


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, ten_step_run):
  source = make_source()
  good = tf.train.load_checkpoint(str(tmp_path / 'checkpoints' / 'ckpt-10'))
  images, labels = source._splits['train']  # pylint: disable=protected-access
  poisoned = images.astype(np.float32)
  poisoned[:] = np.nan
  source._splits['train'] = (poisoned, labels)  # pylint: disable=protected-access
  with pytest.raises(UserError, match='diverged by step 15.*last good checkpoint is kept'):
    train.train_and_evaluate(_config(tmp_path, train_steps=20), None, source)
  assert _steps(tmp_path) == [5, 10]
  for name, _ in tf.train.list_variables(str(tmp_path / 'checkpoints' / 'ckpt-10')):
    value = good.get_tensor(name)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      assert np.all(np.isfinite(value)), name


def test_resume_under_mirrored_and_from_mirrored_into_one_device(tmp_path, mirrored, caplog):
  source = make_source()
  train.train_and_evaluate(_config(tmp_path), mirrored, source)
  caplog.set_level('INFO')
  train.train_and_evaluate(_config(tmp_path, train_steps=15), mirrored, source)
  assert 'resumed from step 10' in caplog.text
  one_device = tf.distribute.OneDeviceStrategy('/cpu:0')
  outcome = train.train_and_evaluate(_config(tmp_path, train_steps=20), one_device, source)
  assert 'resumed from step 15' in caplog.text
  assert outcome.metrics['global_step'] == 20
  # The same 20 steps without interruption on one device: equal up to summation order.
  straight = train.train_and_evaluate(_config(tmp_path / 'straight', train_steps=20),
                                      one_device, source)
  for a, b in zip(outcome.trainer.model.get_weights(), straight.trainer.model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_best_checkpoint_tracks_eval_accuracy(tmp_path):
  outcome = train.train_and_evaluate(_config(tmp_path, train_steps=48), None, make_source())
  best = records.read_json(str(tmp_path / 'best' / 'best.json'))
  assert best['step'] in (16, 32, 48)  # Epoch ends: 512 examples / 32 per batch.
  assert best['eval_accuracy'] >= outcome.metrics['eval_accuracy']
  assert tf.train.latest_checkpoint(str(tmp_path / 'best')).endswith(f'ckpt-{best["step"]}')


@pytest.mark.slow
def test_export_predicts_like_the_trained_model_on_real_images(tmp_path, cifar_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = Config(data_dir=cifar_dir, model_dir=str(tmp_path / 'run'), epochs=0,
                  train_steps=150, train_split='train[:9600]', eval_split='test[:640]')
  outcome = train.train_and_evaluate(config)
  test = tfds.load('cifar10', split='test[:12]', data_dir=cifar_dir, batch_size=-1)
  paths = []
  for i, image in enumerate(test['image'].numpy()):
    paths.append(str(tmp_path / f'{i}.png'))
    tf.io.write_file(paths[-1], tf.io.encode_png(image))
  output = tmp_path / 'predicted.jsonl'
  job.run(exports.load(str(tmp_path / 'run' / 'export')), paths, job.Options(output=str(output)))
  lines = [json.loads(line) for line in output.read_text().splitlines()]
  assert [line['instance']['path'] for line in lines] == paths
  predicted = [(line['instance']['path'], line['prediction']['class_name'],
                max(line['prediction']['probabilities'])) for line in lines]
  logits = outcome.trainer.model(test['image'].numpy().astype(np.float32) / 255.0)
  names = tfds.builder('cifar10', data_dir=cifar_dir).info.features['label'].names
  assert [name for _, name, _ in predicted] == [names[i] for i in np.argmax(logits, axis=-1)]
  assert all(0.1 <= p <= 1.0 for _, _, p in predicted)
