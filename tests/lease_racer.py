"""Child of tests/test_gcs_lease.py: for each attempt number read from stdin, takes the lease
of <argv[1]>/<attempt> and prints `won` or `lost: <why>`; keeps what it won (its rivals must
find it live). Takes and releases a lease of its own first; `error: ...` and exit 2 if it
cannot."""

import os
import sys

from trainer.core.errors import UserError
from trainer.run_folder import run_lock


def main(base):
  try:  # Credentials and connections first.
    run_lock.Lease(f'{base}/warm-up-{os.getpid()}').acquire().release()
  except UserError as e:
    print(f'error: {e}', flush=True)
    sys.exit(2)
  print('ready', flush=True)
  for line in sys.stdin:
    try:
      run_lock.Lease(f'{base}/{line.strip()}').acquire()
      print('won', flush=True)
    except UserError as e:
      print(f'lost: {e}', flush=True)


if __name__ == '__main__':
  main(sys.argv[1])
