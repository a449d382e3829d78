"""Throughput and memory, side by side in one run: the limit, the tutorial, our trainer.

    python -m benchmarks.throughput --data_dir=../shared/datasets/tfds [--repeats=3]

Each measurement runs in a process of its own (so peak memory figures do not mix), on the
same model and batch size, and the rounds interleave the four so that a noisy neighbour
hurts all of them alike; the best round of each counts:

  1 limit      a compiled train step looping on one batch already on the device
  2 tutorial   the tutorial's code: model.fit on NumPy arrays divided by 255.0
  3 trainer    python -m trainer.main's code path on the real data, steady state
  4 synthetic  the trainer on --dataset=synthetic (device-resident random data)

Runs unchanged on a GPU machine (TensorFlow places everything on the GPU); `--smoke` runs
a few steps of each so that the script is tested in CI.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS folder with cifar10 (as for training).')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Batch size of every measurement.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Epochs for the tutorial and trainer runs; '
                               'throughput is taken from the last epoch(s), after warm-up.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Rounds; the best of each measurement counts.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A few steps of each, to check the script works.')
_MODE = flags.DEFINE_string('mode', None, 'Internal: run one measurement in this process.')
_EXTRA = flags.DEFINE_multi_string('trainer_flag', [], 'Extra trainer flag for 3 and 4, '
                                   'e.g. --trainer_flag=--jit_compile.')

MODES = ('limit', 'tutorial', 'trainer', 'synthetic')
_RESULT = 'RESULT '


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.


def _measure_limit(batch_size, steps):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from trainer import models  # pylint: disable=g-import-not-at-top
  model = models.create_model((32, 32, 3), 10)
  optimizer = keras.optimizers.Adam(1e-3)
  optimizer.build(model.trainable_variables)
  images = tf.random.uniform((batch_size, 32, 32, 3))
  labels = tf.random.uniform((batch_size,), maxval=10, dtype=tf.int64)

  @tf.function
  def loop(n):
    for _ in tf.range(n):
      with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  loop(tf.constant(max(steps // 10, 2))).numpy()  # Trace and warm up.
  start = time.perf_counter()
  loop(tf.constant(steps)).numpy()
  return steps * batch_size / (time.perf_counter() - start)


def _measure_tutorial(data_dir, batch_size, epochs, smoke):
  """The tutorial's code as published, timed per epoch without its validation pass."""
  import keras  # pylint: disable=g-import-not-at-top
  from benchmarks import tutorial  # pylint: disable=g-import-not-at-top
  train_images, train_labels, test_images, test_labels = tutorial.load_arrays(data_dir, smoke)
  model = tutorial.compiled_model()

  class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
      self._start = time.perf_counter()

    def on_test_begin(self, logs=None):  # Validation starts: the epoch's training is done.
      self.seconds.append(time.perf_counter() - self._start)

  timer = EpochTimer()
  model.fit(train_images, train_labels, epochs=epochs, batch_size=batch_size, verbose=0,
            validation_data=(test_images, test_labels), callbacks=[timer])
  steady = timer.seconds[1:] or timer.seconds  # The first epoch traces and warms up.
  return len(train_images) * len(steady) / sum(steady)


def _measure_trainer(data_dir, batch_size, epochs, smoke, synthetic, extra_flags):
  from trainer import flags as trainer_flags  # pylint: disable=g-import-not-at-top
  from trainer import train  # pylint: disable=g-import-not-at-top
  trainer_flag_values = flags.FlagValues()  # Apart: --data_dir etc. exist here too.
  trainer_flags.define_flags(trainer_flag_values)
  args = ['trainer', f'--batch_size={batch_size}', f'--epochs={epochs}',
          f'--model_dir={tempfile.mkdtemp(prefix="bench_")}', *extra_flags]
  if synthetic:
    args.append('--dataset=synthetic')
  elif data_dir:
    args.append(f'--data_dir={data_dir}')
  if smoke:
    args += ['--train_steps=40', '--steps_per_loop=10'] + (
        [] if synthetic else ['--train_split=train[:2048]', '--eval_split=test[:512]'])
  trainer_flag_values(args)
  config = trainer_flags.config_from_flags(trainer_flag_values)
  outcome = train.train_and_evaluate(config)
  # Steady state: the last epoch's loops, after tracing and filling the data cache.
  per_epoch = outcome.trainer.config.batch_size
  loops = outcome.loops
  if not smoke and epochs > 1:
    steps_per_epoch = sum(size for size, _ in loops) // epochs
    taken, tail = 0, []
    for size, seconds in reversed(loops):
      if taken >= steps_per_epoch:
        break
      tail.append((size, seconds))
      taken += size
    loops = tail
  else:
    loops = loops[1:] or loops
  return sum(size for size, _ in loops) * per_epoch / sum(s for _, s in loops)


def _child(mode):
  smoke = _SMOKE.value
  if mode == 'limit':
    rate = _measure_limit(_BATCH.value, 50 if smoke else 3000)
  elif mode == 'tutorial':
    rate = _measure_tutorial(_DATA_DIR.value, _BATCH.value, _EPOCHS.value, smoke)
  else:
    rate = _measure_trainer(_DATA_DIR.value, _BATCH.value, _EPOCHS.value, smoke,
                            synthetic=mode == 'synthetic', extra_flags=_EXTRA.value)
  print(_RESULT + json.dumps({'mode': mode, 'images_per_second': rate,
                              'peak_rss_mb': _peak_rss_mb()}), flush=True)


def _run_child(mode):
  command = [sys.executable, '-m', 'benchmarks.throughput', f'--mode={mode}',
             f'--batch_size={_BATCH.value}', f'--epochs={_EPOCHS.value}']
  command += [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []
  command += ['--smoke'] if _SMOKE.value else []
  command += [f'--trainer_flag={f}' for f in _EXTRA.value]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for line in result.stdout.splitlines():
    if line.startswith(_RESULT):
      return json.loads(line[len(_RESULT):])
  sys.exit(f'error: the {mode} measurement failed:\n{result.stderr[-3000:]}')


def _report(best):
  rate = {m: best[m]['images_per_second'] for m in MODES}
  print(f'\nbatch {_BATCH.value}, float32, best of {_REPEATS.value} round(s)'
        f'{" (SMOKE: a few steps, figures meaningless)" if _SMOKE.value else ""}')
  print(f'{"measurement":<34}{"images/s":>10}{"peak RSS MiB":>14}')
  names = {'limit': '1 limit (compiled loop, one batch)', 'tutorial': '2 tutorial model.fit',
           'trainer': '3 trainer, real CIFAR-10', 'synthetic': '4 trainer, synthetic'}
  for mode in MODES:
    print(f'{names[mode]:<34}{rate[mode]:>10.0f}{best[mode]["peak_rss_mb"]:>14.0f}')
  print(f'3/1 {rate["trainer"] / rate["limit"]:.3f} (target >= 0.95)   '
        f'3/2 {rate["trainer"] / rate["tutorial"]:.3f} (target >= 1.05)   '
        f'3/4 {rate["trainer"] / rate["synthetic"]:.3f} (target >= 0.97)')
  memory = best['trainer']['peak_rss_mb'] / best['tutorial']['peak_rss_mb']
  print(f'peak memory trainer/tutorial {memory:.3f} (target <= 0.333)')


def main(argv):
  del argv
  if _MODE.value:
    _child(_MODE.value)
    return
  if not _SMOKE.value and not _DATA_DIR.value:
    print('note: no --data_dir; TFDS will use (or download) its default folder',
          file=sys.stderr)
  best = {}
  for round_index in range(_REPEATS.value):
    for mode in MODES:
      result = _run_child(mode)
      print(f'round {round_index + 1}: {mode:<10} {result["images_per_second"]:8.0f} images/s'
            f'  peak {result["peak_rss_mb"]:6.0f} MiB', flush=True)
      # Best throughput counts; memory is the same code each round, so keep the lowest.
      if mode not in best or result['images_per_second'] > best[mode]['images_per_second']:
        best[mode] = dict(result, peak_rss_mb=min(result['peak_rss_mb'],
                                                  best.get(mode, result)['peak_rss_mb']))
  _report(best)


if __name__ == '__main__':
  app.run(main)
