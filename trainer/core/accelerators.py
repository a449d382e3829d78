"""What accelerators this machine has, and what TensorFlow makes of them.

TensorFlow is imported inside the functions: report/logs.py reads NVIDIA_DRIVER before
TensorFlow may start.
"""

import dataclasses
import importlib.metadata
import os
import shutil
from typing import Callable, Optional, Tuple

from absl import logging

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

  @property
  def build(self) -> str:
    """What CUDA this TensorFlow was built for, in words."""
    if not self.cuda_build:
      return 'built without CUDA'
    return f'built for CUDA {self.cuda_version}, cuDNN {self.cudnn_version}'


def tensorflow_wheel() -> str:
  """The installed distribution that brings the `tensorflow` package, with its version:
  'tensorflow 2.21.0', 'tensorflow-cpu 2.18.0', 'tensorflow-tpu 2.20.0', ..."""
  names = importlib.metadata.packages_distributions().get('tensorflow') or ['tensorflow']
  name = sorted(names)[0]
  try:
    version = importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return 'tensorflow'
  return f'{name.replace("_", "-").lower()} {version}'


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
  return (f'an NVIDIA GPU is on this machine ({machine.nvidia}) but TensorFlow sees none '
          f'({machine.build}; usually its CUDA libraries are missing) and trains on the CPU; '
          f'install the CUDA-enabled wheel: '
          f'{GPU_INSTALL.format(version=machine.tensorflow_version)}')


def warn_if_gpu_unseen(**paths) -> Optional[str]:
  """Logs the one line of unseen_gpu_message, before a run spends its time on the CPU."""
  message = unseen_gpu_message(seen(**paths))
  if message:
    logging.warning('%s', message)
  return message
