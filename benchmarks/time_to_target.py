"""Time to a result: steps to 65% and 70% test accuracy at each global batch, over many seeds,
and the seconds to 65% against the tutorial's own code, side by side on this machine.

    python -m benchmarks.time_to_target --data_dir=../shared/datasets/tfds \\
        [--batch_sizes=64,128,256,512,1024,2048,4096] [--targets=0.65,0.70] [--seeds=10] \\
        [--jobs=1] [--out=runs/time_to_target] [--include=EARLIER.json,...]
        [-- --any_trainer_flag=value ...]

Each run is `python -m trainer.main --flagfile=configs/time_to_target.cfg --batch_size=B
--target_accuracy=X --seed=S` in a process of its own, on one device: the steps to a target
depend on the global batch, not on the replicas that share it, so they stand for 8 GPUs or a
TPU at that batch as well. Per batch and target it prints the median steps, the olympic mean
(the mean without the fastest and the slowest seed), the spread and how many seeds reached
the target, and the scaling efficiency E(B) = steps(64) x 64 / (steps(B) x B): 1 when B
times the devices cut the steps B/64 times. Then, alternating in one run on this machine
(--timing_rounds times): the tutorial's own code (`model.fit`, 5 epochs, validation after
each, as it is published) against the preset at batch 64 to 65%; both times are wall
seconds from the start of training, evaluations included. Writes time_to_target.json and
two plots into --out: test accuracy against steps for each batch (accuracy_curves.png) and
steps to each target against the batch with the ideal line (steps_to_target.png).
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import measure
from benchmarks import summaries

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS folder with cifar10.')
_PRESET = flags.DEFINE_string('preset', 'configs/time_to_target.cfg', 'The recipe\'s flagfile.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['64', '128', '256', '512', '1024', '2048', '4096'],
                             'Global batch sizes.')
_TARGETS = flags.DEFINE_list('targets', ['0.65', '0.70'], 'Test accuracies to reach.')
_SEEDS = flags.DEFINE_integer('seeds', 10, 'Seeds per batch and target (1, 2, ...).')
_FIRST_SEED = flags.DEFINE_integer('first_seed', 1, 'The first seed.')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Trainings at a time (steps do not depend on it).')
_TIMING_ROUNDS = flags.DEFINE_integer('timing_rounds', 1, 'Rounds of the side-by-side '
                                      'timing (0: none).')
_INCLUDE = flags.DEFINE_list('include', [], 'time_to_target.json files of earlier runs of '
                             'this script whose runs and timing join this one\'s (with '
                             '--seeds=0 --timing_rounds=0: only merge, summarize and plot).')
_OUT = flags.DEFINE_string('out', 'runs/time_to_target', 'Where the JSON and plots go.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A few steps on a slice of the data, to check '
                           'that the script works (figures meaningless).')
_CHILD = flags.DEFINE_bool('tutorial_child', False, 'Internal: run the tutorial code here.')

_RESULT = 'RESULT '
_SMOKE_FLAGS = ['--notarget_schedule', '--train_steps=4', '--eval_every_examples=128',
                '--train_split=train[:2048]', '--eval_split=test[:256]']


def _tutorial_child():
  """The tutorial's code as published; validation after every epoch, as it does."""
  import keras  # pylint: disable=g-import-not-at-top
  from benchmarks import tutorial  # pylint: disable=g-import-not-at-top
  train_images, train_labels, test_images, test_labels = tutorial.load_arrays(_DATA_DIR.value,
                                                                              _SMOKE.value)
  model = tutorial.compiled_model()
  history = []
  start = [0.0]

  class Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      start[0] = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      history.append({'eval_accuracy': float(logs['val_accuracy']),
                      'wall_seconds': time.perf_counter() - start[0]})

  model.fit(train_images, train_labels, epochs=1 if _SMOKE.value else 5, verbose=0,
            validation_data=(test_images, test_labels), callbacks=[Clock()])
  print(_RESULT + json.dumps({'eval_history': history}), flush=True)


def _tutorial():
  command = [sys.executable, '-m', 'benchmarks.time_to_target', '--tutorial_child']
  command += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
  command += ['--smoke'] if _SMOKE.value else []
  output = measure.run(command).stdout
  history = json.loads(next(l for l in output.splitlines() if l.startswith(_RESULT))
                       [len(_RESULT):])['eval_history']
  return {'eval_accuracy': history[-1]['eval_accuracy'],
          'wall_seconds': history[-1]['wall_seconds']}


def _train(batch_size, target, seed, extra):
  model_dir = tempfile.mkdtemp(prefix=f'ttt_b{batch_size}_t{target}_s{seed}_')
  command = [sys.executable, '-m', 'trainer.main', f'--flagfile={_PRESET.value}',
             '--strategy=default', f'--batch_size={batch_size}', f'--target_accuracy={target}',
             f'--seed={seed}', f'--model_dir={model_dir}', '--checkpoint_every_steps=0']
  command += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
  command += (_SMOKE_FLAGS if _SMOKE.value else []) + extra
  measure.run(command)
  results = measure.record(model_dir)
  shutil.rmtree(model_dir, ignore_errors=True)  # Hundreds of runs, each with its export.
  reached = results['target']
  return {'batch_size': batch_size, 'target': target, 'seed': seed,
          'reached': reached['reached'], 'steps': reached.get('step'),
          'wall_seconds': reached.get('wall_seconds'),
          'train_seconds': reached.get('train_seconds'),
          'steps_trained': results['global_step'],
          'final_accuracy': results['eval_accuracy'],
          'curve': [(e['step'], e['eval_accuracy']) for e in results['eval_history']]}


def _timing(extra):
  """Alternating rounds: the tutorial's code for its 5 epochs, the preset at 64 to 65%."""
  rounds = []
  for index in range(_TIMING_ROUNDS.value):
    tutorial = _tutorial()
    ours = _train(64, min(float(t) for t in _TARGETS.value), _FIRST_SEED.value + index, extra)
    rounds.append({'tutorial_wall_seconds': tutorial['wall_seconds'],
                   'tutorial_accuracy': tutorial['eval_accuracy'],
                   'preset_reached': ours['reached'], 'preset_wall_seconds': ours['wall_seconds'],
                   'preset_steps': ours['steps']})
    print(f'timing round {index + 1}: the tutorial\'s code {tutorial["wall_seconds"]:.1f} s to '
          f'{tutorial["eval_accuracy"]:.4f} after 5 epochs; the preset at batch 64 '
          + (f'{ours["wall_seconds"]:.1f} s to its target at step {ours["steps"]}'
             if ours['reached'] else 'did not reach its target'), flush=True)
  return rounds


def _fmt(value, spec='.0f'):
  return 'never' if value is None else format(value, spec)


def main(argv):
  extra = argv[1:]  # Everything after `--`: more trainer flags.
  settings = [(int(b), float(t), _FIRST_SEED.value + s) for t in _TARGETS.value
              for b in _BATCHES.value for s in range(_SEEDS.value)]

  def report(run):
    print(f'target {run["target"]:.0%}  batch {run["batch_size"]:>5}  seed {run["seed"]:>2}  '
          + (f'step {run["steps"]}  ({run["wall_seconds"]:.1f} s)' if run['reached']
             else f'not reached in {run["steps_trained"]} steps '
                  f'({run["final_accuracy"]:.4f})'), flush=True)

  runs = measure.run_all(lambda b, t, s: _train(b, t, s, extra), settings, _JOBS.value, report)
  earlier_timing = []
  for path in _INCLUDE.value:
    with open(path) as f:
      earlier = json.load(f)
    runs += earlier['runs']
    earlier_timing += earlier['timing']
  runs.sort(key=lambda r: (r['target'], r['batch_size'], r['seed']))
  rows = summaries.steps_to_target(runs)
  print(f'\n{"target":>6}{"batch":>7}{"reached":>9}{"median":>8}{"olympic":>9}{"spread":>12}'
        f'{"E(B)":>7}')
  for row in rows:
    spread = f'{_fmt(row["min_steps"])}-{_fmt(row["max_steps"])}'
    print(f'{row["target"]:>6.0%}{row["batch_size"]:>7}{row["reached"]:>5}/{row["seeds"]:<3}'
          f'{_fmt(row["median_steps"]):>8}{_fmt(row["olympic_mean_steps"], ".1f"):>9}'
          f'{spread:>12}{_fmt(row["efficiency"], ".2f"):>7}')
  timing = earlier_timing + _timing(extra)
  if timing:
    ratios = [r['tutorial_wall_seconds'] / r['preset_wall_seconds'] for r in timing
              if r['preset_reached']]
    if ratios:
      print(f'the tutorial\'s code takes {statistics.median(ratios):.1f} times as long for its '
            '5 epochs as the preset at batch 64 to its target (median of rounds)')
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'time_to_target.json'), 'w') as f:
    json.dump({'preset': _PRESET.value, 'extra_flags': extra, 'smoke': _SMOKE.value,
               'summary': rows, 'timing': timing, 'runs': runs}, f, indent=2)
  from benchmarks import plots  # pylint: disable=g-import-not-at-top
  top = max(run['target'] for run in runs)
  curves = {}
  for run in runs:  # The first seed of each batch, run to the highest target.
    if run['target'] == top and run['batch_size'] not in curves:
      curves[run['batch_size']] = run['curve']
  plots.accuracy_curves(curves, sorted({r['target'] for r in runs}),
                        os.path.join(_OUT.value, 'accuracy_curves.png'))
  plots.steps_to_target(rows, os.path.join(_OUT.value, 'steps_to_target.png'))
  print(f'wrote {_OUT.value}/time_to_target.json, accuracy_curves.png, steps_to_target.png'
        + (' (SMOKE: figures meaningless)' if _SMOKE.value else ''))


def _entry(argv):
  if _CHILD.value:
    _tutorial_child()
  else:
    main(argv)


if __name__ == '__main__':
  app.run(_entry)
