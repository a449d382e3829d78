"""Child of tests/test_gcs_lease.py: for each attempt number read from stdin, takes the lease
of <argv[1]>/<attempt> and prints `won` or `lost: <why>`; keeps what it won (its rivals must
find it live)."""

import os
import sys

from trainer.core.errors import UserError
from trainer.run_folder import run_lock


def main(base):
  # Credentials and connections first.
  run_lock.Lease(f'{base}/warm-up-{os.getpid()}').acquire().release()
  print('ready', flush=True)
  for line in sys.stdin:
    try:
      run_lock.Lease(f'{base}/{line.strip()}').acquire()
      print('won', flush=True)
    except UserError as e:
      print(f'lost: {e}', flush=True)


if __name__ == '__main__':
  main(sys.argv[1])
