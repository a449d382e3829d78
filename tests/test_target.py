"""--target_accuracy: the run stops at the first evaluation at or above the target, records
when it got there, and counts on across a resume."""

import json
import os
import sys

from PIL import Image
import pytest

from tests.conftest import REPO, make_source
from tests import forked
from tests import tb_events
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.jobs import plan as plan_lib
from trainer.jobs import target as target_lib
from trainer.jobs import train
from trainer.report import summaries
from trainer.run_folder import checkpointing
from trainer.run_folder import records

# make_source() is learnable: 10 steps of batch 32 at this rate pass 30% eval accuracy.
_TARGET = 0.3


def _config(tmp_path, **overrides):
  values = dict(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=60,
                steps_per_loop=10, learning_rate=3e-3, target_accuracy=_TARGET,
                eval_every_examples=64, checkpoint_every_steps=0, seed=1)
  values.update(overrides)
  return Config(**values)


def _results(model_dir):
  return records.read_json(os.path.join(model_dir, records.RESULTS_FILE))


def _assert_stopped_at_first_reaching(metrics, target=_TARGET, batch=32):
  history = metrics['eval_history']
  accuracies = [e['eval_accuracy'] for e in history]
  assert accuracies[-1] >= target and all(a < target for a in accuracies[:-1])
  reached = metrics['target']
  assert reached['reached'] and reached['accuracy'] == target
  assert reached['step'] == history[-1]['step'] == metrics['global_step']
  assert reached['examples'] == reached['step'] * batch
  assert reached['eval_accuracy'] == accuracies[-1] == metrics['eval_accuracy']
  assert 0 < reached['train_seconds'] <= reached['wall_seconds']


def test_cadence_in_examples_is_the_same_at_every_batch_and_skips_epoch_ends():
  info = make_source().info  # 512 training examples.
  for batch, every in ((32, 4), (64, 2), (128, 1), (100, 2)):
    config = Config(batch_size=batch, eval_every_examples=128)
    plan = plan_lib.make_plan(config, info, _OneReplica())
    assert plan.eval_every_steps == every
    assert [s for s in range(1, plan.total_steps + 1) if plan.is_eval_step(s)] == \
        list(range(every, plan.total_steps, every)) + [plan.total_steps]
  plan = plan_lib.make_plan(Config(batch_size=32, eval_every_examples=96), info, _OneReplica())
  assert not plan.is_eval_step(16)  # An epoch end, between evaluations every 3 steps.


class _OneReplica:
  num_replicas_in_sync = 1


@pytest.mark.parametrize('overrides,message', [
    (dict(target_accuracy=1.0), '--target_accuracy is an eval accuracy in'),
    (dict(target_accuracy=-0.5), '--target_accuracy is an eval accuracy in'),
    (dict(eval_every_examples=-1), '--eval_every_examples must not be negative'),
    (dict(eval_every_examples=100, eval_every_steps=5), 'not both'),
])
def test_bad_target_settings_are_refused(overrides, message):
  with pytest.raises(UserError, match=message):
    Config(**overrides).validate()


def test_stops_at_the_first_evaluation_reaching_the_target(tmp_path, small_source):
  outcome = train.train_and_evaluate(_config(tmp_path), None, small_source)
  metrics = outcome.metrics
  _assert_stopped_at_first_reaching(metrics)
  assert metrics['global_step'] < 60
  assert _results(outcome.model_dir) == json.loads(json.dumps(metrics))
  assert os.path.isdir(os.path.join(outcome.model_dir, 'export'))
  step = metrics['target']['step']
  assert checkpointing.list_checkpoints(outcome.model_dir)[-1][0] == step
  scalars = tb_events.scalars(outcome.model_dir)
  assert scalars[summaries.TARGET_REACHED] == [(step, 1.0)]
  assert scalars['target/step'] == [(step, float(step))]
  assert scalars['target/examples'] == [(step, float(step * 32))]
  assert scalars['target/wall_seconds'][0][1] == pytest.approx(metrics['target']['wall_seconds'])


def test_mirrored_on_two_devices_stops_the_same_way(tmp_path, small_source, mirrored):
  outcome = train.train_and_evaluate(_config(tmp_path), mirrored, small_source)
  _assert_stopped_at_first_reaching(outcome.metrics)


def test_a_target_not_reached_is_recorded_and_said_once(tmp_path, small_source, caplog):
  caplog.set_level('INFO')
  outcome = train.train_and_evaluate(_config(tmp_path, target_accuracy=0.999, train_steps=8),
                                     None, small_source)
  target = outcome.metrics['target']
  best = max(outcome.metrics['eval_history'], key=lambda e: e['eval_accuracy'])
  assert target == {'accuracy': 0.999, 'reached': False, 'steps_trained': 8,
                    'best_eval_accuracy': best['eval_accuracy'], 'best_step': best['step']}
  lines = [r.getMessage() for r in caplog.records if 'not reached' in r.getMessage()]
  assert lines == [f'the target accuracy 99.90% was not reached in 8 steps (best eval '
                   f'accuracy {best["eval_accuracy"]:.4f} at step {best["step"]})']
  assert [e['step'] for e in outcome.metrics['eval_history']] == [2, 4, 6, 8]
  assert tb_events.scalars(outcome.model_dir)[summaries.TARGET_REACHED] == [(8, 0.0)]


def test_a_resumed_run_counts_on_from_its_checkpoint(tmp_path, small_source):
  # The first process ends at step 4 short of the target (as a preempted one would, with
  # its checkpoint); the second resumes from step 4 with the same target.
  config = _config(tmp_path, checkpoint_every_steps=4)
  first = train.train_and_evaluate(config.replace(train_steps=4), None, small_source)
  assert not first.metrics['target']['reached']
  record = records.read_json(os.path.join(first.model_dir, 'checkpoints',
                                          target_lib.RECORD_FILE))
  before_train, before_wall = record['seconds']['4']
  second = train.train_and_evaluate(config, None, small_source)
  metrics = second.metrics
  reached = metrics['target']
  assert reached['reached'] and reached['step'] > 4
  # The run's own records count this process only; the target's count goes on from step 4.
  assert reached['train_seconds'] == pytest.approx(before_train + metrics['train_seconds'],
                                                   abs=0.02)
  assert reached['wall_seconds'] > before_wall
  # Run again after reaching it: no more training, the same record.
  again = train.train_and_evaluate(config, None, small_source)
  assert again.metrics['global_step'] == reached['step']
  assert again.metrics['target'] == reached


def _undecidable_folder(root):
  """Two classes whose test images are all alike: eval accuracy can only be 50%."""
  for split, count in (('train', 8), ('test', 2)):
    for index, name in enumerate(('a', 'b')):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        grey = 100 if split == 'test' else 40 + 150 * index
        Image.new('RGB', (24, 24), (grey,) * 3).save(folder / f'{i}.png')


@pytest.mark.slow
def test_the_command_line_says_in_one_line_when_the_target_was_missed(tmp_path):
  _undecidable_folder(tmp_path / 'images')
  result = forked.run([sys.executable, '-m', 'trainer.main', '--dataset=image_folder',
                       f'--data_dir={tmp_path / "images"}', '--train_steps=4',
                       '--steps_per_loop=2', '--batch_size=4', '--target_accuracy=0.9',
                       '--eval_every_examples=8', f'--model_dir={tmp_path / "run"}'], cwd=REPO,
                      env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if 'target accuracy' in l]
  assert len(lines) == 1, lines
  assert 'the target accuracy 90.00% was not reached in 4 steps (best eval accuracy 0.5000 ' \
      'at step 2)' in lines[0]
  assert _results(tmp_path / 'run')['target'] == {
      'accuracy': 0.9, 'reached': False, 'steps_trained': 4, 'best_eval_accuracy': 0.5,
      'best_step': 2}


def test_the_schedule_follows_the_batch_and_the_target():
  table = target_lib.SCHEDULE_STEPS
  for target, steps in table.items():
    for batch, count in steps.items():
      assert target_lib.schedule_steps(batch, target) == count  # The tuned points themselves.
    batches = [32, 64, 96, 128, 256, 512, 1024, 2048, 4096, 8192]
    lengths = [target_lib.schedule_steps(b, target) for b in batches]
    assert lengths == sorted(lengths, reverse=True)  # More examples a step, fewer steps.
  middle = target_lib.schedule_steps(512, 0.675)
  assert table[0.65][512] < middle < table[0.70][512]
  with pytest.raises(UserError, match='--target_schedule knows targets from 0.65 to 0.7'):
    target_lib.schedule_steps(512, 0.8)


def test_target_schedule_needs_a_target_and_warmup_fraction_a_share():
  with pytest.raises(UserError, match='--target_schedule sizes the run for --target_accuracy'):
    Config(target_schedule=True).validate()
  with pytest.raises(UserError, match='--warmup_fraction is a share of the run'):
    Config(lr_schedule='cosine', warmup_fraction=1.5).validate()
  with pytest.raises(UserError, match='give one of --warmup_steps, --warmup_epochs'):
    Config(lr_schedule='cosine', warmup_fraction=0.1, warmup_epochs=1).validate()
  config = Config(lr_schedule='cosine', warmup_fraction=0.1)
  assert config.warmup_steps_for(steps_per_epoch=781, total_steps=450) == 45
