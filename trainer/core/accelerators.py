"""What accelerators this machine has, what TensorFlow makes of them, and the runs they refuse.

TensorFlow is imported inside the functions: report/logs.py reads NVIDIA_DRIVER before
TensorFlow may start.
"""

import dataclasses
import os
import shutil
from typing import Callable, Optional, Sequence, Tuple

from absl import logging

from trainer.core.errors import UserError

# Any one of these says an NVIDIA GPU and its driver are on this machine (or in this
# container: the NVIDIA container runtime mounts the device node and nvidia-smi).
NVIDIA_DRIVER = '/proc/driver/nvidia/version'
NVIDIA_DEVICE = '/dev/nvidia0'
NVIDIA_SMI = 'nvidia-smi'
# The plain `tensorflow` wheel finds a GPU only through a system-wide CUDA; its
# `and-cuda` extra brings the CUDA and cuDNN libraries (the Makefile's GPU=1 installs it).
GPU_INSTALL = 'make install GPU=1, or pip install "tensorflow[and-cuda]=={version}"'


@dataclasses.dataclass(frozen=True)
class Seen:
  """The machine's NVIDIA devices as the system and as TensorFlow see them."""
  nvidia: str  # What showed an NVIDIA device ('' when nothing did).
  tensorflow_version: str
  tensorflow_gpus: Tuple[str, ...]  # TensorFlow's physical GPUs.
  cuda_build: bool  # Whether this TensorFlow was built with CUDA at all.
  cuda_version: str  # The CUDA and cuDNN this TensorFlow was built for ('' if none).
  cudnn_version: str


_Which = Callable[[str], Optional[str]]


def nvidia_evidence(driver: Optional[str] = None, device: Optional[str] = None,
                    which: Optional[_Which] = None) -> str:
  """The first sign of an NVIDIA GPU on this machine, or '' if there is none.

  Each probe can be swapped (a test's fake /proc file; None: this module's).
  """
  for path in (driver or NVIDIA_DRIVER, device or NVIDIA_DEVICE):
    if os.path.exists(path):
      return path
  return (which or shutil.which)(NVIDIA_SMI) or ''


def seen(driver: Optional[str] = None, device: Optional[str] = None,
         which: Optional[_Which] = None) -> Seen:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  build = tf.sysconfig.get_build_info()
  return Seen(nvidia=nvidia_evidence(driver, device, which), tensorflow_version=tf.__version__,
              tensorflow_gpus=tuple(d.name for d in tf.config.list_physical_devices('GPU')),
              cuda_build=bool(build.get('is_cuda_build')),
              cuda_version=str(build.get('cuda_version', '') or ''),
              cudnn_version=str(build.get('cudnn_version', '') or ''))


def unseen_gpu_message(machine: Seen) -> Optional[str]:
  """One line when an NVIDIA device is here but TensorFlow has no GPU; None otherwise."""
  if not machine.nvidia or machine.tensorflow_gpus:
    return None
  built = (f'built for CUDA {machine.cuda_version}, cuDNN {machine.cudnn_version}'
           if machine.cuda_build else 'built without CUDA')
  return (f'an NVIDIA GPU is on this machine ({machine.nvidia}) but TensorFlow sees none '
          f'({built}; usually its CUDA libraries are missing) and trains on the CPU; '
          f'install the CUDA-enabled wheel: '
          f'{GPU_INSTALL.format(version=machine.tensorflow_version)}')


def warn_if_gpu_unseen(**paths) -> Optional[str]:
  """Logs the one line of unseen_gpu_message, before a run spends its time on the CPU."""
  message = unseen_gpu_message(seen(**paths))
  if message:
    logging.warning('%s', message)
  return message


def refuse_deterministic_xla_on_gpu(deterministic: bool, jit_compile: bool,
                                    devices: Sequence[str]) -> None:
  """--deterministic with --jit_compile cannot train on a GPU: refuse before building anything.

  With op determinism on, TensorFlow's XLA bridge refuses the max-pool gradient on GPUs
  ("GPU MaxPool gradient ops do not yet have a deterministic XLA implementation", its
  SelectAndScatter; tensorflow/tensorflow#69417, keras-team/keras#20315), which the CNN's
  MaxPooling2D layers need; CPUs and TPUs compile it. So the combination fails only where
  the replicas are GPUs, at the first traced step: say so at once instead.
  """
  if not (deterministic and jit_compile):
    return
  gpus = [d for d in devices if 'GPU' in d.upper().rsplit('/', 1)[-1]]
  if gpus:
    raise UserError('--deterministic with --jit_compile cannot train on a GPU: XLA has no '
                    'deterministic max-pool gradient (SelectAndScatter) there; drop '
                    '--jit_compile for a reproducible run, or --deterministic for XLA')
