"""trainer.doctor's checks of the computation: the strategy (and TPU), the GPU kernels of the
compiled loops, an XLA compile of the train and eval steps, a short timed run, and the
same run in each precision (float32, bfloat16, float16) to say which is fastest here.

All of them run the preset's model, batch size, precision and input mode on random
in-memory data of the data set's usual shape, so that nothing is downloaded; the timed run
says so in its line.
"""

import time
from typing import Iterator, List, Optional, Tuple

import tensorflow as tf

from trainer.core.config import Config
from trainer.core import accelerators
from trainer.core import distribute
from trainer.core import precision
from trainer.core.errors import UserError, first_line
from trainer.data import sources
from trainer.jobs.machine_checks import Check, FAIL, OK, SKIPPED, WARNING
from trainer.model import compiled
from trainer.model import input_wait
from trainer.model import kernels

# Random data of CIFAR-10's shape: the presets' data set, and nothing to download.
IMAGE_SHAPE, NUM_CLASSES = (32, 32, 3), 10
_STEPS_PER_EPOCH = 4  # Batches in the random training data.
# The timed run: loops of at most this many steps after a first (tracing) loop of
# _FIRST_STEPS, sized to take about _LOOP_SECONDS each, _TIMED_LOOPS of them.
_FIRST_STEPS, _MAX_LOOP_STEPS, _LOOP_SECONDS, _TIMED_LOOPS = 2, 50, 2.0, 3
# Above this share of a loop spent waiting for input, the pipeline holds the devices back.
INPUT_BOUND_FRACTION = 0.2


def random_source(batch_size: int):
  return sources.random_source(num_train=batch_size * _STEPS_PER_EPOCH, num_eval=batch_size,
                               shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)


def strategy_check(config: Config) -> Tuple[Check, Optional[tf.distribute.Strategy]]:
  """The strategy of --strategy on this machine (for tpu: the TPU found and initialised).

  A multi-worker strategy would wait for the whole cluster; the doctor starts none and
  checks this worker's part, a MirroredStrategy over its GPUs (or the CPU)."""
  name = 'tpu' if config.strategy == 'tpu' else 'strategy'
  try:
    if config.strategy == 'multi_worker':
      strategy = tf.distribute.MirroredStrategy() if tf.config.list_physical_devices('GPU') \
          else tf.distribute.get_strategy()
      note = ' (multi_worker: this worker\'s devices; the doctor starts no cluster)'
    else:
      strategy = distribute.create_strategy(config.strategy, config.num_cpu_devices,
                                            config.tpu)
      note = ''
    distribute.per_replica_batch_size(config.batch_size, strategy)
  except UserError as e:
    return Check(name, FAIL, str(e)), None
  return Check(name, OK, distribute.describe(strategy) + note,
               dict(replicas=strategy.num_replicas_in_sync)), strategy


def kernel_check(config: Config, built: compiled.Built) -> Check:
  if config.strategy == 'tpu':
    return Check('kernels', SKIPPED, 'a TPU runs the steps as XLA compiles them: see xla')
  if not tf.test.is_built_with_cuda():
    # tensorflow-cpu, tensorflow-tpu, the aarch64 and macOS wheels: no op has a CUDA kernel,
    # so there is nothing to look for (a CUDA build registers them even without a GPU).
    return Check('kernels', SKIPPED, f'{accelerators.tensorflow_wheel()} is built without '
                 'CUDA, so no GPU kernels to check (a CUDA build of TensorFlow checks them)')
  try:
    train, evaluate = compiled.loop_functions(built)
  except (tf.errors.OpError, ValueError, TypeError) as e:
    return Check('kernels', FAIL, f'the train or eval loop does not trace: {first_line(e, 300)}')
  missing = kernels.misplaced(train) + kernels.misplaced(evaluate)
  if missing:
    return Check('kernels', WARNING, f'{len(missing)} op(s) of the compiled loops have no GPU '
                 'kernel for their dtypes and would run on the host, with copies every step: '
                 + '; '.join(map(str, missing[:5])) + ' (a fault of the trainer: report it)')
  return Check('kernels', OK, 'every op of the compiled train and eval loops has a GPU kernel '
               f'for its dtypes in TensorFlow {tf.__version__}')


def xla_check(config: Config) -> Check:
  """The train step and the eval step lower to XLA with static shapes (as a TPU needs), and
  compile and run once with XLA on this machine's first device."""
  cannot = compiled.no_xla_here()
  if cannot:
    return Check('xla', SKIPPED, f'{cannot}: nothing to compile here')
  try:
    config = config.replace(strategy='default')
    built = compiled.build(config, tf.distribute.get_strategy(),
                           random_source(config.batch_size), _STEPS_PER_EPOCH, _STEPS_PER_EPOCH)
    train, train_args, evaluate, eval_args = compiled.xla_steps(built)
    dynamic = compiled.dynamic_dimensions(compiled.hlo(train, train_args)) + \
        compiled.dynamic_dimensions(compiled.hlo(evaluate, eval_args))
    if dynamic:
      return Check('xla', FAIL, 'the steps lower to XLA with shapes known only at run time, '
                   f'which a TPU cannot compile: {", ".join(dynamic[:5])}')
    train(*train_args)
    evaluate(*eval_args)
    count = float(built.trainer.train_sums.result()[2])
  except (tf.errors.OpError, ValueError, TypeError) as e:
    return Check('xla', FAIL, f'the train or eval step does not compile with XLA: '
                 f'{first_line(e, 300)}')
  if count != config.batch_size:
    return Check('xla', FAIL, f'the XLA-compiled train step counted {count:g} examples of a '
                 f'batch of {config.batch_size}')
  return Check('xla', OK, 'the train and eval steps lower to XLA with static shapes, and '
               'compile and run with XLA here')


def _timed_loops(built: compiled.Built, timed_loops: int = _TIMED_LOOPS
                 ) -> List[Tuple[int, float, float, float]]:
  """(steps, wall seconds, seconds waiting for input, loop seconds) of each timed loop."""
  trainer = built.trainer

  def loop(size):
    start = time.perf_counter()
    waited, seconds = trainer.train_loop(built.iterator, tf.constant(size))
    trainer.train_sums.result()  # Reading waits for the loop to finish.
    return size, time.perf_counter() - start, float(waited), float(seconds)

  loop(_FIRST_STEPS)  # Traces and compiles.
  probe = loop(_FIRST_STEPS)
  size = int(max(_FIRST_STEPS, min(_MAX_LOOP_STEPS, _LOOP_SECONDS / probe[1] * probe[0])))
  return [loop(size) for _ in range(timed_loops)]


def timed_run(config: Config, strategy: tf.distribute.Strategy,
              built: compiled.Built) -> Check:
  try:
    loops = _timed_loops(built)
  except tf.errors.ResourceExhaustedError as e:
    return Check('timed_run', FAIL, f'out of device memory at batch {config.batch_size} '
                 f'({first_line(e, 200)}); lower --batch_size or use --input=host')
  except tf.errors.OpError as e:
    return Check('timed_run', FAIL, f'the training loop failed: {first_line(e, 300)}')
  steps = sum(size for size, _, _, _ in loops)
  seconds = sum(elapsed for _, elapsed, _, _ in loops)
  replicas = strategy.num_replicas_in_sync
  per_replica_batch = config.batch_size // replicas
  steps_per_second = steps / seconds
  fraction = input_wait.fraction(sum(w for _, _, w, _ in loops), sum(s for _, _, _, s in loops))
  fields = dict(steps_per_second=round(steps_per_second, 2),
                examples_per_second_per_replica=round(steps_per_second * per_replica_batch, 1),
                examples_per_second=round(steps_per_second * config.batch_size, 1),
                replicas=replicas, input_wait_fraction=fraction)
  if getattr(built.iterator, 'device_resident', False):
    wait = 'no input wait (the data sits on the devices: nothing is made per step)'
  elif fraction is None:
    wait = 'input wait not measured (--deterministic has no clocks)'
  else:
    wait = f'input wait {fraction:.0%} of the loop'
  message = (f'{len(loops)} loops of {loops[0][0]} steps on random data in memory (no '
             f'download; --input={config.input}, batch {config.batch_size}): '
             f'{steps_per_second:.1f} steps/s, '
             f'{fields["examples_per_second_per_replica"]:.0f} examples/s per replica '
             f'x {replicas} replica(s), {wait}')
  if fraction is not None and fraction > INPUT_BOUND_FRACTION:
    return Check('timed_run', WARNING, f'{message}: the input pipeline holds the devices '
                 'back; try --input=device, or --input_threads', fields)
  return Check('timed_run', OK, message, fields)


def _examples_per_second(config: Config, strategy, policy: str) -> float:
  """The steady training rate of `config` under `policy`, one short loop after tracing."""
  built = compiled.build(config.replace(mixed_precision=policy), strategy,
                         random_source(config.batch_size), _STEPS_PER_EPOCH, total_steps=1000)
  loops = _timed_loops(built, timed_loops=1)
  return sum(size for size, _, _, _ in loops) * config.batch_size / \
      sum(elapsed for _, elapsed, _, _ in loops)


def precision_check(config: Config, strategy: tf.distribute.Strategy) -> Check:
  """The timed run once per precision this machine could use, fastest first, and what
  --mixed_precision=auto picks here."""
  candidates = ['none', 'mixed_bfloat16'] + ([] if config.strategy == 'tpu'
                                              else ['mixed_float16'])
  rates = {}
  for policy in candidates:
    try:
      rates[policy] = _examples_per_second(config, strategy, policy)
    except (tf.errors.OpError, ValueError, TypeError) as e:
      rates[policy] = None
      failure = first_line(e, 200)
  timed = sorted((rate, policy) for policy, rate in rates.items() if rate)
  if not timed:
    return Check('precision', FAIL, f'no precision trains here: {failure}')
  auto, why = precision.resolve(precision.AUTO, strategy)
  fastest = timed[-1][1]
  name = lambda policy: precision.describe(policy).split(' ')[0]
  others = ', '.join(f'{name(policy)} {rate:.0f}' for rate, policy in reversed(timed[:-1]))
  message = (f'fastest here: {name(fastest)} at {timed[-1][0]:.0f} examples/s'
             + (f' ({others})' if others else '') + f'; --mixed_precision=auto picks '
             f'{name(auto)}: {why[len("auto: "):]}')
  fields = {f'examples_per_second_{policy}': round(rate, 1) for rate, policy in timed}
  fields.update(fastest=fastest, auto=auto)
  return Check('precision', OK, message, fields)


def compute_checks(config: Config) -> Iterator[Check]:
  """The checks in order, each as soon as it is known."""
  strategy_line, strategy = strategy_check(config)
  yield strategy_line
  built = None
  if strategy is not None:
    try:
      built = compiled.build(config, strategy, random_source(config.batch_size),
                             _STEPS_PER_EPOCH, total_steps=1000)
    except (UserError, tf.errors.OpError, ValueError) as e:
      yield Check('model', FAIL, 'the model and its input cannot be built under this '
                  f'strategy: {first_line(e, 300)}')
  yield (kernel_check(config, built) if built is not None else
         Check('kernels', SKIPPED, 'no strategy or model to check (see above)'))
  yield xla_check(config)
  yield (timed_run(config, strategy, built) if built is not None else
         Check('timed_run', SKIPPED, 'no strategy or model to run (see above)'))
  yield (precision_check(config, strategy) if built is not None else
         Check('precision', SKIPPED, 'no strategy or model to run (see above)'))
