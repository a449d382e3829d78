"""A TensorFlow profiler trace of chosen training steps, for TensorBoard's Profile tab.

The trace lands in `<logdir>/plugins/profile/<session>/<host>.xplane.pb`. Writing it needs
only TensorFlow; viewing it needs the `tensorboard-plugin-profile` package beside
TensorBoard.
"""

from typing import Optional, Tuple

from absl import logging
import tensorflow as tf

from trainer.core.errors import UserError


class ProfileWindow:
  """Profiles training steps `first`..`last` (1-based, inclusive, as the logs count them).

  The train loop runs many steps per host call; `clip` shortens calls so that one starts
  right at `first` and one ends right at `last`, making the trace hold exactly those steps.
  With `enabled=False` (a non-chief worker) it traces nothing but cuts the calls alike:
  workers whose loops differ in length would wait on each other's collectives forever.
  """

  def __init__(self, steps: Optional[Tuple[int, int]], logdir: str, enabled: bool = True,
               total_steps: Optional[int] = None):
    if steps and total_steps is not None and steps[0] > total_steps:
      raise UserError(f'--profile_steps={steps[0]},{steps[1]} starts after the last training '
                      f'step ({total_steps}); choose steps within the run')
    self._first, self._last = steps or (None, None)
    self._enabled = enabled
    self._logdir = logdir
    self.active = False
    self.done = False

  def clip(self, step: int, size: int) -> int:
    """Steps for the host call that starts after `step` steps, at most `size`."""
    if self._first is None:
      return size
    for boundary in (self._first - 1, self._last):
      if step < boundary < step + size:
        return boundary - step
    return size

  def before_loop(self, step: int) -> None:
    if self._first is None or not self._enabled or self.active or self.done:
      return
    if self._first - 1 <= step < self._last:
      if step > self._first - 1:  # A resumed run that starts inside the window.
        logging.warning('profiling from step %d, not %d: the run resumed past it',
                        step + 1, self._first)
      try:
        tf.profiler.experimental.start(self._logdir)
      except (tf.errors.AlreadyExistsError, tf.errors.UnavailableError) as e:
        # Another profiler in this process: the run matters more than its trace.
        logging.warning('not profiling: %s', e)
        self.done = True
        return
      self.active = True
      logging.info('profiling steps %d-%d into %s', step + 1, self._last, self._logdir)

  def after_loop(self, step: int) -> None:
    if self.active and step >= self._last:
      self.stop()

  def stop(self) -> None:
    """Ends the trace (also at the end of a run that stops inside the window) and saves it."""
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
      self.done = True
