"""The run folder's JSON records: config.json (what a run was asked to do), results.json
(what it reached), and the small JSON files beside checkpoints.

Every record is written beside its place and renamed over it, so that a reader (a resumed
run, `trainer.evaluate`, a person) never sees half a file.
"""

import dataclasses
import json
import os
from typing import Optional

import tensorflow as tf

from trainer.core.config import Config
from trainer.core.errors import UserError, first_line

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'


def read_json(path: str) -> Optional[dict]:
  """The JSON object at `path`, or None where there is no such file."""
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def write_json(path: str, payload: dict) -> None:
  # Write then rename: a crash mid-write must not leave a half file that looks valid.
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(json.dumps(payload, indent=2, sort_keys=True) + '\n')
  tf.io.gfile.rename(tmp, path, overwrite=True)


def write_config(model_dir: str, config: Config, **extra) -> None:
  """config.json: every setting of the (latest) run, the rate it derived for its batch, and
  `extra` (e.g. where --init_from's weights came from)."""
  write_json(os.path.join(model_dir, CONFIG_FILE), dict(
      dataclasses.asdict(config), scaled_learning_rate=config.scaled_learning_rate,
      scaled_momentum=config.scaled_momentum, **extra))


def read_run_record(model_dir: str) -> dict:
  """Everything a run recorded in its config.json: its settings and what else it noted."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise UserError(f'no run in --model_dir={model_dir}: it has no {CONFIG_FILE} '
                    '(the folder a training run wrote)')
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except (ValueError, tf.errors.OpError) as e:
    raise UserError(f'cannot read {path}: {first_line(e)}') from None


def config_of_record(recorded: dict) -> Config:
  """The Config of a run's record (fields it lacks keep their defaults)."""
  fields = {name: value for name, value in recorded.items()
            if name in Config.__dataclass_fields__}
  if fields.get('optimizer') == 'muon':
    # A Muon run recorded before --muon_conv left the conv kernels to AdamW: its checkpoints
    # hold that optimizer's variables, which the default would not restore.
    fields.setdefault('muon_conv', False)
  return Config(**fields)


def read_run_config(model_dir: str) -> Config:
  """The Config a run recorded in its config.json (fields it lacks keep their defaults)."""
  return config_of_record(read_run_record(model_dir))
