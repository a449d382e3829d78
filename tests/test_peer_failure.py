"""A multi-worker run whose peer dies fails on its own, with one line.

No launcher here: on a user's cluster nothing of ours watches the workers, so the
survivor must notice by itself (TensorFlow's coordination service heartbeats). How long
that takes is printed, not asserted: the wait's timeout only guards against a hang.
"""

import time

import pytest

from tests.conftest import REPO, start_endless_workers
from tests.process_output import Lines
from trainer.core.errors import EXIT_PEER_LOST

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('victim', [0, 1], ids=['chief_dies', 'worker_dies'])
def test_the_surviving_worker_exits_on_its_own_with_one_line(tmp_path, victim):
  processes = start_endless_workers(tmp_path)
  try:
    survivor = processes[1 - victim]
    output = Lines(survivor.stderr)
    line = output.wait_for(r'step 30/100000', timeout=240)
    assert f'[worker {1 - victim}] epoch 1/' in line  # Each worker's lines say whose they are.
    killed_at = time.monotonic()
    processes[victim].kill()
    code = survivor.wait(timeout=300)
    seconds = time.monotonic() - killed_at
    text = output.rest()
  finally:
    for p in processes:
      p.kill()
      p.wait()
  assert code == EXIT_PEER_LOST, text[-3000:]
  # Not "the last line" nor "no traceback": TensorFlow's C++ logging, and its
  # PreemptionCheckpointHandler thread when the chief dies, still print after ours.
  errors = [line for line in text.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and errors[0].startswith('error: lost contact with another worker')
  assert f'File "{REPO / "trainer" / "main.py"}"' not in text  # No traceback through ours.
  print(f'survivor exited {seconds:.1f} s after its peer was killed: {errors[0]}')
