"""What the benchmarks share: each measurement in a `python -m ...` process of its own, and
the JSON records a training run leaves in its folder."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(command) -> subprocess.CompletedProcess:
  """Runs `command` ([sys.executable, '-m', MODULE, ...]) from the repository's root, with
  TensorFlow's C++ INFO lines muted; a failure ends the benchmark with the command and the
  end of its error output."""
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  if result.returncode:
    sys.exit(f'error: {" ".join(command[2:])} failed:\n{result.stderr[-3000:]}')
  return result


def record(model_dir: str, name: str = 'results.json') -> dict:
  """A JSON record of a finished run: results.json, or config.json."""
  with open(os.path.join(model_dir, name)) as f:
    return json.load(f)
