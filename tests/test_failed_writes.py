"""A write that fails mid-run (disk full, permission lost) stops the run with one line, and
the newest complete checkpoint stays the one a rerun resumes from. The failures are
injected into the file system calls the writers make."""

import json
import os

import pytest
import tensorflow as tf
from tensorflow.python.lib.io import file_io  # pylint: disable=g-direct-tensorflow-import

from tests.conftest import TEN_STEPS, make_source
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.jobs import train
from trainer.run_folder import checkpointing


def _config(model_dir, **overrides):
  values = dict(model_dir=str(model_dir), batch_size=32, epochs=0, train_steps=10,
                steps_per_loop=5, checkpoint_every_steps=5)
  values.update(overrides)
  return Config(**values)


def _resumed(model_dir):
  """The ten-step run (conftest.TEN_STEPS), continued to step 20."""
  return Config(**dict(TEN_STEPS, model_dir=str(model_dir), train_steps=20))


def _listed_steps(model_dir):
  state = tf.train.get_checkpoint_state(os.path.join(model_dir, checkpointing.CHECKPOINT_DIR))
  return [int(p.rsplit('-', 1)[-1]) for p in state.all_model_checkpoint_paths]


def _disk_full(*args, **kwargs):
  raise tf.errors.ResourceExhaustedError(None, None, 'No space left on device')


def test_disk_full_mid_checkpoint_stops_and_the_rerun_resumes_from_the_last_whole_one(
    tmp_path, ten_step_run, monkeypatch, caplog):
  source = make_source()
  checkpoints = tmp_path / checkpointing.CHECKPOINT_DIR
  real_write = file_io.atomic_write_string_to_file

  def data_written_then_disk_full(filename, contents, overwrite=True):
    # The state file of checkpoint 15 is the one to fail: its data was just written, so cut
    # that short too, as a disk that filled up during the save would have.
    if filename == str(checkpoints / 'checkpoint') and 'ckpt-15' in contents:
      data = checkpoints / 'ckpt-15.data-00000-of-00001'
      data.write_bytes(data.read_bytes()[:100])
      _disk_full()
    return real_write(filename, contents, overwrite)

  monkeypatch.setattr(file_io, 'atomic_write_string_to_file', data_written_then_disk_full)
  with pytest.raises(UserError, match=(
      f'could not write the checkpoint of step 15 in {checkpoints} \\(No space left on '
      'device\\); the newest complete checkpoint \\(step 10\\) is intact and a rerun resumes '
      'from it; free space or restore write access, then rerun')):
    train.train_and_evaluate(_resumed(tmp_path), None, source)
  assert _listed_steps(tmp_path) == [5, 10]  # The half-written ckpt-15 is listed nowhere.

  monkeypatch.undo()
  caplog.set_level('INFO')
  outcome = train.train_and_evaluate(_resumed(tmp_path), None, source)
  assert 'resumed from step 10' in caplog.text and 'damaged' not in caplog.text
  assert outcome.metrics['global_step'] == 20
  assert _listed_steps(tmp_path)[-1] == 20


def _refuse_writes_under(monkeypatch, folder):
  real_gfile = tf.io.gfile.GFile

  def gfile(path, mode='r'):
    if str(path).startswith(str(folder)) and 'w' in mode:
      raise tf.errors.PermissionDeniedError(None, None, f'{path}; Permission denied')
    return real_gfile(path, mode)

  monkeypatch.setattr(tf.io.gfile, 'GFile', gfile)


def test_permission_lost_on_best_stops_and_keeps_the_checkpoint_before(tmp_path, monkeypatch):
  source = make_source()
  train.train_and_evaluate(_config(tmp_path, train_steps=5), None, source)
  _refuse_writes_under(monkeypatch, tmp_path / checkpointing.BEST_DIR)
  # The evaluation at step 10 (the last step) finds a best model, whose save then fails.
  with pytest.raises(UserError, match=(
      f'could not write the best model in {tmp_path / "best"} \\(.*Permission denied\\); '
      'the newest complete checkpoint \\(step 5\\) is intact')):
    train.train_and_evaluate(_config(tmp_path), None, source)
  assert _listed_steps(tmp_path) == [5]
  assert json.loads((tmp_path / 'results.json').read_text())['global_step'] == 5  # The first run's.


def test_a_failed_export_stops_without_results_and_the_rerun_exports(tmp_path, monkeypatch):
  source = make_source()
  real_rename = tf.io.gfile.rename
  export_dir = tmp_path / 'export'

  def rename(src, dst, overwrite=False):
    if str(dst) == str(export_dir):
      _disk_full()
    return real_rename(src, dst, overwrite)

  monkeypatch.setattr(tf.io.gfile, 'rename', rename)
  with pytest.raises(UserError, match=(
      f'could not write the export in {export_dir} \\(No space left on device\\); the newest '
      'complete checkpoint \\(step 10\\) is intact')):
    train.train_and_evaluate(_config(tmp_path), None, source)
  assert not (tmp_path / 'results.json').exists()
  monkeypatch.undo()
  outcome = train.train_and_evaluate(_config(tmp_path), None, source)
  assert outcome.metrics['global_step'] == 10
  assert (export_dir / 'saved_model.pb').exists() and (tmp_path / 'results.json').exists()
