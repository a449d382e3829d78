"""Our TFDS reading code, on tfds.testing.mock_data (fast) and on the real files."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.core.errors import UserError
from trainer.data import tfds_source


@pytest.fixture
def mock_cifar10(monkeypatch, cifar_dir):
  """Mocked examples with the real metadata (split sizes are not in TFDS's code)."""
  # mock_data stubs the download; the offline check in front of it must pass too.
  monkeypatch.setattr(tfds_source, '_network_reachable', lambda: True)
  return tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=cifar_dir)


def test_reads_image_label_pairs_with_metadata_from_tfds(mock_cifar10):
  with mock_cifar10:
    source = tfds_source.TfdsSource('cifar10')
    info = source.info
    assert info.image_shape == (32, 32, 3) and info.num_classes == 10
    assert info.class_names[:2] == ('airplane', 'automobile')
    images, labels = next(iter(source.read('train', 0, 1).batch(20)))
  assert images.dtype == tf.uint8 and images.shape == (20, 32, 32, 3)
  assert labels.dtype == tf.int64 and 0 <= int(tf.reduce_min(labels))
  assert int(tf.reduce_max(labels)) < 10


def test_unknown_split_lists_the_ones_there_are(mock_cifar10):
  with mock_cifar10:
    with pytest.raises(UserError, match="no split 'validation' for eval; it has: .*test"):
      tfds_source.TfdsSource('cifar10', eval_split='validation')


def test_grayscale_data_sets_work_too():
  shape, label = tfds_source.check_features('mnist', tfds.builder('mnist').info.features)
  assert shape == (28, 28, 1) and label.num_classes == 10


def test_non_classification_data_set_is_rejected():
  features = tfds.builder('imdb_reviews').info.features
  with pytest.raises(UserError, match='is not image classification'):
    tfds_source.check_features('imdb_reviews', features)


def test_unknown_data_set_names_the_catalog():
  with pytest.raises(UserError, match="unknown --dataset='cifar11'.*catalog"):
    tfds_source.TfdsSource('cifar11')


@pytest.mark.slow
def test_real_files_shard_by_example_range(cifar_dir):
  """CIFAR-10 has one file per split, so sharding must split examples, not files."""
  source = tfds_source.TfdsSource('cifar10', data_dir=cifar_dir)
  assert (source.info.num_train_examples, source.info.num_eval_examples) == (50_000, 10_000)
  sizes = [int(source.read('eval', i, 3).reduce(0, lambda n, _: n + 1)) for i in range(3)]
  assert sizes == [3334, 3333, 3333]
  first = [np.asarray(x) for x, _ in source.read('eval', 1, 3).take(2)]
  whole = [np.asarray(x) for x, _ in source.read('eval', 0, 1).skip(3334).take(2)]
  np.testing.assert_array_equal(first, whole)
