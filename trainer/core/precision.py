"""--mixed_precision=auto: the Keras mixed-precision policy the hardware computes fastest.

- TPUs: bfloat16, their matrix units' native type.
- NVIDIA GPUs of compute capability 8.0 and up (Ampere, Hopper, ...): bfloat16, which
  their tensor cores run as fast as float16 with float32's range, so no loss scaling.
- Compute capability 7.x (Volta, Turing): float16, with loss scaling; they have float16
  tensor cores and no bfloat16 ones.
- CPUs with AMX (amx_bf16) or AVX512-BF16 (avx512_bf16): bfloat16, which oneDNN runs on
  those units (Intel Sapphire Rapids and later; AMD Zen 4 and later).
- Anything else (older GPUs and CPUs): float32, where half precision is emulated or slower.

Policies follow TensorFlow's mixed precision guide
(https://www.tensorflow.org/guide/mixed_precision): 'mixed_float16' / 'mixed_bfloat16'
keep the variables in float32; logits and loss stay float32 (trainer/model/steps.py).
"""

from typing import Iterable, Optional, Sequence, Tuple

AUTO = 'auto'
FLOAT32 = 'none'
CPUINFO = '/proc/cpuinfo'
CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')  # Linux's names in /proc/cpuinfo's flags.


def cpu_flags(cpuinfo: str = CPUINFO) -> frozenset:
  """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
  try:
    with open(cpuinfo) as f:
      for line in f:
        name, _, value = line.partition(':')
        if name.strip() == 'flags':
          return frozenset(value.split())
  except OSError:
    pass
  return frozenset()


def choose(tpu: bool, gpu_capabilities: Sequence[Optional[Tuple[int, int]]],
           flags: Iterable[str]) -> Tuple[str, str]:
  """(policy, why) for a machine: a TPU, its GPUs' compute capabilities (None where
  unknown), or else its CPU's feature flags. Several GPUs: the oldest decides."""
  if tpu:
    return 'mixed_bfloat16', 'a TPU: bfloat16 is its native matrix type'
  if gpu_capabilities:
    known = [c for c in gpu_capabilities if c is not None]
    if len(known) < len(gpu_capabilities):
      return FLOAT32, 'a GPU whose compute capability TensorFlow does not report'
    oldest = min(known)
    text = f'NVIDIA GPU{"s" if len(known) > 1 else ""} of compute capability ' \
           f'{oldest[0]}.{oldest[1]}'
    if oldest >= (8, 0):
      return 'mixed_bfloat16', f'{text} (8.0 and up: bfloat16 tensor cores)'
    if oldest >= (7, 0):
      return 'mixed_float16', f'{text} (7.x: float16 tensor cores, no bfloat16)'
    return FLOAT32, f'{text} (below 7.0: no tensor cores)'
  found = [flag for flag in CPU_BF16_FLAGS if flag in set(flags)]
  if found:
    return 'mixed_bfloat16', f'a CPU with {" and ".join(found)} (bfloat16 units)'
  return FLOAT32, f'a CPU without {" or ".join(CPU_BF16_FLAGS)} and no GPU or TPU'


def _gpu_capabilities(strategy) -> list:
  """The compute capabilities of the GPUs the strategy trains on (none on a CPU strategy)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.core import distribute  # pylint: disable=g-import-not-at-top
  if not any('GPU' in device.upper() for device in distribute.replica_devices(strategy)):
    return []
  return [tf.config.experimental.get_device_details(device).get('compute_capability')
          for device in tf.config.list_physical_devices('GPU')]


def resolve(mode: str, strategy, cpuinfo: str = CPUINFO) -> Tuple[str, str]:
  """(policy, why): `mode` itself unless it is 'auto', else what choose() picks for the
  devices `strategy` trains on."""
  if mode != AUTO:
    return mode, 'as asked (--mixed_precision)'
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  policy, why = choose(isinstance(strategy, tf.distribute.TPUStrategy),
                       _gpu_capabilities(strategy), cpu_flags(cpuinfo))
  return policy, f'auto: {why}'


def describe(policy: str) -> str:
  return {'none': 'float32', 'mixed_float16': 'float16 (mixed, loss-scaled)',
          'mixed_bfloat16': 'bfloat16 (mixed)'}[policy]
