"""Where a run writes: its folder, its TensorBoard logs, its checkpoints and its export.

Each comes from its flag if given, else from the variable Vertex AI sets for it (so a job
there needs no path flags), else from a default. Under Vertex AI the SavedModel itself is
AIP_MODEL_DIR, where Vertex AI's model upload and its prebuilt TensorFlow serving containers
look for saved_model.pb, and the run folder (config.json, results.json, the lease) is the
job's base output folder, AIP_MODEL_DIR's parent: so the base output folder is the run's
handle, beside model/, checkpoints/ and logs/. In a hyperparameter tuning trial a flag's
folder, and the default, get a `trial-<id>` subfolder: every trial has the same command line.
`resolve` touches no file; `prepare` creates the folders and proves they take a write,
before a run loads data or builds the model, so that a folder it cannot use costs seconds
instead of a traceback later.
"""

import dataclasses
import os
import socket
import time
from typing import List, Mapping, Optional

import tensorflow as tf

from trainer.core.config import Config
from trainer.core.errors import UserError, first_line
from trainer.core.trial import trial_folder, trial_id

# Vertex AI custom training's convention (set from the job's base output directory).
AIP_MODEL_DIR = 'AIP_MODEL_DIR'
AIP_TENSORBOARD_LOG_DIR = 'AIP_TENSORBOARD_LOG_DIR'
AIP_CHECKPOINT_DIR = 'AIP_CHECKPOINT_DIR'
EXPORT_FOLDER = 'export'  # The export's default place in the run folder.


@dataclasses.dataclass(frozen=True)
class RunDirs:
  model_dir: str        # config.json, results.json, ...
  tensorboard_dir: str  # train/, eval/ and the HParams entry
  checkpoint_dir: str   # the root under which checkpoints are kept
  # --export_dir or AIP_MODEL_DIR, if given; else <model_dir>/export (see `export`).
  export_dir: Optional[str] = None

  @property
  def export(self) -> str:
    """The folder of the run's SavedModel."""
    return self.export_dir or os.path.join(self.model_dir, EXPORT_FOLDER)


def parent(folder: str) -> str:
  """The folder above `folder` (a local path or a URI), '.' above a bare name."""
  return os.path.dirname(folder.rstrip('/')) or '.'


def resolve(*, model_dir: Optional[str] = None, tensorboard_dir: Optional[str] = None,
            checkpoint_dir: Optional[str] = None, export_dir: Optional[str] = None,
            multi_worker: bool = False, trial: Optional[str] = None,
            env: Mapping[str, str] = os.environ, now: Optional[float] = None) -> RunDirs:
  """The run's folders: flags first, then Vertex AI's AIP_* variables, then defaults.

  AIP_MODEL_DIR names the export; its parent, the job's base output folder, is the run
  folder. Defaults: a run folder `runs/<local time>`; logs, checkpoints and the export
  inside the run folder.
  With `trial` (a tuning trial's id) each folder from a flag or the default is the trial's
  own subfolder; Vertex AI's variables already name one per trial.
  """
  def from_env(name):
    return env.get(name) or None  # Set but empty counts as unset.

  def own(folder):
    return trial_folder(folder, trial) if folder else None

  vertex_model = (from_env(AIP_MODEL_DIR) or '').rstrip('/') or None
  model_dir = own(model_dir) or (parent(vertex_model) if vertex_model else None)
  if not model_dir:
    if multi_worker:
      raise UserError('--strategy=multi_worker needs an explicit --model_dir that all workers '
                      'share (a timestamped default would differ per worker)')
    model_dir = own(os.path.join('runs', time.strftime('%Y%m%d-%H%M%S', time.localtime(now))))
  return RunDirs(
      model_dir=model_dir,
      tensorboard_dir=own(tensorboard_dir) or from_env(AIP_TENSORBOARD_LOG_DIR) or model_dir,
      checkpoint_dir=own(checkpoint_dir) or from_env(AIP_CHECKPOINT_DIR) or model_dir,
      export_dir=own(export_dir) or vertex_model)


def of_config(config: Config) -> RunDirs:
  """The folders a training run with `config` writes (resolve() of its path flags), in this
  process's tuning trial if it is one: the run prepares them, the doctor probes them."""
  return resolve(model_dir=config.model_dir, tensorboard_dir=config.tensorboard_dir,
                 checkpoint_dir=config.checkpoint_dir, export_dir=config.export_dir,
                 multi_worker=config.strategy == 'multi_worker', trial=trial_id())


def _missing_folders(folder: str) -> list:
  """`folder` and those of its parents that do not exist yet, the deepest first."""
  missing = []
  while folder and not tf.io.gfile.exists(folder):
    missing.append(folder)
    parent = os.path.dirname(folder.rstrip('/'))
    if parent == folder or parent.endswith(':/') or parent.endswith(':'):
      break
    folder = parent
  return missing


def _require_bucket(folder: str) -> None:
  """Raises NotFoundError for a gs:// folder in a bucket that does not exist: there
  tf.io.gfile.makedirs never returns (TensorFlow 2.21 looks for the bucket's parent forever,
  found on the Cloud Storage stand-in of tests/test_gcs_runs.py)."""
  if folder.startswith('gs://'):
    bucket = 'gs://' + folder[len('gs://'):].split('/', 1)[0]
    if not tf.io.gfile.exists(bucket):
      raise tf.errors.NotFoundError(None, None, f'the bucket {bucket} does not exist')


def probe(folder: str, keep_folders: bool = True) -> None:
  """Creates `folder` and writes, reads back and deletes a small file in it.

  `keep_folders=False` also removes the folders it created (a check that must leave
  nothing behind); a folder something else wrote into meanwhile stays.
  """
  _require_bucket(folder)
  created = [] if keep_folders else _missing_folders(folder)
  try:
    tf.io.gfile.makedirs(folder)
    # Named per process: the workers of one job probe a shared folder at the same time.
    path = os.path.join(folder, f'.write-probe-{socket.gethostname()}-{os.getpid()}')
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write('probe\n')
    try:
      with tf.io.gfile.GFile(path) as f:
        if f.read() != 'probe\n':
          raise OSError('a file written there did not read back the same')
    finally:
      tf.io.gfile.remove(path)
  finally:
    for made in created:
      if tf.io.gfile.isdir(made) and not tf.io.gfile.listdir(made):
        tf.io.gfile.rmtree(made)


def folders(dirs: RunDirs) -> list:
  """[(folder, role)] of every distinct folder a run writes, the run folder first."""
  export_dir = dirs.export_dir
  roles = [(dirs.model_dir, 'run folder (--model_dir)'),
           (dirs.checkpoint_dir, 'checkpoint folder (--checkpoint_dir)'),
           (dirs.tensorboard_dir, 'TensorBoard folder (--tensorboard_dir)')]
  if export_dir:
    # The export is written beside its final place, then renamed: the parent must take writes.
    roles.append((parent(export_dir), 'parent of --export_dir'))
  distinct = {}
  for folder, role in roles:
    distinct.setdefault(folder, role)
  return list(distinct.items())


def unwritable(folder: str, role: str, keep_folders: bool = True) -> Optional[str]:
  """None if `folder` takes a write (probe()), else one line naming it, the reason and
  what to do."""
  try:
    probe(folder, keep_folders)
  except (tf.errors.OpError, OSError) as e:
    return (f'cannot write to the {role} {folder}: {first_line(e, 200)}; choose a folder '
            'this process may create and write')
  return None


def prepare(dirs: RunDirs) -> List[str]:
  """Creates the run's folders and checks each takes a write; raises UserError naming the
  folder and the reason otherwise. Returns the folders it created, which did not exist
  before (discard_created removes them if the run ends before it saved anything)."""
  created = []
  for folder, role in folders(dirs):
    missing = _missing_folders(folder)
    problem = unwritable(folder, role)
    if problem:
      raise UserError(problem)
    created += [made for made in missing if made not in created]
  return created


def discard_created(created: List[str]) -> None:
  """Removes the folders `created` (prepare's list) with what the run wrote in them: a run
  that stops before its first checkpoint leaves no empty run folder in `runs/` for
  TensorBoard to list. The parents it created go only if nothing else is in them."""
  for folder in created:  # Deepest first, as _missing_folders lists them.
    try:
      if not tf.io.gfile.isdir(folder):
        continue
      if not any(other.startswith(folder.rstrip('/') + '/') for other in created):
        tf.io.gfile.rmtree(folder)  # A folder of the run's own.
      elif not tf.io.gfile.listdir(folder):
        tf.io.gfile.rmtree(folder)  # A parent made on the way: only if left empty.
    except (tf.errors.OpError, OSError):
      pass  # Best effort: the run's own error is what the user must see.
