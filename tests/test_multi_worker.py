"""MultiWorkerMirroredStrategy with real worker processes on localhost ports."""

import numpy as np
import pytest

from tests.conftest import run_workers

pytestmark = pytest.mark.slow


def test_two_workers_train_to_identical_weights(tmp_path):
  processes = run_workers(lambda index: ['tests.multi_worker_child', str(tmp_path / 'run'),
                                         str(tmp_path / f'w{index}.npz')])
  weights = [np.load(tmp_path / f'w{index}.npz') for index in range(2)]
  assert int(weights[0]['replicas']) == 2
  assert int(weights[0]['eval_examples']) == int(weights[1]['eval_examples']) == 100
  arrays = [[w[f'arr_{i}'] for i in range(8)] for w in weights]
  for a, b in zip(*arrays):
    np.testing.assert_array_equal(a, b)
  # Only the chief (worker 0) writes the run folder's files.
  assert (tmp_path / 'run' / 'results.json').exists()
  # TensorBoard's too: event files are named events.out.tfevents.<time>.<host>.<pid>.<n>.v2.
  event_files = list((tmp_path / 'run').rglob('events.out.tfevents.*'))
  assert {f.parent.name for f in event_files} == {'run', 'train', 'eval'}
  assert {int(f.name.split('.')[-3]) for f in event_files} == {processes[0].pid}
  assert len(list((tmp_path / 'run').glob('train/plugins/profile/*/*.xplane.pb'))) == 1
