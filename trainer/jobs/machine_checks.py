"""trainer.doctor's checks of the machine around the model: TensorFlow and the devices it
sees, TF_CONFIG and the other workers, the folders a run writes and reads, /dev/shm.

Each check returns Check lines (trainer/jobs/doctor.py prints them); none leaves a file or
a folder behind.
"""

import dataclasses
import os
import time
from typing import List

import tensorflow as tf

from trainer.core import accelerators
from trainer.core.config import Config
from trainer.core import distribute
from trainer.core import startup
from trainer.core.errors import UserError, first_line
from trainer.run_folder import run_dirs

OK, WARNING, FAIL, SKIPPED = 'ok', 'warning', 'FAIL', 'skipped'

# How long the other workers get to answer: long enough for doctors started on every
# machine at about the same time to find each other (each listens on its own address
# meanwhile), short enough for a one-minute check.
PEER_WAIT_SECONDS = 5.0
_RETRY_SECONDS = 0.5
# NCCL keeps its buffers in /dev/shm and fails to start when it cannot grow them there
# (NCCL user guide, troubleshooting); Docker gives a container 64 MB, Kubernetes a pod too.
SHM_MIN_BYTES = 1 << 30
SHM = '/dev/shm'


@dataclasses.dataclass(frozen=True)
class Check:
  name: str
  status: str  # OK, WARNING, FAIL or SKIPPED (nothing to check: after an earlier failure,
  # or on a build the check does not apply to)
  message: str
  fields: dict = dataclasses.field(default_factory=dict)  # numbers, for --log_format=json


def _device_names(devices) -> str:
  return ', '.join(d.name.replace('/physical_device:', '') for d in devices) or 'none'


def tensorflow_check(config: Config) -> List[Check]:
  """TensorFlow's version, its CUDA/cuDNN build, the devices it sees, and an NVIDIA device
  it does not see."""
  machine = accelerators.seen()
  devices = _device_names(tf.config.list_physical_devices())
  nvidia = f'NVIDIA device: {machine.nvidia}' if machine.nvidia else 'no NVIDIA device here'
  fields = dict(tensorflow=machine.tensorflow_version, gpus=len(machine.tensorflow_gpus),
                cuda=machine.cuda_version, cudnn=machine.cudnn_version)
  checks = [Check('tensorflow', OK, f'TensorFlow {machine.tensorflow_version}, {machine.build}; '
                  f'devices: {devices}; {nvidia}', fields)]
  unseen = accelerators.unseen_gpu_message(machine)
  if unseen:
    checks.append(Check('gpu', FAIL, unseen))
  elif config.strategy == 'mirrored' and not machine.tensorflow_gpus \
      and not config.num_cpu_devices:
    checks.append(Check('gpu', WARNING, '--strategy=mirrored finds no GPU here and would '
                        'mirror over one CPU device; run on a GPU machine, or pass '
                        '--num_cpu_devices=N to try N CPU replicas'))
  return checks


def _unanswered(peers, wait_seconds: float) -> dict:
  """{peer: reason} of the peers that no TCP connect reached within the wait."""
  pending = {peer: 'no answer' for peer in peers}
  deadline = time.monotonic() + wait_seconds
  while pending:
    for peer in list(pending):
      reason = startup.unanswered(peer, max(0.1, min(2.0, deadline - time.monotonic())))
      if reason is None:
        del pending[peer]
      else:
        pending[peer] = reason
    if time.monotonic() + _RETRY_SECONDS >= deadline:
      break
    time.sleep(_RETRY_SECONDS)  # Retried: the other machines' doctors may start later.
  return pending


def cluster_checks(config: Config, wait_seconds: float = PEER_WAIT_SECONDS) -> List[Check]:
  """TF_CONFIG's validity and a TCP connect to every other task in it (with
  --strategy=multi_worker, or whenever TF_CONFIG is set)."""
  raw = os.environ.get('TF_CONFIG')
  if config.strategy != 'multi_worker' and (raw is None or not raw.strip()):
    return []
  try:
    tf_config = distribute.validate_tf_config()
  except UserError as e:
    return [Check('tf_config', FAIL, str(e))]
  task = tf_config['task']
  own = tf_config['cluster'][task['type']][task['index']]
  peers = startup.peers(tf_config)
  checks = [Check('tf_config', OK, f'this is {task["type"]} {task["index"]} at {own}, '
                  f'{len(peers)} other worker(s) to reach', dict(peers=len(peers)))]
  if config.strategy != 'multi_worker':
    checks.append(Check('tf_config', WARNING, f'TF_CONFIG is set but --strategy='
                        f'{config.strategy} ignores it; pass --strategy=multi_worker for a '
                        'multi-worker run, or unset it'))
  if not peers:
    return checks
  try:
    # As the trainer does while it waits (trainer/core/startup.py): doctors started on every
    # machine at about the same time find each other.
    listener = startup.listen(own, f'{task["type"]} {task["index"]}')
  except UserError as e:
    listener = None
    checks.append(Check('workers', FAIL, str(e)))
  try:
    missing = _unanswered(peers, wait_seconds)
  except UserError as e:  # An address that is not HOST:PORT.
    checks.append(Check('workers', FAIL, str(e)))
    return checks
  finally:
    if listener is not None:
      listener.close()
  for peer, reason in missing.items():
    checks.append(Check('workers', FAIL, f'{peer.label} at {peer.address} does not answer '
                        f'({reason}) within {wait_seconds:g} s; start it (every worker runs '
                        'the same command), or correct its address in TF_CONFIG'))
  if not missing:
    checks.append(Check('workers', OK, f'all {len(peers)} other worker(s) answer: ' +
                        ', '.join(f'{p.label} at {p.address}' for p in peers)))
  return checks


def _data_folder_check(config: Config) -> Check:
  if config.dataset == 'synthetic':
    return Check('data', OK, '--dataset=synthetic reads no data folder')
  folder = config.data_dir
  if not folder:
    folder = os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')
    there = tf.io.gfile.isdir(os.path.join(folder, config.dataset))
    return Check('data', OK, f'no --data_dir: TFDS\'s own folder {folder}, where '
                 f'{config.dataset} is {"prepared" if there else "not prepared yet"}' +
                 ('' if there else ' (a run downloads it there on first use)'))
  try:
    # listdir, not isdir: on gs:// isdir says False for a bucket it could not reach at all.
    entries = len(tf.io.gfile.listdir(folder))
  except tf.errors.NotFoundError:
    return Check('data', FAIL, f'the data folder {folder} (--data_dir) does not exist or is '
                 'not a folder; give the folder that holds the data set, or leave --data_dir '
                 'out to use (and download into) TFDS\'s own')
  except (tf.errors.OpError, OSError) as e:
    return Check('data', FAIL, f'cannot read the data folder {folder} (--data_dir): '
                 f'{first_line(e, 200)}; check the path and this machine\'s access to it')
  writable = run_dirs.unwritable(folder, 'data folder') is None
  return Check('data', OK, f'data folder {folder} exists, {entries} entries, ' +
               ('writable' if writable else 'read-only (fine for prepared data; nothing '
                'can be downloaded into it)'))


def folder_checks(config: Config) -> List[Check]:
  """The run's folders (local or gs://) take a write, probed and cleaned up; the data
  folder exists."""
  checks = []
  try:
    dirs = run_dirs.of_config(config)
  except UserError as e:
    checks.append(Check('run_folder', FAIL, str(e)))
  else:
    for folder, role in run_dirs.folders(dirs):
      problem = run_dirs.unwritable(folder, role, keep_folders=False)
      checks.append(Check('run_folder', FAIL, problem) if problem else
                    Check('run_folder', OK, f'the {role} {folder} takes a write (probe file '
                          'written, read back and deleted)'))
  checks.append(_data_folder_check(config))
  return checks


def shm_check(config: Config, path: str = SHM) -> Check:
  """/dev/shm big enough for NCCL where several GPUs or workers exchange gradients."""
  several = len(tf.config.list_physical_devices('GPU')) > 1 or \
      config.strategy in ('mirrored', 'multi_worker')
  try:
    stat = os.statvfs(path)
  except OSError:
    return Check('shm', WARNING if several else OK, f'no {path} on this machine' +
                 ('; NCCL needs it to exchange gradients between GPUs' if several else ''))
  size = stat.f_blocks * stat.f_frsize
  text = f'{path} is {size / (1 << 30):.1f} GiB'
  if several and size < SHM_MIN_BYTES:
    return Check('shm', WARNING, f'{text}; NCCL keeps its buffers there and fails to start '
                 'when they do not fit: give it 1 GiB or more (docker run --shm-size=1g; '
                 'Kubernetes: an emptyDir volume of medium Memory mounted at /dev/shm)',
                 dict(shm_bytes=size))
  return Check('shm', OK, text, dict(shm_bytes=size))
