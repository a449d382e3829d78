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
from trainer.model import compiled
from trainer.model import kernels

# A build without CUDA (tensorflow-cpu, tensorflow-tpu, aarch64, macOS) registers no CUDA
# kernels: nothing to check there (the doctor says so, tests/test_doctor.py).
pytestmark = pytest.mark.skipif(not tf.test.is_built_with_cuda(),
                                reason='this TensorFlow is built without CUDA')

_STAND_IN = {'default': 'default', 'one_device': 'default', 'tpu': 'default',
             'mirrored': 'mirrored', 'multi_worker': 'mirrored'}


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
  built = compiled.build(config, strategy, make_source(num_train=64, num_eval=16),
                         steps_per_epoch=8, total_steps=16)
  return compiled.loop_functions(built)


@pytest.mark.parametrize('config', _cases())
def test_every_op_of_the_train_and_eval_loops_has_a_gpu_kernel(config, mirrored):
  strategy = mirrored if config.strategy == 'mirrored' else tf.distribute.get_strategy()
  train, evaluate = _loops(config, strategy)
  missing = [m for loop in (train, evaluate) for m in kernels.misplaced(loop)]
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


def test_only_host_side_ops_without_per_example_data_are_allowed_on_the_host():
  """The exemptions (trainer/model/kernels.py ALLOWED_ON_HOST), each for its reason: the
  loop's clocks read the host's clock; an Assert's message is a string constant no device
  kernel reads. Any other op, a string constant elsewhere included, must have a GPU kernel."""
  assert set(kernels.ALLOWED_ON_HOST) == {'Timestamp', 'Const'}
  assert_message = kernels.Missing('Const', (('dtype', ('string',)),), 'loss/Assert/data_0', '')
  other_string = kernels.Missing('Const', (('dtype', ('string',)),), 'name', '')
  other_const = kernels.Missing('Const', (('dtype', ('uint8',)),), 'x/Assert/c', '')
  allowed = lambda m: kernels.ALLOWED_ON_HOST[m.op](m)
  assert allowed(assert_message) and not allowed(other_string) and not allowed(other_const)
