"""--profile_steps: which host calls are profiled, and the trace file TensorBoard reads."""

import pytest
import tensorflow as tf

from trainer.core.errors import UserError
from trainer.report import profiling


def test_loops_are_cut_at_the_window_edges():
  window = profiling.ProfileWindow((12, 20), '/unused')
  assert window.clip(0, 100) == 11   # Steps 1-11, then profiling starts before step 12.
  assert window.clip(11, 100) == 9   # Steps 12-20 exactly.
  assert window.clip(20, 100) == 100
  assert window.clip(0, 5) == 5
  assert profiling.ProfileWindow(None, '/unused').clip(0, 7) == 7
  # A non-chief worker traces nothing, but its loops must match the chief's step for step.
  assert profiling.ProfileWindow((12, 20), '/unused', enabled=False).clip(11, 100) == 9


def test_a_window_writes_one_trace_of_its_steps(tmp_path):
  window = profiling.ProfileWindow((3, 4), str(tmp_path))
  double = tf.function(lambda x: x * 2)
  step, profiled = 0, []
  while step < 6:
    size = window.clip(step, 10)
    window.before_loop(step)
    if window.active:
      profiled.append((step + 1, step + size))
    for _ in range(size):
      double(tf.constant(1.0))
    step += size
    window.after_loop(step)
  assert profiled == [(3, 4)] and not window.active
  window.stop()
  traces = list(tmp_path.glob('plugins/profile/*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_no_window_or_a_non_chief_profiles_nothing(tmp_path):
  for window in (profiling.ProfileWindow(None, str(tmp_path)),
                 profiling.ProfileWindow((1, 2), str(tmp_path), enabled=False)):
    window.before_loop(0)
    assert not window.active
    window.after_loop(2)
  assert not list(tmp_path.iterdir())


def test_a_window_after_the_last_step_is_a_clear_error():
  with pytest.raises(UserError, match=r'--profile_steps=40,50 starts after the last training '
                                      r'step \(32\)'):
    profiling.ProfileWindow((40, 50), '/unused', total_steps=32)
  profiling.ProfileWindow((30, 50), '/unused', total_steps=32)  # Ends with the run: fine.
