"""Where a run writes: its folder, its TensorBoard logs and its checkpoints.

Each comes from its flag if given, else from the variable Vertex AI sets for it (so a job
there needs no path flags), else from a default. `resolve` touches no file; `prepare`
creates the folders and proves they take a write, before a run loads data or builds the
model, so that a folder it cannot use costs seconds instead of a traceback later.
"""

import dataclasses
import os
import socket
import time
from typing import Mapping, Optional

import tensorflow as tf

from trainer.core.errors import UserError, first_line

# Vertex AI custom training's convention (set from the job's base output directory).
AIP_MODEL_DIR = 'AIP_MODEL_DIR'
AIP_TENSORBOARD_LOG_DIR = 'AIP_TENSORBOARD_LOG_DIR'
AIP_CHECKPOINT_DIR = 'AIP_CHECKPOINT_DIR'


@dataclasses.dataclass(frozen=True)
class RunDirs:
  model_dir: str        # config.json, results.json, ...
  tensorboard_dir: str  # train/, eval/ and the HParams entry
  checkpoint_dir: str   # the root under which checkpoints are kept


def resolve(*, model_dir: Optional[str] = None, tensorboard_dir: Optional[str] = None,
            checkpoint_dir: Optional[str] = None, multi_worker: bool = False,
            env: Mapping[str, str] = os.environ, now: Optional[float] = None) -> RunDirs:
  """The run's folders: flags first, then Vertex AI's AIP_* variables, then defaults.

  Defaults: a run folder `runs/<local time>`; logs and checkpoints inside the run folder.
  """
  def from_env(name):
    return env.get(name) or None  # Set but empty counts as unset.

  model_dir = model_dir or from_env(AIP_MODEL_DIR)
  if not model_dir:
    if multi_worker:
      raise UserError('--strategy=multi_worker needs an explicit --model_dir that all workers '
                      'share (a timestamped default would differ per worker)')
    model_dir = os.path.join('runs', time.strftime('%Y%m%d-%H%M%S', time.localtime(now)))
  return RunDirs(
      model_dir=model_dir,
      tensorboard_dir=tensorboard_dir or from_env(AIP_TENSORBOARD_LOG_DIR) or model_dir,
      checkpoint_dir=checkpoint_dir or from_env(AIP_CHECKPOINT_DIR) or model_dir)


def _probe(folder: str) -> None:
  """Creates `folder` and writes, reads back and deletes a small file in it."""
  tf.io.gfile.makedirs(folder)
  # Named per process: the workers of one job probe a shared folder at the same time.
  probe = os.path.join(folder, f'.write-probe-{socket.gethostname()}-{os.getpid()}')
  with tf.io.gfile.GFile(probe, 'w') as f:
    f.write('probe\n')
  with tf.io.gfile.GFile(probe) as f:
    if f.read() != 'probe\n':
      raise OSError('a file written there did not read back the same')
  tf.io.gfile.remove(probe)


def prepare(dirs: RunDirs, export_dir: Optional[str] = None) -> None:
  """Creates the run's folders and checks each takes a write; raises UserError naming the
  folder and the reason otherwise."""
  roles = [(dirs.model_dir, 'run folder (--model_dir)'),
           (dirs.checkpoint_dir, 'checkpoint folder (--checkpoint_dir)'),
           (dirs.tensorboard_dir, 'TensorBoard folder (--tensorboard_dir)')]
  if export_dir:
    # The export is written beside its final place, then renamed: the parent must take writes.
    roles.append((os.path.dirname(export_dir.rstrip('/')) or '.', 'parent of --export_dir'))
  probed = set()
  for folder, role in roles:
    if folder in probed:
      continue
    probed.add(folder)
    try:
      _probe(folder)
    except (tf.errors.OpError, OSError) as e:
      raise UserError(f'cannot write to the {role} {folder}: {first_line(e, 200)}; choose a '
                      'folder this process may create and write') from None
