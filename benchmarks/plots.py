"""The benchmarks' plots, drawn with matplotlib (the Agg backend: no display needed).

- batch_scaling: median test accuracy after 5 epochs, with its spread, against the global
  batch (benchmarks/batch_scaling.py);
- accuracy_curves and steps_to_target: test accuracy against steps for each batch, and the
  steps to each target against the batch with the ideal (linear) line
  (benchmarks/time_to_target.py).
"""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def _plain_numbers(axis):
  """Tick labels of a log axis as 300, not 3 x 10^2."""
  plain = matplotlib.ticker.FuncFormatter(lambda value, _: f'{value:g}')
  axis.set_major_formatter(plain)
  axis.set_minor_formatter(plain)


def _log2_batches(axes, batches):
  axes.set_xscale('log', base=2)
  axes.set_xticks(batches)
  axes.set_xticklabels([str(b) for b in batches])
  axes.set_xlabel('global batch size (log scale)')


def batch_scaling(series, reference: float, path: str) -> None:
  """`series`: [(label, rows)], rows as benchmarks.summaries.batch_scaling returns them;
  `reference`: the tutorial's accuracy, drawn as a line."""
  figure, axes = plt.subplots(figsize=(9, 5.6))
  batches = sorted({row['batch_size'] for _, rows in series for row in rows})
  for label, rows in series:
    x = [row['batch_size'] for row in rows]
    median = [row['median_accuracy'] for row in rows]
    errors = [[m - row['min_accuracy'] for m, row in zip(median, rows)],
              [row['max_accuracy'] - m for m, row in zip(median, rows)]]
    axes.errorbar(x, median, yerr=errors, marker='o', capsize=4, linewidth=2, label=label)
  axes.axhline(reference, color='grey', linewidth=1.5,
               label=f'tutorial, batch 64: {reference:.0%}')
  _log2_batches(axes, batches)
  axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
  axes.set_ylabel('test accuracy')
  axes.set_title('CIFAR-10 test accuracy after 5 epochs (median of seeds, bar: min-max)')
  axes.grid(True, color='#e1e1e1')
  axes.legend(loc='lower left', fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def accuracy_curves(curves, targets, path: str) -> None:
  """`curves`: {batch: [(step, accuracy), ...]} of one seed each; targets as lines."""
  figure, axes = plt.subplots(figsize=(9, 5.6))
  for batch in sorted(curves):
    steps, accuracies = zip(*curves[batch]) if curves[batch] else ((), ())
    axes.plot(steps, accuracies, marker='.', label=f'batch {batch}')
  for target in targets:
    axes.axhline(target, color='grey', linestyle='--', linewidth=1)
  axes.set_xscale('log')
  _plain_numbers(axes.xaxis)
  axes.set_xlabel('training steps (log scale)')
  axes.set_ylabel('test accuracy')
  axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
  axes.set_title('CIFAR-10 test accuracy against steps, configs/time_to_target.cfg '
                 '(run to the highest target)')
  axes.grid(True, color='#e1e1e1')
  axes.legend(fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def steps_to_target(rows, path: str) -> None:
  """`rows`: benchmarks.summaries.steps_to_target's; per target the median steps (bar:
  min-max of the seeds that reached it) and the ideal line, steps(64) x 64 / B."""
  figure, axes = plt.subplots(figsize=(9, 5.6))
  batches = sorted({row['batch_size'] for row in rows})
  for target in sorted({row['target'] for row in rows}):
    mine = [row for row in rows if row['target'] == target and row['median_steps']]
    if not mine:
      continue
    x = [row['batch_size'] for row in mine]
    median = [row['median_steps'] for row in mine]
    errors = [[m - row['min_steps'] for m, row in zip(median, mine)],
              [row['max_steps'] - m for m, row in zip(median, mine)]]
    line = axes.errorbar(x, median, yerr=errors, marker='o', capsize=4, linewidth=2,
                         label=f'{target:.0%}: median steps')
    base = mine[0]
    ideal = [base['median_steps'] * base['batch_size'] / b for b in batches
             if b >= base['batch_size']]
    axes.plot([b for b in batches if b >= base['batch_size']], ideal, linestyle='--',
              color=line[0].get_color(), linewidth=1,
              label=f'{target:.0%}: ideal, steps x batch constant')
  _log2_batches(axes, batches)
  axes.set_yscale('log')
  _plain_numbers(axes.yaxis)
  axes.set_ylabel('steps to target (log scale)')
  axes.set_title('Steps to the target test accuracy against global batch size '
                 '(bar: min-max of seeds)')
  axes.grid(True, color='#e1e1e1', which='both')
  axes.legend(fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
