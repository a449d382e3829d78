"""--freeze: layers that keep the weights a run started from, for --freeze_epochs or throughout.

Frozen variables are left out of the gradients and of the optimizer's update (Trainer.freeze),
so they stay bit for bit what --init_from loaded or --whiten_init computed, whatever the
optimizer's weight decay; when the freeze ends, the train step is traced again with every
variable. A whitening first convolution held throughout is what the CIFAR-10 speed runs do:
large early steps would otherwise undo the decorrelation it starts with.
"""

from typing import List

from absl import logging
import keras

from trainer.core.config import Config
from trainer.model import cnn


def frozen_layers(model: keras.Model, freeze: str) -> List[keras.layers.Layer]:
  """The layers `freeze` names: first_conv; conv, both conv layers; all_but_head, all but
  the output."""
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  if freeze == 'first_conv':
    return convs[:1]
  if freeze == 'conv':
    return convs
  if freeze == 'all_but_head':
    return [layer for layer in model.layers
            if layer.trainable_weights and layer.name != cnn.OUTPUT_LAYER]
  return []


def freeze_steps(config: Config, steps_per_epoch: int, total_steps: int) -> int:
  """The step the freeze ends at (total_steps when it lasts the whole run; 0 without one)."""
  if config.freeze == 'none' or config.batch_size < config.freeze_min_batch:
    return 0
  if not config.freeze_epochs:
    return total_steps
  return min(total_steps, max(1, round(config.freeze_epochs * steps_per_epoch)))


class Freezing:
  """Holds --freeze's layers until its step; train loops stop at that step, so none spans it."""

  def __init__(self, config: Config, trainer, steps_per_epoch: int, total_steps: int):
    self.trainer = trainer
    self.layers = frozen_layers(trainer.model, config.freeze)
    self.until = freeze_steps(config, steps_per_epoch, total_steps)
    self.frozen = False
    if config.freeze != 'none' and not self.until:
      logging.info('--freeze=%s not applied: batch %d is below --freeze_min_batch=%d, so every '
                   'layer trains', config.freeze, config.batch_size, config.freeze_min_batch)

  def before_loop(self, step: int, size: int) -> int:
    """Freezes or thaws for the loop starting at `step`; returns its size, cut at the thaw."""
    want = step < self.until
    if want != self.frozen:
      self.trainer.freeze([v for layer in self.layers for v in layer.trainable_weights]
                          if want else [])
      self.frozen = want
      names = ', '.join(layer.name for layer in self.layers)
      if want:
        logging.info('frozen until step %d: %s', self.until, names)
      else:
        logging.info('step %d: the freeze ends; %s train from here on', step, names)
    return min(size, self.until - step) if want else size
