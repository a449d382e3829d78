"""--mixed_precision=auto: the choice for each kind of hardware, and the start line."""

import keras
import pytest
import tensorflow as tf

from trainer.core.config import Config
from trainer.core import precision
from trainer.jobs import train
from trainer.model import steps


@pytest.mark.parametrize('tpu,gpus,flags,policy,why', [
    (True, [], [], 'mixed_bfloat16', 'a TPU'),
    (False, [(8, 0)], [], 'mixed_bfloat16', 'compute capability 8.0 (8.0 and up'),
    (False, [(9, 0), (9, 0)], [], 'mixed_bfloat16', 'GPUs of compute capability 9.0'),
    (False, [(7, 5)], ['avx512_bf16'], 'mixed_float16', 'compute capability 7.5 (7.x'),
    (False, [(7, 0)], [], 'mixed_float16', '7.x: float16 tensor cores'),
    (False, [(8, 6), (7, 0)], [], 'mixed_float16', 'GPUs of compute capability 7.0'),
    (False, [(6, 1)], ['amx_bf16'], 'none', 'below 7.0'),
    (False, [None], [], 'none', 'does not report'),
    (False, [], ['fpu', 'amx_bf16', 'amx_tile'], 'mixed_bfloat16', 'a CPU with amx_bf16'),
    (False, [], ['avx512f', 'avx512_bf16'], 'mixed_bfloat16', 'a CPU with avx512_bf16'),
    (False, [], ['avx512f', 'avx2'], 'none', 'a CPU without amx_bf16 or avx512_bf16'),
])
def test_the_choice_for_each_machine(tpu, gpus, flags, policy, why):
  chosen, reason = precision.choose(tpu, gpus, flags)
  assert chosen == policy and why in reason


def test_cpu_flags_come_from_the_first_processor(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse avx512_bf16\n\n'
                     'processor\t: 1\nflags\t\t: fpu amx_bf16\n')
  assert precision.cpu_flags(str(cpuinfo)) == {'fpu', 'sse', 'avx512_bf16'}
  assert precision.cpu_flags(str(tmp_path / 'none')) == frozenset()


def test_a_given_policy_is_kept_and_auto_follows_this_machine(tmp_path):
  strategy = tf.distribute.get_strategy()
  assert precision.resolve('mixed_float16', strategy) == ('mixed_float16',
                                                          'as asked (--mixed_precision)')
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('flags\t: fpu avx2\n')
  if tf.config.list_physical_devices('GPU'):
    pytest.skip('this machine has a GPU: the CPU flags do not decide')
  assert precision.resolve('auto', strategy, str(cpuinfo)) == (
      'none', 'auto: a CPU without amx_bf16 or avx512_bf16 and no GPU or TPU')
  cpuinfo.write_text('flags\t: fpu amx_bf16\n')
  assert precision.resolve('auto', strategy, str(cpuinfo))[0] == 'mixed_bfloat16'


def test_auto_builds_the_model_in_the_chosen_policy_and_says_so(tmp_path, small_source, caplog):
  caplog.set_level('INFO')
  config = Config(model_dir=str(tmp_path / 'run'), batch_size=32, epochs=0, train_steps=2,
                  mixed_precision='auto').validate()
  policy, why = precision.resolve('auto', tf.distribute.get_strategy())
  outcome = train.train_and_evaluate(config, None, small_source)
  assert f'precision {precision.describe(policy)} ({why})' in caplog.text
  assert why.startswith('auto: ')
  expected = 'float32' if policy == 'none' else policy
  assert outcome.trainer.model.dtype_policy.name == expected
  assert outcome.trainer.loss_scaled == (policy == 'mixed_float16')
  assert keras.mixed_precision.global_policy().name == 'float32'  # Left as it was.


def test_float16_is_loss_scaled_as_before(small_source):
  trainer = steps.build_trainer(Config(mixed_precision='mixed_float16'),
                                tf.distribute.get_strategy(), small_source.info)
  assert trainer.loss_scaled and trainer.model.dtype_policy.name == 'mixed_float16'
