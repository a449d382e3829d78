"""python -m trainer.evaluate: a run's checkpoints evaluated by a job of its own."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests import forked
from tests import image_folders
from tests.process_output import Lines
from tests import tb_events
from trainer.core.config import Config
from trainer.jobs import evaluation
from trainer.jobs import train
from trainer.run_folder import locate

# One worker runs them all: they share the module's run.
pytestmark = pytest.mark.xdist_group('evaluated_run')


def _evaluate(*args, timeout=180):
  return forked.run([sys.executable, '-m', 'trainer.evaluate', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A run on an image folder with averaged weights and mirror views (what evaluation
  must reproduce), 3 epochs of 3 steps, checkpoints kept at steps 3, 6, 9."""
  root = tmp_path_factory.mktemp('eval')
  image_folders.write(root / 'images')
  config = Config(dataset='image_folder', data_dir=str(root / 'images'),
                  model_dir=str(root / 'run'), batch_size=8, epochs=3, steps_per_loop=3,
                  learning_rate=3e-2, ema_decay=0.5, eval_flip=True)
  outcome = train.train_and_evaluate(config)
  return root / 'run', outcome.metrics


@pytest.mark.slow
def test_evaluating_the_final_checkpoint_gives_the_run_s_result(finished_run):
  model_dir, metrics = finished_run
  result = _evaluate(f'--model_dir={model_dir}', '--strategy=mirrored', '--num_cpu_devices=2')
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((model_dir / 'eval_test_9.json').read_text())
  assert written['eval_accuracy'] == pytest.approx(metrics['eval_accuracy'], abs=1e-6)
  assert written['eval_loss'] == pytest.approx(metrics['eval_loss'], rel=1e-5)
  assert written['per_class_accuracy'] == pytest.approx(metrics['per_class_accuracy'],
                                                       abs=1e-6)
  counts = np.array(written['confusion_matrix'])
  assert counts.sum() == 10 and np.trace(counts) / 10 == pytest.approx(written['eval_accuracy'])
  assert written['class_names'] == list(image_folders.CLASSES) and written['step'] == 9
  assert f'step 9  test  loss {metrics["eval_loss"]:.4f}  accuracy' in result.stdout
  scalars = tb_events.scalars(model_dir / 'eval_test')
  assert scalars['accuracy'] == [(9, pytest.approx(written['eval_accuracy']))]
  assert {'per_class/cat', 'per_class/dog'} <= set(scalars)


@pytest.mark.slow
def test_best_and_another_split(finished_run):
  model_dir, _ = finished_run
  best = json.loads((model_dir / 'best' / 'best.json').read_text())
  result = _evaluate(f'--model_dir={model_dir}', '--checkpoint=best', '--split=train',
                     '--noeval_flip')
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((model_dir / f'eval_train_{best["step"]}.json').read_text())
  assert written['eval_examples'] == 24 and written['split'] == 'train'
  assert written['checkpoint'].endswith(f'best/ckpt-{best["step"]}')
  assert written['eval_flip'] is False


@pytest.mark.slow
@pytest.mark.parametrize('args,message', [
    (['--checkpoint=nowhere/ckpt-1'], '--checkpoint=nowhere/ckpt-1 is neither latest, best'),
    (['--dataset=no_such_dataset'], "unknown --dataset='no_such_dataset'"),
])
def test_bad_evaluation_requests_exit_2_with_one_line(finished_run, args, message):
  model_dir, _ = finished_run
  result = _evaluate(f'--model_dir={model_dir}', *args)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last and 'Traceback' not in result.stderr


@pytest.mark.slow
def test_no_run_folder_is_a_one_line_error(tmp_path):
  result = _evaluate(f'--model_dir={tmp_path}')
  assert result.returncode == 2
  assert f'error: no run in --model_dir={tmp_path}' in result.stderr


def test_watch_skips_a_checkpoint_deleted_after_listing(finished_run, tmp_path):
  """The trainer's keep-N deletes a checkpoint that the index still lists: the watcher
  takes the next newest instead of failing, then stops on its timeout."""
  model_dir, _ = finished_run
  copy = tmp_path / 'run'
  subprocess.run(['cp', '-r', str(model_dir), str(copy)], check=True)
  for path in (copy / 'checkpoints').glob('ckpt-9.*'):
    path.unlink()
  run = locate.find(str(copy))
  evaluator = evaluation.Evaluator(run.config, run.dirs, 'test')
  now = [0.0]
  results = evaluation.watch(evaluator, poll_seconds=1, timeout=5, clock=lambda: now[0],
                             sleep=lambda seconds: now.__setitem__(0, now[0] + seconds))
  assert [r.step for r in results] == [6]
  assert now[0] > 5  # It waited (on the fake clock) for step 9 until the timeout.


@pytest.mark.slow
@pytest.mark.parametrize('keep', [3, 1])
def test_watch_beside_a_training_process(tmp_path, keep):
  """Checkpoints every 3 steps (each epoch end); with keep 1 each one is deleted as the next
  is written, often while the watcher reads it."""
  image_folders.write(tmp_path / 'images')
  model_dir = tmp_path / 'run'
  trainer = forked.Popen(
      [sys.executable, '-m', 'trainer.main', '--dataset=image_folder',
       f'--data_dir={tmp_path / "images"}', f'--model_dir={model_dir}', '--batch_size=8',
       '--train_steps=60', '--steps_per_loop=3', f'--keep_checkpoints={keep}'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  watcher = forked.Popen(
      [sys.executable, '-m', 'trainer.evaluate', f'--model_dir={model_dir}', '--watch',
       '--poll_seconds=0.05', '--watch_timeout=120'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    trainer_log = Lines(trainer.stderr)
    watched, watch_log = watcher.communicate(timeout=300)
    trainer.wait(timeout=120)
  finally:
    trainer.kill()
    watcher.kill()
  trainer_output = trainer_log.rest()
  assert trainer.returncode == 0, trainer_output[-3000:]
  assert watcher.returncode == 0, watch_log[-3000:]
  assert 'Traceback' not in watch_log
  saved = {int(step) for step in re.findall(r'saved checkpoint \S+/ckpt-(\d+)', trainer_output)}
  evaluated = [int(step) for step in re.findall(r'^step (\d+)  test  loss', watched, re.M)]
  assert evaluated == sorted(set(evaluated)) and evaluated[-1] == 60  # Ends after the last.
  assert set(evaluated) <= saved
  for step in evaluated:
    written = json.loads((model_dir / f'eval_test_{step}.json').read_text())
    assert written['step'] == step and written['eval_examples'] == 10
  steps_in_tensorboard = [s for s, _ in tb_events.scalars(model_dir / 'eval_test')['accuracy']]
  assert steps_in_tensorboard == evaluated
  final = json.loads((model_dir / 'results.json').read_text())
  last = json.loads((model_dir / 'eval_test_60.json').read_text())
  assert last['eval_accuracy'] == pytest.approx(final['eval_accuracy'], abs=1e-6)
