"""A run's folder is its handle: finding every part of a run from a folder a user names.

A training run records in its config.json (`folders`) where its checkpoints, TensorBoard
logs and export went: relative to the run folder where they are inside it, so that a run
moved or copied whole still finds them, and as full paths or URIs otherwise. From that,
`find` takes any of:
  the run folder                 config.json is there
  a Vertex AI job's base output folder: the run folder of a job (model/ beside it holds the
                                 SavedModel); of a job from before this record, model/
                                 holds config.json and checkpoints/ and logs/ are beside it
  a part of a run                its export (Vertex AI's model/), its checkpoint folder (or
                                 the checkpoints/ or best/ in it), its TensorBoard folder:
                                 the run folder one or two levels up records it as its own
and gives the run's config and folders; what is missing is named with where it was looked
for, in one line.
"""

import dataclasses
import os
import time
from typing import Callable, List

import tensorflow as tf

from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.run_folder import checkpointing
from trainer.run_folder import records
from trainer.run_folder import run_dirs

RECORD_KEY = 'folders'  # config.json's entry: where the run's parts went.
_PARTS = {'checkpoint_dir': 'checkpoints', 'tensorboard_dir': 'TensorBoard logs',
          'export_dir': 'export'}
# The folders Vertex AI names under a job's base output folder (AIP_MODEL_DIR and so on).
VERTEX_MODEL, VERTEX_CHECKPOINTS, VERTEX_LOGS = 'model', 'checkpoints', 'logs'


class NoRun(UserError):
  """No run at or around the folder given: no config.json where one was looked for."""


@dataclasses.dataclass(frozen=True)
class Run:
  dirs: run_dirs.RunDirs  # Every part's folder; export_dir filled in.
  config: Config  # What the run recorded in its config.json.

  @property
  def folder(self) -> str:
    return self.dirs.model_dir


def _is_uri(path: str) -> bool:
  return '://' in path


def _norm(path: str) -> str:
  """A path compared with another: absolute, without a trailing slash."""
  path = path.rstrip('/') or '/'
  return path if _is_uri(path) else os.path.abspath(path)


def same_folder(a: str, b: str) -> bool:
  return _norm(a) == _norm(b)


def _relative(part: str, folder: str) -> str:
  """`part` relative to `folder` where inside it ('.' for the folder itself), else in full."""
  part, folder = _norm(part), _norm(folder)
  if part == folder:
    return '.'
  if part.startswith(folder.rstrip('/') + '/'):
    return part[len(folder.rstrip('/')) + 1:]
  return part


def record(dirs: run_dirs.RunDirs) -> dict:
  """What config.json keeps of where the run's parts went."""
  places = dict(checkpoint_dir=dirs.checkpoint_dir, tensorboard_dir=dirs.tensorboard_dir,
                export_dir=dirs.export)
  return {name: _relative(place, dirs.model_dir) for name, place in places.items()}


def _place(folder: str, recorded: str) -> str:
  if recorded == '.':
    return folder
  if _is_uri(recorded) or os.path.isabs(recorded):
    return recorded
  return os.path.join(folder, recorded)


def _legacy_places(folder: str, config: Config) -> dict:
  """Where a run from before the record kept its parts: its path flags, else the run
  folder; a Vertex AI job's (config.json in <base>/model) beside it, under <base>."""
  places = dict(checkpoint_dir=config.checkpoint_dir or folder,
                tensorboard_dir=config.tensorboard_dir or folder,
                export_dir=config.export_dir or os.path.join(folder, run_dirs.EXPORT_FOLDER))
  base = run_dirs.parent(folder)
  if os.path.basename(folder.rstrip('/')) == VERTEX_MODEL:
    for name, beside in (('checkpoint_dir', VERTEX_CHECKPOINTS),
                         ('tensorboard_dir', VERTEX_LOGS)):
      if not getattr(config, name) and tf.io.gfile.isdir(os.path.join(base, beside)):
        places[name] = os.path.join(base, beside)
  return places


def _read(folder: str) -> Run:
  record = records.read_run_record(folder)  # One read: on gs:// each costs requests.
  config = records.config_of_record(record)
  recorded = record.get(RECORD_KEY)
  if isinstance(recorded, dict) and all(isinstance(recorded.get(n), str) for n in _PARTS):
    places = {name: _place(folder, recorded[name]) for name in _PARTS}
  else:
    places = _legacy_places(folder, config)
  return Run(run_dirs.RunDirs(model_dir=folder, **places), config)


def _holds(run: Run, path: str) -> bool:
  """Whether `path` is one of `run`'s parts (or a folder of checkpoints in its own)."""
  dirs = run.dirs
  parts = [dirs.checkpoint_dir, dirs.tensorboard_dir, dirs.export] + [
      os.path.join(dirs.checkpoint_dir, sub) for sub in (
          checkpointing.CHECKPOINT_DIR, checkpointing.BEST_DIR, checkpointing.PREEMPTION_DIR)]
  return _norm(path) in {_norm(part) for part in parts}


def _run_at(folder: str):
  """The run whose folder is `folder`, or whose Vertex AI job's base folder it is (a job from
  before the record kept config.json in model/); None if neither has a config.json."""
  for candidate in (folder, os.path.join(folder, VERTEX_MODEL)):
    if tf.io.gfile.exists(os.path.join(candidate, records.CONFIG_FILE)):
      return _read(candidate)
  return None


def find(path: str, flag: str = '--model_dir', or_export: bool = False) -> Run:
  """The run `path` names (see the module's doc); NoRun naming where it looked if none.
  `or_export`: the flag takes an export as well, and the message says so."""
  path = path.rstrip('/') or '/'
  run = _run_at(path)
  if run:
    return run
  looked: List[str] = [path, os.path.join(path, VERTEX_MODEL)]
  above = _norm(path)
  for _ in range(2):  # A part, or the checkpoints/ in a checkpoint folder, of a run above.
    above = run_dirs.parent(above)
    if above in looked or above.endswith(':'):
      break
    looked.append(above)
    run = _run_at(above)
    if run and _holds(run, path):
      return run
  what = (f'{flag}={path} is neither an export (no saved_model.pb in it) nor a run'
          if or_export else f'no run in {flag}={path}')
  raise NoRun(f'{what}: no {records.CONFIG_FILE} in {", ".join(looked[:-1])} or '
              f'{looked[-1]} (a run folder, a Vertex AI job\'s base output folder, or a part '
              'of a run whose folder, one or two levels up, records it)')


def wait(path: str, timeout: float, poll_seconds: float, flag: str = '--model_dir',
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> Run:
  """find(), once the run's trainer has written its config.json (up to `timeout` s)."""
  deadline = clock() + timeout
  while True:
    try:
      return find(path, flag)
    except NoRun:
      if clock() > deadline:
        raise
    sleep(poll_seconds)


def require(dirs: run_dirs.RunDirs, name: str) -> str:
  """The folder of the part `name` (a RunDirs field); UserError if it is not there."""
  folder = dirs.export if name == 'export_dir' else getattr(dirs, name)
  if not tf.io.gfile.isdir(folder):
    raise UserError(f'the run {dirs.model_dir} keeps its {_PARTS[name]} in {folder}, which '
                    'does not exist: it was moved or deleted (move it back, or copy the run '
                    'whole)')
  return folder


def export_folder(path: str, flag: str = '--model') -> str:
  """The SavedModel `path` names: the export itself, or the export of the run it names."""
  if tf.saved_model.contains_saved_model(path):
    return path
  export = require(find(path, flag, or_export=True).dirs, 'export_dir')
  if not tf.saved_model.contains_saved_model(export):
    raise UserError(f'{flag}={path}: the run has no export in {export} (no saved_model.pb): '
                    'it has not finished yet')
  return export
