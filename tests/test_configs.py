"""Every preset in configs/ parses as the trainer parses it and passes its validation."""

from absl import flags
import pytest

from tests.conftest import REPO
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


@pytest.mark.parametrize('name', ['multi_gpu', 'multi_worker', 'tpu'])
def test_scale_out_presets_train_the_tutorials_epochs_with_the_large_batch_recipe(name):
  config = load(REPO / 'configs' / f'{name}.cfg')
  assert config.epochs == 5 and config.train_steps == 0
  assert config.batch_size >= 8 * TUTORIAL_BATCH
  assert config.eval_flip and config.lr_schedule == 'cosine' and config.warmup_epochs
  # The rate is stated for the preset's own batch, so it is used as written there.
  assert config.base_batch_size == config.batch_size
  assert config.scaled_learning_rate == config.learning_rate


def test_fast_preset_keeps_the_tutorials_model_and_epochs():
  config = load(REPO / 'configs' / 'fast.cfg')
  assert config.epochs == 5 and config.eval_flip


def test_tpu_preset():
  config = load(REPO / 'configs' / 'tpu.cfg')
  assert config.strategy == 'tpu' and config.mixed_precision == 'mixed_bfloat16'
  assert config.batch_size >= 1024 and config.batch_size % 8 == 0  # v2/v3-8: 8 cores.
  assert config.steps_per_loop > 50_000 // config.batch_size  # A whole epoch per call.
  assert config.data_dir.startswith('gs://') and config.model_dir.startswith('gs://')
