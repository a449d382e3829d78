"""The TensorBoard pieces on their own: event files, pictures, confusion counts, input wait."""

import time

import numpy as np
import pytest
import tensorflow as tf

from tests import tb_events
from trainer.model import input_wait
from trainer.model import metrics
from trainer.report import pictures
from trainer.report import summaries

CLASSES = ['airplane', 'automobile', 'bird']


def _write_a_run(logdir):
  run = summaries.RunSummaries(str(logdir))
  run.hparams({'batch_size': 64, 'learning_rate': 1e-3, 'strategy': 'mirrored',
               'jit_compile': False}, trial_id=str(logdir))
  images = np.zeros((4, 8, 8, 3), np.uint8)
  run.training_images(images, [0, 1, 2, 0], CLASSES)
  for step, loss in ((10, 2.0), (20, 1.5)):
    run.train_interval(step, loss=loss, accuracy=0.25, learning_rate=1e-3,
                       examples_per_second=5000.0, step_time=0.0128, input_wait_fraction=0.1)
  run.evaluation(20, loss=1.4, accuracy=0.5, confusion=np.array([[5, 1, 0], [2, 3, 0],
                                                                  [0, 0, 4]]),
                 class_names=CLASSES)
  run.final_metrics(20, eval_loss=1.4, eval_accuracy=0.5)
  run.close()


def test_scalars_images_and_hparams_read_back(tmp_path):
  _write_a_run(tmp_path)
  train = tb_events.scalars(tmp_path / 'train')
  assert set(train) == set(summaries.TRAIN_SCALARS)
  assert train['loss'] == [(10, 2.0), (20, 1.5)]
  assert train['step_time'][0] == (10, pytest.approx(0.0128))
  assert train['input_wait_fraction'][1] == (20, pytest.approx(0.1))
  evaluation = tb_events.scalars(tmp_path / 'eval')
  assert evaluation == {'loss': [(20, pytest.approx(1.4))], 'accuracy': [(20, 0.5)],
                        # Each class's share of its examples predicted right (the rows).
                        'per_class/airplane': [(20, pytest.approx(5 / 6))],
                        'per_class/automobile': [(20, pytest.approx(3 / 5))],
                        'per_class/bird': [(20, 1.0)]}

  (grid_step, grid), = tb_events.images(tmp_path / 'train')['training_images']
  assert grid_step == 0 and grid.ndim == 3 and grid.shape[2] == 3
  (matrix_step, matrix), = tb_events.images(tmp_path / 'eval')['confusion_matrix']
  assert matrix_step == 20 and min(matrix.shape[:2]) > 100

  session, experiment = tb_events.hparams(tmp_path)
  values = {name: value.WhichOneof('kind') and getattr(value, value.WhichOneof('kind'))
            for name, value in session.hparams.items()}
  assert values == {'batch_size': 64, 'learning_rate': 1e-3, 'strategy': 'mirrored',
                    'jit_compile': False}
  assert session.group_name == str(tmp_path)
  metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
  assert metrics == {('', tag) for tag in summaries.HPARAMS_METRICS}
  assert tb_events.scalars(tmp_path) == {'final/eval_accuracy': [(20, 0.5)],
                                         'final/eval_loss': [(20, pytest.approx(1.4))]}


def test_a_disabled_writer_leaves_no_file(tmp_path):
  summaries.RunSummaries(str(tmp_path / 'unused')).close()
  assert not (tmp_path / 'unused').exists()  # Folders appear with their first summary.
  run = summaries.RunSummaries(str(tmp_path / 'run'), enabled=False)
  run.hparams({'seed': 1}, trial_id='x')
  run.final_metrics(1, eval_loss=1.0, eval_accuracy=0.5)
  run.training_images(np.zeros((1, 8, 8, 3), np.uint8), [0], CLASSES)
  run.train_interval(1, loss=1.0, accuracy=0.5, learning_rate=1e-3, examples_per_second=1.0,
                     step_time=1.0, input_wait_fraction=0.0)
  run.evaluation(1, loss=1.0, accuracy=0.5, confusion=np.eye(3), class_names=CLASSES)
  run.close()
  assert not (tmp_path / 'run').exists()


def test_image_grid_shows_each_image_enlarged_with_its_label():
  images = np.zeros((3, 4, 4, 3), np.uint8)
  images[1] = (255, 0, 0)  # A red square in the second cell.
  grid = pictures.image_grid(images, [0, 1, 2], CLASSES, columns=2, cell=40)
  pad, label = 4, 12
  assert grid.shape == (2 * (40 + label + pad) + pad, 2 * (40 + pad) + pad, 3)
  x = pad + 40 + pad  # Second column, first row.
  np.testing.assert_array_equal(grid[pad:pad + 40, x:x + 40], np.full((40, 40, 3), (255, 0, 0)))
  np.testing.assert_array_equal(grid[pad:pad + 40, pad:pad + 40], 0)
  under_first = grid[pad + 40:pad + 40 + label, pad:pad + 40]
  assert (under_first < 128).any(), 'no class name drawn under the image'
  assert (grid[-(label + pad):, x:x + 40] == 255).all(), 'the empty fourth cell has a label'


def test_image_grid_takes_grayscale():
  grid = pictures.image_grid(np.full((2, 28, 28, 1), 200, np.uint8), [0, 1], CLASSES)
  assert grid.shape[2] == 3 and grid[4, 4].tolist() == [200, 200, 200]


def test_confusion_matrix_picture_shades_by_row_fraction():
  matrix = np.array([[90, 10, 0], [0, 1, 0], [0, 0, 0]])
  picture = pictures.confusion_matrix_image(matrix, CLASSES).astype(int)
  colors = {tuple(c) for c in picture.reshape(-1, 3)}
  darkest = min(colors, key=sum)
  assert sum(darkest) < 300  # Row 1's single example is all of its row: the darkest shade.
  assert (255, 255, 255) in colors
  many = pictures.confusion_matrix_image(np.ones((100, 100)), [f'c{i}' for i in range(100)])
  assert 600 <= many.shape[0] <= 1000  # Cells shrink; class names are left out.


def test_confusion_matrix_sums_replicas_and_ignores_padding(mirrored):
  labels = np.array([0, 1, 2, 2, 1, 0, 2, 1], np.int64)
  logits = np.eye(3, dtype=np.float32)[[0, 2, 2, 1, 1, 0, 0, 0]]
  weights = np.array([1, 1, 1, 1, 1, 1, 1, 0], np.float32)  # The last one is padding.
  with mirrored.scope():
    matrix = metrics.ConfusionMatrix(3)
  dataset = mirrored.experimental_distribute_dataset(
      tf.data.Dataset.from_tensor_slices((labels, logits, weights)).batch(4))

  @tf.function
  def run(batch):
    mirrored.run(matrix.add, args=batch)

  for batch in dataset:
    run(batch)
  expected = np.zeros((3, 3), np.int64)
  for label, prediction, weight in zip(labels, logits.argmax(1), weights):
    expected[label, prediction] += int(weight)
  np.testing.assert_array_equal(matrix.result(), expected)
  matrix.reset()
  assert matrix.result().sum() == 0


def _slow(x, seconds):
  time.sleep(float(seconds))  # Stands for a slow file system, however idle the CPU.
  return x


def _batches(seconds_per_batch, prefetch):
  ds = tf.data.Dataset.from_tensors(tf.ones((256, 256))).repeat()
  ds = ds.map(lambda x: tf.py_function(_slow, [x, seconds_per_batch], tf.float32))
  if prefetch:
    return ds.prefetch(4)
  # No batch made ahead at all: tf.data would otherwise add a prefetch of its own.
  options = tf.data.Options()
  options.experimental_optimization.inject_prefetch = False
  return ds.with_options(options)


def _measure(dataset, matmuls, steps):
  weights = tf.Variable(tf.eye(256))

  def step(x):
    for _ in range(matmuls):  # A chain of dependent matmuls: compute time per step.
      x = tf.tanh(tf.matmul(x, weights))
    weights.assign_add(0.0 * x)

  loop = tf.function(lambda it, n: input_wait.timed_loop(it, n, step))
  iterator = iter(dataset)
  loop(iterator, tf.constant(1))  # Traces; the timing below is of the compiled loop.
  waited, total = (float(t) for t in loop(iterator, tf.constant(steps)))
  return waited, total


def test_input_wait_is_the_whole_loop_when_input_is_slow():
  waited, total = _measure(_batches(0.03, prefetch=False), matmuls=0, steps=12)
  assert waited >= 12 * 0.03  # Each batch is made on request: the sleeps are all waited.
  assert waited / total > 0.8


def test_input_wait_is_near_zero_when_compute_is_the_bottleneck():
  # Slow input (10 ms a batch), prefetched, under steps several times slower: batches are
  # ready when asked for. A wait counted while the previous step still computes would
  # make this near 1.
  waited, total = _measure(_batches(0.01, prefetch=True), matmuls=200, steps=8)
  assert total > 8 * 0.03
  assert waited / total < 0.3


def test_without_clocks_the_loop_has_no_clock_op_and_an_unknown_wait():
  counter = tf.Variable(0, dtype=tf.int64)
  loop = tf.function(lambda it, n: input_wait.timed_loop(
      it, n, counter.assign_add, clocked=False))
  iterator = iter(tf.data.Dataset.range(10))
  waited, total = loop(iterator, tf.constant(4))
  assert int(counter.numpy()) == 0 + 1 + 2 + 3
  assert input_wait.fraction(waited, total) is None
  assert input_wait.fraction(1.0, 4.0) == 0.25
  # Op determinism (--deterministic) makes any Timestamp op fail, loop bodies included.
  graph = loop.get_concrete_function(iterator, tf.constant(4)).graph.as_graph_def()
  ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
  assert 'Timestamp' not in ops and 'While' in ops or 'StatelessWhile' in ops


def test_an_unmeasured_input_wait_is_left_out(tmp_path):
  run = summaries.RunSummaries(str(tmp_path))
  run.train_interval(1, loss=1.0, accuracy=0.5, learning_rate=1e-3, examples_per_second=1.0,
                     step_time=1.0, input_wait_fraction=None)
  run.close()
  assert set(tb_events.scalars(tmp_path / 'train')) == set(summaries.TRAIN_SCALARS) - {
      summaries.INPUT_WAIT_FRACTION}


def test_input_wait_under_a_distributed_iterator(mirrored):
  dataset = mirrored.experimental_distribute_dataset(_batches(0.03, prefetch=False))
  iterator = iter(dataset)

  @tf.function
  def loop(n):
    return input_wait.timed_loop(iterator, n, lambda batch: mirrored.run(tf.reduce_sum, (batch,)))

  waited, total = (float(t) for t in loop(tf.constant(4)))
  # The distributed iterator may copy a batch or two to the devices ahead of the loop.
  assert waited >= 2 * 0.03 and waited <= total
