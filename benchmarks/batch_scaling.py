"""Accuracy against global batch size: one recipe, 5 epochs, several seeds per batch size.

    python -m benchmarks.batch_scaling --data_dir=../shared/datasets/tfds \\
        --recipe=configs/scaling.cfg [--batch_sizes=64,256,512,1024,2048,4096] [--seeds=1,2,3] \\
        [--out=runs/batch_scaling] [--jobs=1] [-- --any_trainer_flag=value ...]

Each run is `python -m trainer.main --flagfile=RECIPE --batch_size=B --seed=S` in a process
of its own, on one device (--strategy=default): the global batch, not the number of
replicas, decides what a synchronous data-parallel run learns, so these figures stand for
8 GPUs at 8 x B/8 as well. Runs unchanged on a GPU or TPU VM (set --strategy there with a
trailing `-- --strategy=...`). Prints a row per run as it ends, then a table of the median
test accuracy with its spread (min-max) per batch size; writes `scaling.json` and
`scaling.png` (accuracy against batch, the tutorial's 64% as a line, earlier results from
--compare beside it) into --out. --jobs=2 runs two trainings at a time: on a machine with
several cores and no accelerator the whole sweep takes less time, each training longer.
"""

import json
import os
import sys
import tempfile

from absl import app
from absl import flags

from benchmarks import measure
from benchmarks import summaries
from benchmarks import plots

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS folder with cifar10 (as for training).')
_RECIPE = flags.DEFINE_string('recipe', 'configs/scaling.cfg', 'Flagfile of the recipe.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['64', '256', '512', '1024', '2048', '4096'],
                             'Global batch sizes.')
_SEEDS = flags.DEFINE_list('seeds', ['1', '2', '3'], 'Seeds per batch size.')
_OUT = flags.DEFINE_string('out', 'runs/batch_scaling', 'Where scaling.json/.png go.')
_LABEL = flags.DEFINE_string('label', None, 'Name of the recipe in the table and plot; '
                             'default: the flagfile and the extra flags.')
_COMPARE = flags.DEFINE_list('compare', [], 'scaling.json files of earlier runs to draw in '
                             'the same plot.')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Trainings at a time (one per accelerator or per '
                             'few CPU cores); the train seconds are for one job at a time.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A few steps on a slice of the data, to check '
                           'that the script works (figures meaningless).')

TUTORIAL_ACCURACY = 0.64  # The tutorial's 5 epochs at batch 64, with this trainer.


def _train(batch_size, seed, extra):
  model_dir = tempfile.mkdtemp(prefix=f'scaling_b{batch_size}_s{seed}_')
  command = [sys.executable, '-m', 'trainer.main', f'--flagfile={_RECIPE.value}',
             '--strategy=default', f'--batch_size={batch_size}', f'--seed={seed}',
             f'--model_dir={model_dir}', '--checkpoint_every_steps=0']
  command += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
  if _SMOKE.value:
    command += ['--train_steps=4', '--train_split=train[:2048]', '--eval_split=test[:256]']
  command += extra
  measure.run(command)
  results = measure.record(model_dir)
  learning_rate = measure.record(model_dir, 'config.json')['scaled_learning_rate']
  return {'batch_size': batch_size, 'seed': seed, 'eval_accuracy': results['eval_accuracy'],
          'train_seconds': results['train_seconds'], 'steps': results['global_step'],
          'learning_rate': learning_rate, 'model_dir': model_dir}


def main(argv):
  extra = argv[1:]  # Everything after `--`: more trainer flags.
  label = _LABEL.value or ' '.join([_RECIPE.value] + extra)
  print(f'recipe: {label}', flush=True)
  settings = [(int(b), int(s)) for b in _BATCHES.value for s in _SEEDS.value]

  def report(run):
    print(f'batch {run["batch_size"]:>5}  seed {run["seed"]}  '
          f'rate {run["learning_rate"]:.4g}  test accuracy {run["eval_accuracy"]:.4f}  '
          f'{run["steps"]} steps  {run["train_seconds"]:.1f} s', flush=True)

  runs = measure.run_all(lambda b, s: _train(b, s, extra), settings, _JOBS.value, report)
  runs.sort(key=lambda run: (run['batch_size'], run['seed']))
  rows = summaries.batch_scaling(runs)
  print(f'\n{"batch":>6}{"steps":>7}{"rate":>9}{"median acc":>12}{"spread":>16}'
        f'{"train s":>9}')
  for row in rows:
    print(f'{row["batch_size"]:>6}{row["steps"]:>7}{row["learning_rate"]:>9.4g}'
          f'{row["median_accuracy"]:>12.4f}'
          f'{row["min_accuracy"]:>8.4f}-{row["max_accuracy"]:.4f}'
          f'{row["median_train_seconds"]:>9.1f}')
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'scaling.json'), 'w') as f:
    json.dump({'recipe': label, 'smoke': _SMOKE.value, 'summary': rows, 'runs': runs}, f,
              indent=2)
  series = [(label, rows)]
  for path in _COMPARE.value:
    with open(path) as f:
      earlier = json.load(f)
    series.append((earlier['recipe'], earlier['summary']))
  plots.batch_scaling(series, TUTORIAL_ACCURACY, os.path.join(_OUT.value, 'scaling.png'))
  print(f'wrote {_OUT.value}/scaling.json and scaling.png'
        + (' (SMOKE: figures meaningless)' if _SMOKE.value else ''))


if __name__ == '__main__':
  app.run(main)
