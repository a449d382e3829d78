"""Which hyperparameter tuning trial this process is, if any.

The tuning service starts every trial with the same command line, so a trial tells itself
apart only by its environment: `CLOUD_ML_TRIAL_ID`, which the `cloudml-hypertune` package
reads for the trial of each metric line, or else the `trial` field of `TF_CONFIG`'s task,
which Google's training service adds in tuning jobs.
"""

import json
import os
import re
from typing import Mapping, Optional

from trainer.core.errors import UserError

TRIAL_ID_VARIABLE = 'CLOUD_ML_TRIAL_ID'
_SAFE_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*$')


def trial_id(env: Mapping[str, str] = os.environ) -> Optional[str]:
  """This process's trial id, or None outside a tuning trial."""
  value = (env.get(TRIAL_ID_VARIABLE) or '').strip() or _from_tf_config(env)
  if not value:
    return None
  if not _SAFE_ID.match(value) or len(value) > 64:
    # It names the trial's folder: it must not climb out of the run folder or nest.
    raise UserError(f'the tuning trial id {value[:80]!r} (from {TRIAL_ID_VARIABLE} or '
                    'TF_CONFIG) is not a plain name of letters, digits, ".", "_" and "-"')
  return value


def _from_tf_config(env: Mapping[str, str]) -> str:
  try:
    task = json.loads(env.get('TF_CONFIG') or '{}').get('task') or {}
    return str(task.get('trial') or '').strip()
  except (ValueError, AttributeError):
    return ''  # A broken TF_CONFIG is reported, with its reason, where the strategy reads it.


def trial_folder(folder: str, trial: Optional[str]) -> str:
  """`folder`'s subfolder for this trial: trials started with one command line must never
  share a run folder, its lock or its checkpoints."""
  if not trial:
    return folder
  return f'{folder.rstrip("/")}/trial-{trial}'
