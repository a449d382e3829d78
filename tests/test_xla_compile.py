"""XLA as a stand-in for the TPU compiler: the whole train step (the batch drawn from the
device input, forward, gradients, optimizer update, metrics) and the eval step of every
preset and the defaults lower to XLA on CPU with static shapes, as a TPU needs them.

Lowering (HLO) is where an op XLA cannot compile, or a shape known only at run time,
shows; the machine code after it is the CPU's, not the TPU's, so it is not built here.
"""

import dataclasses
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_source
from tests.presets import presets
from trainer.data import pipeline
from trainer.data import shards
from trainer.model import steps

_EXAMPLES, _BATCH = 72, 8  # 72: a shard's row count no weight shape shares.
# An HLO array type: element type and dimensions, e.g. s32[72,768] or f32[<=8,10].
_ARRAY = re.compile(r'\b(pred|[suf]\d+|bf16)\[([^\]]*)\]')
_BYTES = {'pred': 1, 'bf16': 2}


def _dynamic_dimensions(hlo: str):
  return sorted({m.group(0) for m in _ARRAY.finditer(hlo) if re.search(r'<=|\?', m.group(2))})


def _entry_parameters(hlo: str):
  """(element type, shape) of each parameter of the HLO module's entry computation."""
  entry = hlo[hlo.index('\nENTRY'):]
  entry = entry[:entry.index('\n}')]
  found = []
  for line in entry.splitlines():
    if ' parameter(' in line:
      kind, dims = _ARRAY.search(line.split('=', 1)[1]).groups()
      found.append((kind, [int(d) for d in dims.split(',') if d]))
  return found


def _itemsize(kind: str) -> int:
  return _BYTES.get(kind) or int(kind[1:]) // 8


def _steps(config):
  """The Trainer, its train step with the device-input draw and its eval step, each as an
  XLA-compiled tf.function, and arguments for the eval step."""
  strategy = tf.distribute.get_strategy()
  source = make_source(num_train=_EXAMPLES, num_eval=16)
  trainer = steps.build_trainer(config, strategy, source.info, total_steps=18,
                                steps_per_epoch=_EXAMPLES // _BATCH)
  iterator = pipeline.distributed_train_iterator(
      strategy, source, _BATCH, _EXAMPLES // _BATCH, 0, augment=config.augment,
      input_mode='device')
  data = next(iterator)
  train = tf.function(lambda: trainer._train_step(iterator.replica_batch(data)),  # pylint: disable=protected-access
                      jit_compile=True)
  evaluate = tf.function(lambda *batch: trainer._eval_step(batch),  # pylint: disable=protected-access
                         jit_compile=True)
  batch = (tf.zeros([_BATCH, 32, 32, 3]), tf.zeros([_BATCH], tf.int64), tf.ones([_BATCH]))
  return trainer, train, evaluate, batch


@pytest.mark.parametrize('names,config', presets(), ids=[names for names, _ in presets()])
def test_the_train_and_eval_steps_compile_with_static_shapes(names, config):
  del names
  config = dataclasses.replace(config, strategy='default', input='device')
  _, train, evaluate, batch = _steps(config)
  train_hlo = train.experimental_get_compiler_ir()(stage='hlo')
  eval_hlo = evaluate.experimental_get_compiler_ir(*batch)(stage='hlo')
  assert _dynamic_dimensions(train_hlo) == [] and _dynamic_dimensions(eval_hlo) == []
  # The shard reaches the step as a parameter that TPU memory holds without padding
  # (a uint8 [N, 32, 32, 3] would be padded 43-fold: trainer/data/shards.py).
  shard = [(kind, shape) for kind, shape in _entry_parameters(train_hlo)
           if len(shape) >= 2 and shape[0] == _EXAMPLES]
  assert shard
  for kind, shape in shard:
    raw = int(np.prod(shape)) * _itemsize(kind)
    assert shards.tpu_tiled_bytes(shape, _itemsize(kind)) == raw, (kind, shape)


def test_the_compiled_steps_run():
  """Built and run by XLA (the TPU preset, bfloat16): two steps, as many examples counted."""
  config = dict(presets())['tpu']
  trainer, train, evaluate, batch = _steps(dataclasses.replace(config, strategy='default'))
  train()
  train()
  loss, _, count = trainer.train_sums.result()
  assert count == 2 * _BATCH and np.isfinite(loss)
  evaluate(*batch)
  assert trainer.eval_sums.result()[2] == _BATCH
