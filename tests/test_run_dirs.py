"""Where a run writes: flags, then Vertex AI's AIP_* variables, then defaults."""

import pytest

from trainer import run_dirs
from trainer.errors import UserError

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
  assert run_dirs.resolve(env=VERTEX) == run_dirs.RunDirs(
      'gs://b/job/model/', 'gs://b/job/logs/', 'gs://b/job/checkpoints/')


def test_flags_beat_vertex_variables():
  dirs = run_dirs.resolve(model_dir='/m', tensorboard_dir='/t', checkpoint_dir='/c', env=VERTEX)
  assert dirs == run_dirs.RunDirs('/m', '/t', '/c')
  only_model = run_dirs.resolve(model_dir='/m', env=VERTEX)
  # Vertex streams TensorBoard from its log folder only, so that variable still counts.
  assert only_model == run_dirs.RunDirs('/m', 'gs://b/job/logs/', 'gs://b/job/checkpoints/')


def test_empty_variables_count_as_unset():
  dirs = run_dirs.resolve(model_dir='/m', env={'AIP_TENSORBOARD_LOG_DIR': ''})
  assert dirs.tensorboard_dir == '/m'


def test_multi_worker_needs_a_shared_folder_from_a_flag_or_vertex():
  with pytest.raises(UserError, match='needs an explicit --model_dir'):
    run_dirs.resolve(multi_worker=True, env={})
  assert run_dirs.resolve(multi_worker=True, env=VERTEX).model_dir == 'gs://b/job/model/'
