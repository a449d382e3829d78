"""The metric a hyperparameter tuning trial reports, in the `cloudml-hypertune` format.

Vertex AI ranks a tuning job's trials by what each writes to the file named by
`CLOUD_ML_HP_METRIC_FILE` (default /tmp/hypertune/output.metrics): one JSON object per
line with the metric under its id, the global step, the trial and a timestamp, values as
strings. These few lines write exactly what `cloudml-hypertune`'s
`HyperTune.report_hyperparameter_tuning_metric` writes (GoogleCloudPlatform/cloudml-hypertune,
hypertune/hypertune.py, 0.1.0): keys sorted, the newest 100 lines, the whole file rewritten
at each report; the package itself would be one more dependency for that.

Only the chief reports (the other workers evaluate the same model), and only in a tuning
trial or when --tune_report asks.
"""

import collections
import json
import os
import time
from typing import Mapping, Optional

from absl import logging

from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.core import trial as trial_lib

METRIC_FILE_VARIABLE = 'CLOUD_ML_HP_METRIC_FILE'
DEFAULT_METRIC_FILE = '/tmp/hypertune/output.metrics'
MAX_LINES = 100  # As the package keeps.


class NoReporter:
  """Outside a tuning trial: nothing to tell."""

  def report(self, step: int, loss: float, accuracy: float) -> None:
    pass


class Reporter:
  """Writes --tune_metric after each evaluation where the tuning service reads it."""

  def __init__(self, metric: str, trial: Optional[str], path: str):
    self.metric, self.path = metric, path
    self.trial = trial or '0'  # The package's value outside a trial.
    self._lines = collections.deque(maxlen=MAX_LINES)
    try:
      os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    except OSError as e:
      raise UserError(f'cannot create the folder of the tuning metric file {path} '
                      f'({e.strerror}); set {METRIC_FILE_VARIABLE} to a writable file') from None

  def report(self, step: int, loss: float, accuracy: float) -> None:
    value = {'eval_loss': loss, 'eval_accuracy': accuracy}[self.metric]
    self._lines.append({'timestamp': time.time(), 'trial': self.trial,
                        self.metric: str(float(value)),
                        'global_step': str(int(step) if step else 0), 'checkpoint_path': ''})
    try:
      with open(self.path, 'w') as f:
        f.writelines(json.dumps(line, sort_keys=True) + '\n' for line in self._lines)
    except OSError as e:
      raise UserError(f'cannot write the tuning metric file {self.path} ({e.strerror}); the '
                      'tuning job could not rank this trial') from None


def reporter(config: Config, chief: bool, env: Mapping[str, str] = os.environ):
  """The chief's Reporter in a tuning trial (or with --tune_report), else a NoReporter."""
  trial = trial_lib.trial_id(env)
  wanted = config.tune_report if config.tune_report is not None else trial is not None
  if not (wanted and chief):
    return NoReporter()
  path = env.get(METRIC_FILE_VARIABLE) or DEFAULT_METRIC_FILE
  logging.info('tuning trial %s: reporting %s after each evaluation to %s',
               trial or '(none)', config.tune_metric, path)
  return Reporter(config.tune_metric, trial, path)
