"""What the benchmarks share: each measurement in a `python -m ...` process of its own, and
the JSON records a training run leaves in its folder."""

import concurrent.futures
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


def run_all(train, settings, jobs: int, report) -> list:
  """train(*setting) for every setting, `jobs` at a time; report(run) for each as it ends.

  Returns the runs in the order they ended. A failed training cancels the queued ones and
  its error ends the benchmark, rather than waiting hours for runs nobody will read.
  """
  runs = []
  with concurrent.futures.ThreadPoolExecutor(max(jobs, 1)) as pool:
    futures = [pool.submit(train, *setting) for setting in settings]
    for future in concurrent.futures.as_completed(futures):
      if future.exception():
        pool.shutdown(cancel_futures=True)
      runs.append(future.result())
      report(runs[-1])
  return runs
