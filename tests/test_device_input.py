"""--input=device: the host pipeline's batches, held and drawn on the replicas' devices.

That whole runs on either input end with the same weights, to the bit, is checked with the
preemption tests (tests/test_preemption.py): the device run, killed and resumed, against the
uninterrupted host run."""

import collections
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.batches import device_batches, host_batches
from tests.conftest import example_ids, id_source, make_source, run_workers
from tests.test_main import run_main
from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.data import device_input
from trainer.data import pipeline
from trainer.data import shards
from trainer.jobs import train


def _strategy(replicas, mirrored):
  return mirrored if replicas == 2 else tf.distribute.get_strategy()


def _assert_same(first, second):
  assert len(first) == len(second)
  for step, (a, b) in enumerate(zip(first, second)):
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
      np.testing.assert_array_equal(labels_a, labels_b, err_msg=f'step {step}')
      np.testing.assert_array_equal(images_a, images_b, err_msg=f'step {step}')


@pytest.mark.tpu_path
@pytest.mark.parametrize('augment', ['none', 'flip_shift'])
@pytest.mark.parametrize('replicas', [1, 2])
def test_device_draws_exactly_the_host_batches(replicas, augment, mirrored):
  strategy = _strategy(replicas, mirrored)
  # 203 examples: 25 steps an epoch, some left over.
  source = make_source(num_train=203, num_eval=10)
  settings = dict(global_batch=8, steps_per_epoch=25, seed=7, augment=augment)
  host = host_batches(strategy, source, 60, **settings)  # Into the third epoch.
  _assert_same(host, device_batches(strategy, source, 60, **settings))
  # A resumed run, mid-epoch: the same batches from that step on, from either input.
  _assert_same(host[37:], device_batches(strategy, source, 23, start_step=37, **settings))
  if augment != 'none':
    plain = host_batches(strategy, source, 5, **dict(settings, augment='none'))
    assert not np.array_equal(plain[0][0][0], host[0][0][0])


@pytest.mark.parametrize('replicas', [1, 2])
def test_device_input_shows_every_example_once_per_epoch(replicas, mirrored):
  strategy = _strategy(replicas, mirrored)
  source = id_source(num_train=96, num_eval=10)
  batches = device_batches(strategy, source, 24, global_batch=8, steps_per_epoch=12, seed=3)
  epochs = [np.concatenate([example_ids(part[0]) for step in epoch for part in step])
            for epoch in (batches[:12], batches[12:])]
  for ids in epochs:
    assert sorted(ids.tolist()) == list(range(96))
  assert not np.array_equal(epochs[0], epochs[1])  # Each epoch has its own order.


def test_the_replicas_of_a_worker_split_its_batches_so_their_number_changes_nothing(mirrored):
  """One device or two: the same global batches, so a run can resume on either."""
  source = make_source(num_train=203, num_eval=10)
  settings = dict(global_batch=8, steps_per_epoch=25, seed=7, augment='flip_shift')
  one = device_batches(tf.distribute.get_strategy(), source, 30, **settings)
  two = device_batches(mirrored, source, 30, **settings)
  for single, (first, second) in zip(one, two):
    np.testing.assert_array_equal(single[0][0], np.concatenate([first[0], second[0]]))
    np.testing.assert_array_equal(single[0][1], np.concatenate([first[1], second[1]]))


def test_each_device_holds_the_images_as_rows_of_int32_words(mirrored):
  """GPUs gather int32 but not uint8, and 768 words a CIFAR row is a whole number of TPU
  tiles; the rows hold the images' bytes, nothing more."""
  source = make_source(num_train=64)
  iterator = pipeline.distributed_train_iterator(mirrored, source, 8, 8, 0,
                                                 input_mode='device')
  rows = [local[0] for local in mirrored.experimental_local_results(next(iterator))]
  assert [t.device.split(':')[-1] for t in rows] == ['0', '1']
  assert [(t.dtype, tuple(t.shape)) for t in rows] == [(tf.int32, (64, 768))] * 2
  images = source.read('train', 0, 1).batch(64).get_single_element()[0]
  np.testing.assert_array_equal(rows[0].numpy().view(np.uint8).reshape(64, 32, 32, 3), images)


@pytest.mark.parametrize('shape', [(32, 32, 3), (5, 3, 1), (2, 2, 1)])
def test_rows_pad_each_image_to_whole_words_and_unpack_to_the_images(shape):
  images = np.random.default_rng(0).integers(0, 256, size=(6,) + shape, dtype=np.uint8)
  rows = shards.as_rows(tf.constant(images))
  assert rows.dtype == tf.int32 and rows.shape == (6, -(-int(np.prod(shape)) // 4))
  np.testing.assert_array_equal(shards.from_rows(rows, shape), images)


def test_the_limit_counts_the_data_as_a_tpu_pads_it():
  # 100 examples of 5x3x1 bytes: rows of 4 words padded to 128 and 104 rows; int64 labels
  # fill one tile of 1024.
  source = make_source(num_train=100, shape=(5, 3, 1))
  assert device_input.check_fits(source, 1, 1) == 104 * 128 * 4 + 1024 * 8
  # CIFAR-10's rows of 768 words and 50,000 examples need no padding but the labels'.
  cifar = make_source(num_train=8, shape=(32, 32, 3))
  cifar.info = dataclasses.replace(cifar.info, num_train_examples=50_000)
  assert shards.device_shard_bytes(cifar, 1) == 50_000 * 3072 + 50_176 * 8


def test_data_over_the_limit_is_refused_before_training(tmp_path):
  # 512 examples of 32x32x3 bytes and an int64 label: 1.6 MB.
  config = Config(model_dir=str(tmp_path), input='device', device_data_max_mb=1)
  with pytest.raises(UserError, match=r'takes 2 MB on each device .* over '
                                      r'--device_data_max_mb=1; use --input=host'):
    train.train_and_evaluate(config, source=make_source(num_train=512))
  assert not (tmp_path / 'checkpoints').exists()


@pytest.mark.slow
def test_the_command_line_gives_one_line_for_data_over_the_limit(tmp_path, cifar_dir):
  result = run_main('--input=device', '--device_data_max_mb=100', f'--data_dir={cifar_dir}',
                       f'--model_dir={tmp_path}')
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last == ('error: --input=device: cifar10 takes 147 MB on each device (1 worker(s)), '
                  'over --device_data_max_mb=100; use --input=host (batches made on the host), '
                  'or raise --device_data_max_mb if the device has room')
  assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_two_workers_draw_the_host_batches_from_their_own_shards(tmp_path):
  run_workers(lambda index: ['tests.input_worker_child', str(tmp_path / f'w{index}.json')])
  workers = [json.loads((tmp_path / f'w{index}.json').read_text()) for index in range(2)]
  for worker in workers:
    assert worker['replicas'] == 2 and worker['host'] == worker['device']
    assert worker['host_flip_shift'] == worker['device_flip_shift']
  # 64 examples, global batch 8: 8 steps an epoch, 4 examples per replica per step.
  for epoch in range(2):
    seen = collections.Counter()
    for worker in workers:
      for step in worker['device'][epoch * 8:(epoch + 1) * 8]:
        seen.update(step['ids'])
    assert sorted(seen) == list(range(64)) and set(seen.values()) == {1}
  shards = [{i for step in worker['device'] for i in step['ids']} for worker in workers]
  assert not shards[0] & shards[1]
