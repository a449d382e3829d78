"""--optimizer=muon: Keras' Muon with the conv kernels orthogonalised too (trainer/model/muon.py).

The step is checked against an independent NumPy Muon; where it runs (mixed precision,
MirroredStrategy) against what the other settings compute. Bit-exact resume under
MirroredStrategy is tests/test_large_batch.py's, multi-worker tests/test_multi_worker.py's,
GPU kernels tests/test_gpu_kernels.py's and XLA tests/test_xla_compile.py's: all of them
run the presets, which use Muon.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_source
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.data import pipeline
from trainer.jobs import evaluation
from trainer.jobs import train
from trainer.model import cnn
from trainer.model import muon
from trainer.model import optimizers
from trainer.model import steps
from trainer.run_folder import locate
from trainer.run_folder import records

RATE = 1e-2


def _reference_update(gradient, rate, momentum=0.95, rms_rate=0.2, steps_=5):
  """Muon's first step, from the papers' formulas in float64: Nesterov momentum from zero,
  the quintic Newton-Schulz iteration on the [kh*kw*in, out] matrix, Moonlight's scale."""
  a, b, c = 3.4445, -4.7750, 2.0315
  matrix = gradient.reshape(-1, gradient.shape[-1]).astype(np.float64) * (1 + momentum)
  x = matrix.T if matrix.shape[0] > matrix.shape[1] else matrix
  x = x / (np.linalg.norm(x) + 1e-7)
  for _ in range(steps_):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  x = x.T if matrix.shape[0] > matrix.shape[1] else x
  return (rate * x * np.sqrt(max(matrix.shape)) * rms_rate).reshape(gradient.shape)


def _kinds(optimizer, model):
  """{'muon' or 'adamw': [variable paths]}: which step each trainable variable takes."""
  kinds = {'muon': [], 'adamw': []}
  for variable in model.trainable_variables:
    adamw = optimizer._should_use_adamw(variable)  # pylint: disable=protected-access
    kinds['adamw' if adamw else 'muon'].append(variable.path)
  return kinds


def test_the_conv_kernels_and_the_hidden_kernel_take_the_muon_step():
  model = cnn.create_model((32, 32, 3), 10)
  kernels = [v for v in model.trainable_variables if v.path.endswith('/kernel')]
  convs = [v.path for v in kernels if len(v.shape) == 4]
  hidden = [v.path for v in kernels if len(v.shape) == 2 and cnn.OUTPUT_LAYER not in v.path]
  assert len(convs) == 2 and len(hidden) == 1
  kinds = _kinds(optimizers.create(Config(optimizer='muon'), RATE), model)
  assert kinds['muon'] == convs + hidden
  assert all('bias' in path or cnn.OUTPUT_LAYER in path for path in kinds['adamw'])
  # --nomuon_conv: Keras' Muon as it is, the dense kernel only.
  old = _kinds(optimizers.create(Config(optimizer='muon', muon_conv=False), RATE), model)
  assert old['muon'] == hidden


@pytest.mark.parametrize('shape', [(3, 3, 3, 32), (3, 3, 32, 32)])
def test_a_conv_kernel_moves_by_the_orthogonalised_momentum_of_its_matrix(shape):
  kernel = keras.Variable(np.random.default_rng(0).normal(size=shape).astype(np.float32))
  gradient = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  optimizer = optimizers.create(Config(optimizer='muon', weight_decay=0.0), RATE)
  before = kernel.numpy()
  optimizer.apply_gradients([(tf.constant(gradient), kernel)])
  update = before - kernel.numpy()
  expected = _reference_update(gradient, RATE)
  # Float32 against float64: the iteration's rounding, far below the update itself.
  np.testing.assert_allclose(update, expected, atol=1e-3 * np.abs(expected).max())
  # Orthogonalised: every singular value of the [kh*kw*in, out] step near the same size
  # (the quintic iteration lands them between about 0.7 and 1.2, not exactly at 1).
  singular = np.linalg.svd(update.reshape(muon.as_matrix_shape(shape)), compute_uv=False)
  singular /= RATE * np.sqrt(max(muon.as_matrix_shape(shape))) * 0.2
  assert singular.min() > 0.5 and singular.max() < 1.3, singular


def test_the_adamw_branch_moves_at_its_share_of_the_rate():
  moves = []
  for ratio in (None, 0.3):
    bias = keras.Variable(np.zeros(10, np.float32))
    config = Config(optimizer='muon', weight_decay=0.0, muon_adam_lr_ratio=ratio)
    optimizers.create(config, RATE).apply_gradients([(tf.linspace(-1.0, 1.0, 10), bias)])
    moves.append(bias.numpy())
  np.testing.assert_allclose(moves[1], 0.3 * moves[0], rtol=1e-5)
  assert np.abs(moves[0]).max() == pytest.approx(RATE, rel=1e-3)  # Adam's first step: the rate.


@pytest.mark.parametrize('precision', ['mixed_float16', 'mixed_bfloat16'])
def test_under_mixed_precision_the_iteration_runs_in_float32(precision, monkeypatch):
  seen = []
  iterate = muon.ConvMuon.zeropower_via_newtonschulz5

  def recording(self, x, steps_):
    seen.append((tuple(x.shape), x.dtype.name))
    return iterate(self, x, steps_)

  monkeypatch.setattr(muon.ConvMuon, 'zeropower_via_newtonschulz5', recording)
  source = make_source()
  config = Config(batch_size=32, optimizer='muon', learning_rate=RATE, steps_per_loop=1,
                  mixed_precision=precision)
  strategy = tf.distribute.get_strategy()
  trainer = steps.build_trainer(config, strategy, source.info)
  before = trainer.model.get_weights()
  iterator = pipeline.distributed_train_iterator(strategy, source, 32, steps_per_epoch=16,
                                                 seed=0, shuffle_buffer=512)
  trainer.train_loop(iterator, tf.constant(2))
  # Traced once (float16 traces a second branch for the skipped step's no-op: no call).
  assert sorted(set(seen)) == [((3, 3, 3, 32), 'float32'), ((3, 3, 32, 32), 'float32'),
                               ((1152, 64), 'float32')]
  after = trainer.model.get_weights()
  for old, new in zip(before, after):
    assert np.isfinite(new).all() and not np.array_equal(old, new)


def test_every_replica_applies_the_same_update_as_one_device_would(mirrored):
  source = make_source()
  config = Config(batch_size=32, optimizer='muon', learning_rate=RATE, steps_per_loop=1)
  weights = {}
  start = None
  for strategy in (tf.distribute.get_strategy(), mirrored):
    trainer = steps.Trainer(config, strategy, source.info)
    if start is None:
      start = trainer.model.get_weights()
    trainer.model.set_weights(start)
    iterator = pipeline.distributed_train_iterator(strategy, source, 32, steps_per_epoch=16,
                                                   seed=0, shuffle_buffer=512)
    trainer.train_loop(iterator, tf.constant(1))
    weights[strategy.num_replicas_in_sync] = trainer.model.get_weights()
  variables = trainer.model.trainable_variables
  for variable in variables:
    copies = [v.numpy() for v in mirrored.experimental_local_results(variable.value)]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1], err_msg=variable.path)
  muon_steps = [i for i, v in enumerate(variables)
                if not trainer.optimizer._should_use_adamw(v)]  # pylint: disable=protected-access
  assert len(muon_steps) == 3
  for i in muon_steps:
    # Two replicas sum the gradient in another order: the orthogonalised steps agree to far
    # less than their size. (Not so AdamW's: its first step blows rounding in a near-zero
    # gradient up to a step of the full rate, of either sign.)
    one, two = weights[1][i] - start[i], weights[2][i] - start[i]
    assert np.linalg.norm(two - one) < 1e-3 * np.linalg.norm(one)


def test_a_muon_run_from_before_conv_kernels_resumes_only_with_nomuon_conv(tmp_path):
  source = make_source()
  config = Config(optimizer='muon', muon_conv=False, batch_size=32, epochs=0, train_steps=4,
                  steps_per_loop=4, model_dir=str(tmp_path))
  train.train_and_evaluate(config, None, source)
  with pytest.raises(UserError, match='muon_conv_kernels: checkpoint False vs now True.*'
                     '--nomuon_conv'):
    train.train_and_evaluate(config.replace(muon_conv=True, train_steps=8), None, source)
  resumed = train.train_and_evaluate(config.replace(train_steps=8), None, source)
  assert resumed.metrics['global_step'] == 8


def test_a_muon_run_recorded_before_muon_conv_evaluates_and_starts_a_fine_tuning(tmp_path):
  source = make_source()
  old = Config(optimizer='muon', muon_conv=False, batch_size=32, epochs=0, train_steps=4,
               steps_per_loop=4, model_dir=str(tmp_path / 'old'))
  train.train_and_evaluate(old, None, source)
  # As such a run folder was written: no muon_conv in config.json or signature.json.
  for path, key in ((tmp_path / 'old' / records.CONFIG_FILE, 'muon_conv'),
                    (tmp_path / 'old' / 'checkpoints' / 'signature.json', 'muon_conv_kernels')):
    recorded = json.loads(path.read_text())
    del recorded[key]
    path.write_text(json.dumps(recorded))
  run = locate.find(str(tmp_path / 'old'))
  assert not run.config.muon_conv
  evaluator = evaluation.Evaluator(run.config, run.dirs, 'test', source=source)
  assert evaluator.evaluate(evaluator.resolve('latest')).step == 4
  new = Config(batch_size=32, epochs=0, train_steps=2, steps_per_loop=2,
               init_from=str(tmp_path / 'old'), model_dir=str(tmp_path / 'new'))
  outcome = train.train_and_evaluate(new, None, source)
  assert outcome.metrics['global_step'] == 2


def test_the_start_line_says_which_muon_and_its_momentum():
  config = Config(optimizer='muon', learning_rate=0.0226, lr_scaling='sqrt',
                  base_batch_size=1024, momentum_scaling='linear', muon_adam_lr_ratio=0.3,
                  batch_size=4096)
  text = optimizers.describe(config)
  assert text.startswith('muon (conv and dense kernels), momentum 0.8, AdamW branch at 0.3 x '
                         'the rate, learning rate 0.0452 (sqrt scaling of 0.0226 at batch 1024')
  assert '1 - momentum scaled linearly from batch 1024' in text
  assert optimizers.describe(Config(optimizer='muon', muon_conv=False)).startswith(
      'muon (dense kernel only), momentum 0.95, learning rate 0.001')
