"""What a run tells its user: progress lines with an honest ETA, evaluations, and a summary.

Each line is a sentence for people and, under `--log_format=json`, also carries its numbers
as fields (`event`, `step`, `epoch`, `loss`, `accuracy`, `examples_per_second`,
`eta_seconds`, ...) for log queries.
"""

import logging
import shlex
from typing import Optional

from trainer.report import logs


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


class Progress:
  """The training loop's reports. `plan` is jobs/plan.Plan (total_steps, epochs, epoch_of)."""

  def __init__(self, plan, batch_size: int):
    self._plan, self._batch_size = plan, batch_size
    self._loops = []  # (steps, seconds) of each host call of this process.

  def before_loop(self, size: int) -> None:
    if not self._loops:  # Nothing else is printed while the first call traces and compiles.
      logs.log(logging.INFO, f'tracing and compiling the training loop (the first {size} '
               'steps take longer)', {'event': 'compiling'})

  def eta_seconds(self, step: int) -> Optional[float]:
    """Time left at the steady rate: the first loop, which traced and compiled, is left out."""
    steady = self._loops[1:]
    steps = sum(size for size, _ in steady)
    if not steps:
      return None
    return (self._plan.total_steps - step) * sum(seconds for _, seconds in steady) / steps

  def after_loop(self, step: int, size: int, seconds: float, loss: float, accuracy: float,
                 loss_scale: Optional[float] = None, skipped_steps: Optional[int] = None):
    self._loops.append((size, seconds))
    plan = self._plan
    epoch = plan.epoch_of(step - 1)
    fields = {'event': 'train', 'step': step, 'total_steps': plan.total_steps, 'epoch': epoch,
              'epochs': plan.epochs, 'loss': loss, 'accuracy': accuracy,
              'loop_seconds': round(seconds, 3)}
    text = (f'epoch {epoch}/{plan.epochs}  step {step}/{plan.total_steps}  loss {loss:.4f}  '
            f'accuracy {accuracy:.4f}  ')
    eta = self.eta_seconds(step)
    if eta is None:
      text += f'first loop {seconds:.1f}s with tracing and compiling'
      if step < plan.total_steps:
        text += ', ETA after the next'
    else:
      rate = size * self._batch_size / seconds
      fields.update(examples_per_second=round(rate, 1), eta_seconds=round(eta, 1))
      text += f'{rate:.0f} examples/s  ETA {format_duration(eta)}'
    if loss_scale is not None:
      fields.update(loss_scale=loss_scale, skipped_steps=skipped_steps)
      text += f'  loss scale {loss_scale:g}, {skipped_steps} skipped steps'
    logs.log(logging.INFO, text, fields)

  def evaluation(self, step: int, loss: float, accuracy: float, examples: int) -> None:
    epoch = self._plan.epoch_of(step - 1)
    logs.log(logging.INFO, f'epoch {epoch}/{self._plan.epochs}  eval  loss {loss:.4f}  '
             f'accuracy {accuracy:.4f}  ({examples} examples)',
             {'event': 'eval', 'step': step, 'epoch': epoch, 'epochs': self._plan.epochs,
              'eval_loss': loss, 'eval_accuracy': accuracy, 'eval_examples': examples})


def summary(results: dict, model_dir: Optional[str] = None, export_dir: Optional[str] = None,
            tensorboard_dir: Optional[str] = None) -> None:
  """The end of a run: its result and, where given (the chief), what it left and what next."""
  rate = results.get('examples_per_second')
  lines = [f'final test loss {results["eval_loss"]:.4f}, test accuracy '
           f'{results["eval_accuracy"]:.4f} ({results["eval_examples"]} examples), '
           f'{results["global_step"]} steps, train time '
           f'{format_duration(results["train_seconds"])}' +
           (f', {rate:.0f} examples/s' if rate else '')]
  fields = {'event': 'summary', **{name: results.get(name) for name in (
      'eval_loss', 'eval_accuracy', 'eval_examples', 'global_step', 'train_seconds',
      'examples_per_second')}}
  if model_dir:
    lines.append(f'  run folder   {model_dir}')
    fields['model_dir'] = model_dir
  if export_dir:
    lines.append(f'  model        {export_dir}')
    fields['export_dir'] = export_dir
  commands = []
  if tensorboard_dir:
    commands.append(f'tensorboard --logdir {shlex.quote(tensorboard_dir)}')
    fields['tensorboard_dir'] = tensorboard_dir
  if export_dir:
    commands.append(f'python -m trainer.predict --model={shlex.quote(export_dir)} IMAGE...')
  for i, command in enumerate(commands):
    lines.append(f'  {"next" if i == 0 else "":<12} {command}')
  logs.log(logging.INFO, '\n'.join(lines), fields)
