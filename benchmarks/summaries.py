"""The benchmarks' tables from their runs, without flags or TensorFlow: the scripts that
define the flags (batch_scaling, time_to_target) import this, and so can the tests, all in
one process."""

import statistics


def batch_scaling(runs):
  """Per batch size: median accuracy, its spread, median training seconds."""
  rows = []
  for batch_size in sorted({run['batch_size'] for run in runs}):
    mine = [run for run in runs if run['batch_size'] == batch_size]
    accuracies = [run['eval_accuracy'] for run in mine]
    rows.append({'batch_size': batch_size, 'median_accuracy': statistics.median(accuracies),
                 'min_accuracy': min(accuracies), 'max_accuracy': max(accuracies),
                 'median_train_seconds': statistics.median(r['train_seconds'] for r in mine),
                 'steps': mine[0]['steps'], 'learning_rate': mine[0]['learning_rate'],
                 'seeds': len(mine)})
  return rows


def olympic_mean(values):
  """The mean without the lowest and the highest value (all of them when fewer than 3)."""
  values = sorted(values)
  return statistics.mean(values[1:-1] if len(values) >= 3 else values)


def steps_to_target(runs):
  """Per target and batch: seeds, how many reached it, median steps (None when half or more
  did not: a seed that never reaches counts as infinitely many steps), the olympic mean and
  spread of the seeds that reached it, and E(B) against the smallest batch."""
  rows = []
  for target in sorted({run['target'] for run in runs}):
    base = None
    for batch_size in sorted({run['batch_size'] for run in runs}):
      mine = [r for r in runs if r['target'] == target and r['batch_size'] == batch_size]
      if not mine:
        continue
      steps = sorted(r['steps'] for r in mine if r['reached'])
      padded = steps + [float('inf')] * (len(mine) - len(steps))
      median = statistics.median(padded)
      median = None if median == float('inf') else median
      row = {'target': target, 'batch_size': batch_size, 'seeds': len(mine),
             'reached': len(steps), 'median_steps': median,
             'olympic_mean_steps': olympic_mean(steps) if steps else None,
             'min_steps': steps[0] if steps else None, 'max_steps': steps[-1] if steps else None,
             'median_wall_seconds': statistics.median(
                 r['wall_seconds'] for r in mine if r['reached']) if steps else None}
      if base is None and median:
        base = row
      row['efficiency'] = (base['median_steps'] * base['batch_size'] / (median * batch_size)
                           if base and median else None)
      rows.append(row)
  return rows
