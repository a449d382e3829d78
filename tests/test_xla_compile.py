"""XLA as a stand-in for the TPU compiler: the whole train step (the batch drawn from the
device input, forward, gradients, optimizer update, metrics) and the eval step of every
preset and the defaults lower to XLA on CPU with static shapes, as a TPU needs them.

Lowering (HLO) is where an op XLA cannot compile, or a shape known only at run time,
shows; the machine code after it is the CPU's, not the TPU's, so it is not built here.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_source
from tests.presets import presets
from trainer.data import shards
from trainer.model import compiled

# TensorFlow's TPU build without a TPU (launch/tpu/requirements-vm.txt under `make
# test-tpu-versions`) compiles nothing with XLA; the same TensorFlow version's CPU build
# lowers these steps there (the Makefile's XLA_VM_VENV).
pytestmark = pytest.mark.skipif(bool(compiled.no_xla_here()), reason=compiled.no_xla_here())

_EXAMPLES, _BATCH = 72, 8  # 72: a shard's row count no weight shape shares.
_BYTES = {'pred': 1, 'bf16': 2}


def _entry_parameters(hlo: str):
  """(element type, shape) of each parameter of the HLO module's entry computation."""
  entry = hlo[hlo.index('\nENTRY'):]
  entry = entry[:entry.index('\n}')]
  found = []
  for line in entry.splitlines():
    if ' parameter(' in line:
      kind, dims = compiled.HLO_ARRAY.search(line.split('=', 1)[1]).groups()
      found.append((kind, [int(d) for d in dims.split(',') if d]))
  return found


def _itemsize(kind: str) -> int:
  return _BYTES.get(kind) or int(kind[1:]) // 8


def _steps(config):
  """The Built (trainer.model.compiled) of `config` with device input under the default
  strategy, and its XLA-compiled train and eval steps with their arguments."""
  built = compiled.build(dataclasses.replace(config, input='device'),
                         tf.distribute.get_strategy(),
                         make_source(num_train=_EXAMPLES, num_eval=16),
                         steps_per_epoch=_EXAMPLES // _BATCH, total_steps=18)
  return (built,) + compiled.xla_steps(built)


def _cases():
  """Every preset; the TPU's also under each TensorFlow a TPU route installs."""
  return [pytest.param(names, config, id=names,
                       marks=[pytest.mark.tpu_path] if 'tpu' in names.split('+') else [])
          for names, config in presets()]


@pytest.mark.parametrize('names,config', _cases())
def test_the_train_and_eval_steps_compile_with_static_shapes(names, config):
  del names
  config = dataclasses.replace(config, strategy='default', input='device')
  _, train, train_args, evaluate, batch = _steps(config)
  train_hlo = compiled.hlo(train, train_args)
  eval_hlo = compiled.hlo(evaluate, batch)
  assert compiled.dynamic_dimensions(train_hlo) == []
  assert compiled.dynamic_dimensions(eval_hlo) == []
  # The shard reaches the step as a parameter that TPU memory holds without padding
  # (a uint8 [N, 32, 32, 3] would be padded 43-fold: trainer/data/shards.py).
  shard = [(kind, shape) for kind, shape in _entry_parameters(train_hlo)
           if len(shape) >= 2 and shape[0] == _EXAMPLES]
  assert shard
  for kind, shape in shard:
    raw = int(np.prod(shape)) * _itemsize(kind)
    assert shards.tpu_tiled_bytes(shape, _itemsize(kind)) == raw, (kind, shape)


@pytest.mark.tpu_path
def test_the_compiled_steps_run():
  """Built and run by XLA (the TPU preset, bfloat16): two steps, as many examples counted."""
  config = dict(presets())['tpu']
  built, train, train_args, evaluate, batch = _steps(
      dataclasses.replace(config, strategy='default'))
  trainer = built.trainer
  train(*train_args)
  train(*train_args)
  loss, _, count = trainer.train_sums.result()
  assert count == 2 * _BATCH and np.isfinite(loss)
  evaluate(*batch)
  assert trainer.eval_sums.result()[2] == _BATCH
