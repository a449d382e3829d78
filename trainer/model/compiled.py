"""A Config's compiled train and eval computations, built outside a run: for the checks that
read their ops (kernels.py) or lower them with XLA, as the tests and `trainer.doctor` do.

The train loop and eval loop are the ones a run calls. The XLA steps are one train step
(the batch drawn on the device under --input=device) and one eval step, each compiled whole
with jit_compile=True, as a TPU compiles them; they run outside `strategy.run`, so they
need the default strategy.
"""

import dataclasses
import re
from typing import List, Optional

import tensorflow as tf

from trainer.core import accelerators
from trainer.core.config import Config
from trainer.data import pipeline
from trainer.model import steps

# An HLO array type: element type and dimensions, e.g. s32[72,768] or f32[<=8,10].
HLO_ARRAY = re.compile(r'\b(pred|[suf]\d+|bf16)\[([^\]]*)\]')


@dataclasses.dataclass
class Built:
  """A Trainer with the inputs its loops take."""
  trainer: steps.Trainer
  iterator: object  # What the train loop draws from (tf.data, DeviceInput or a resident batch).
  eval_dataset: object
  eval_steps: int


def build(config: Config, strategy: tf.distribute.Strategy, source, steps_per_epoch: int,
          total_steps: int) -> Built:
  """The Trainer of `config` under `strategy`, fed from `source` as a run would feed it
  (--input, --augment, --batch_size; data order from step 0)."""
  trainer = steps.build_trainer(config, strategy, source.info, total_steps=total_steps,
                                steps_per_epoch=steps_per_epoch)
  iterator = pipeline.distributed_train_iterator(
      strategy, source, config.batch_size, steps_per_epoch, config.seed, augment=config.augment,
      cache=config.cache, threads=config.input_threads, input_mode=config.input,
      device_data_max_mb=config.device_data_max_mb)
  eval_dataset, eval_steps = pipeline.distributed_eval_dataset(strategy, source,
                                                               config.batch_size)
  return Built(trainer, iterator, eval_dataset, eval_steps)


def loop_functions(built: Built, train_steps: int = 2):
  """(train loop, eval loop) as ConcreteFunctions: the graphs a run executes."""
  train = built.trainer.train_loop.get_concrete_function(built.iterator,
                                                          tf.constant(train_steps))
  evaluate = built.trainer.eval_loop.get_concrete_function(iter(built.eval_dataset),
                                                            tf.constant(built.eval_steps))
  return train, evaluate


def xla_steps(built: Built):
  """(train step, its arguments, eval step, its arguments), each step a tf.function that XLA
  compiles whole. Needs a Built under the default strategy."""
  trainer = built.trainer
  # pylint: disable=protected-access  (the steps themselves, without the loops around them)
  draw = getattr(built.iterator, 'replica_batch', None)
  if draw is not None:
    data = next(built.iterator)
    train = tf.function(lambda: trainer._train_step(draw(data)), jit_compile=True)
    train_args = ()
  else:
    train = tf.function(lambda *batch: trainer._train_step(batch), jit_compile=True)
    train_args = tuple(next(built.iterator))
  evaluate = tf.function(lambda *batch: trainer._eval_step(batch), jit_compile=True)
  return train, train_args, evaluate, tuple(next(iter(built.eval_dataset)))


def no_xla_here() -> str:
  """Why this TensorFlow cannot compile with XLA on this machine, or '' where it can.

  TensorFlow's TPU build has no XLA for the CPU ("could not find registered transfer
  manager for platform Host"), and lowering for a TPU without one refuses the steps'
  variables ("does not support resource arguments when device is null")."""
  wheel = accelerators.tensorflow_wheel()
  if wheel.startswith('tensorflow-tpu ') and not tf.config.list_logical_devices('TPU'):
    return f'{wheel} has no XLA for the CPU and compiles for a TPU only where there is one'
  return ''


def hlo(function, args=()) -> str:
  """The HLO text of a jit-compiled tf.function: lowering, where an op XLA cannot compile or
  a shape known only at run time shows (the machine code after it is the local device's)."""
  return function.experimental_get_compiler_ir(*args)(stage='hlo')


def dynamic_dimensions(hlo_text: str) -> List[str]:
  """The array types of an HLO module whose shape is not static (`f32[<=8,10]`, `?`)."""
  return sorted({m.group(0) for m in HLO_ARRAY.finditer(hlo_text)
                 if re.search(r'<=|\?', m.group(2))})

