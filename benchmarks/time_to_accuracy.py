"""Time to accuracy: the tutorial's code, our trainer with the tutorial's settings, and the
faster preset, on the same data, one after the other in one run.

    python -m benchmarks.time_to_accuracy --data_dir=../shared/datasets/tfds

Prints each run's final test accuracy and the time until the test accuracy first reached
--target (evaluated every --eval_every_steps steps for our trainer, after every epoch for
the tutorial's model.fit, as the tutorial does). Runs unchanged on a GPU machine.
"""

import json
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import measure

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS folder with cifar10.')
_TARGET = flags.DEFINE_float('target', 0.60, 'Test accuracy whose arrival is timed.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every_steps', 200, 'Evaluation interval of our runs.')
_PRESETS = flags.DEFINE_list('presets', ['tutorial', 'fast'], 'configs/NAME.cfg to compare.')
_TUTORIAL = flags.DEFINE_bool('tutorial_code', True, 'Also time the tutorial\'s own code.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A few steps of each, to check the script works.')
_CHILD = flags.DEFINE_bool('tutorial_child', False, 'Internal: run the tutorial code here.')

_RESULT = 'RESULT '


def _tutorial_child():
  """The tutorial's code as published; validation after every epoch, as it does."""
  import keras  # pylint: disable=g-import-not-at-top
  from benchmarks import tutorial  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  train_images, train_labels, test_images, test_labels = tutorial.load_arrays(_DATA_DIR.value,
                                                                              _SMOKE.value)
  model = tutorial.compiled_model()
  fit_start = time.perf_counter()
  history = []
  trained = [0.0]  # Seconds spent in training batches, validation excluded.

  class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
      trained[0] += time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
      history.append({'eval_accuracy': float(logs['val_accuracy']),
                      'train_seconds': trained[0],
                      'wall_seconds': time.perf_counter() - fit_start})

  model.fit(train_images, train_labels, epochs=1 if _SMOKE.value else 5, verbose=0,
            validation_data=(test_images, test_labels), callbacks=[Clock()])
  print(_RESULT + json.dumps({'eval_history': history,
                              'total_seconds': time.perf_counter() - start}), flush=True)


def _ours(preset):
  model_dir = tempfile.mkdtemp(prefix=f'tta_{preset}_')
  command = [sys.executable, '-m', 'trainer.main', f'--flagfile=configs/{preset}.cfg',
             f'--model_dir={model_dir}', f'--eval_every_steps={_EVAL_EVERY.value}',
             '--checkpoint_every_steps=0']
  command += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
  if _SMOKE.value:
    command += ['--train_steps=30', '--train_split=train[:2048]', '--eval_split=test[:512]']
  start = time.perf_counter()
  measure.run(command)
  results = measure.record(model_dir)
  results['total_seconds'] = time.perf_counter() - start
  return results


def _first_reaching(history, key):
  for entry in history:
    if entry['eval_accuracy'] >= _TARGET.value:
      return entry[key]
  return None


def main(argv):
  del argv
  if _CHILD.value:
    _tutorial_child()
    return
  rows = []
  if _TUTORIAL.value:
    command = [sys.executable, '-m', 'benchmarks.time_to_accuracy', '--tutorial_child']
    command += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
    command += ['--smoke'] if _SMOKE.value else []
    output = measure.run(command).stdout
    result = json.loads(next(l for l in output.splitlines() if l.startswith(_RESULT))[7:])
    history = result['eval_history']
    rows.append(('tutorial code (model.fit)', history[-1]['eval_accuracy'],
                 _first_reaching(history, 'train_seconds'),
                 _first_reaching(history, 'wall_seconds'), history[-1]['wall_seconds']))
  for preset in _PRESETS.value:
    results = _ours(preset)
    history = results['eval_history']
    rows.append((f'trainer --flagfile=configs/{preset}.cfg', results['eval_accuracy'],
                 _first_reaching(history, 'train_seconds'),
                 _first_reaching(history, 'wall_seconds'), history[-1]['wall_seconds']))
  target = f'{_TARGET.value:.0%}'
  print(f'\n{"run":<40}{"test acc":>9}{"train s to " + target:>16}{"wall s to " + target:>15}'
        f'{"wall s, all":>13}')
  seconds = lambda value: f'{value:.1f}' if value is not None else 'never'
  for name, accuracy, train_to_target, wall_to_target, total in rows:
    print(f'{name:<40}{accuracy:>9.4f}{seconds(train_to_target):>16}'
          f'{seconds(wall_to_target):>15}{total:>13.1f}')
  print('(seconds from the start of training; "train s" leaves out evaluation, "wall s" counts '
        f'it: our runs evaluate every {_EVAL_EVERY.value} steps, the tutorial after each epoch)'
        + (' SMOKE: figures meaningless' if _SMOKE.value else ''))


if __name__ == '__main__':
  app.run(main)
