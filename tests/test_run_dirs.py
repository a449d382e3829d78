"""Where a run writes: flags, then Vertex AI's AIP_* variables, then defaults."""

import re

import pytest
import tensorflow as tf

from trainer.core.errors import UserError
from trainer.run_folder import run_dirs

VERTEX = {'AIP_MODEL_DIR': 'gs://b/job/model/', 'AIP_TENSORBOARD_LOG_DIR': 'gs://b/job/logs/',
          'AIP_CHECKPOINT_DIR': 'gs://b/job/checkpoints/'}


def test_without_flags_or_variables_everything_goes_in_a_timestamped_run_folder():
  dirs = run_dirs.resolve(env={}, now=0)
  assert dirs.model_dir.startswith('runs/19') or dirs.model_dir.startswith('runs/20')
  assert dirs.tensorboard_dir == dirs.checkpoint_dir == dirs.model_dir


def test_model_dir_flag_holds_logs_and_checkpoints():
  dirs = run_dirs.resolve(model_dir='/r', env={})
  assert dirs == run_dirs.RunDirs('/r', '/r', '/r')


def test_vertex_variables_are_used_when_no_flag_says_otherwise():
  # The SavedModel is AIP_MODEL_DIR itself, where Vertex AI's model upload looks for
  # saved_model.pb; the run's records go in the job's base output folder above it.
  assert run_dirs.resolve(env=VERTEX) == run_dirs.RunDirs(
      'gs://b/job', 'gs://b/job/logs/', 'gs://b/job/checkpoints/', 'gs://b/job/model')


def test_the_export_defaults_to_the_run_folder_s_export():
  assert run_dirs.resolve(model_dir='gs://b/r', env={}).export == 'gs://b/r/export'
  assert run_dirs.resolve(model_dir='/r', export_dir='/e', env={}).export == '/e'


def test_flags_beat_vertex_variables():
  dirs = run_dirs.resolve(model_dir='/m', tensorboard_dir='/t', checkpoint_dir='/c',
                          export_dir='/e', env=VERTEX)
  assert dirs == run_dirs.RunDirs('/m', '/t', '/c', '/e')
  only_model = run_dirs.resolve(model_dir='/m', env=VERTEX)
  # Vertex streams TensorBoard from its log folder only, and uploads the model from its
  # model folder: those variables still count.
  assert only_model == run_dirs.RunDirs('/m', 'gs://b/job/logs/', 'gs://b/job/checkpoints/',
                                        'gs://b/job/model')


def test_empty_variables_count_as_unset():
  dirs = run_dirs.resolve(model_dir='/m', env={'AIP_TENSORBOARD_LOG_DIR': ''})
  assert dirs.tensorboard_dir == '/m'


def test_multi_worker_needs_a_shared_folder_from_a_flag_or_vertex():
  with pytest.raises(UserError, match='needs an explicit --model_dir'):
    run_dirs.resolve(multi_worker=True, env={})
  assert run_dirs.resolve(multi_worker=True, env=VERTEX).model_dir == 'gs://b/job'


def test_prepare_creates_every_folder_and_leaves_no_probe_behind(tmp_path):
  dirs = run_dirs.RunDirs(str(tmp_path / 'm'), str(tmp_path / 'logs' / 't'),
                          str(tmp_path / 'c'), export_dir=str(tmp_path / 'e' / 'export'))
  run_dirs.prepare(dirs)
  for folder in ('m', 'logs/t', 'c', 'e'):
    assert (tmp_path / folder).is_dir()
    assert not list((tmp_path / folder).iterdir())


@pytest.mark.parametrize('role,field', [('run folder (--model_dir)', 'model_dir'),
                                        ('checkpoint folder (--checkpoint_dir)', 'checkpoint_dir'),
                                        ('TensorBoard folder (--tensorboard_dir)',
                                         'tensorboard_dir')])
def test_a_folder_under_a_regular_file_is_named_with_the_reason(tmp_path, role, field):
  (tmp_path / 'file').write_text('not a folder')
  good = str(tmp_path / 'ok')
  bad = str(tmp_path / 'file' / 'run')
  dirs = run_dirs.RunDirs(**dict({'model_dir': good, 'tensorboard_dir': good,
                                  'checkpoint_dir': good}, **{field: bad}))
  with pytest.raises(UserError, match=re.escape(f'cannot write to the {role} {bad}: ') +
                     '.*is not a directory'):
    run_dirs.prepare(dirs)


def test_a_folder_that_refuses_writes_is_named_with_the_reason(tmp_path, monkeypatch):
  # Tests run as root, whom permission bits do not stop: the file system call fails instead,
  # as it does for a user without write permission or a bucket without access.
  real_gfile = tf.io.gfile.GFile
  refusing = str(tmp_path / 'checkpoints')

  def gfile(path, mode='r'):
    if path.startswith(refusing) and 'w' in mode:
      raise tf.errors.PermissionDeniedError(None, None, f'{path}; Permission denied')
    return real_gfile(path, mode)

  monkeypatch.setattr(tf.io.gfile, 'GFile', gfile)
  dirs = run_dirs.RunDirs(str(tmp_path / 'run'), str(tmp_path / 'run'), refusing)
  with pytest.raises(UserError, match=re.escape(
      f'cannot write to the checkpoint folder (--checkpoint_dir) {refusing}: ') +
                     '.*Permission denied'):
    run_dirs.prepare(dirs)


class _UntouchableSource:
  @property
  def info(self):
    raise AssertionError('the data was touched before the folders were checked')


def test_a_bad_folder_stops_the_run_before_data_or_model(tmp_path):
  from trainer.jobs import train  # pylint: disable=g-import-not-at-top
  from trainer.core.config import Config  # pylint: disable=g-import-not-at-top
  (tmp_path / 'file').write_text('')
  config = Config(model_dir=str(tmp_path / 'file' / 'run'), train_steps=1)
  with pytest.raises(UserError, match='cannot write to the run folder'):
    train.train_and_evaluate(config, None, _UntouchableSource())


def test_prepare_says_which_folders_it_created_and_discard_removes_only_those(tmp_path):
  (tmp_path / 'runs' / 'older').mkdir(parents=True)
  (tmp_path / 'logs').mkdir()
  (tmp_path / 'logs' / 'keep.txt').write_text('someone else\'s')
  dirs = run_dirs.RunDirs(str(tmp_path / 'runs' / 'new'), str(tmp_path / 'logs' / 'new'),
                          str(tmp_path / 'ckpt' / 'new'),
                          export_dir=str(tmp_path / 'out' / 'export'))
  created = run_dirs.prepare(dirs)
  assert sorted(created) == sorted(str(tmp_path / p) for p in (
      'runs/new', 'logs/new', 'ckpt/new', 'ckpt', 'out'))
  (tmp_path / 'runs' / 'new' / 'config.json').write_text('{}')
  run_dirs.discard_created(created)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['logs', 'runs']
  assert [p.name for p in (tmp_path / 'runs').iterdir()] == ['older']
  assert [p.name for p in (tmp_path / 'logs').iterdir()] == ['keep.txt']


def test_a_folder_that_existed_is_never_created_nor_discarded(tmp_path):
  (tmp_path / 'run').mkdir()
  assert run_dirs.prepare(run_dirs.resolve(model_dir=str(tmp_path / 'run'))) == []


def test_a_run_that_fails_before_training_leaves_no_run_folder(tmp_path, monkeypatch):
  from trainer.jobs import train  # pylint: disable=g-import-not-at-top
  from trainer.core.config import Config  # pylint: disable=g-import-not-at-top

  class _MissingSource:
    @property
    def info(self):
      raise UserError('no such data')

  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError, match='no such data'):
    train.train_and_evaluate(Config(train_steps=1), None, _MissingSource())
  assert not (tmp_path / 'runs').exists()
  (tmp_path / 'kept').mkdir()
  (tmp_path / 'kept' / 'notes.txt').write_text('mine')
  with pytest.raises(UserError, match='no such data'):
    train.train_and_evaluate(Config(train_steps=1, model_dir=str(tmp_path / 'kept')), None,
                             _MissingSource())
  assert (tmp_path / 'kept' / 'notes.txt').read_text() == 'mine'


def test_a_run_refused_a_folder_it_created_leaves_it_to_the_run_that_holds_it(
    tmp_path, monkeypatch):
  """Two runs racing for a new folder: the one that created it may lose the lock to the
  other, which writes there from then on; the loser must not remove the winner's folder."""
  from trainer.jobs import train  # pylint: disable=g-import-not-at-top
  from trainer.core.config import Config  # pylint: disable=g-import-not-at-top
  from trainer.run_folder import run_lock  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'

  def taken_by_the_other_run(folder, chief):
    (run / 'config.json').write_text('{"the": "winner"}')  # The winner's first write.
    raise UserError(f'{folder} is held by another run')

  monkeypatch.setattr(run_lock, 'acquire', taken_by_the_other_run)
  with pytest.raises(UserError, match='held by another run'):
    train.train_and_evaluate(Config(train_steps=1, model_dir=str(run)), None,
                             _UntouchableSource())
  assert (run / 'config.json').read_text() == '{"the": "winner"}'
