"""Where a run writes: its folder, its TensorBoard logs and its checkpoints.

Each comes from its flag if given, else from the variable Vertex AI sets for it (so a job
there needs no path flags), else from a default. Pure: no file is touched here.
"""

import dataclasses
import os
import time
from typing import Mapping, Optional

from trainer.errors import UserError

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
