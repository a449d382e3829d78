import collections

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import EVAL_ID_0, example_ids as _ids, id_source as _id_source
from trainer.data import pipeline
from trainer.data import sources


def _context(pipelines=1, pipeline_id=0, replicas=1):
  return tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


def test_train_batches_shapes_dtypes_and_range(small_source):
  ds = pipeline.train_dataset(small_source, _context(replicas=2), global_batch=64,
                              steps_per_epoch=8, seed=1, shuffle_buffer=1000)
  images, labels = next(iter(ds))
  assert images.shape == (32, 32, 32, 3) and images.dtype == tf.float32
  assert labels.shape == (32,) and labels.dtype == tf.int64
  assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
  assert float(tf.reduce_max(images)) > 0.5  # Scaled by 255, not left as 0..255 or 0..1/255.


# cache=True: shuffled by permutation from memory (the default); False: streamed through a
# shuffle buffer (--nocache). Both must keep these promises.
@pytest.mark.parametrize('cache', [True, False])
def test_each_epoch_is_a_permutation_with_its_own_order(cache):
  source = _id_source(num_train=100, num_eval=10)
  ds = pipeline.train_dataset(source, _context(), global_batch=10, steps_per_epoch=10,
                              seed=3, shuffle_buffer=1000, cache=cache)
  batches = [_ids(images) for images, _ in ds.take(20)]
  first, second = np.concatenate(batches[:10]), np.concatenate(batches[10:])
  assert sorted(first) == sorted(second) == list(range(100))
  assert list(first) != list(second)


@pytest.mark.parametrize('cache', [True, False])
def test_order_depends_only_on_seed_and_step_so_resume_sees_the_same_batches(cache):
  source = _id_source(num_train=120, num_eval=10)
  make = lambda start, seed=5: pipeline.train_dataset(
      source, _context(), global_batch=8, steps_per_epoch=15, seed=seed, shuffle_buffer=1000,
      start_step=start, cache=cache)
  full = [_ids(images) for images, _ in make(0).take(40)]
  resumed = [_ids(images) for images, _ in make(23).take(17)]
  np.testing.assert_array_equal(np.stack(full[23:]), np.stack(resumed))
  other_seed = [_ids(images) for images, _ in make(0, seed=6).take(15)]
  assert not np.array_equal(np.stack(full[:15]), np.stack(other_seed))


@pytest.mark.parametrize('num_eval,global_batch', [(1000, 64), (999, 10), (7, 4), (64, 64)])
def test_eval_counts_every_example_exactly_once_across_two_replicas(mirrored, num_eval,
                                                                    global_batch):
  source = _id_source(num_train=64, num_eval=num_eval)
  dataset, steps = pipeline.distributed_eval_dataset(mirrored, source, global_batch)
  seen = collections.Counter()
  shapes = set()
  iterator = iter(dataset)
  for _ in range(steps):
    per_replica = next(iterator)
    for images, _, weights in zip(*(mirrored.experimental_local_results(t) for t in per_replica)):
      shapes.add(tuple(images.shape))
      seen.update(_ids(images)[np.asarray(weights) > 0].tolist())
  assert shapes == {(global_batch // 2, 8, 8, 3)}  # Static shapes: padding, not short batches.
  assert len(seen) == num_eval and set(seen.values()) == {1}


def test_eval_shards_across_workers_cover_the_split_once():
  source = _id_source(num_train=64, num_eval=1001)
  steps = pipeline.eval_steps(1001, num_shards=3, global_batch=12)
  seen = collections.Counter()
  for worker in range(3):
    ds = pipeline.eval_dataset(source, _context(3, worker, replicas=6),
                               global_batch=12, steps=steps)
    batches = list(ds)
    assert len(batches) == steps * 2  # 2 local replicas, one batch each per step.
    for images, _, weights in batches:
      seen.update(_ids(images)[np.asarray(weights) > 0].tolist())
  assert len(seen) == 1001 and set(seen.values()) == {1}


@pytest.mark.parametrize('cache', [True, False])
def test_train_shards_across_workers_are_disjoint(cache):
  source = _id_source(num_train=200, num_eval=10)
  shards = []
  for worker in range(2):
    ds = pipeline.train_dataset(source, _context(2, worker, replicas=2), global_batch=20,
                                steps_per_epoch=10, seed=0, shuffle_buffer=1000,
                                cache=cache)
    shards.append(set(np.concatenate([_ids(images) for images, _ in ds.take(10)]).tolist()))
  assert not shards[0] & shards[1]
  assert len(shards[0] | shards[1]) == 200


def test_distributed_train_iterator_gives_per_replica_batches(mirrored, small_source):
  iterator = pipeline.distributed_train_iterator(
      mirrored, small_source, global_batch=32, steps_per_epoch=16, seed=0, shuffle_buffer=100)
  images, labels = next(iterator)
  local = mirrored.experimental_local_results(images)
  assert len(local) == 2 and all(t.shape == (16, 32, 32, 3) for t in local)
  assert {t.device.split(':')[-1] for t in local} == {'0', '1'}


def test_synthetic_data_stays_on_the_replica_devices(mirrored):
  source = sources.SyntheticSource()
  iterator = pipeline.distributed_train_iterator(
      mirrored, source, global_batch=8, steps_per_epoch=10, seed=0, shuffle_buffer=1)
  first, second = next(iterator), next(iterator)
  assert first is second  # One resident batch, no input pipeline.
  images = first[0].values  # The copies of a mirrored variable, one per replica.
  assert [tuple(t.shape) for t in images] == [(4, 32, 32, 3)] * 2
  assert images[0].device.endswith('CPU:0') and images[1].device.endswith('CPU:1')


def test_first_examples_are_the_stored_training_examples_in_order():
  source = _id_source(num_train=40, num_eval=10)
  images, labels = sources.first_examples(source, 25)
  assert images.dtype == np.uint8 and images.shape == (25, 8, 8, 3)
  np.testing.assert_array_equal(_ids(images / 255.0), np.arange(25))
  assert labels == [i % 10 for i in range(25)]


@pytest.mark.parametrize('cache', [True, False])
def test_augmentation_flips_and_shifts_reproducibly_and_resumes_exactly(cache):
  source = _id_source(num_train=64, num_eval=10, shape=(16, 16, 3))
  make = lambda start=0, augment='flip_shift': pipeline.train_dataset(
      source, _context(), global_batch=8, steps_per_epoch=8, seed=2, shuffle_buffer=100,
      start_step=start, augment=augment, cache=cache)
  plain = [images.numpy() for images, _ in make(augment='none').take(16)]
  flipped = [images.numpy() for images, _ in make(augment='flip').take(16)]
  augmented = [images.numpy() for images, _ in make().take(16)]
  again = [images.numpy() for images, _ in make().take(16)]
  resumed = [images.numpy() for images, _ in make(start=11).take(5)]
  np.testing.assert_array_equal(np.stack(augmented), np.stack(again))
  np.testing.assert_array_equal(np.stack(augmented[11:]), np.stack(resumed))
  assert not np.array_equal(np.stack(plain), np.stack(augmented))
  # Shifts move pixels, they do not invent values: every value is an original's or 0.
  for original, shifted in zip(plain, augmented):
    assert set(np.unique(shifted)) <= set(np.unique(original)) | {0.0}
  # Flips alone: each image is the original or its mirror, and both occur.
  mirrored = [np.array_equal(f, o[:, ::-1, :]) for fs, os_ in zip(flipped, plain)
              for f, o in zip(fs, os_)]
  kept = [np.array_equal(f, o) for fs, os_ in zip(flipped, plain) for f, o in zip(fs, os_)]
  assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


@pytest.mark.parametrize('cache,threads', [(False, 0), (True, 2)])
def test_pipeline_options_change_speed_not_data(cache, threads):
  source = _id_source(num_train=48, num_eval=10)
  make = lambda **kw: [_ids(images).tolist() for images, _ in pipeline.train_dataset(
      source, _context(), global_batch=8, steps_per_epoch=6, seed=4, shuffle_buffer=100,
      **kw).take(12)]
  assert make(cache=cache, threads=threads) == make(cache=cache)
  evaluated = pipeline.eval_dataset(source, _context(), global_batch=4, steps=3,
                                    cache=cache, threads=threads)
  assert sorted(np.concatenate([_ids(i) for i, _, _ in evaluated]).tolist()) == \
      sorted([EVAL_ID_0 + i for i in range(10)] + [0, 0])
