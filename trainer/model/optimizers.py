"""The optimizer of a run and its learning rate: Keras' optimizers and schedules, plus the
one schedule Keras lacks (warmup-stable-decay).

--learning_rate is the rate for --base_batch_size; with --lr_scaling the rate for the actual
global batch is derived here (Goyal et al. 2017: linear; Krizhevsky 2014 and the LAMB paper:
square root), so one preset stays right on 1, 8 or 64 replicas.
"""

import keras

from trainer.core.config import Config
from trainer.model import cnn
from trainer.model import muon

# Biases take no weight decay: decaying them only pulls activations' offsets towards 0.
_NO_DECAY = ['bias']


@keras.saving.register_keras_serializable('trainer')
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up, the peak rate held, then a linear decay to 0 over the last `decay_steps`.

  Keras has no such schedule. Short large-batch runs gain from it: cosine starts lowering the
  rate from the first step after the warm-up, while here most steps take the full rate
  (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
  Durations"; benchmarks/time_to_target.md has what it gave).
  """

  def __init__(self, peak, warmup_steps, decay_steps, total_steps):
    self.peak, self.warmup_steps = float(peak), int(warmup_steps)
    self.decay_steps, self.total_steps = int(decay_steps), int(total_steps)

  def __call__(self, step):
    step = keras.ops.cast(step, 'float32')
    rate = keras.ops.minimum(self.peak * (self.total_steps - step) / self.decay_steps, self.peak)
    if self.warmup_steps:
      rate = keras.ops.minimum(rate, self.peak * step / self.warmup_steps)
    return keras.ops.maximum(rate, 0.0)

  def get_config(self):
    return {'peak': self.peak, 'warmup_steps': self.warmup_steps,
            'decay_steps': self.decay_steps, 'total_steps': self.total_steps}


def learning_rate_schedule(config: Config, total_steps: int, steps_per_epoch: int):
  """A float (constant) or a Keras schedule whose peak is the scaled rate."""
  peak = config.scaled_learning_rate
  if config.lr_schedule == 'constant':
    return peak
  if not total_steps:
    raise ValueError(f'a {config.lr_schedule} schedule needs the run\'s total_steps')
  warmup = min(config.warmup_steps_for(steps_per_epoch, total_steps), total_steps - 1)
  if config.lr_schedule == 'wsd':
    decay = min(max(1, round(config.wsd_decay_fraction * total_steps)), total_steps - warmup)
    return WarmupStableDecay(peak, warmup, decay, total_steps)
  # Starts at 0 and warms up linearly when warmup > 0, else starts at the peak.
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup else peak,
      decay_steps=max(total_steps - warmup, 1),
      warmup_target=peak if warmup else None, warmup_steps=warmup)


def create(config: Config, learning_rate) -> keras.optimizers.Optimizer:
  """The Keras optimizer named by --optimizer, with Keras' own weight averaging (EMA)."""
  common = dict(learning_rate=learning_rate)
  if config.ema_decay:
    # No overwrite: training goes on with the raw weights; steps.Trainer swaps the
    # averages in for evaluation, the best model and the export.
    common.update(use_ema=True, ema_momentum=config.ema_decay, ema_overwrite_frequency=None)
  decay = {} if config.weight_decay is None else {'weight_decay': config.weight_decay}
  name = config.optimizer
  if name == 'adam':
    optimizer = keras.optimizers.Adam(**common)
  elif name == 'adamw':
    optimizer = keras.optimizers.AdamW(**common, **decay)
  elif name == 'lamb':
    optimizer = keras.optimizers.Lamb(**common, **decay)
  elif name == 'lion':
    optimizer = keras.optimizers.Lion(**common, **decay)
  elif name == 'sgd':
    optimizer = keras.optimizers.SGD(**common, **decay, momentum=config.scaled_momentum,
                                     nesterov=config.nesterov)
  elif name == 'muon':
    # Muon orthogonalises the updates of the hidden dense kernel and, with --muon_conv,
    # of the conv kernels; biases and the output layer take its built-in AdamW, as the
    # Muon authors advise.
    options = {'exclude_layers': [cnn.OUTPUT_LAYER], 'momentum': config.scaled_momentum}
    if config.muon_adam_lr_ratio is not None:
      options['adam_lr_ratio'] = config.muon_adam_lr_ratio
    if config.weight_decay is not None:
      decay = {'weight_decay': config.weight_decay, 'adam_weight_decay': config.weight_decay}
    kind = muon.ConvMuon if config.muon_conv else keras.optimizers.Muon
    optimizer = kind(**common, **decay, **options)
  else:
    raise ValueError(f'unknown optimizer {name!r}')  # Config.validate() catches it first.
  if optimizer.weight_decay:
    optimizer.exclude_from_weight_decay(var_names=_NO_DECAY)
  return optimizer


def describe(config: Config) -> str:
  """The optimizer and its effective peak rate, for the start-of-run line."""
  name = config.optimizer
  if name == 'muon':
    name += ' (conv and dense kernels)' if config.muon_conv else ' (dense kernel only)'
    name += f', momentum {config.scaled_momentum:.3g}'
    if config.muon_adam_lr_ratio is not None:
      name += f', AdamW branch at {config.muon_adam_lr_ratio:g} x the rate'
  text = f'{name}, learning rate {config.scaled_learning_rate:.4g}'
  if config.lr_scaling != 'none':
    text += (f' ({config.lr_scaling} scaling of {config.learning_rate:g} at batch '
             f'{config.base_batch_size} to batch {config.batch_size})')
  if config.momentum_scaling != 'none':
    text += (f', 1 - momentum scaled {config.momentum_scaling}ly from batch '
             f'{config.base_batch_size}')
  if config.lr_schedule == 'wsd':
    text += f', warmup-stable-decay schedule (decay over the last {config.wsd_decay_fraction:g} of the run)'
  elif config.lr_schedule != 'constant':
    text += f', {config.lr_schedule} schedule'
  if config.ema_decay:
    text += f', weight averaging {config.ema_decay:g}'
  return text
