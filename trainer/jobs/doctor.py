"""`python -m trainer.doctor`: what a user runs first on a new GPU or TPU machine or cluster.

In about a minute, for the settings a run would get (the same flags and presets): the
TensorFlow build and the devices it sees, TF_CONFIG and the other workers, the TPU, the
folders a run writes and reads, /dev/shm, the GPU kernels and the XLA compile of the
preset's steps, and a short timed run. One line per check, `ok`, `warning` or `FAIL` with
what to do (a JSON object per check under --log_format=json); any FAIL makes the exit code 1.
"""

import sys
import time
from typing import Callable, Iterable, List

from trainer.core.config import Config
from trainer.jobs import compute_checks
from trainer.jobs import machine_checks
from trainer.jobs.machine_checks import Check, FAIL, WARNING
from trainer.report import logs

EXIT_FAILED = 1
_SEVERITY = {FAIL: 'ERROR', WARNING: 'WARNING'}


def format_line(check: Check, log_format: str) -> str:
  if log_format == 'json':
    return logs.json_line(_SEVERITY.get(check.status, 'INFO'),
                          f'{check.status} {check.name}: {check.message}',
                          dict(check=check.name, status=check.status, **check.fields))
  return f'{check.status:<8} {check.name:<11} {check.message}'


def _summary(checks: List[Check], seconds: float) -> Check:
  failed = [c.name for c in checks if c.status == FAIL]
  warned = sum(c.status == WARNING for c in checks)
  fields = dict(failed=len(failed), warnings=warned, seconds=round(seconds, 1))
  if failed:
    return Check('doctor', FAIL, f'{len(failed)} check(s) failed ({", ".join(failed)}), '
                 f'{warned} warning(s), in {seconds:.0f} s; fix the FAIL lines above before '
                 'a run', fields)
  return Check('doctor', 'ok', f'all checks passed, {warned} warning(s), in {seconds:.0f} s',
               fields)


def run(config: Config, log_format: str = 'text',
        emit: Callable[[str], None] = lambda line: print(line, flush=True)) -> int:
  """Runs every check in order, emitting each line as it is known; returns the exit code."""
  start = time.monotonic()
  checks = []
  stages: Iterable[Callable[[Config], Iterable[Check]]] = (
      machine_checks.tensorflow_check, machine_checks.cluster_checks,
      machine_checks.folder_checks, lambda c: [machine_checks.shm_check(c)],
      compute_checks.compute_checks)
  for stage in stages:
    for check in stage(config):
      checks.append(check)
      emit(format_line(check, log_format))
  summary = _summary(checks, time.monotonic() - start)
  sys.stderr.flush()
  emit(format_line(summary, log_format))
  return EXIT_FAILED if summary.status == FAIL else 0
