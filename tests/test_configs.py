"""Every preset in configs/ parses as the trainer parses it and passes its validation."""

from absl import flags
import pytest

from tests.conftest import REPO
from trainer.core.config import Config
from trainer import flags as trainer_flags

PRESETS = sorted((REPO / 'configs').glob('*.cfg'))
TUTORIAL_BATCH, TUTORIAL_RATE = 64, 1e-3


def load(path, *more_flags):
  values = flags.FlagValues()
  trainer_flags.define_flags(values)
  values(['trainer', f'--flagfile={path}', *more_flags])
  return trainer_flags.config_from_flags(values)


def test_the_presets_are_all_here():
  assert {p.stem for p in PRESETS} >= {'tutorial', 'multi_gpu', 'multi_worker', 'tpu'}


@pytest.mark.parametrize('path', PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_parses_and_validates(path):
  config = load(path)
  assert config.dataset == 'cifar10'


def test_later_flags_override_a_preset():
  assert load(REPO / 'configs' / 'multi_gpu.cfg', '--epochs=1').epochs == 1


def test_tutorial_is_the_tutorial():
  config = load(REPO / 'configs' / 'tutorial.cfg')
  assert (config.strategy, config.batch_size, config.learning_rate, config.epochs) == (
      'default', TUTORIAL_BATCH, TUTORIAL_RATE, 5)


# What tells runs of one recipe apart: where they run, and how many examples a step takes.
# (--input changes where batches are made, not which: tests/test_device_input.py.)
_PLACEMENT = ('strategy', 'mixed_precision', 'steps_per_loop', 'data_dir', 'model_dir',
              'batch_size', 'learning_rate', 'lr_scaling', 'base_batch_size', 'momentum_scaling',
              'input')


@pytest.mark.parametrize('name', ['fast', 'multi_gpu', 'multi_worker', 'tpu'])
def test_presets_are_the_measured_large_batch_recipe_at_their_batch(name):
  """README's figures for these presets are configs/scaling.cfg's at the same batch."""
  config = load(REPO / 'configs' / f'{name}.cfg')
  recipe = load(REPO / 'configs' / 'scaling.cfg', f'--batch_size={config.batch_size}')
  assert config.epochs == 5 and config.train_steps == 0
  assert config.scaled_learning_rate == recipe.scaled_learning_rate
  assert config.scaled_momentum == recipe.scaled_momentum
  differences = {field for field in Config.__dataclass_fields__
                 if getattr(config, field) != getattr(recipe, field)}
  assert differences <= set(_PLACEMENT)


@pytest.mark.parametrize('name', ['multi_gpu', 'multi_worker', 'tpu'])
def test_accelerator_presets_hold_the_data_on_the_device_and_pick_their_precision(name):
  config = load(REPO / 'configs' / f'{name}.cfg')
  assert config.input == 'device' and config.mixed_precision == 'auto'


def test_tpu_preset():
  config = load(REPO / 'configs' / 'tpu.cfg')
  assert config.strategy == 'tpu' and config.mixed_precision == 'auto'  # bfloat16 there.
  assert config.batch_size >= 1024 and config.batch_size % 8 == 0  # v2/v3-8: 8 cores.
  assert config.steps_per_loop > 50_000 // config.batch_size  # A whole epoch per call.
  assert config.data_dir.startswith('gs://') and config.model_dir.startswith('gs://')


@pytest.mark.parametrize('batch', [64, 128, 256, 512, 1024, 2048, 4096])
@pytest.mark.parametrize('target', [0.65, 0.7])
def test_time_to_target_preset_follows_the_batch_and_the_target(batch, target):
  from trainer.jobs import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from trainer.jobs import target as target_lib  # pylint: disable=g-import-not-at-top
  config = load(REPO / 'configs' / 'time_to_target.cfg', f'--batch_size={batch}',
                f'--target_accuracy={target}')
  info = type('Info', (), dict(num_train_examples=50_000, name='cifar10'))
  replicas = type('One', (), dict(num_replicas_in_sync=1))
  plan = plan_lib.make_plan(config, info, replicas)
  assert plan.total_steps == target_lib.schedule_steps(batch, target)
  assert plan.eval_every_steps == -(-16384 // batch) and not plan.eval_at_epoch_ends
  assert config.scaled_learning_rate == pytest.approx(0.0452 * min(batch / 1024, 1) ** 0.5)
  assert config.scaled_momentum == pytest.approx(0.9 if batch <= 1024 else
                                                 1 - 0.1 * batch / 1024)
  assert config.mixed_precision == 'auto' and config.warmup_fraction == 0.1
  assert config.whiten_init and config.whiten_init_all and config.optimizer == 'muon'
  assert config.lr_schedule == 'wsd' and config.wsd_decay_fraction == 0.3
  # The whitening layer is held from batch 512 up, trained below.
  assert config.freeze == 'first_conv' and config.freeze_min_batch == 512
