"""The data order and the augmentation: pure functions, the same in any compiled form."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import order

_MASK32 = 0xFFFFFFFF


def _mix(x):
  """order.mix, written again in NumPy from its definition."""
  x = np.asarray(x, np.uint64)
  x ^= x >> np.uint64(16)
  x = (x * np.uint64(0x21F0AAAD)) & np.uint64(_MASK32)
  x ^= x >> np.uint64(15)
  x = (x * np.uint64(0x735A2D97)) & np.uint64(_MASK32)
  return x ^ (x >> np.uint64(15))


def test_mix_is_the_documented_hash_and_spreads_neighbours():
  values = np.arange(100_000, dtype=np.int64)
  mixed = order.mix(tf.constant(values)).numpy()
  np.testing.assert_array_equal(mixed, _mix(values).astype(np.int64))
  assert len(np.unique(mixed)) == len(values)  # No collisions: it is a bijection.
  assert abs(np.mean(mixed & 1) - 0.5) < 0.01  # Low bits of neighbours look random.


@pytest.mark.parametrize('size,capacity', [(10, 10), (101, 102), (1000, 1000)])
def test_permutation_covers_the_shard_and_leaves_padding_last(size, capacity):
  permutation = order.epoch_permutation(size, capacity, seed=3, epoch=0, worker=1).numpy()
  assert sorted(permutation[:size]) == list(range(size))
  assert sorted(permutation[size:]) == list(range(size, capacity))


def test_permutations_differ_by_seed_epoch_and_worker_but_not_by_compiler():
  def permutation(seed=0, epoch=0, worker=0):
    return order.epoch_permutation(500, 500, seed, epoch, worker).numpy()
  base = permutation()
  for other in (permutation(seed=1), permutation(epoch=1), permutation(worker=1)):
    assert not np.array_equal(base, other)
  np.testing.assert_array_equal(base, permutation())
  # XLA, as on a TPU or with --jit_compile, must find the same order.
  compiled = tf.function(lambda: order.epoch_permutation(500, 500, 0, 0, 0),
                         jit_compile=True)
  np.testing.assert_array_equal(base, compiled().numpy())


def _reference_augment(images, seed, step, worker, shift):
  """Flip, then shift with zero fill, per image, from the documented random bits."""
  key = int(order.derive_key(seed, 2, step, worker).numpy())
  out = []
  for index, image in enumerate(images):
    bits = int(_mix(index ^ key))
    if bits & 1:
      image = image[:, ::-1]
    if shift:
      height, width = image.shape[:2]
      row, col = (bits >> 8) % 9, (bits >> 16) % 9
      padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
      image = padded[row:row + height, col:col + width]
    out.append(image)
  return np.stack(out)


@pytest.mark.parametrize('shift', [False, True])
def test_augmentation_flips_and_shifts_each_image_as_documented(shift):
  images = np.random.default_rng(0).integers(1, 256, size=(256, 12, 10, 3), dtype=np.uint8)
  augmented = order.augment(tf.constant(images), 5, 17, 1, shift).numpy()
  np.testing.assert_array_equal(augmented, _reference_augment(images, 5, 17, 1, shift))
  compiled = tf.function(lambda x: order.augment(x, 5, 17, 1, shift), jit_compile=True)
  np.testing.assert_array_equal(augmented, compiled(tf.constant(images)).numpy())
  # Both flips occur, and with shifts every offset of -4..4 pixels in each direction.
  if not shift:
    flipped = [np.array_equal(a[:, ::-1], i) for a, i in zip(augmented, images)]
    assert 0.3 < np.mean(flipped) < 0.7
  else:
    zero_rows = {int(np.sum(np.all(a == 0, axis=(1, 2)))) for a in augmented}
    assert zero_rows == set(range(5))  # 0..4 blank rows: shifts of 0..4 either way.
  other_step = order.augment(tf.constant(images), 5, 18, 1, shift).numpy()
  assert not np.array_equal(augmented, other_step)
