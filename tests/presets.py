"""Every preset (configs/*.cfg) and the defaults, reduced to the settings that shape the
compiled train and eval steps, for tests that check those steps."""

import dataclasses

from tests.conftest import REPO
from tests.test_configs import load
from trainer.core.config import Config

# Settings that only set a number, a path or a name in the compiled steps: cases that differ
# in nothing else build the same ops, so one of them stands for all.
_NOT_SHAPING = dict(batch_size=8, base_batch_size=8, learning_rate=1e-3, epochs=1,
                    train_steps=0, steps_per_loop=2, seed=0, dataset='cifar10', data_dir=None,
                    model_dir=None, tpu='', lr_scaling='none', device_data_max_mb=2048,
                    checkpoint_every_steps=500, eval_every_steps=0, keep_checkpoints=3,
                    warmup_epochs=0.5)


def _shaping(config: Config) -> Config:
  values = dict(_NOT_SHAPING)
  if config.mixed_precision == 'auto':
    # What auto picks on a TPU and on GPUs from compute capability 8.0 on, the hardware the
    # presets are for: the CPU that runs the tests (with or without bfloat16 units) must not
    # decide which steps are checked.
    values['mixed_precision'] = 'mixed_bfloat16'
  if not config.warmup_epochs:  # Warm-up or not changes the schedule's ops; its length not.
    values['warmup_epochs'] = 0.0
  return dataclasses.replace(config, **values)


def presets():
  """[(names, Config)]: the distinct step-shaping configurations of the presets and the
  defaults, each with the names of the presets it stands for."""
  named = [('defaults', Config())] + [
      (path.stem, load(path)) for path in sorted((REPO / 'configs').glob('*.cfg'))]
  distinct = {}
  for name, config in named:
    distinct.setdefault(_shaping(config), []).append(name)
  return [('+'.join(names), config) for config, names in distinct.items()]
