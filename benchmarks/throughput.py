"""Throughput and memory, side by side in one run: the limit, the tutorial, our trainer.

    python -m benchmarks.throughput --data_dir=../shared/datasets/tfds [--repeats=3]

Each measurement runs in a process of its own (so peak memory figures do not mix), on the
same model and batch size, and the rounds interleave them so that a noisy neighbour hurts
all of them alike; the best round of each counts:

  1 limit      a compiled train step looping on one batch already on the device
  2 tutorial   the tutorial's code: model.fit on NumPy arrays divided by 255.0
  3 host       python -m trainer.main's code path on the real data, --input=host
  4 device     the same with --input=device (the data held in device memory)
  5 synthetic  the trainer on --dataset=synthetic (one device-resident random batch)

For 3-5 it also prints what a step costs the host: bytes copied to the device (from the
batch's shapes) and CPU time of the whole process per step (measured). On a CPU-only
machine that CPU time includes the training itself; on a GPU or TPU machine it is the
host's own work. Runs unchanged there (TensorFlow places everything on the accelerator);
`--smoke` runs a few steps of each so that the script is tested in CI.
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

_CIFAR10_TRAIN = 50_000
MODES = ('limit', 'tutorial', 'host', 'device', 'synthetic')
_TRAINER_MODES = ('host', 'device', 'synthetic')
_RESULT = 'RESULT '


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.


def _measure_limit(batch_size, steps):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from trainer.model import cnn  # pylint: disable=g-import-not-at-top
  model = cnn.create_model((32, 32, 3), 10)
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

  loop(tf.constant(steps)).numpy()  # Trace and warm up, as the trainer's first epoch does.
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


def _measure_trainer(data_dir, batch_size, epochs, smoke, mode, extra_flags):
  """(images/s, host CPU seconds per step), both over the steady state."""
  from trainer import flags as trainer_flags  # pylint: disable=g-import-not-at-top
  from trainer.jobs import train  # pylint: disable=g-import-not-at-top
  trainer_flag_values = flags.FlagValues()  # Apart: --data_dir etc. exist here too.
  trainer_flags.define_flags(trainer_flag_values)
  args = ['trainer', f'--batch_size={batch_size}', f'--epochs={epochs}',
          f'--model_dir={tempfile.mkdtemp(prefix="bench_")}', *extra_flags]
  if mode == 'device':
    args.append('--input=device')
  if mode == 'synthetic':
    args.append('--dataset=synthetic')
  elif data_dir:
    args.append(f'--data_dir={data_dir}')
  if smoke:
    args += ['--train_steps=40', '--steps_per_loop=10'] + (
        [] if mode == 'synthetic' else ['--train_split=train[:2048]', '--eval_split=test[:512]'])
  trainer_flag_values(args)
  config = trainer_flags.config_from_flags(trainer_flag_values)
  outcome = train.train_and_evaluate(config)
  # Steady state: the last epoch's loops, after tracing and filling the data cache.
  loops = [(size, seconds, cpu) for (size, seconds), cpu in
           zip(outcome.loops, outcome.loop_cpu_seconds)]
  if not smoke and epochs > 1:
    steps_per_epoch = sum(size for size, _, _ in loops) // epochs
    taken, tail = 0, []
    for loop in reversed(loops):
      if taken >= steps_per_epoch:
        break
      tail.append(loop)
      taken += loop[0]
    loops = tail
  else:
    loops = loops[1:] or loops
  steps = sum(size for size, _, _ in loops)
  return (steps * batch_size / sum(seconds for _, seconds, _ in loops),
          sum(cpu for _, _, cpu in loops) / steps)


def _child(mode):
  smoke = _SMOKE.value
  cpu_per_step = None
  if mode == 'limit':
    # Timed over as many steps as the trainer's last epoch: on a noisy machine the best of
    # short windows beats the best of long ones, so the windows must match.
    rate = _measure_limit(_BATCH.value, 50 if smoke else _CIFAR10_TRAIN // _BATCH.value)
  elif mode == 'tutorial':
    rate = _measure_tutorial(_DATA_DIR.value, _BATCH.value, _EPOCHS.value, smoke)
  else:
    rate, cpu_per_step = _measure_trainer(_DATA_DIR.value, _BATCH.value, _EPOCHS.value, smoke,
                                          mode, extra_flags=_EXTRA.value)
  print(_RESULT + json.dumps({'mode': mode, 'images_per_second': rate,
                              'peak_rss_mb': _peak_rss_mb(),
                              'cpu_ms_per_step': cpu_per_step and cpu_per_step * 1000}),
        flush=True)


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


def host_to_device_bytes(mode: str, batch_size: int, image_shape=(32, 32, 3)) -> int:
  """Bytes the host sends the device(s) per training step, from the batch's shapes.

  host: the float32 images and int64 labels of the global batch. device: the int64 step
  count (the data went over once, at the start). synthetic: nothing."""
  if mode == 'host':
    return batch_size * (4 * image_shape[0] * image_shape[1] * image_shape[2] + 8)
  return 8 if mode == 'device' else 0


def _report(best):
  rate = {m: best[m]['images_per_second'] for m in MODES}
  print(f'\nbatch {_BATCH.value}, float32, best of {_REPEATS.value} round(s)'
        f'{" (SMOKE: a few steps, figures meaningless)" if _SMOKE.value else ""}')
  print(f'{"measurement":<36}{"images/s":>10}{"peak RSS MiB":>14}{"to device B/step":>18}'
        f'{"host CPU ms/step":>18}')
  names = {'limit': '1 limit (compiled loop, one batch)', 'tutorial': '2 tutorial model.fit',
           'host': '3 trainer --input=host', 'device': '4 trainer --input=device',
           'synthetic': '5 trainer, synthetic'}
  for mode in MODES:
    cost = ''
    if mode in _TRAINER_MODES:
      cost = (f'{host_to_device_bytes(mode, _BATCH.value):>18,}'
              f'{best[mode]["cpu_ms_per_step"]:>18.2f}')
    print(f'{names[mode]:<36}{rate[mode]:>10.0f}{best[mode]["peak_rss_mb"]:>14.0f}{cost}')
  print(f'3/1 {rate["host"] / rate["limit"]:.3f} (target >= 0.95)   '
        f'3/5 {rate["host"] / rate["synthetic"]:.3f} (target >= 0.97)   '
        f'4/1 {rate["device"] / rate["limit"]:.3f} (target >= 0.98)   '
        f'3/2 {rate["host"] / rate["tutorial"]:.3f} (target >= 1.05)')
  memory = best['host']['peak_rss_mb'] / best['tutorial']['peak_rss_mb']
  device_memory = best['device']['peak_rss_mb'] / best['host']['peak_rss_mb']
  print(f'peak memory host/tutorial {memory:.3f} (target <= 0.333)   '
        f'device/host {device_memory:.3f} (target <= 1)')


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
