"""Every op of the compiled train and eval loops has a GPU kernel for its dtypes in the
installed TensorFlow, for every preset and the defaults, with host and device input, in
float16 and bfloat16. An op without one would run on the host, silently, with copies to
and from the GPU on every step (a uint8 gather under --input=device did).

The Linux wheel registers its CUDA kernels on any machine, so this runs on CPU. The strategy
is a stand-in where the real one needs hardware or a cluster: MirroredStrategy over two
CPU devices for mirrored and multi_worker (the replica function is the same; cross-device
ops on real GPUs are NCCL's), the default strategy for tpu (a TPU compiles the step with
XLA: tests/test_xla_compile.py).
"""

import dataclasses

import pytest
import tensorflow as tf

from tests.conftest import make_source
from tests.presets import presets
from trainer.data import pipeline
from trainer.model import kernels
from trainer.model import steps

_STAND_IN = {'default': 'default', 'one_device': 'default', 'tpu': 'default',
             'mirrored': 'mirrored', 'multi_worker': 'mirrored'}

# The only ops allowed on the host: none of them touches per-example data.
_EXEMPT = {
    # The loop's clocks (trainer/model/input_wait.py): a read of the host's clock.
    'Timestamp': lambda m: True,
    # The message an Assert prints if it fails (confusion matrix and loss checks): a host
    # string constant that no kernel ever reads on the device.
    'Const': lambda m: m.dtypes == (('dtype', ('string',)),) and '/Assert/' in m.node,
}


def _cases():
  cases = {}
  for names, config in presets():
    for input_mode in ('host', 'device'):
      for precision in ('mixed_float16', 'mixed_bfloat16'):
        case = dataclasses.replace(config, strategy=_STAND_IN[config.strategy],
                                   input=input_mode, mixed_precision=precision)
        cases.setdefault(case, f'{names}-{input_mode}-{precision[6:]}')
  return [pytest.param(config, id=name) for config, name in cases.items()]


def _loops(config, strategy):
  """The concrete train loop (two steps) and eval loop of `config`, on tiny data."""
  source = make_source(num_train=64, num_eval=16)
  trainer = steps.build_trainer(config, strategy, source.info, total_steps=16,
                                steps_per_epoch=8)
  iterator = pipeline.distributed_train_iterator(
      strategy, source, config.batch_size, 8, 0, augment=config.augment,
      input_mode=config.input)
  train = trainer.train_loop.get_concrete_function(iterator, tf.constant(2))
  eval_dataset, eval_steps = pipeline.distributed_eval_dataset(strategy, source,
                                                               config.batch_size)
  evaluate = trainer.eval_loop.get_concrete_function(iter(eval_dataset),
                                                     tf.constant(eval_steps))
  return train, evaluate


@pytest.mark.parametrize('config', _cases())
def test_every_op_of_the_train_and_eval_loops_has_a_gpu_kernel(config, mirrored):
  strategy = mirrored if config.strategy == 'mirrored' else tf.distribute.get_strategy()
  train, evaluate = _loops(config, strategy)
  missing = [m for loop in (train, evaluate) for m in kernels.missing_kernels(loop)
             if not _EXEMPT.get(m.op, lambda _: False)(m)]
  assert not missing, 'no GPU kernel: ' + '; '.join(map(str, missing))


def test_a_device_resident_input_puts_no_host_op_in_the_loop():
  """A clock in the loop body would make the host wait for the GPU at every step
  (trainer/model/input_wait.py); the device input has nothing to wait for."""
  config = dataclasses.replace(presets()[0][1], input='device')
  train, _ = _loops(config, tf.distribute.get_strategy())
  clocks = [m for m in kernels.missing_kernels(train) if m.op == 'Timestamp']
  assert clocks and not [m for m in clocks if m.function], '; '.join(map(str, clocks))


def test_the_check_finds_an_op_without_a_gpu_kernel():
  # TensorFlow has no GPU kernel of GatherV2 for uint8, and has one for int32.
  def gather(dtype):
    function = tf.function(lambda x: tf.gather(x, [1, 0]))
    return function.get_concrete_function(tf.TensorSpec([2, 3], dtype))
  assert [m.op for m in kernels.missing_kernels(gather(tf.uint8))] == ['GatherV2']
  assert kernels.missing_kernels(gather(tf.int32)) == []


def test_ops_in_nested_functions_are_checked():
  @tf.function
  def looped(x):
    for _ in tf.range(2):
      x = tf.cond(tf.reduce_sum(tf.cast(x, tf.int32)) > 0,
                  lambda: tf.gather(x, [1, 0]), lambda: x)
    return x
  missing = kernels.missing_kernels(looped.get_concrete_function(tf.TensorSpec([2], tf.uint8)))
  assert [(m.op, bool(m.function)) for m in missing] == [('GatherV2', True)]
